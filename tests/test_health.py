"""``/readyz``: ready, degraded, unavailable (docs/operations.md, "Health checks").

Database outages (stopped, frozen, unresolvable, refused password, a full
disk, a filesystem error) answering 503 are proven against real servers in
``faults/``; Redis away answering 200 ``degraded`` in ``test_redis_restart.py``.
Here: that the probe really writes, at most once a second however often it
is asked, and that a node shutting down is unready.
"""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import select

from warrantysync.app import begin_shutdown
from warrantysync.container import Services
from warrantysync.storage.db import PROBE_COUNTER
from warrantysync.storage.models import Counter


async def _probes(services: Services) -> int:
    async with services.db.read() as session:
        return int(
            await session.scalar(select(Counter.value).where(Counter.name == PROBE_COUNTER)) or 0
        )


async def test_ready_means_a_write_went_through(
    client: httpx.AsyncClient, services: Services
) -> None:
    assert await _probes(services) == 0
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok"}}
    assert await _probes(services) == 1


async def test_probes_in_the_same_second_share_one_write(
    client: httpx.AsyncClient, services: Services
) -> None:
    answers = await asyncio.gather(*(client.get("/readyz") for _ in range(20)))
    assert {a.status_code for a in answers} == {200}
    assert await _probes(services) == 1
    await asyncio.sleep(1.1)  # PROBE_FRESH has passed: the next caller probes again
    assert (await client.get("/readyz")).status_code == 200
    assert await _probes(services) == 2


async def test_a_node_shutting_down_is_unavailable(
    app_services: tuple[object, Services], client: httpx.AsyncClient
) -> None:
    begin_shutdown(app_services[0])  # type: ignore[arg-type]
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"] == {"database": "ok", "server": "shutting down"}
