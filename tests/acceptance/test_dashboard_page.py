"""The operator's start page in a real headless Chromium, against a real uvicorn server and
a real listener process: the key prompt, the lists, moving an order, a DBA's UPDATE in
psql appearing without a reload, and errors shown as messages.

Needs Debian's chromium and chromium-driver (`make test` installs them as root); without
them the test is skipped with the reason. DASHBOARD_SCREENSHOT=path saves a screenshot of
the live page there (`make screenshot` writes docs/dashboard.png).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from tests.integration.api_server import ApiProcess
from tests.integration.conftest import OPERATOR_KEY, api_settings
from tests.integration.listener_fixtures import listener_settings, spawn_listener, wait_ready

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# A customer's name is user input: the page must show it as text, never run it.
HOSTILE = "Mallory <b>&</b> Co<img src=x onerror=\"document.title='pwned'\" hidden>"
SHOWCASE = [
    ("Anna K.", "new", {"size": 16, "engraving": "A+M 14.02"}),
    ("Boris P.", "new", {"size": 19}),
    ("Studio Lune", "new", {"size": 17, "finish": "matte"}),
    (HOSTILE, "new", {"size": 15}),
    ("Clara D.", "in_progress", {"size": 18, "engraving": "forever"}),
    ("Dmitri S.", "in_progress", {"size": 21}),
]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(
            f"BROWSER TEST SKIPPED: {', '.join(missing)} not found. Install Debian's chromium"
            " and chromium-driver (make test does so when run as root with apt-get)."
        )
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def stack(
    database_url: str, redis_url: str
) -> Iterator[tuple[ApiProcess, subprocess.Popen[bytes]]]:
    """The API as a uvicorn process and the listener as a process of its own."""
    settings = listener_settings(database_url, redis_url)
    listener = spawn_listener(settings)
    try:
        asyncio.run(wait_ready(settings))
        api = ApiProcess(api_settings(database_url, redis_url))
        try:
            yield api, listener
        finally:
            api.stop()
    finally:
        listener.terminate()
        listener.wait(30)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = %s AND NOT active",
                [settings.cdc_slot],
            )


def sql(database_url: str, statement: str, *params: object) -> list[tuple[Any, ...]]:
    """What a DBA does in psql: one statement, committed."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def until(check: Callable[[], object], what: str, driver: WebDriver, within: float = 20.0) -> None:
    """Poll the page until `check` holds; on timeout, say what the page showed."""
    deadline = time.monotonic() + within
    while True:
        try:
            if check():
                return
        except (StaleElementReferenceException, WebDriverException):
            pass  # the page re-rendered under us: look again
        if time.monotonic() > deadline:
            shown = driver.find_element(By.TAG_NAME, "body").text
            raise AssertionError(f"timed out waiting for: {what}\n--- the page showed:\n{shown}")
        time.sleep(0.1)


def ids_in(driver: WebDriver, section: str) -> set[int]:
    rows = driver.find_elements(By.CSS_SELECTOR, f"#{section}-orders tr")
    return {int(row.get_attribute("data-order-id") or 0) for row in rows}


def row(driver: WebDriver, order_id: int) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, f'tr[data-order-id="{order_id}"]')


def messages(driver: WebDriver) -> str:
    return driver.find_element(By.ID, "messages").text


def enter_key(driver: WebDriver, key: str) -> None:
    field = driver.find_element(By.ID, "key-input")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.ID, "key-submit").click()


def test_the_operator_page_follows_every_change_live(
    browser: WebDriver,
    stack: tuple[ApiProcess, subprocess.Popen[bytes]],
    database_url: str,
) -> None:
    api, listener = stack
    showcase = [
        int(
            sql(
                database_url,
                "INSERT INTO orders (customer, model_id, material_id, quantity, params,"
                " total_price, status) VALUES (%s, 1, 1, 1, %s::jsonb, 120.50, %s) RETURNING id",
                customer,
                json.dumps(params),
                status,
            )[0][0]
        )
        for customer, status, params in SHOWCASE
    ]
    taken, hostile, to_finish_in_psql = showcase[0], showcase[3], showcase[4]
    stale_one = showcase[1]

    browser.get(api.base_url + "/")
    assert browser.find_element(By.ID, "key-form").is_displayed()
    enter_key(browser, OPERATOR_KEY)

    active = {
        status: {
            int(r[0]) for r in sql(database_url, "SELECT id FROM orders WHERE status = %s", status)
        }
        for status in ("new", "in_progress")
    }
    until(lambda: ids_in(browser, "new") == active["new"], "the new orders listed", browser)
    assert not browser.find_element(By.ID, "key-form").is_displayed()
    assert ids_in(browser, "in-progress") == active["in_progress"]
    until(lambda: browser.find_element(By.ID, "live").text == "live", "live updates", browser)
    browser.execute_script("window.notReloaded = true")

    # Customer names are shown as text: no element, no script from them.
    (hostile_row,) = row(browser, hostile)
    assert HOSTILE in hostile_row.text
    assert not hostile_row.find_elements(By.CSS_SELECTOR, "b, img")
    assert browser.title == "Workshop orders"

    # Take an order into work from the page: it moves to "in progress".
    row(browser, taken)[0].find_element(
        By.CSS_SELECTOR, 'button[data-action="in_progress"]'
    ).click()
    until(lambda: taken in ids_in(browser, "in-progress"), "the taken order in progress", browser)
    assert taken not in ids_in(browser, "new")

    # A DBA finishes an order in psql: the open page drops it, without a reload.
    sql(database_url, "UPDATE orders SET status = 'done' WHERE id = %s", to_finish_in_psql)
    until(lambda: not row(browser, to_finish_in_psql), "the psql change on the page", browser)
    assert browser.execute_script("return window.notReloaded") is True

    # The cache's hit ratio and the invalidation lag are shown.
    until(lambda: browser.find_element(By.ID, "hit-ratio").text.endswith("%"), "hit ratio", browser)
    until(lambda: browser.find_element(By.ID, "lag").text.endswith("ms"), "the lag", browser)

    screenshot = os.environ.get("DASHBOARD_SCREENSHOT")
    if screenshot:
        save_screenshot(browser, api, database_url, hostile, Path(screenshot))

    # A stale page offers a move the order no longer allows: the API's 409 is shown. (The
    # listener is stopped so that the page cannot learn of the change first.)
    listener.terminate()
    listener.wait(30)
    sql(database_url, "UPDATE orders SET status = 'cancelled' WHERE id = %s", stale_one)
    row(browser, stale_one)[0].find_element(
        By.CSS_SELECTOR, 'button[data-action="in_progress"]'
    ).click()
    expected = f"order {stale_one} is cancelled: cannot move it to in_progress"
    until(lambda: expected in messages(browser), "the 409 message", browser)

    # A refused key is said so, and the page asks for the key again.
    browser.find_element(By.ID, "change-key").click()
    enter_key(browser, "mes_not-the-operator-key-at-all")
    until(lambda: "refused" in messages(browser), "the refused-key message", browser)
    assert browser.find_element(By.ID, "key-form").is_displayed()
    enter_key(browser, OPERATOR_KEY)
    until(lambda: browser.find_element(By.ID, "live").text == "live", "live again", browser)

    # The API goes away: the page says so instead of failing silently.
    api.stop()
    until(
        lambda: "API unreachable, retrying" in browser.find_element(By.ID, "connection").text,
        "the unreachable banner",
        browser,
    )


def save_screenshot(
    browser: WebDriver, api: ApiProcess, database_url: str, hostile: int, path: Path
) -> None:
    """The page as an operator sees it on an ordinary day: the hostile test name gone, and
    a few more readers served from the cache so the hit ratio reads like one."""
    sql(database_url, "UPDATE orders SET status = 'cancelled' WHERE id = %s", hostile)
    until(lambda: not row(browser, hostile), "the hostile row gone", browser)
    headers = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    for _ in range(40):
        httpx.get(
            api.base_url + "/orders/dashboard", headers=headers, timeout=10
        ).raise_for_status()
    until(
        lambda: float(browser.find_element(By.ID, "hit-ratio").text.split()[0]) >= 50,
        "a hit ratio with the readers' hits",
        browser,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(path))


def test_the_docs_render_from_this_origin_under_its_policy(
    browser: WebDriver, database_url: str, redis_url: str
) -> None:
    """Swagger UI runs under the page's Content-Security-Policy and loads nothing from
    elsewhere (the assets ship in a pinned package)."""
    api = ApiProcess(api_settings(database_url, redis_url))
    try:
        browser.get(api.base_url + "/docs")
        until(
            lambda: "MES orders API" in browser.find_element(By.CSS_SELECTOR, ".title").text,
            "Swagger UI shows the API's title",
            browser,
        )
        until(
            lambda: browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"),
            "Swagger UI lists the operations",
            browser,
        )
        loaded = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        assert loaded, "the page loaded its assets"
        assert all(url.startswith(api.base_url + "/") for url in loaded), loaded
    finally:
        api.stop()


BULK = 3000


def shown_rows(driver: WebDriver, section: str) -> list[tuple[str, str]]:
    """(order id, text) of the rows rendered now, read in one go: a re-render (any change
    refetches the dashboard) would leave element handles stale."""
    rows = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".map((tr) => [tr.dataset.orderId, tr.innerText])",
        f"#{section}-orders tr",
    )
    return [(str(i), str(t)) for i, t in rows]


def search(driver: WebDriver, text: str) -> None:
    field = driver.find_element(By.ID, "search")
    field.clear()
    if text:
        field.send_keys(text)


def test_a_working_day_of_thousands_of_orders_pages_searches_and_names(
    browser: WebDriver,
    stack: tuple[ApiProcess, subprocess.Popen[bytes]],
    database_url: str,
) -> None:
    api, _ = stack
    sql(
        database_url,
        "INSERT INTO orders (customer, model_id, material_id, quantity, total_price)"
        " SELECT 'Bulk customer ' || (i %% 500), 1 + i %% (SELECT count(*) FROM models), 1, 1,"
        " 100 + i FROM generate_series(1, %s) AS i",
        BULK,
    )
    (model_id, model_name), *_ = sql(database_url, "SELECT id, name FROM models ORDER BY id DESC")
    (material_name,) = sql(database_url, "SELECT name FROM materials WHERE id = 1")[0]
    zoe = int(
        sql(
            database_url,
            "INSERT INTO orders (customer, model_id, material_id, quantity, total_price)"
            " VALUES ('Zoe Unique', %s, 1, 1, 1234.50) RETURNING id",
            model_id,
        )[0][0]
    )
    active = sql(
        database_url,
        "SELECT o.id, o.customer, m.name FROM orders o JOIN models m ON m.id = o.model_id"
        " WHERE o.status = 'new'",
    )
    assert len(active) > BULK

    browser.get(api.base_url + "/")
    enter_key(browser, OPERATOR_KEY)
    count = browser.find_element(By.ID, "new-count")
    until(lambda: count.text == str(len(active)), f"{len(active)} new orders counted", browser)
    # One page of rows is rendered, whatever the number of orders; the pager says where.
    first_page = [i for i, _ in shown_rows(browser, "new")]
    assert len(first_page) == 50
    pager = browser.find_element(By.ID, "new-pager")
    assert pager.is_displayed()
    assert pager.find_element(By.CLASS_NAME, "where").text == f"1\N{EN DASH}50 of {len(active)}"
    pager.find_element(By.CLASS_NAME, "next").click()
    second_page = [i for i, _ in shown_rows(browser, "new")]
    assert len(second_page) == 50
    assert not set(first_page) & set(second_page)
    assert pager.find_element(By.CLASS_NAME, "where").text == f"51\N{EN DASH}100 of {len(active)}"

    # Names, not ids, and the currency (CURRENCY, EUR by default).
    search(browser, "Zoe Unique")
    until(lambda: count.text == "1", "the search by customer", browser)
    until(lambda: model_name in shown_rows(browser, "new")[0][1], "the model's name", browser)
    ((_, zoes_row),) = shown_rows(browser, "new")
    assert material_name in zoes_row
    assert "€1,234.50" in zoes_row  # an en-US browser's format of the amount in EUR
    assert not pager.is_displayed()

    search(browser, str(zoe))
    until(
        lambda: [i for i, _ in shown_rows(browser, "new")] == [str(zoe)],
        "the search by order number",
        browser,
    )

    query = model_name.lower()
    expected = [row for row in active if query in row[2].lower() or query in row[1].lower()]
    search(browser, model_name)
    until(lambda: count.text == str(len(expected)), "the search by model name", browser)
    assert 1 < len(expected) < len(active)
    assert all(model_name in text for _, text in shown_rows(browser, "new"))

    # A renamed model reaches the open page, without a reload.
    browser.execute_script("window.notReloaded = true")
    search(browser, "Zoe Unique")
    sql(database_url, "UPDATE models SET name = 'Aurora band' WHERE id = %s", model_id)
    until(lambda: "Aurora band" in shown_rows(browser, "new")[0][1], "the renamed model", browser)
    assert browser.execute_script("return window.notReloaded") is True

    # The staleness figure, when the API reports it.
    stats = httpx.get(
        api.base_url + "/stats", headers={"Authorization": f"Bearer {OPERATOR_KEY}"}, timeout=10
    ).json()
    box = browser.find_element(By.ID, "consistency-box")
    if stats.get("consistency") is not None:
        until(box.is_displayed, "the consistency figure", browser)
    else:
        until(
            lambda: browser.find_element(By.ID, "hit-ratio").text != "\N{EN DASH}", "stats", browser
        )
        assert not box.is_displayed()
