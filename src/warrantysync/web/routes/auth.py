"""Login, logout and the caller's identity."""

from __future__ import annotations

import contextlib
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field, ValidationError

from ...errors import InvalidCredentials, RateLimited, ValidationFailed
from ...services.accounts import PASSWORD_MAX_LENGTH
from ..deps import (
    SESSION_COOKIE,
    CurrentUser,
    RawJson,
    ServicesDep,
    Writer,
    check_origin,
    client_ip,
    read_body,
    require_json,
)
from ..errors import json_response
from ..inputs import parse_object
from ..security import session_cookie_header

router = APIRouter(prefix="/api")


class LoginBody(BaseModel):
    email: str = Field(max_length=254)
    password: str = Field(max_length=PASSWORD_MAX_LENGTH)


Body = TypeVar("Body", bound=BaseModel)


def parse_body(model: type[Body], raw: bytes) -> Body:
    """``raw`` (read through the capped reader) as ``model``, or 422 naming the member."""
    try:
        return model.model_validate(parse_object(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise ValidationFailed(
            f"{where}: {first['msg']}", field=where, rule=first["type"]
        ) from None


@router.post("/auth/login")
async def login(request: Request, services: ServicesDep) -> Response:
    # Anonymous, so the body is read only after the Origin check, and only
    # through the cap: FastAPI would read a declared body whole first.
    check_origin(request, services)
    raw = await read_body(request)
    require_json(request)
    body = parse_body(LoginBody, raw)
    email = body.email.strip().lower()
    ip = client_ip(request)
    await services.limits.check_login(email, ip)
    try:
        user = await services.accounts.check_password(email=email, password=body.password)
    except InvalidCredentials:
        # A failure that uses up the allowance is still answered 401; the
        # next attempt is the one refused.
        with contextlib.suppress(RateLimited):
            await services.limits.login_failed(email, ip)
        raise
    opened = await services.accounts.open_session(user)
    response = json_response(
        200,
        {
            "user": {"id": user.id, "name": user.name, "email": user.email},
            "csrf_token": opened.csrf_token,
        },
    )
    response.raw_headers.append(
        session_cookie_header(
            opened.token,
            max_age=services.settings.session_ttl,
            secure=request.url.scheme == "https",
        )
    )
    return response


class PasswordBody(BaseModel):
    # Longer than any password may be, so the policy (not this) names the rule.
    current_password: str = Field(max_length=4 * PASSWORD_MAX_LENGTH)
    new_password: str = Field(max_length=4 * PASSWORD_MAX_LENGTH)


@router.post("/auth/password")
async def change_password(
    raw: RawJson, request: Request, principal: Writer, services: ServicesDep
) -> Response:
    """A new password for the caller; every other session of theirs ends."""
    body = parse_body(PasswordBody, raw)
    ip = client_ip(request)
    # Guessing the current password is guessing a login: same budget, same 429.
    await services.limits.check_login(principal.email, ip)
    try:
        ended = await services.accounts.change_password(
            principal, current_password=body.current_password, new_password=body.new_password
        )
    except InvalidCredentials:
        with contextlib.suppress(RateLimited):
            await services.limits.login_failed(principal.email, ip)
        raise ValidationFailed(
            "current_password: is not your current password",
            field="current_password",
            rule="incorrect",
        ) from None
    return json_response(200, {"sessions_ended": ended})


@router.post("/auth/logout", status_code=204)
async def logout(principal: Writer, services: ServicesDep) -> Response:
    if principal.session_id is not None:
        await services.accounts.revoke_session(principal.session_id)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/me")
async def me(principal: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    return {
        "id": principal.user_id,
        "name": principal.name,
        "email": principal.email,
        "csrf_token": principal.csrf_token,
        "branches": await services.accounts.branches_of(user_id=principal.user_id),
    }
