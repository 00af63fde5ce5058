"""Settings: every knob, read from ``WARRANTYSYNC_*`` variables (README, "Configuration").

Durations are seconds (floats, so tests can shorten them); the browser-facing
timings keep the ``_MS`` names of the contract and are milliseconds.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, HttpUrl, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SECRET_FILE = Path(".warrantysync-secret")


def _dev_secret(path: Path = SECRET_FILE) -> str:
    """Read the development key, creating it (mode 0600) on first use."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        key = secrets.token_urlsafe(48)
        path.touch(mode=0o600)
        path.write_text(key + "\n")
        return key


FastPath = Literal["direct", "one_trip"]


def _all_fast_paths() -> list[FastPath]:
    return ["direct", "one_trip"]


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WARRANTYSYNC_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./warrantysync.db"
    database_timeout: float = Field(10, gt=0)
    redis_url: str | None = None
    secret_key: str = ""
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # No proxy by default: any local process could set X-Forwarded-For.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    public_url: HttpUrl | None = None
    session_ttl: float = Field(43200, gt=0)
    lock_ttl: float = Field(30, gt=0)
    lock_renew_ms: int | None = Field(None, gt=0)
    disconnect_grace: float = Field(5, ge=0)
    heartbeat_interval: float = Field(30, gt=0)
    replay_window: int = Field(10000, gt=0)
    debounce_ms: int = Field(1000, ge=0)
    sync_interval_ms: int = Field(60000, gt=0)
    reconnect_delays_ms: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [1000, 2000, 4000, 8000, 16000, 30000]
    )
    max_streams_per_user: int = Field(20, gt=0)
    max_locks_per_user: int = Field(5, gt=0)
    forced_release_cooldown: float = Field(60, ge=0)
    rate_limit_writes: str = "30/second;1200/minute"
    rate_limit_locks: str = "30/second"
    rate_limit_lock_requests: str = "20/minute"
    lock_request_timeout: float = Field(15, gt=0)
    rate_limit_login: str = "5/15minutes;50/15minutes"
    rate_limit_ip: str = "60/second;3000/minute"
    shutdown_grace: float = Field(10, ge=0)
    # The trash (services/trash.py): days a deleted case is kept, and how
    # often one node of the deployment looks for cases to purge.
    trash_retention_days: float = Field(30, gt=0)
    trash_purge_interval: float = Field(3600, gt=0)
    stream_buffer: int = Field(512, gt=0)
    send_timeout: float = Field(10, gt=0)
    log_format: Literal["text", "json"] = "text"
    # When set, GET /metrics wants "Authorization: Bearer <it>" (routes/health.py).
    metrics_token: SecretStr | None = None
    # Shortcuts through library internals that measured worth it; each also falls
    # back by itself when the installed library lacks what it needs
    # (docs/performance.md, "Transport fast paths"). "off": none.
    fast_paths: Annotated[list[FastPath], NoDecode] = Field(default_factory=_all_fast_paths)
    # SQLite: concurrent writers share one transaction and one COMMIT
    # (docs/performance.md, "Group commit"); off, each has its own.
    group_commit: bool = True
    # Connection limits (warrantysync/httpguard.py).
    max_header_bytes: int = Field(32 * 1024, ge=1024)
    header_timeout: float = Field(10, gt=0)
    body_timeout: float = Field(30, gt=0)
    keep_alive_timeout: float = Field(5, gt=0)
    # The CSV a manager may upload to import cases (web/routes/casecsv.py); the CLI has no cap.
    max_import_bytes: int = Field(32 * 1024 * 1024, ge=64 * 1024)

    @field_validator("allowed_origins", "trusted_proxies", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split(value)

    @field_validator("fast_paths", mode="before")
    @classmethod
    def _fast_paths(cls, value: object) -> object:
        return [] if isinstance(value, str) and value.strip() in ("", "off") else _split(value)

    @field_validator("reconnect_delays_ms", mode="before")
    @classmethod
    def _delays(cls, value: object) -> object:
        parts = _split(value)
        if isinstance(parts, list) and not parts:
            raise ValueError("needs at least one delay")
        return parts

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value in (None, "", "memory://"):
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"unsupported coordination backend {value!r}: use redis://")
        return value

    @field_validator("public_url", mode="before")
    @classmethod
    def _unset_if_empty(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("public_url")
    @classmethod
    def _origin_only(cls, value: HttpUrl | None) -> HttpUrl | None:
        if value is not None and (
            value.path not in (None, "/") or value.query or value.fragment or value.username
        ):
            raise ValueError(
                "give only the scheme, host and port browsers use, e.g."
                " https://warranty.example.com:8443 (the app is always served at /)"
            )
        return value

    @model_validator(mode="after")
    def _derived(self) -> Settings:
        if not self.secret_key:
            self.secret_key = _dev_secret()
        if self.lock_renew_ms is None:
            self.lock_renew_ms = max(1, int(self.lock_ttl * 1000 / 3))
        return self

    @property
    def renew_ms(self) -> int:
        assert self.lock_renew_ms is not None
        return self.lock_renew_ms

    @property
    def public_host(self) -> tuple[str, str] | None:
        """``(scheme, host[:port])`` of ``PUBLIC_URL`` as a browser's ``Origin`` writes them."""
        url = self.public_url
        if url is None:
            return None
        assert url.host is not None  # HttpUrl requires one
        default = {"http": 80, "https": 443}[url.scheme]
        port = "" if url.port in (None, default) else f":{url.port}"
        return url.scheme, f"{url.host}{port}"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def in_process(self) -> bool:
        """True when locks, fan-out and presence live in this process only."""
        return self.redis_url is None

    def client_config(self) -> dict[str, object]:
        """Timing constants handed to the browser in the page."""
        return {
            "DEBOUNCE_MS": self.debounce_ms,
            "SYNC_INTERVAL_MS": self.sync_interval_ms,
            "RECONNECT_DELAYS_MS": self.reconnect_delays_ms,
            "LOCK_RENEW_MS": self.renew_ms,
            "HEARTBEAT_MS": int(self.heartbeat_interval * 1000),
        }
