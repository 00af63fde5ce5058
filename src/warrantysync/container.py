"""Everything one app instance owns, built in the lifespan (no import-time state)."""

from __future__ import annotations

from dataclasses import dataclass

from .config import Settings
from .services.accounts import Accounts
from .services.broker import Broker
from .services.cases import CaseService
from .services.lockrequests import LockRequests
from .services.locks import LockManager
from .services.metrics import Metrics
from .services.presence import Presence
from .services.ratelimit import RateLimits
from .services.rowpresence import RowPresence
from .services.streams import StreamConfig
from .services.trash import Trash
from .storage.db import Database


@dataclass
class Services:
    settings: Settings
    db: Database
    metrics: Metrics
    accounts: Accounts
    cases: CaseService
    broker: Broker
    locks: LockManager
    presence: Presence
    limits: RateLimits
    trash: Trash
    stream_config: StreamConfig  # what every event stream of the app is opened with
    lock_requests: LockRequests
    rows: RowPresence
