"""GET /v2/admin/queues: admin keys only; the database's job counts are still answered while the broker is
away (the broker's side is a fake here; tests/integration/test_console.py reads the real one)."""

from __future__ import annotations

import secrets

import pytest
from fastapi.testclient import TestClient

from workers.reaper import BrokerView


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, tmp_path) -> TestClient:  # type: ignore[no-untyped-def]
    from facequeue.settings import get_settings
    from schema import db

    monkeypatch.setenv("FACEQUEUE_HOME", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    for cached in (get_settings, db.get_engine, db._session_factory):
        cached.cache_clear()
    from api.app import create_app
    from schema.migrate import upgrade

    upgrade()
    with TestClient(create_app()) as test_client:
        yield test_client
    for cached in (get_settings, db.get_engine, db._session_factory):
        cached.cache_clear()


def key(admin: bool) -> str:
    from api.deps import key_sha256
    from schema.db import session_scope
    from schema.tables import ApiKey, Tenant

    secret = secrets.token_urlsafe(24)
    with session_scope() as session:
        tenant = Tenant(name=f"t-{secret[:6]}", is_admin=admin)
        session.add(tenant)
        session.flush()
        session.add(ApiKey(key_sha256=key_sha256(secret), tenant_id=tenant.id))
    return secret


def test_queue_depths_for_admins_only(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "api.v2.broker_view", lambda: BrokerView({"images": 4, "recognize": 0, "callbacks": 1})
    )
    refused = client.get("/v2/admin/queues", headers={"X-API-Key": key(admin=False)})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN"
    answer = client.get("/v2/admin/queues", headers={"X-API-Key": key(admin=True)}).json()
    assert answer == {
        "broker": "ok",
        "queues": {"images": 4, "recognize": 0, "callbacks": 1},
        "images": {},
        "recognitions": {},
    }


def test_broker_away_still_answers_the_database_side(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable() -> BrokerView:
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr("api.v2.broker_view", unreachable)
    response = client.get("/v2/admin/queues", headers={"X-API-Key": key(admin=True)})
    assert response.status_code == 200
    assert response.json()["broker"] == "error: ConnectionRefusedError" and response.json()["queues"] is None
