"""Input a hostile client sends, against the real servers: every case is a 4xx with a
message, never a 500, and nothing unbounded is read or stored."""

from __future__ import annotations

import json

import httpx
import psycopg
import pytest

from api.limits import MAX_BODY_BYTES
from api.routes.client import PARAMS_MAX_BYTES, PARAMS_MAX_DEPTH

ORDER: dict[str, object] = {
    "customer": "anna",
    "model_id": 1,
    "material_id": 1,
    "quantity": 1,
    "params": {"size": 17},
}


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def _raw(obj: object) -> bytes:
    """JSON as a client may send it: lone surrogates escaped, as json.dumps does."""
    return json.dumps(obj).encode()


async def _send(
    client: httpx.AsyncClient, method: str, path: str, body: bytes | None
) -> httpx.Response:
    headers = {"content-type": "application/json"} if body is not None else {}
    return await client.request(method, path, content=body, headers=headers)


HOSTILE = [
    # sizes too large or too precise for decimal arithmetic (and a key that names them)
    pytest.param(
        "POST", "/orders", _raw({**ORDER, "params": {"size": "1e1000000"}}), id="size-str"
    ),
    pytest.param(
        "POST",
        "/orders",
        b'{"customer":"anna","model_id":1,"material_id":1,"params":{"size":1e1000000}}',
        id="size-json-overflow",
    ),
    pytest.param(
        "POST", "/orders", _raw({**ORDER, "params": {"size": "1e-1000000"}}), id="size-tiny"
    ),
    pytest.param("GET", "/models/1/price?material=1&size=1e1000000", None, id="price-size-huge"),
    pytest.param("GET", "/models/1/price?material=1&size=1e-1000000", None, id="price-size-tiny"),
    # lone surrogates, in every validated field
    pytest.param("POST", "/orders", _raw({**ORDER, "customer": "\ud800"}), id="surrogate-customer"),
    pytest.param(
        "POST", "/orders", _raw({**ORDER, "params": {"engraving": "\udfff"}}), id="surrogate-value"
    ),
    pytest.param("POST", "/orders", _raw({**ORDER, "params": {"\ud800": 1}}), id="surrogate-key"),
    pytest.param("POST", "/orders", _raw({**ORDER, "model_id": "\ud800"}), id="surrogate-int"),
    pytest.param("POST", "/orders", _raw({**ORDER, "quantity": "\ud800"}), id="surrogate-qty"),
    pytest.param("PATCH", "/orders/1", _raw({"status": "\ud800"}), id="surrogate-status"),
    pytest.param("PATCH", "/orders/1", _raw({"\ud800": "done"}), id="surrogate-field"),
    pytest.param("GET", "/orders?status=%ED%A0%80", None, id="surrogate-query"),
    pytest.param("GET", "/models/1/price?material=%ED%A0%80", None, id="surrogate-query-int"),
    # deep and large params
    pytest.param(
        "POST", "/orders", _raw({**ORDER, "params": _nested(PARAMS_MAX_DEPTH + 1)}), id="deep"
    ),
    pytest.param(
        "POST", "/orders", _raw({**ORDER, "params": {"note": "x" * PARAMS_MAX_BYTES}}), id="large"
    ),
    pytest.param(
        "POST", "/orders", _raw({**ORDER, "params": {str(i): i for i in range(2_000)}}), id="wide"
    ),
]


@pytest.mark.parametrize(("method", "path", "body"), HOSTILE)
async def test_hostile_values_are_a_4xx_with_a_message(
    client: httpx.AsyncClient, method: str, path: str, body: bytes | None
) -> None:
    resp = await _send(client, method, path, body)
    assert 400 <= resp.status_code < 500, resp.text
    assert resp.json()["detail"]
    resp.content.decode("utf-8")  # the answer itself is valid UTF-8


@pytest.mark.parametrize("depth", [PARAMS_MAX_DEPTH + 1, 1_000, 100_000])
async def test_deeply_nested_json_is_refused(client: httpx.AsyncClient, depth: int) -> None:
    # Written by hand: json.dumps itself recurses.
    params = b'{"a":' * depth + b"1" + b"}" * depth
    body = b'{"customer":"anna","model_id":1,"material_id":1,"params":' + params + b"}"
    resp = await _send(client, "POST", "/orders", body[: MAX_BODY_BYTES - 1])
    assert resp.status_code in (400, 422), resp.text
    assert resp.json()["detail"]


async def test_params_at_their_bounds_are_accepted(client: httpx.AsyncClient) -> None:
    deep = {**ORDER, "params": {"size": 17, "nest": _nested(PARAMS_MAX_DEPTH - 1)}}
    assert (await client.post("/orders", json=deep)).status_code == 201
    room = PARAMS_MAX_BYTES - len(json.dumps({"size": 17, "note": ""}, separators=(",", ":")))
    wide = {**ORDER, "params": {"size": 17, "note": "x" * room}}
    resp = await client.post("/orders", json=wide)
    assert resp.status_code == 201, resp.text


async def test_a_refused_order_stores_nothing(client: httpx.AsyncClient, database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        before = (await (await conn.execute("SELECT count(*) FROM orders")).fetchone() or [0])[0]
        big = {**ORDER, "params": {"note": "x" * (PARAMS_MAX_BYTES + 1)}}
        assert (await client.post("/orders", json=big)).status_code == 422
        after = (await (await conn.execute("SELECT count(*) FROM orders")).fetchone() or [0])[0]
    assert after == before
