"""Presence: stream counting, viewers, and the disconnect grace timer.

Test bodies run once per backend in ``coordination.PRESENCE_BACKENDS``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from coordination import PRESENCE_BACKENDS, presence_backend_for
from warrantysync.errors import TooManyStreams
from warrantysync.services.presence import (
    MemoryPresenceBackend,
    Presence,
    make_presence_backend,
)

GRACE = 0.1


class Recorder:
    def __init__(self) -> None:
        self.presence: list[tuple[int, list[dict[str, Any]]]] = []
        self.gone: list[tuple[int, int, str]] = []

    async def publish(self, branch_id: int, kind: str, payload: dict[str, Any]) -> None:
        assert kind == "presence"
        self.presence.append((branch_id, payload["viewers"]))

    async def client_gone(self, branch_id: int, user_id: int, client_id: str) -> None:
        self.gone.append((branch_id, user_id, client_id))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(params=PRESENCE_BACKENDS)
async def presence(request: pytest.FixtureRequest, recorder: Recorder) -> AsyncIterator[Presence]:
    presence = Presence(
        presence_backend_for(request.param, request),
        publish=recorder.publish,
        grace=GRACE,
        on_client_gone=recorder.client_gone,
    )
    yield presence
    await presence.close()


async def join(presence: Presence, user_id: int, client_id: str, branch_id: int = 1) -> None:
    name = {1: "Alice", 2: "Bob"}[user_id]
    await presence.join(branch_id=branch_id, user_id=user_id, name=name, client_id=client_id)


async def leave(presence: Presence, user_id: int, client_id: str, branch_id: int = 1) -> None:
    await presence.leave(branch_id=branch_id, user_id=user_id, client_id=client_id)


async def test_viewers_count_distinct_clients(presence: Presence, recorder: Recorder) -> None:
    await join(presence, 2, "b1")
    await join(presence, 1, "a1")
    await join(presence, 1, "a1")  # a second stream of the same tab
    await join(presence, 1, "a2")
    await join(presence, 1, "x", branch_id=2)
    assert await presence.viewers(branch_id=1) == [
        {"user": {"id": 1, "name": "Alice"}, "clients": 2},
        {"user": {"id": 2, "name": "Bob"}, "clients": 1},
    ]
    assert len(recorder.presence) == 5
    assert recorder.presence[-1] == (2, [{"user": {"id": 1, "name": "Alice"}, "clients": 1}])
    assert await presence.streams_of_user(1) == 4
    assert await presence.streams_of_user(2) == 1
    assert await presence.streams_of_user(3) == 0


async def test_leave_counts_down_and_publishes(presence: Presence, recorder: Recorder) -> None:
    await join(presence, 1, "a1")
    await join(presence, 1, "a1")
    await join(presence, 2, "b1")
    await leave(presence, 1, "a1")
    assert recorder.presence[-1][1][0] == {"user": {"id": 1, "name": "Alice"}, "clients": 1}
    await leave(presence, 1, "a1")
    assert recorder.presence[-1] == (1, [{"user": {"id": 2, "name": "Bob"}, "clients": 1}])
    await leave(presence, 2, "b1")
    assert recorder.presence[-1] == (1, [])
    assert len(recorder.presence) == 6
    assert await presence.streams_of_user(1) == 0


async def test_last_stream_closing_fires_client_gone_once(
    presence: Presence, recorder: Recorder
) -> None:
    await join(presence, 1, "a1")
    await join(presence, 1, "a1")
    await join(presence, 1, "a2")
    await leave(presence, 1, "a1")
    await asyncio.sleep(GRACE * 2)
    assert recorder.gone == []  # a1 still has a stream open
    await leave(presence, 1, "a1")
    await asyncio.sleep(GRACE / 2)
    assert recorder.gone == []
    await asyncio.sleep(GRACE * 2)
    assert recorder.gone == [(1, 1, "a1")]
    await asyncio.sleep(GRACE * 2)
    assert recorder.gone == [(1, 1, "a1")]


async def test_rejoin_within_grace_cancels(presence: Presence, recorder: Recorder) -> None:
    await join(presence, 1, "a1")
    await leave(presence, 1, "a1")
    await asyncio.sleep(GRACE / 2)
    await join(presence, 1, "a1")
    await asyncio.sleep(GRACE * 2)
    assert recorder.gone == []
    await leave(presence, 1, "a1")
    await asyncio.sleep(GRACE * 2)
    assert recorder.gone == [(1, 1, "a1")]


async def test_grace_is_per_branch(presence: Presence, recorder: Recorder) -> None:
    await join(presence, 1, "a1", branch_id=1)
    await join(presence, 1, "a1", branch_id=2)
    await leave(presence, 1, "a1", branch_id=1)
    await asyncio.sleep(GRACE * 2)
    assert recorder.gone == [(1, 1, "a1")]


async def test_client_back_through_the_backend_is_not_gone(
    presence: Presence, recorder: Recorder
) -> None:
    """A rejoin the timer's node never saw (another node, with Redis) still counts."""
    await join(presence, 1, "a1")
    await leave(presence, 1, "a1")
    await presence.backend.join(branch_id=1, user_id=1, name="Alice", client_id="a1")
    await asyncio.sleep(GRACE * 2)
    assert recorder.gone == []


async def test_close_cancels_pending_timers(recorder: Recorder) -> None:
    presence = Presence(
        MemoryPresenceBackend(),
        publish=recorder.publish,
        grace=GRACE,
        on_client_gone=recorder.client_gone,
    )
    await join(presence, 1, "a1")
    await leave(presence, 1, "a1")
    await presence.close()
    await asyncio.sleep(GRACE * 2)
    assert recorder.gone == []


async def test_attend_leaves_on_cancellation(presence: Presence, recorder: Recorder) -> None:
    entered = asyncio.Event()

    async def stream() -> None:
        async with presence.attend(branch_id=1, user_id=1, name="Alice", client_id="a1"):
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(stream())
    await entered.wait()
    assert await presence.streams_of_user(1) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await presence.streams_of_user(1) == 0
    assert recorder.presence[-1] == (1, [])


async def test_max_streams_is_checked_atomically(presence: Presence) -> None:
    async def connect(client_id: str) -> bool:
        try:
            await presence.join(
                branch_id=1, user_id=1, name="Alice", client_id=client_id, max_streams=3
            )
        except TooManyStreams as exc:
            assert exc.retry_after >= 1
            return False
        return True

    results = await asyncio.gather(*(connect(f"c{i}") for i in range(5)))
    assert sorted(results) == [False, False, True, True, True]
    assert await presence.streams_of_user(1) == 3


async def test_failing_client_gone_is_logged(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(branch_id: int, user_id: int, client_id: str) -> None:
        raise RuntimeError("boom")

    presence = Presence(
        MemoryPresenceBackend(), publish=recorder.publish, grace=0, on_client_gone=broken
    )
    await join(presence, 1, "a1")
    await leave(presence, 1, "a1")
    await asyncio.sleep(0.05)
    assert "releasing client a1 on branch 1 failed" in caplog.text
    await presence.close()


def test_make_presence_backend_by_scheme() -> None:
    assert isinstance(make_presence_backend(None), MemoryPresenceBackend)
    assert isinstance(make_presence_backend("memory://"), MemoryPresenceBackend)
    with pytest.raises(ValueError, match="'etcd'"):
        make_presence_backend("etcd://x")
