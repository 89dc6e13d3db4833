"""The embedded default's bounded wait: one shared watcher per api process, no polling query per waiter."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from sqlalchemy import create_engine, event, update
from sqlalchemy.orm import Session

from api.wait import DatabaseWatcher, Waiters
from schema.tables import Base, Image, RecognizeJob, Tenant


@pytest.fixture
def engine(tmp_path):  # type: ignore[no-untyped-def]
    engine = create_engine(f"sqlite:///{tmp_path / 'wait.sqlite'}", connect_args={"check_same_thread": False})
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Tenant(id=1, name="t"))
        session.commit()
    return engine


def count_queries(engine) -> list[str]:  # type: ignore[no-untyped-def]
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    return seen


def add_jobs(engine, n: int) -> list[str]:  # type: ignore[no-untyped-def]
    uids = [str(uuid.uuid4()) for _ in range(n)]
    with Session(engine) as session:
        session.add_all(Image(uid=uid, tenant_id=1) for uid in uids[:-1])
        session.add(RecognizeJob(uid=uids[-1], tenant_id=1, request={}))
        session.commit()
    return uids


def finish(engine, uids: list[str]) -> None:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        for model in (Image, RecognizeJob):
            session.execute(update(model).where(model.uid.in_(uids)).values(status="done"))
        session.commit()


def test_shared_watcher_wakes_every_waiter_with_one_query_per_commit(engine) -> None:  # type: ignore[no-untyped-def]
    uids = add_jobs(engine, 40)
    waiters = Waiters()
    watcher = DatabaseWatcher(waiters, interval=0.02, engine=engine)
    statements = count_queries(engine)
    watcher.start()
    time.sleep(0.2)
    assert watcher.queries == 0  # nobody waits: the watcher sleeps without touching the database

    async def scenario() -> list[bool]:
        futures = [waiters.add(uid) for uid in uids]
        await asyncio.sleep(0.5)  # 40 waiters, no commit: ~25 ticks, each only a PRAGMA data_version
        idle_queries = watcher.queries
        for chunk in (uids[:20], uids[20:]):  # two commits by "the worker" (another connection)
            await asyncio.to_thread(finish, engine, chunk)
            await asyncio.sleep(0.1)
        results = await asyncio.wait_for(asyncio.gather(*futures), 5)
        assert idle_queries <= 1  # at most the first look after the waiters arrived
        return results

    assert all(asyncio.run(scenario()))
    # One shared query per commit (plus the first look), for 40 waiters over ~35 ticks.
    assert watcher.queries <= 4
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) <= 4, selects


def test_waiter_removed_is_not_woken_and_wake_all_asks_for_a_recheck() -> None:
    waiters = Waiters()

    async def scenario() -> None:
        kept, dropped = waiters.add("a"), waiters.add("b")
        waiters.remove("b", dropped)
        assert waiters.uids() == ["a"]
        waiters.wake_all()
        assert await asyncio.wait_for(kept, 1) is False  # "look again", not "finished"
        assert not dropped.done()

    asyncio.run(scenario())
