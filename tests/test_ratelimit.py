"""Rate limits on the in-process storage of ``limits``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import pytest

from warrantysync.errors import RateLimited
from warrantysync.services.metrics import Metrics
from warrantysync.services.ratelimit import RateLimits, parse_setting, storage_uri

Factory = Callable[..., RateLimits]


@pytest.fixture
async def make() -> AsyncIterator[Factory]:
    made: list[RateLimits] = []

    def factory(**overrides: object) -> RateLimits:
        options: dict[str, object] = {
            "storage_url": None,
            "writes": "3/second;5/minute",
            "locks": "2/minute",
            "login": "5/15minutes;8/15minutes",
        }
        options.update(overrides)
        limits = RateLimits(**options)  # type: ignore[arg-type]
        made.append(limits)
        return limits

    yield factory
    for limits in made:
        await limits.close()


async def test_writes_limit_raises_with_retry_after(make: Factory) -> None:
    metrics = Metrics()
    limits = make(metrics=metrics)
    for _ in range(3):
        await limits.hit_write(1)
    with pytest.raises(RateLimited) as refused:
        await limits.hit_write(1)
    assert refused.value.retry_after == 1
    assert refused.value.code == "rate_limited"
    await limits.hit_write(2)  # per user
    value = metrics.registry.get_sample_value(
        "warrantysync_rate_limited_total", {"scope": "writes"}
    )
    assert value == 1


async def test_every_limit_of_a_setting_holds(make: Factory) -> None:
    limits = make(writes="10/second;2/minute")
    await limits.hit_write(1)
    await limits.hit_write(1)
    with pytest.raises(RateLimited) as refused:
        await limits.hit_write(1)
    assert 50 <= refused.value.retry_after <= 60


async def test_lock_limit_is_separate(make: Factory) -> None:
    limits = make()
    await limits.hit_lock(1)
    await limits.hit_lock(1)
    with pytest.raises(RateLimited, match="too many lock requests"):
        await limits.hit_lock(1)
    await limits.hit_write(1)


async def test_off_disables(make: Factory) -> None:
    limits = make(writes="off", locks="OFF", login="off")
    for _ in range(50):
        await limits.hit_write(1)
        await limits.hit_lock(1)
        await limits.login_failed("a@example.com", "10.0.0.1")
    await limits.check_login("a@example.com", "10.0.0.1")


async def test_login_limited_after_five_failures(make: Factory) -> None:
    limits = make()
    for _ in range(5):
        await limits.check_login("alice@example.com", "10.0.0.1")
        await limits.login_failed("alice@example.com", "10.0.0.1")
    # Even the right password is refused now: the route asks before checking it.
    with pytest.raises(RateLimited) as refused:
        await limits.check_login("alice@example.com", "10.0.0.1")
    assert 800 <= refused.value.retry_after <= 900
    # Accounts are matched case-insensitively, and from any address.
    with pytest.raises(RateLimited):
        await limits.check_login(" Alice@Example.COM", "10.9.9.9")
    await limits.check_login("bob@example.com", "10.0.0.2")


async def test_refused_attempts_do_not_count(make: Factory) -> None:
    limits = make()
    for _ in range(20):
        await limits.check_login("alice@example.com", "10.0.0.1")
    for _ in range(4):
        await limits.login_failed("alice@example.com", "10.0.0.1")
    await limits.check_login("alice@example.com", "10.0.0.1")
    await limits.login_failed("alice@example.com", "10.0.0.1")
    for _ in range(5):
        with pytest.raises(RateLimited):
            await limits.check_login("alice@example.com", "10.0.0.1")
    # The account limit holds at 5 counted failures: the IP has seen only 5 of its 8.
    await limits.check_login("carol@example.com", "10.0.0.1")


async def test_login_limit_per_ip(make: Factory) -> None:
    limits = make(login="5/15minutes;3/15minutes")
    for email in ("a@example.com", "b@example.com", "c@example.com"):
        await limits.login_failed(email, "10.0.0.1")
    with pytest.raises(RateLimited):
        await limits.check_login("d@example.com", "10.0.0.1")
    await limits.check_login("d@example.com", "10.0.0.2")


async def test_single_login_item_limits_accounts_only(make: Factory) -> None:
    limits = make(login="2/15minutes")
    for i in range(10):
        await limits.login_failed(f"user{i}@example.com", "10.0.0.1")
    await limits.check_login("new@example.com", "10.0.0.1")
    await limits.login_failed("new@example.com", "10.0.0.1")
    await limits.login_failed("new@example.com", "10.0.0.1")
    with pytest.raises(RateLimited):
        await limits.check_login("new@example.com", "10.0.0.1")


def test_settings_are_validated() -> None:
    assert parse_setting("off") == []
    assert len(parse_setting("30/second;1200/minute")) == 2
    with pytest.raises(ValueError, match="invalid rate limit"):
        parse_setting("thirty per second")
    with pytest.raises(ValueError, match="per account"):
        RateLimits(storage_url=None, writes="off", locks="off", login="1/minute;2/minute;3/minute")


def test_storage_uri() -> None:
    assert storage_uri(None) == "async+memory://"
    assert storage_uri("redis://r:6379/1") == "async+redis://r:6379/1"
    assert storage_uri("rediss://r") == "async+rediss://r"
    assert storage_uri("unix:///run/redis.sock") == "async+redis+unix:///run/redis.sock"
    with pytest.raises(ValueError, match="'mongodb'"):
        storage_uri("mongodb://x")


async def test_unreachable_storage_lets_requests_through_and_warns_once(
    make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis away: every request of the outage would otherwise write the same warning."""
    from servers import free_port

    limits = make(storage_url=f"redis://127.0.0.1:{free_port()}/0", ip="1/minute")
    with caplog.at_level(logging.WARNING, logger="warrantysync.services.ratelimit"):
        for _ in range(5):
            await limits.hit_ip("192.0.2.7")
            await limits.hit_write(1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "unreachable" in warnings[0]
