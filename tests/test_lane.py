"""The stream lane (web/lane.py): the event stream skips FastAPI's stack but
keeps everything the stack gave it — error answers, edge headers, the sliding
session cookie, the per-IP limit — and the stream's entry in the OpenAPI
document. The stream's events themselves are tested in test_streams.py.
"""

from __future__ import annotations

import asyncio

import httpx

from conftest import LiveFactory, login, make_settings
from factories import World, seed_world
from warrantysync.app import create_app
from warrantysync.web.deps import SESSION_COOKIE


def _edge_checked(response: httpx.Response, status: int, error: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    body: dict[str, object] = response.json()
    assert body["error"] == error and isinstance(body["message"], str)
    return body


async def test_refusals_are_the_usual_json_answers(client: httpx.AsyncClient, world: World) -> None:
    downtown, airport = world.branches["downtown"], world.branches["airport"]
    anonymous = await client.get(f"/api/branches/{downtown}/events")
    _edge_checked(anonymous, 401, "not_authenticated")
    assert anonymous.headers["www-authenticate"].startswith("Bearer")

    await login(client, "bob@example.com")  # a member of downtown only
    for raw in ("abc", "1.5", "-1", "+1", "%C2%B2", str(2**63), "9" * 40):
        body = _edge_checked(
            await client.get(f"/api/branches/{raw}/events"), 422, "validation_error"
        )
        assert body["field"] == "branch_id"
    for branch in (airport, 0, "9" * 18):
        _edge_checked(await client.get(f"/api/branches/{branch}/events"), 404, "not_found")
    body = _edge_checked(
        await client.get(f"/api/branches/{downtown}/events?client_id=no%20spaces"),
        422,
        "validation_error",
    )
    assert body["field"] == "client_id"


async def test_other_methods_and_paths_take_the_normal_way(
    client: httpx.AsyncClient, world: World
) -> None:
    await login(client, "alice@example.com")
    downtown = world.branches["downtown"]
    _edge_checked(await client.post(f"/api/branches/{downtown}/events", json={}), 404, "not_found")
    _edge_checked(await client.get(f"/api/branches/{downtown}/events/x"), 404, "not_found")
    cases = await client.get(f"/api/branches/{downtown}/cases")
    assert cases.status_code == 200


async def test_the_per_ip_limit_counts_stream_opens(db_url: str) -> None:
    app = create_app(make_settings(db_url, rate_limit_ip="2/minute"))
    async with app.router.lifespan_context(app):
        await seed_world(app.state.services.db)
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            statuses = [(await http.get("/api/branches/1/events")).status_code for _ in range(3)]
            assert statuses == [401, 401, 429]
            refused = await http.get("/api/branches/1/events")
            _edge_checked(refused, 429, "rate_limited")
            assert int(refused.headers["retry-after"]) >= 1


async def test_stream_opens_through_a_trusted_proxy_count_per_browser(db_url: str) -> None:
    # The lane skips the middleware stack, so it must see the forwarded client too:
    # else every browser behind nginx would share the proxy's per-IP budget.
    settings = make_settings(db_url, rate_limit_ip="2/minute", trusted_proxies=["10.0.0.10"])
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await seed_world(app.state.services.db)
        proxy = ("10.0.0.10", 41000)
        transport = httpx.ASGITransport(app=app, client=proxy)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            for browser in ("198.51.100.1", "198.51.100.2", "198.51.100.3"):
                headers = {"X-Forwarded-For": browser}
                statuses = [
                    (await http.get("/api/branches/1/events", headers=headers)).status_code
                    for _ in range(2)
                ]
                assert statuses == [401, 401], browser
            third = await http.get(
                "/api/branches/1/events", headers={"X-Forwarded-For": "198.51.100.1"}
            )
            _edge_checked(third, 429, "rate_limited")


async def test_openapi_still_describes_the_stream(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/api/openapi.json")).json()
    operation = schema["paths"]["/api/branches/{branch_id}/events"]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert operation["responses"]["default"]["content"]["application/json"]
    names = {p["name"] for p in operation["parameters"]}
    assert names == {"branch_id", "client_id", "last_event_id", "Last-Event-ID"}


async def test_a_live_stream_has_the_edge_headers_and_slides_the_cookie(
    live_factory: LiveFactory,
) -> None:
    server, world = live_factory(session_ttl="2")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await login(http, "alice@example.com")
        await asyncio.sleep(0.7)  # past a quarter of the TTL: the next request slides it
        path = f"/api/branches/{world.branches['downtown']}/events?client_id=lane"
        async with http.stream("GET", path) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert "frame-ancestors 'none'" in stream.headers["content-security-policy"]
            cookie = stream.headers["set-cookie"]
            assert cookie.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in cookie
            assert "Max-Age=2" in cookie
            async for line in stream.aiter_lines():
                if line == "event: ready":
                    break
