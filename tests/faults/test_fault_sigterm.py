"""SIGTERM with 500 open streams: goodbye on every one, a prompt exit, and after
a restart on the same database every client resumes without a gap.

The streams are bare asyncio sockets (faultkit.RawStream), cheap enough for
hundreds in one test process.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from conftest import LIVE_ENV, LiveFactory
from faultkit import RawStream, login_cookie, raise_nofile, scale

STREAMS = 500
SHUTDOWN_GRACE = float(LIVE_ENV["WARRANTYSYNC_SHUTDOWN_GRACE"])


async def _open_all(port: int, streams: list[RawStream]) -> None:
    async def one(stream: RawStream) -> None:
        await stream.open(timeout=30)
        assert stream.status == 200
        await stream.read_until("ready", timeout=60)

    for start in range(0, len(streams), 50):
        await asyncio.gather(*(one(s) for s in streams[start : start + 50]))


def _ids(stream: RawStream) -> list[int]:
    return [int(f.id) for f in stream.frames if f.id and f.event.startswith("case-")]


async def _edit(base_url: str, cookie: str, csrf: str, cases: list[int], rounds: int) -> None:
    async with httpx.AsyncClient(
        base_url=base_url, cookies={"warrantysync_session": cookie}, timeout=30
    ) as http:
        for n in range(rounds):
            for case in cases:
                response = await http.patch(
                    f"/api/cases/{case}",
                    json={"changes": {"notes": f"round {n} {time.monotonic()}"}},
                    headers={"X-CSRF-Token": csrf},
                )
                assert response.status_code == 200, response.text


async def test_sigterm_with_500_streams_says_goodbye_and_clients_resume_without_a_gap(
    live_factory: LiveFactory,
) -> None:
    raise_nofile(4 * STREAMS + 256)
    server, world = live_factory(max_streams_per_user=str(10 * STREAMS))
    assert server.process is not None
    cookie, csrf = login_cookie(server.url, "alice@example.com")
    branches = [world.branches["downtown"], world.branches["airport"]]
    cases = [world.cases["phone"], world.cases["airport"]]

    def path(i: int) -> str:
        return f"/api/branches/{branches[i % 2]}/events?client_id=c{i}"

    streams = [RawStream(server.port, path(i), cookie) for i in range(STREAMS)]
    opened = time.monotonic()
    await _open_all(server.port, streams)
    open_seconds = time.monotonic() - opened
    heads = [int(s.events("ready")[-1].id or 0) for s in streams]

    readers = [asyncio.create_task(s.read_to_eof(timeout=60)) for s in streams]
    await _edit(server.url, cookie, csrf, cases, scale(2, 5))

    started = time.monotonic()
    server.signal(15)
    code = await asyncio.to_thread(server.wait, SHUTDOWN_GRACE + 20)
    exit_seconds = time.monotonic() - started
    await asyncio.wait_for(asyncio.gather(*readers), 30)
    # uvicorn re-raises the signal once its graceful shutdown is done.
    assert code in (0, -15), code
    assert exit_seconds <= SHUTDOWN_GRACE + 2, f"exit took {exit_seconds:.1f}s"
    retries = []
    for stream in streams:
        goodbyes = stream.events("goodbye")
        assert len(goodbyes) == 1 and stream.eof, stream.path
        assert stream.frames[-1].event == "goodbye"  # nothing after it
        retries.append(goodbyes[0].data["retry_ms"])  # type: ignore[index]
    assert len(set(retries)) > STREAMS // 10, "goodbye retry_ms is not jittered"

    # Restart on the same database; more edits land before anyone is back.
    restarted, _ = live_factory(max_streams_per_user=str(10 * STREAMS))
    await _edit(restarted.url, cookie, csrf, cases, 2)
    resumed = [
        RawStream(restarted.port, path(i), cookie, last_event_id=streams[i].last_id())
        for i in range(STREAMS)
    ]
    await _open_all(restarted.port, resumed)
    for i, (before, after) in enumerate(zip(streams, resumed, strict=True)):
        assert not after.events("sync-required"), after.path
        seen = _ids(before) + _ids(after)
        head = int(after.events("ready")[-1].id or 0)
        assert seen == list(range(heads[i] + 1, head + 1)), (i, heads[i], seen, head)
    await asyncio.gather(*(s.close() for s in streams + resumed))
    print(
        f"\nsigterm: {STREAMS} streams opened in {open_seconds:.1f}s; exit {exit_seconds:.2f}s"
        f" after SIGTERM (grace {SHUTDOWN_GRACE:.0f}s); {len(set(retries))} distinct retry_ms"
    )
