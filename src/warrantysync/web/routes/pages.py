"""Server-rendered pages: login, the user's branches, the branch table shell."""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urljoin, urlsplit, urlunsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from ...casefields import client_table
from ...errors import NotFound, Unavailable
from ...jsonutil import dumps_str
from ...services.accounts import Principal
from ..deps import SESSION_COOKIE, Id, ServicesDep, check_origin, optional_principal, read_body
from ..version import client_version

templates = Jinja2Templates(directory=Path(__file__).parent.parent / "templates")
# The logout form carries one CSRF token; nothing legitimate comes near this.
FORM_LIMIT = 4096


class PageRoute(APIRoute):
    """A page whose database is away answers a browser with a page, not JSON.

    503 with ``Retry-After`` either way; a client that asks for HTML gets a
    short "temporarily unavailable" page that reloads itself after that
    many seconds (a meta refresh: the CSP allows no inline script).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_or_unavailable(request: Request) -> Response:
            try:
                return await handler(request)
            except Unavailable as exc:
                if "text/html" not in request.headers.get("accept", ""):
                    raise
                return templates.TemplateResponse(
                    request,
                    "unavailable.html",
                    {"retry_after": exc.retry_after},
                    status_code=503,
                    headers={"Retry-After": str(exc.retry_after)},
                )

        return page_or_unavailable


router = APIRouter(include_in_schema=False, route_class=PageRoute)


# Browsers drop tabs and newlines anywhere in a URL, trim spaces and control
# characters around it, read a backslash as "/" and "%2e" as ".":
# "/\t/evil.example/" is "//evil.example/", another host. No path this server
# sends to the login page contains any of them.
_UNSAFE_IN_NEXT = re.compile(r"[\x00-\x20\x7f\\]|%2e", re.IGNORECASE)


def safe_next(value: str | None) -> str:
    """The same-origin path ``value`` names after normalisation, else "/".

    The browser's twin is ``safeNext`` in static/js/nexturl.js; both are
    tested with the payloads of tests/js/next-payloads.json.
    """
    if not value or not value.startswith("/") or value.startswith("//"):
        return "/"
    if _UNSAFE_IN_NEXT.search(value):
        return "/"
    resolved = urlsplit(urljoin("http://origin.invalid", value))
    if resolved.netloc != "origin.invalid" or resolved.path.startswith("//"):
        return "/"
    return urlunsplit(("", "", resolved.path or "/", resolved.query, resolved.fragment))


def _to_login(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)


async def _principal(request: Request, services: ServicesDep) -> Principal | None:
    return await optional_principal(request, services)


def script_json(value: object) -> str:
    """JSON safe inside <script type="application/json">."""
    return dumps_str(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, services: ServicesDep, next: str | None = None) -> Response:
    if await _principal(request, services) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return templates.TemplateResponse(
        request, "login.html", {"next": safe_next(next), "demo": services.settings.is_sqlite}
    )


@router.get("/", response_class=HTMLResponse)
async def index(request: Request, services: ServicesDep) -> Response:
    principal = await _principal(request, services)
    if principal is None:
        return _to_login(request)
    branches = await services.accounts.branches_of(user_id=principal.user_id)
    return templates.TemplateResponse(
        request,
        "index.html",
        {
            "user": {"id": principal.user_id, "name": principal.name, "email": principal.email},
            "branches": branches,
            "csrf_token": principal.csrf_token or "",
        },
    )


@router.get("/branch/{branch_id}", response_class=HTMLResponse)
async def branch_page(branch_id: Id, request: Request, services: ServicesDep) -> Response:
    return await _table_page(request, services, branch_id=branch_id, case_id=None)


@router.get("/branch/{branch_id}/cases/{case_id}", response_class=HTMLResponse)
async def case_page(
    branch_id: Id, case_id: Id, request: Request, services: ServicesDep
) -> Response:
    """The branch's table with one case's panel open: a link to send a colleague."""
    return await _table_page(request, services, branch_id=branch_id, case_id=case_id)


def _not_found(request: Request, what: str) -> Response:
    return templates.TemplateResponse(request, "not_found.html", {"what": what}, status_code=404)


async def _table_page(
    request: Request, services: ServicesDep, *, branch_id: int, case_id: int | None
) -> Response:
    principal = await _principal(request, services)
    if principal is None:
        return _to_login(request)
    try:
        branch, role = await services.accounts.branch_access(
            user_id=principal.user_id, branch_id=branch_id
        )
    except NotFound:
        return _not_found(request, "branch")
    if case_id is not None:
        try:
            case_branch, _role = await services.accounts.case_access(
                user_id=principal.user_id, case_id=case_id
            )
        except NotFound:
            return _not_found(request, "case")
        if case_branch != branch.id:
            return _not_found(request, "case")
    config = {
        "branch_id": branch.id,
        "branch_name": branch.name,
        "branch_timezone": branch.timezone,
        "role": role.value,
        "user": {"id": principal.user_id, "name": principal.name, "email": principal.email},
        "csrf_token": principal.csrf_token or "",
        "branches": await services.accounts.branches_of(user_id=principal.user_id),
        "members": await services.accounts.members(branch_id=branch.id),
        # The field table (casefields.py) that static/js/fields.js answers from.
        "fields": client_table(),
        # The case whose panel the page opens (its own URL), or null.
        "open_case": case_id,
        # Compared with `ready`'s version; names the channel tabs share (tabs.js).
        "version": client_version(),
        **services.settings.client_config(),
    }
    return templates.TemplateResponse(
        request,
        "branch.html",
        {"branch": {"id": branch.id, "name": branch.name}, "config_json": script_json(config)},
    )


@router.get("/favicon.ico")
async def favicon() -> Response:
    # Browsers ask for it whatever the page links; answer instead of 404-logging.
    return RedirectResponse("/static/img/favicon.svg", status_code=301)


@router.post("/logout")
async def logout_form(request: Request, services: ServicesDep) -> Response:
    """Logout for the plain HTML form (no JavaScript needed)."""
    principal = await _principal(request, services)
    response = RedirectResponse("/login", status_code=303)
    if principal is not None and principal.session_id is not None:
        check_origin(request, services)
        form = parse_qs((await read_body(request, FORM_LIMIT)).decode("utf-8", "replace"))
        sent = (form.get("csrf_token") or [""])[0]
        if hmac.compare_digest(sent.encode(), (principal.csrf_token or "").encode()):
            await services.accounts.revoke_session(principal.session_id)
            response.delete_cookie(SESSION_COOKIE, path="/")
    return response
