"""DATABASE_URL validation: libpq's multi-host form is accepted and always reaches the
primary; a value that could choose a standby is refused without repeating the string."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict
from pydantic import ValidationError

from mescache.settings import CacheSettings, describe_settings_error


def settings(url: str) -> CacheSettings:
    return CacheSettings(database_url=url, redis_url="redis://127.0.0.1:6379/0")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://mes:secret@db1:5432,db2:5432/mes",
        "postgresql://mes@db1,db2/mes?connect_timeout=3",
        "host=db1,db2 port=5432 dbname=mes",
        "host=db1,db2,db3 port=5432,5433,5434 dbname=mes",
    ],
)
def test_several_hosts_get_read_write_sessions(url: str) -> None:
    parsed = conninfo_to_dict(settings(url).database_url)
    assert parsed["target_session_attrs"] == "read-write"
    assert parsed["host"] == conninfo_to_dict(url)["host"]  # nothing else changed


@pytest.mark.parametrize("attrs", ["read-write", "primary"])
def test_a_primary_only_choice_is_kept(attrs: str) -> None:
    url = f"postgresql://mes@db1:5432,db2:5432/mes?target_session_attrs={attrs}"
    assert settings(url).database_url == url


def test_a_single_host_is_left_alone() -> None:
    for url in ("postgresql://mes@db/mes", "postgresql://mes@db/mes?target_session_attrs=any"):
        assert settings(url).database_url == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://mes:hunter2@db1,db2/mes?target_session_attrs=any", "may choose a standby"),
        ("postgresql://mes:hunter2@db/mes?target_session_attrs=standby", "may choose a standby"),
        ("host=db1,db2 password=hunter2 target_session_attrs=prefer-standby", "standby"),
        ("postgresql://mes:hunter2@db/mes?target_session_attrs=master", "must be one of"),
        ("host=db1,db2,db3 port=5432,5433 password=hunter2", "3 hosts but 2 ports"),
        ("postgresql://mes:hunter2@db:notaport:x/mes?=", "not a PostgreSQL connection string"),
    ],
)
def test_unusable_strings_are_refused_without_the_password(url: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        settings(url)
    described = describe_settings_error(caught.value)
    assert described.startswith("DATABASE_URL: ")
    assert message in described
    assert "hunter2" not in described
