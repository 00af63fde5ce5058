"""Settings: every one documented, parsed as the contract says."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from warrantysync import Settings

ROOT = Path(__file__).resolve().parent.parent
# The names outside clients and operators rely on (README, "Configuration").
CONTRACT = {
    "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_ORIGINS", "TRUSTED_PROXIES",
    "SESSION_TTL", "LOCK_TTL", "LOCK_RENEW_MS", "DISCONNECT_GRACE", "HEARTBEAT_INTERVAL",
    "REPLAY_WINDOW", "DEBOUNCE_MS", "SYNC_INTERVAL_MS", "RECONNECT_DELAYS_MS",
    "MAX_STREAMS_PER_USER", "RATE_LIMIT_WRITES", "RATE_LIMIT_LOCKS", "RATE_LIMIT_LOGIN",
    "SHUTDOWN_GRACE", "LOG_FORMAT",
}  # fmt: skip


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [
        name for name in Settings.model_fields if f"`WARRANTYSYNC_{name.upper()}`" not in readme
    ]
    assert missing == []


def test_the_contract_settings_exist() -> None:
    assert {name.upper() for name in Settings.model_fields} >= CONTRACT


def test_environment_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARRANTYSYNC_SECRET_KEY", "k")
    monkeypatch.setenv("WARRANTYSYNC_RECONNECT_DELAYS_MS", "500, 1000,2000")
    monkeypatch.setenv("WARRANTYSYNC_ALLOWED_ORIGINS", "https://a.example,https://b.example")
    monkeypatch.setenv("WARRANTYSYNC_LOCK_TTL", "1.5")
    settings = Settings()
    assert settings.reconnect_delays_ms == [500, 1000, 2000]
    assert settings.allowed_origins == ["https://a.example", "https://b.example"]
    assert settings.lock_ttl == 1.5
    assert settings.renew_ms == 500  # LOCK_TTL / 3 by default
    assert settings.client_config()["LOCK_RENEW_MS"] == 500


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARRANTYSYNC_SECRET_KEY", "k")
    for name, value in [("LOCK_TTL", "0"), ("REDIS_URL", "ftp://x"), ("LOG_FORMAT", "xml")]:
        monkeypatch.setenv(f"WARRANTYSYNC_{name}", value)
        with pytest.raises(ValidationError):
            Settings()
        monkeypatch.delenv(f"WARRANTYSYNC_{name}")


def test_fast_paths_are_a_list_or_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARRANTYSYNC_SECRET_KEY", "k")
    assert Settings().fast_paths == ["direct", "one_trip"]
    for value, parsed in [("off", []), ("", []), ("one_trip", ["one_trip"])]:
        monkeypatch.setenv("WARRANTYSYNC_FAST_PATHS", value)
        assert Settings().fast_paths == parsed
    monkeypatch.setenv("WARRANTYSYNC_FAST_PATHS", "direct,turbo")
    with pytest.raises(ValidationError, match="turbo"):
        Settings()


def test_development_secret_is_generated_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("WARRANTYSYNC_SECRET_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    first = Settings().secret_key
    assert len(first) > 40
    assert Settings().secret_key == first
    assert (tmp_path / ".warrantysync-secret").stat().st_mode & 0o077 == 0


def test_public_url_is_read_as_the_origin_a_browser_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARRANTYSYNC_SECRET_KEY", "k")
    for value, expected in [
        ("", None),
        ("HTTPS://Warranty.Example.com:443/", ("https", "warranty.example.com")),
        ("https://warranty.example.com:8443", ("https", "warranty.example.com:8443")),
        ("http://[::1]:8080", ("http", "[::1]:8080")),
    ]:
        monkeypatch.setenv("WARRANTYSYNC_PUBLIC_URL", value)
        assert Settings().public_host == expected, value
    for value in [
        "https://warranty.example.com/app",
        "https://warranty.example.com/?x=1",
        "https://user@warranty.example.com",
        "ftp://warranty.example.com",
        "warranty.example.com",
    ]:
        monkeypatch.setenv("WARRANTYSYNC_PUBLIC_URL", value)
        with pytest.raises(ValidationError):
            Settings()
