"""The client's page in a real headless Chromium, against a real uvicorn server and a real
listener process: the key prompt, the client's own orders (never another customer's, not
on the page and not in the bytes its stream receives), a DBA's change to one of them
appearing without a reload, the price calculator with the model's picture, and an order
placed from it appearing in the list.

Needs Debian's chromium and chromium-driver like the operator page's test (skipped with
the reason otherwise). CLIENT_SCREENSHOT=path saves a screenshot of the page there
(`make screenshot` writes docs/client.png).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.acceptance.test_dashboard_page import browser, enter_key, messages, sql, stack, until
from tests.integration.api_server import ApiProcess
from tests.integration.conftest import OPERATOR_KEY, MakeClientKey, make_client_key

__all__ = ["browser", "make_client_key", "stack"]  # fixtures

pytestmark = pytest.mark.browser

ANNA, BORIS = "Anna K.", "Boris P."
# Opens a second stream from inside the page with its key, and keeps every byte it gets:
# what this browser receives, whatever the page's script makes of it.
RECORD_STREAM = """
const key = sessionStorage.getItem("mes.clientKey");
window.rawStream = "";
fetch("/customers/me/events", {headers: {Authorization: "Bearer " + key}})
  .then((resp) => resp.body.pipeThrough(new TextDecoderStream()).getReader())
  .then(async (reader) => {
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      window.rawStream += value;
    }
  });
"""


def client_key(make: MakeClientKey, customer: str) -> str:
    async def made() -> str:
        return await make(customer)

    return asyncio.run(made())


def order_for(database_url: str, customer: str, status: str = "new") -> int:
    return int(
        sql(
            database_url,
            "INSERT INTO orders (customer, model_id, material_id, quantity, total_price, status)"
            " VALUES (%s, 1, 1, 1, 120.50, %s) RETURNING id",
            customer,
            status,
        )[0][0]
    )


def shown_orders(driver: WebDriver) -> dict[int, str]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#orders tr")
    return {
        int(r.get_attribute("data-order-id") or 0): r.get_attribute("data-status") or ""
        for r in rows
    }


def numbers_received(driver: WebDriver) -> set[int]:
    """Every number in the data of the events the browser received on its own stream."""
    raw = str(driver.execute_script("return window.rawStream"))
    return {
        int(n)
        for line in raw.splitlines()
        if line.startswith("data:")
        for n in re.findall(r"\d+", line)
    }


def test_a_client_sees_its_own_orders_live_prices_a_piece_and_orders_it(
    browser: WebDriver,
    stack: tuple[ApiProcess, subprocess.Popen[bytes]],
    database_url: str,
    make_client_key: MakeClientKey,
) -> None:
    api, _ = stack
    annas = [order_for(database_url, ANNA), order_for(database_url, ANNA, "in_progress")]
    boriss = order_for(database_url, BORIS)
    key = client_key(make_client_key, ANNA)
    mine = {int(r[0]) for r in sql(database_url, "SELECT id FROM orders WHERE customer = %s", ANNA)}

    browser.get(api.base_url + "/client")
    assert browser.find_element(By.ID, "key-form").is_displayed()
    enter_key(browser, key)
    until(lambda: set(shown_orders(browser)) == mine, "Anna's orders listed", browser)
    assert boriss not in shown_orders(browser)
    assert browser.find_element(By.ID, "customer").text == ANNA
    until(lambda: browser.find_element(By.ID, "live").text == "live", "live updates", browser)
    browser.execute_script(RECORD_STREAM)
    until(
        lambda: "event: ready" in str(browser.execute_script("return window.rawStream")),
        "the recorded stream is open",
        browser,
    )
    browser.execute_script("window.notReloaded = true")

    # A DBA changes Boris's order, then Anna's: Anna's page shows hers without a reload,
    # and neither the page nor the bytes its browser received carry Boris's order.
    sql(database_url, "UPDATE orders SET status = 'cancelled' WHERE id = %s", boriss)
    sql(database_url, "UPDATE orders SET status = 'done' WHERE id = %s", annas[1])
    until(lambda: shown_orders(browser).get(annas[1]) == "done", "Anna's change shown", browser)
    until(lambda: annas[1] in numbers_received(browser), "Anna's change received", browser)
    assert browser.execute_script("return window.notReloaded") is True
    assert numbers_received(browser) <= mine, "only Anna's ids reach Anna's browser"
    assert boriss not in shown_orders(browser)
    assert BORIS not in browser.find_element(By.TAG_NAME, "body").text

    # The calculator: a ring in a material, at a size; the page shows the API's price.
    catalogue = httpx.get(
        api.base_url + "/catalogue", headers={"Authorization": f"Bearer {key}"}, timeout=10
    ).json()
    ring = next(m for m in catalogue["models"] if m["kind"] == "ring")
    material = catalogue["materials"][-1]
    Select(browser.find_element(By.ID, "model")).select_by_value(str(ring["id"]))
    Select(browser.find_element(By.ID, "material")).select_by_value(str(material["id"]))
    size = browser.find_element(By.ID, "size")
    size.clear()
    size.send_keys("18.5")
    quote = httpx.get(
        f"{api.base_url}/models/{ring['id']}/price",
        params={"material": material["id"], "size": "18.5"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    ).json()
    unit = Decimal(str(quote["total"]))
    until(
        lambda: _amount(browser.find_element(By.ID, "unit-price").text) == unit,
        f"the price {unit} shown",
        browser,
    )
    assert "€" in browser.find_element(By.ID, "unit-price").text  # the default CURRENCY, EUR
    breakdown = browser.find_element(By.ID, "breakdown").text
    for part in ("Metal", "Finishing", "Labour", "Weight"):
        assert part in breakdown
    # The model's picture, drawn by the server from its mesh.
    until(
        lambda: browser.execute_script(
            "const i = document.getElementById('picture'); return !i.hidden && i.naturalWidth"
        ),
        "the model's picture",
        browser,
    )

    # Order two from the calculator: the new order appears in the list, live.
    quantity = browser.find_element(By.ID, "quantity")
    quantity.clear()
    quantity.send_keys("2")
    browser.find_element(By.ID, "place").click()
    until(lambda: "placed" in messages(browser), "the order confirmed", browser)
    (placed,) = sql(
        database_url,
        "SELECT id, total_price, model_id, material_id, params->>'size' FROM orders"
        " WHERE customer = %s AND id <> ALL(%s)",
        ANNA,
        list(mine),
    )
    assert placed[1:] == (unit * 2, ring["id"], material["id"], "18.5")
    until(lambda: shown_orders(browser).get(placed[0]) == "new", "the placed order listed", browser)
    assert browser.execute_script("return window.notReloaded") is True
    assert numbers_received(browser) <= mine | {placed[0]}

    screenshot = os.environ.get("CLIENT_SCREENSHOT")
    if screenshot:
        path = Path(screenshot)
        path.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(path))


def test_an_operator_key_is_not_a_client_key(
    browser: WebDriver, stack: tuple[ApiProcess, subprocess.Popen[bytes]]
) -> None:
    api, _ = stack
    browser.get(api.base_url + "/client")
    enter_key(browser, OPERATOR_KEY)
    until(lambda: "client's key" in messages(browser), "the wrong-key message", browser)
    assert browser.find_element(By.ID, "key-form").is_displayed()


def _amount(text: str) -> Decimal | None:
    """The number in a price as the page formats it ("€1,234.50" in an en-US browser)."""
    digits = re.sub(r"[^\d.]", "", text)
    return Decimal(digits) if digits else None
