"""Lock invariants under random interleavings (hypothesis, fake clock).

A model of who should hold each field is kept beside the real LockManager;
after every step: at most one owner can write a field with a token, the
snapshot matches the model, a token is never issued twice, a renewal keeps
its token, and each field's events alternate acquired / released, so every
lock is announced released exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from warrantysync.errors import Forbidden, LockConflict, LockLost
from warrantysync.services.locks import LockBackend, LockManager, MemoryLockBackend, Owner

T = TypeVar("T")
TTL = 10.0
CASE = 1
BRANCH = 1
OWNERS = [Owner(1, "Alice", "a1"), Owner(1, "Alice", "a2"), Owner(2, "Bob", "b1")]
FIELDS = ["notes", "issue"]

owners = st.sampled_from(OWNERS)
fields = st.sampled_from(FIELDS)


def make_backend() -> LockBackend:
    """The backend under test; a Redis variant subclasses the machine, overriding ``backend``."""
    return MemoryLockBackend()


@dataclass
class Held:
    owner: Owner
    token: str
    expires_at: float


class LockMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.now = 1000.0
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.seen = 0
        self.backend = make_backend()
        self.locks = LockManager(
            self.backend, ttl=TTL, publish=self._publish, clock=lambda: self.now
        )
        self.model: dict[str, Held] = {}
        self.issued: set[str] = set()
        self.last_token: dict[tuple[Owner, str], str] = {}
        self.open: dict[str, bool] = dict.fromkeys(FIELDS, False)
        self.expect_released: list[tuple[str, str]] = []

    async def _publish(
        self,
        branch_id: int,
        kind: str,
        payload: dict[str, Any],
        *,
        owner: tuple[int, dict[str, Any]] | None = None,
    ) -> None:
        assert branch_id == BRANCH
        # Everyone sees the lock without its client id; its own user's streams with it.
        assert owner is not None
        own = owner[1].get("lock", owner[1])
        assert payload.get("lock", payload)["client_id"] is None and own["client_id"]
        assert owner[0] == own["user"]["id"]
        self.events.append((kind, payload))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.locks.close())
        self.loop.close()

    def live(self, field: str) -> Held | None:
        held = self.model.get(field)
        return held if held is not None and held.expires_at > self.now else None

    def drop(self, field: str, reason: str) -> None:
        del self.model[field]
        self.expect_released.append((field, reason))

    @rule(owner=owners, field=fields)
    def acquire(self, owner: Owner, field: str) -> None:
        held = self.live(field)
        if held is not None and held.owner != owner:
            try:
                self.run(
                    self.locks.acquire(case_id=CASE, branch_id=BRANCH, field=field, owner=owner)
                )
            except LockConflict as exc:
                same_user = held.owner.user_id == owner.user_id
                seen = exc.extra["lock"]["client_id"]
                assert seen == (held.owner.client_id if same_user else None)
                return
            raise AssertionError("two owners for one field")
        if field in self.model and held is None:
            self.drop(field, "expired")
        lock = self.run(
            self.locks.acquire(case_id=CASE, branch_id=BRANCH, field=field, owner=owner)
        )
        assert lock.expires_at == self.now + TTL
        if held is not None:
            assert lock.token == held.token, "a renewal must keep its token"
            held.expires_at = lock.expires_at
            return
        assert lock.token not in self.issued, "token issued twice"
        self.issued.add(lock.token)
        self.last_token[owner, field] = lock.token
        self.model[field] = Held(owner, lock.token, lock.expires_at)

    @rule(owner=owners, field=fields, force=st.booleans())
    def release(self, owner: Owner, field: str, force: bool) -> None:
        held = self.model.get(field)
        mine = held is not None and held.owner == owner
        call = self.locks.release(
            case_id=CASE,
            branch_id=BRANCH,
            field=field,
            user_id=owner.user_id,
            client_id=owner.client_id,
            force=force,
        )
        if not force and not mine and self.live(field) is not None:
            try:
                self.run(call)
            except Forbidden:
                return
            raise AssertionError("released someone else's lock")
        self.run(call)
        if held is not None and (force or mine):
            self.drop(field, "released" if mine else "forced")

    @rule(seconds=st.sampled_from([0.5, 1.0, TTL / 2, TTL - 1, TTL, TTL + 1]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def sweep(self) -> None:
        count = self.run(self.locks.sweep())
        gone = [f for f, held in self.model.items() if held.expires_at <= self.now]
        assert count == len(gone)
        for field in sorted(gone, key=lambda f: self.model[f].expires_at):
            self.drop(field, "expired")

    @rule(owner=owners)
    def disconnect(self, owner: Owner) -> None:
        count = self.run(
            self.locks.release_client(
                branch_id=BRANCH, user_id=owner.user_id, client_id=owner.client_id
            )
        )
        gone = [f for f, held in self.model.items() if held.owner == owner]
        assert count == len(gone)
        for field in gone:
            self.drop(field, "disconnected")

    @precondition(lambda self: bool(self.last_token))
    @rule(data=st.data())
    def write(self, data: st.DataObject) -> None:
        owner, field = data.draw(st.sampled_from(sorted(self.last_token, key=repr)))
        token = self.last_token[owner, field]
        held = self.live(field)
        call = self.locks.check_write(
            case_id=CASE,
            fields=[field],
            user_id=owner.user_id,
            client_id=owner.client_id,
            tokens={field: token},
        )
        if held is not None and held.owner != owner:
            expected: type[Exception] | None = LockConflict
        elif held is not None and held.token == token:
            expected = None
        else:
            expected = LockLost
        try:
            self.run(call)
        except (LockConflict, LockLost) as exc:
            assert type(exc) is expected, (type(exc), expected)
        else:
            assert expected is None, f"write passed, expected {expected}"

    @invariant()
    def one_writer_per_field(self) -> None:
        for field in FIELDS:
            writers = 0
            for (owner, f), token in self.last_token.items():
                if f != field:
                    continue
                try:
                    self.run(
                        self.locks.check_write(
                            case_id=CASE,
                            fields=[field],
                            user_id=owner.user_id,
                            client_id=owner.client_id,
                            tokens={field: token},
                        )
                    )
                except (LockConflict, LockLost):
                    continue
                writers += 1
            assert writers <= 1

    @invariant()
    def snapshot_matches_model(self) -> None:
        snapshot = self.run(self.locks.snapshot(branch_id=BRANCH))
        actual = {x["field"]: (x["user"]["id"], x["client_id"]) for x in snapshot}
        expected = {
            f: (h.owner.user_id, h.owner.client_id)
            for f in FIELDS
            if (h := self.live(f)) is not None
        }
        assert actual == expected

    @invariant()
    def events_alternate(self) -> None:
        released: list[tuple[str, str]] = []
        for kind, payload in self.events[self.seen :]:
            held = kind in ("lock-acquired", "lock-renewed")
            field = payload["lock"]["field"] if held else payload["field"]
            assert "token" not in payload and "token" not in payload.get("lock", {})
            if kind == "lock-renewed":
                assert self.open[field], f"{field} renewed while free"
            elif kind == "lock-acquired":
                assert not self.open[field], f"{field} acquired twice without a release"
                self.open[field] = True
            else:
                assert self.open[field], f"{field} released twice"
                self.open[field] = False
                released.append((field, payload["reason"]))
        self.seen = len(self.events)
        assert sorted(released) == sorted(self.expect_released)
        self.expect_released = []


LockMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestLocks = LockMachine.TestCase
