"""The HTTP endpoints, one module per audience: `ops` (health, readiness, metrics),
`client` (what a client key does: its orders, placing one), `orders` (operators' lists and
status moves), `prices` (prices and the catalogue's names, for everyone).

Reads go through the cache, each one a view of the catalogue (mescache.views); writes go
to PostgreSQL only (mescache.writes), except status changes in write-behind mode
(api.write_behind), which are accepted into Redis. A hit answers with the bytes Redis
holds, untouched; `X-Cache` says hit or miss.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.routes import client, ops, orders, prices

router = APIRouter()
# The routes themselves, not included routers: the API's 405 handler (api.app) walks them.
# The client's first: `/customers/me/orders` before `/customers/{customer}/orders`.
for part in (ops, client, orders, prices):
    router.routes.extend(part.router.routes)
