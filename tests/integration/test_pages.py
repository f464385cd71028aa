"""What the pages are served with: the currency setting filled in on the way out, and the
model picture drawn from the stored mesh (an SVG; 404 for an unknown model)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import httpx
import psycopg

from api.app import create_app
from tests.integration.conftest import CustomerClient, api_settings, http_client


async def test_the_pages_show_the_currency_setting(database_url: str, redis_url: str) -> None:
    app = create_app(api_settings(database_url, redis_url, currency="CHF"))
    async with app.router.lifespan_context(app), http_client(app, None) as http:
        for path in ("/", "/client"):
            page = await http.get(path)
            assert page.status_code == 200
            assert '<meta name="currency" content="CHF">' in page.text, path
            assert page.headers["cache-control"] == "no-cache"


async def test_the_default_currency_is_eur(anonymous_client: httpx.AsyncClient) -> None:
    page = await anonymous_client.get("/client")
    assert '<meta name="currency" content="EUR">' in page.text


async def test_a_model_is_drawn_from_its_mesh(
    client: httpx.AsyncClient, customer_client: CustomerClient, database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT id FROM models WHERE mesh IS NOT NULL LIMIT 1").fetchone()
    assert row is not None
    anna = await customer_client("Anna K.")
    for caller in (client, anna):  # any key
        picture = await caller.get(f"/models/{row[0]}/picture", params={"size": 200})
        assert picture.status_code == 200
        assert picture.headers["content-type"] == "image/svg+xml"
        svg = ET.fromstring(picture.text)  # noqa: S314 - our own API's answer
        assert svg.get("width") == "200"
        assert len(svg.findall("{http://www.w3.org/2000/svg}path")) > 3


async def test_an_unknown_model_or_a_bad_size_is_refused(
    client: httpx.AsyncClient, anonymous_client: httpx.AsyncClient, database_url: str
) -> None:
    unknown = await client.get("/models/999999/picture")
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "model 999999 not found"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE models SET mesh = NULL WHERE id = 2")
    meshless = await client.get("/models/2/picture")
    assert meshless.status_code == 404
    assert meshless.json()["detail"] == "model 2 has no mesh to draw"
    for size in ("10", "5000", "big"):
        assert (await client.get("/models/1/picture", params={"size": size})).status_code == 422
    assert (await anonymous_client.get("/models/1/picture")).status_code == 401
