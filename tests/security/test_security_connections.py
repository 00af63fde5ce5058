"""Connections against a running server: heads capped, reads timed out,
descriptors raised and watched (warrantysync/httpguard.py, fdlimit.py).

The attacks of the issue, each against a real ``warrantysync serve``: 64 KiB,
1 MiB and 16 MiB headers; ten connections each sending 20 MiB of head that
never ends; heads, bodies and nothing at all trickled or held open; idle
keep-alive connections; more idle connections than the descriptor limit.
Timeouts are shortened through the settings; the deadlines asserted are
generous, for a loaded machine.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from attack import live_server, sign_in
from factories import World
from live import LiveServer
from rawhttp import MIB, connect, head, push, rss_kib, trickle, wait_closed
from warrantysync import httpguard

Live = tuple[LiveServer, World, str]
SHORT = {"header_timeout": "1", "body_timeout": "1", "keep_alive_timeout": "1"}
SLACK = 6.0  # seconds a loaded machine may add to a 1 s deadline


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> Iterator[Live]:
    with live_server(tmp_path_factory.mktemp("conn"), migrated_template, **SHORT) as started:
        yield started


def _json_refusal(response: bytes, status: int, code: str) -> dict[str, str]:
    top, _, body = response.partition(b"\r\n\r\n")
    assert top.startswith(b"HTTP/1.1 %d " % status), response[:200]
    headers = top.decode("latin-1").lower()
    assert "content-type: application/json" in headers
    assert "connection: close" in headers
    assert "x-content-type-options: nosniff" in headers
    error: dict[str, str] = json.loads(body)
    assert error["error"] == code and error["message"], error
    return error


def test_the_guarded_protocol_is_the_one_in_use(guarded: Live) -> None:
    assert httpguard.protocol_class() is httpguard.GuardedHttpToolsProtocol
    # Stock uvicorn with httptools answers this 200; only the guard says 431.
    server = guarded[0]
    with connect(server.port) as sock:
        outcome = push(sock, head("GET", "/healthz", server.port, "X-Pad: " + "p" * 40_000))
    _json_refusal(outcome.response, 431, "header_too_large")


def test_the_guard_is_only_used_with_the_uvicorn_it_was_written_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert httpguard.supported("0.54.0")
    assert httpguard.supported("0.30.6")
    assert not httpguard.supported("0.55.0")
    assert not httpguard.supported("1.0.0")
    assert not httpguard.supported("0.29.0")
    assert not httpguard.supported("nonsense")
    limits = httpguard.Limits(max_header_bytes=4096, keep_alive_timeout=2.5)
    guarded = uvicorn.Config("warrantysync.app:app_from_env")
    httpguard.install(guarded, limits)
    assert guarded.http is httpguard.GuardedHttpToolsProtocol
    # Any other uvicorn: its h11 protocol, with the head cap it does offer.
    fallback = uvicorn.Config("warrantysync.app:app_from_env")
    logger = logging.getLogger("warrantysync.httpguard")
    logger.addHandler(caplog.handler)  # the app's logging does not propagate to root
    try:
        httpguard.install(fallback, limits, uvicorn_version="0.99.0")
    finally:
        logger.removeHandler(caplog.handler)
    assert fallback.http == "h11"
    assert fallback.h11_max_incomplete_event_size == 4096
    assert fallback.timeout_keep_alive == 3
    assert "uvicorn 0.99.0" in caplog.text and "no deadline" in caplog.text


@pytest.mark.parametrize("size", [64 * 1024, MIB, 16 * MIB], ids=["64KiB", "1MiB", "16MiB"])
def test_oversized_headers_are_431_before_they_are_sent(guarded: Live, size: int) -> None:
    server = guarded[0]
    start = head("GET", "/healthz", server.port)[:-2]  # the head stays open
    with connect(server.port) as sock:
        outcome = push(sock, start + b"X-Pad: ", then=b"a" * 65536, total=size)
        complete = push(sock, b"\r\n\r\n", deadline=0.1) if outcome.status is None else None
    response = outcome.response or (complete.response if complete else b"")
    _json_refusal(response, 431, "header_too_large")
    if size > 8 * MIB:
        assert outcome.sent < 8 * MIB, outcome.sent  # cut off long before the end (buffers)


def test_a_head_just_under_the_cap_is_served(guarded: Live) -> None:
    server = guarded[0]
    pad = "X-Pad: " + "p" * (32 * 1024 - 200)
    with connect(server.port) as sock:
        outcome = push(sock, head("GET", "/healthz", server.port, pad))
    assert outcome.status == 200, outcome.response[:200]


def test_unterminated_heads_do_not_hold_memory(guarded: Live) -> None:
    server = guarded[0]
    assert server.process is not None
    before = rss_kib(server.process.pid)

    def attack(_n: int) -> tuple[int | None, int]:
        with connect(server.port) as sock:
            start = head("GET", "/healthz", server.port)[:-2] + b"X-Pad: "
            outcome = push(sock, start, then=b"a" * 65536, total=20 * MIB)
            return outcome.status, outcome.sent

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(attack, range(10)))
    after = rss_kib(server.process.pid)
    assert [status for status, _sent in results] == [431] * 10, results
    assert after - before < 24 * 1024, (before, after)


def test_a_connection_that_sends_nothing_is_closed(guarded: Live) -> None:
    server = guarded[0]
    with connect(server.port) as sock:
        started = time.monotonic()
        closed, received = wait_closed(sock, 1 + SLACK)
    assert closed, "an idle connection was kept open"
    assert received == b""  # nobody asked, so nothing is answered
    assert time.monotonic() - started >= 0.9


def test_a_trickled_head_is_408(guarded: Live) -> None:
    server = guarded[0]
    with connect(server.port) as sock:
        started = time.monotonic()
        closed, received = trickle(
            sock, head("GET", "/healthz", server.port), every=0.25, within=1 + SLACK
        )
    assert closed, "a trickled head was waited for without end"
    assert 0.9 <= time.monotonic() - started <= 1 + SLACK
    _json_refusal(received, 408, "request_timeout")


def test_a_trickled_body_is_408_and_changes_nothing(guarded: Live) -> None:
    server, world, _url = guarded
    alice = sign_in(server.url, "alice@example.com")
    case = world.cases["laptop"]
    before = alice.http.get(f"/api/cases/{case}").json()
    body = json.dumps({"changes": {"notes": "trickled"}}).encode()
    start = head(
        "PATCH",
        f"/api/cases/{case}",
        server.port,
        f"Cookie: warrantysync_session={alice.token}",
        f"X-CSRF-Token: {alice.csrf}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    )
    with connect(server.port) as sock:
        sock.sendall(start)
        started = time.monotonic()
        closed, received = trickle(sock, body, every=0.25, within=1 + SLACK)
    assert closed
    assert 0.9 <= time.monotonic() - started <= 1 + SLACK
    _json_refusal(received, 408, "request_timeout")
    assert alice.http.get(f"/api/cases/{case}").json() == before
    alice.http.close()
    assert "Traceback" not in server.log()


def test_an_answer_given_before_the_body_says_it_ends_the_connection(guarded: Live) -> None:
    # A client may send its next request on a connection whose answer did not
    # say "close" (RFC 9112, section 9.3); this server reads nothing more on it,
    # so that request would be lost ("Server disconnected" in httpx).
    server, world, _url = guarded
    alice = sign_in(server.url, "alice@example.com")
    case = world.cases["laptop"]
    before = alice.http.get(f"/api/cases/{case}").json()
    body = json.dumps({"changes": {"notes": "forged"}}).encode()
    start = head(  # no CSRF token: 403 from the head alone
        "PATCH",
        f"/api/cases/{case}",
        server.port,
        f"Cookie: warrantysync_session={alice.token}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    )
    with connect(server.port) as sock:
        answer = push(sock, start)
        assert answer.status == 403, answer.response[:300]
        assert answer.header("connection") == "close"
        sock.sendall(body + head("GET", "/healthz", server.port))
        closed, after = wait_closed(sock, httpguard.LINGER + SLACK)
    assert closed
    assert after == b""
    assert alice.http.get(f"/api/cases/{case}").json() == before
    alice.http.close()


def test_idle_keep_alive_connections_are_closed(guarded: Live) -> None:
    server = guarded[0]
    with connect(server.port) as sock:
        outcome = push(sock, head("GET", "/healthz", server.port))
        assert outcome.status == 200
        started = time.monotonic()
        closed, _ = wait_closed(sock, 1 + SLACK)
    assert closed
    assert time.monotonic() - started >= 0.9


def test_the_event_stream_outlives_every_read_timeout(guarded: Live) -> None:
    server, world, _url = guarded
    alice = sign_in(server.url, "alice@example.com")
    path = f"/api/branches/{world.branches['downtown']}/events?client_id=long"
    heartbeats = 0
    with alice.http.stream("GET", path, timeout=15) as stream:
        assert stream.status_code == 200
        ends = time.monotonic() + 4  # four times each timeout; heartbeat is 1 s
        for line in stream.iter_lines():
            if line == "event: heartbeat":
                heartbeats += 1
            if time.monotonic() > ends:
                break
    assert heartbeats >= 2, heartbeats
    alice.http.close()


def _limits_of(pid: int) -> tuple[int, int]:
    text = Path(f"/proc/{pid}/limits").read_text()
    found = re.search(r"Max open files\s+(\d+)\s+(\d+)", text)
    assert found, text
    return int(found[1]), int(found[2])


@contextlib.contextmanager
def _idle_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            with contextlib.suppress(OSError):
                opened.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        yield opened
    finally:
        for sock in opened:
            sock.close()


def _healthz(url: str, within: float) -> int:
    ends = time.monotonic() + within
    while True:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{url}/healthz", timeout=1).status_code
        if time.monotonic() > ends:
            return 0
        time.sleep(0.2)


def test_the_descriptor_limit_is_raised_to_the_hard_limit(
    tmp_path: Path, migrated_template: Path
) -> None:
    with live_server(tmp_path, migrated_template, nofile=(256, 4096), header_timeout="60") as (
        server,
        *_,
    ):
        assert server.process is not None
        assert _limits_of(server.process.pid) == (4096, 4096)
        with _idle_connections(server.port, 400) as idle:
            assert len(idle) == 400
            time.sleep(1.5)  # let the server accept them all and tick once
            assert _healthz(server.url, within=SLACK) == 200
        assert "file descriptors running short" not in server.log()
        assert "file descriptor limit raised from 256 to 4096" in server.log()


def test_running_short_of_descriptors_is_logged_once_and_healthz_still_answers(
    tmp_path: Path, migrated_template: Path
) -> None:
    # Soft = hard: nothing to raise. A minute's header timeout: only the
    # shedding of idle connections can make room for the probe.
    with live_server(tmp_path, migrated_template, nofile=(160, 160), header_timeout="60") as (
        server,
        *_,
    ):
        with _idle_connections(server.port, 220):
            time.sleep(3.5)  # several watch ticks while the flood is on
            assert _healthz(server.url, within=SLACK) == 200
        log = server.log()
    warnings = [line for line in log.splitlines() if "file descriptors running short" in line]
    assert len(warnings) == 1, warnings  # rate-limited: once a minute at most
    assert "idle ones" in warnings[0]
