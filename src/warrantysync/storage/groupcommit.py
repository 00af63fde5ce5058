"""Group commit: concurrent SQLite writers share one transaction and one ``COMMIT``.

With ``synchronous=FULL`` every ``COMMIT`` is an fsync (docs/performance.md,
"Durable commits"), and SQLite has one writer at a time: writers that each
begin their own ``BEGIN IMMEDIATE`` queue in SQLite's busy handler, which
sleeps and retries instead of waking them in turn. Here writers queue
in-process instead, in arrival order (``_Turns``), on one dedicated
connection: the writer whose turn it is runs its block inside the open
transaction (``_Batch``) and then, while the batch is young and others
wait, hands its turn to the next, who joins the same transaction. When the
batch ends, one ``COMMIT`` makes all of it durable, and only then does any of
its writers return — so a 200 still means "on the disk".

Each writer after the first runs in a ``SAVEPOINT`` of its own, so a writer
whose block raises (a domain error, a constraint) undoes only its changes.
A failure of the database itself inside a block, a transaction SQLite ended
by itself, or a failed ``COMMIT`` fails the whole batch: every writer in it
gets the failure (``failures.SharedFailure``, 503 at the edge) and the
connection is replaced. Why and what it costs: docs/performance.md,
"Group commit".

A write opened inside another by the same task would wait for a turn its
own block holds, until the database timeout; it raises ``RuntimeError`` at
once instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from . import failures

WINDOW = 0.005  # seconds a batch takes in new writers after its first began
MAX_MEMBERS = 64
# The task whose block holds the turn, as seen from that block's context.
_HOLDER: contextvars.ContextVar[asyncio.Task[object] | None] = contextvars.ContextVar(
    "group_commit_holder", default=None
)


class _Turns:
    """One holder at a time, the others served in arrival order."""

    def __init__(self) -> None:
        self._held = False
        self._queue: deque[asyncio.Future[None]] = deque()

    def waiting(self) -> int:
        return sum(1 for waiter in self._queue if not waiter.done())

    async def take(self, *, hand_on: Callable[[], None]) -> None:
        """Wait for the turn.

        Cancelled when the turn had just been handed over, the caller holds
        it without ever running: ``hand_on()`` passes it on, or the turns
        would stop for good.
        """
        if not self._held and not self.waiting():
            self._held = True
            return
        waiter = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                hand_on()
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._queue.remove(waiter)

    def give(self) -> None:
        """Hand the turn to the next waiter, or free it when nobody waits."""
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._held = False


class _Batch:
    """The open transaction on the writer connection and the writers in it."""

    def __init__(self, conn: AsyncConnection, started: float) -> None:
        self.conn = conn
        self.started = started
        self.members = 0
        # Set when a member broke the transaction: what every member fails with.
        self.broken: BaseException | None = None
        # The only member rolled the whole transaction back: nothing to commit.
        self.empty = False
        self.durable: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Marks the outcome as seen even if no member is left to await it.
        self.durable.add_done_callback(lambda done: done.cancelled() or done.exception())


class GroupCommit:
    """Writers' transactions on one SQLite connection, committed together.

    ``on_commit(members)`` is called after every durable ``COMMIT`` with the
    number of writers it carried (``warrantysync_sqlite_commit_writers``).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        window: float = WINDOW,
        max_members: int = MAX_MEMBERS,
        on_commit: Callable[[int], object] | None = None,
    ) -> None:
        self._engine = engine.execution_options(sqlite_immediate=True)
        self.window = window
        self.max_members = max_members
        self.on_commit = on_commit
        self._turns = _Turns()
        self._conn: AsyncConnection | None = None
        self._batch: _Batch | None = None
        self._ending: asyncio.Task[None] | None = None
        self.closed = False

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session in the shared transaction; returns once that transaction is durable."""
        task = asyncio.current_task()
        if task is not None and _HOLDER.get() is task:
            raise RuntimeError("a write inside a write: its turn would never come")
        await self._take_turn()
        try:
            batch = self._batch or await self._open()
        except BaseException:
            self._turns.give()
            raise
        batch.members += 1
        first = batch.members == 1
        session = AsyncSession(
            bind=batch.conn,
            join_transaction_mode="rollback_only" if first else "create_savepoint",
            expire_on_commit=False,
        )
        failed: BaseException | None = None
        holding = _HOLDER.set(task)
        try:
            yield session
            await session.commit()  # a flush; a later member's RELEASE SAVEPOINT
        except BaseException as exc:
            failed = exc
            raise
        finally:
            _HOLDER.reset(holding)
            try:
                await self._leave(batch, session, failed, first=first)
            finally:
                self._pass_turn(batch)
        try:
            await asyncio.shield(batch.durable)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            raise failures.SharedFailure(_failure_of(exc)) from exc

    async def close(self) -> None:
        """Wait for a batch that is ending, then drop the connection; no new batch begins."""
        self.closed = True
        if self._ending is not None and not self._ending.done():
            # Shielded: a caller's deadline must not interrupt a COMMIT.
            await asyncio.shield(self._ending)
        if self._conn is not None and self._batch is None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await conn.close()

    async def _take_turn(self) -> None:
        await self._turns.take(hand_on=self._hand_on)

    def _hand_on(self) -> None:
        # Handed the turn to join the open batch, or to begin the next one.
        if self._batch is not None:
            self._pass_turn(self._batch)
        else:
            self._turns.give()

    async def _open(self) -> _Batch:
        if self.closed:
            raise RuntimeError("the database is closed")
        try:
            if self._conn is None:
                self._conn = await self._engine.connect()
            await self._conn.begin()
        except BaseException:
            await self._discard()
            raise
        self._batch = _Batch(self._conn, asyncio.get_running_loop().time())
        return self._batch

    async def _leave(
        self, batch: _Batch, session: AsyncSession, failed: BaseException | None, *, first: bool
    ) -> None:
        """Undo a failed member's changes; mark the batch broken where that cannot be done."""
        try:
            if failed is not None:
                if failures.classify(failed) is not None:
                    batch.broken = batch.broken or failed
                # The first member's rollback is the whole transaction's; a
                # later member's, its own SAVEPOINT's.
                await session.rollback()
            await session.close()
        except BaseException as exc:
            batch.broken = batch.broken or exc
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        if batch.broken is None and not _in_transaction(batch.conn):
            if first and failed is not None:
                batch.empty = True
            else:
                batch.broken = RuntimeError("SQLite ended the shared transaction by itself")

    def _pass_turn(self, batch: _Batch) -> None:
        """Let the next writer join ``batch``, or end it and let the next one begin anew."""
        young = asyncio.get_running_loop().time() - batch.started < self.window
        if (
            young
            and batch.broken is None
            and not batch.empty
            and batch.members < self.max_members
            and self._turns.waiting()
        ):
            self._turns.give()
            return
        self._batch = None
        self._ending = asyncio.ensure_future(self._end(batch))

    async def _end(self, batch: _Batch) -> None:
        try:
            failure = batch.broken
            if failure is None and not batch.empty:
                try:
                    await batch.conn.commit()
                except BaseException as exc:
                    failure = exc
            if failure is not None:
                await self._roll_back()
                batch.durable.set_exception(failure)
            else:
                if batch.empty:
                    await batch.conn.rollback()
                batch.durable.set_result(None)
                if self.on_commit is not None and not batch.empty:
                    self.on_commit(batch.members)
        finally:
            if not batch.durable.done():
                batch.durable.set_exception(RuntimeError("the batch's end was interrupted"))
            self._turns.give()

    async def _roll_back(self) -> None:
        """End a failed transaction; keep the connection only if SQLite confirms it ended.

        After a full disk or an I/O error SQLite may or may not have rolled
        back by itself, and a failed COMMIT (a deferred constraint) leaves the
        transaction open; SQLite's answer to all of them is a ROLLBACK
        (sqlite.org/lang_transaction.html, "Response To Errors Within A
        Transaction"), which the pool would not send after a failed COMMIT.
        The connection stays rather than being closed: closing the process's
        last connection deletes the WAL, which on a full disk frees its space
        for the next few writes (docs/performance.md, "Group commit").
        """
        conn = self._conn
        if conn is None:
            return
        try:
            # Also detaches a transaction whose COMMIT failed, which SQLAlchemy
            # counts as ended (and sends no ROLLBACK for); SQLite may not.
            await conn.rollback()
            await conn.run_sync(_driver_rollback)
            if _in_transaction(conn, driver_only=True):
                raise RuntimeError("SQLite kept the failed transaction open")
        except Exception:
            await self._discard()

    async def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()


def _driver_rollback(sync_conn: Connection) -> None:
    sync_conn.connection.dbapi_connection.rollback()  # type: ignore[union-attr]


def _in_transaction(conn: AsyncConnection, *, driver_only: bool = False) -> bool:
    """Whether SQLite itself (not only SQLAlchemy) has the transaction open."""
    if not driver_only and not conn.in_transaction():
        return False
    driver = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
    return bool(driver.in_transaction)  # type: ignore[union-attr]


def _failure_of(exc: BaseException) -> failures.Failure:
    # A failure of the database names its kind; anything else that failed the
    # shared COMMIT (a deferred constraint, a transaction SQLite ended) is
    # none of the other writers' doing, and trying again is what they should do.
    return failures.classify(exc) or failures.Failure.BUSY
