"""Keys as minted and hashed, the role rules, and the OPERATOR_API_KEY setting."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from api.apikeys import BadApiKeyRequest, check_role, key_hash, key_prefix, mint_key
from api.settings import ApiSettings


def _settings(**values: object) -> ApiSettings:
    return ApiSettings(database_url="postgresql://u@h/db", redis_url="redis://h/0", **values)  # type: ignore[arg-type]


def test_minted_keys_are_long_distinct_and_hashed_with_sha256() -> None:
    keys = {mint_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert key.startswith("mes_")
        assert len(key) == 47
        assert key_hash(key) == hashlib.sha256(key.encode()).digest()
        assert key_prefix(key) == key[:12]


@pytest.mark.parametrize(
    ("role", "customer", "message"),
    [
        ("client", None, "needs --customer"),
        ("client", "", "needs --customer"),
        ("operator", "Anna K.", "drop --customer"),
        ("admin", None, "role must be one of operator, client"),
        ("client", "x" * 201, "at most 200"),
    ],
)
def test_roles_and_customers_go_together(role: str, customer: str | None, message: str) -> None:
    with pytest.raises(BadApiKeyRequest, match=message):
        check_role(role, customer)
    assert check_role("client", "Anna K.") == "client"
    assert check_role("operator", None) == "operator"


def test_operator_api_key_setting() -> None:
    assert _settings(operator_api_key="").operator_api_key is None
    key = "k" * 32
    settings = _settings(operator_api_key=key)
    assert settings.operator_api_key is not None
    assert settings.operator_api_key.get_secret_value() == key
    assert key not in repr(settings)
    for bad in ("k" * 31, "k" * 257, "k" * 20 + " " + "k" * 20):
        with pytest.raises(ValidationError, match="operator_api_key"):
            _settings(operator_api_key=bad)
