"""A database that is away answers 503 SERVICE_UNAVAILABLE with Retry-After, never 500."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import exc

from schema.db import is_outage, retry_outage
from tests.integration.services import free_port


def test_outage_is_told_apart_from_a_bad_query() -> None:
    assert is_outage(exc.OperationalError("SELECT 1", {}, Exception("connection refused")))
    assert is_outage(exc.InterfaceError("SELECT 1", {}, Exception("connection already closed")))
    assert not is_outage(exc.IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not is_outage(ValueError("bug"))


def test_retry_outage_retries_only_outages_and_only_for_a_while() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise exc.OperationalError("SELECT 1", {}, Exception("the database system is starting up"))
        return "ok"

    assert retry_outage(flaky, within_s=5) == "ok" and len(calls) == 3
    start = time.monotonic()
    with pytest.raises(exc.OperationalError):
        retry_outage(lambda: (_ for _ in ()).throw(flaky_error()), within_s=0.5)
    assert time.monotonic() - start < 2
    with pytest.raises(exc.IntegrityError):
        retry_outage(lambda: (_ for _ in ()).throw(exc.IntegrityError("INSERT", {}, Exception("dup"))), 5)


def flaky_error() -> exc.OperationalError:
    return exc.OperationalError("SELECT 1", {}, Exception("connection refused"))


@pytest.fixture
def unreachable_database(monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    from facequeue.settings import get_settings
    from schema import db

    monkeypatch.setenv("DATABASE_URL", f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/none")
    monkeypatch.setenv("FACEQUEUE_HOME", str(tmp_path))
    monkeypatch.setenv("FACEQUEUE_OUTAGE_WAIT_S", "0.5")
    for cached in (get_settings, db.get_engine, db._session_factory):
        cached.cache_clear()
    yield
    for cached in (get_settings, db.get_engine, db._session_factory):
        cached.cache_clear()


def test_requests_answer_503_with_retry_after_while_the_database_is_away(unreachable_database) -> None:  # type: ignore[no-untyped-def]
    from api.app import create_app

    client = TestClient(create_app(), raise_server_exceptions=False)
    start = time.monotonic()
    v2 = client.get("/v2/media/00000000-0000-0000-0000-000000000000", headers={"X-API-Key": "k"})
    assert time.monotonic() - start >= 0.4  # it waited for the database before giving up
    assert v2.status_code == 503 and v2.headers["Retry-After"]
    assert v2.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    v1 = client.post("/v1/GetImageInfo", json={"api_key": "k", "img_uid": "x"})
    assert v1.json()["int_response"] == -60 and v1.headers["Retry-After"]
