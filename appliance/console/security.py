"""Who may do what: session cookies or bearer tokens, roles per route, CSRF on every POST.

Each console and API route carries ``opt={"role": ...}`` ("viewer" when absent); one guard
authenticates the request, checks the role and, for a browser session, the CSRF token (a form
field ``_csrf`` or an ``X-CSRF-Token`` header, compared with the session's own). Bearer-token
requests need no CSRF token: a browser never attaches one by itself.
"""

from __future__ import annotations

import secrets
from typing import Any

from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from appliance.auth import Principal
from appliance.config import Settings
from appliance.console.state import console_of

SESSION_COOKIE = "appliance_session"
LOGIN_CSRF_COOKIE = "appliance_login_csrf"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class CsrfRefused(PermissionDeniedException):
    """A state-changing request from a session without the session's CSRF token."""


def bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    scheme, _, value = connection.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


# The operator's configured token (APPLIANCE_API_TOKEN, else <data>/local-api-token) is the one
# credential that exists before any user does: it reads and manages everything, as an admin.
CONFIGURED_TOKEN = Principal(name="configured API token", role="admin", via="token")


async def authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    console = console_of(connection)
    if token := bearer(connection):
        configured = connection.app.state.runtime.api_token
        if configured and secrets.compare_digest(token.encode(), configured.encode()):
            return CONFIGURED_TOKEN
        return await console.accounts(lambda a: a.token_principal(token))
    if cookie := connection.cookies.get(SESSION_COOKIE):
        return await console.accounts(lambda a: a.session_principal(cookie))
    return None


async def check_csrf(connection: ASGIConnection[Any, Any, Any, Any], expected: str) -> None:
    given = connection.headers.get("x-csrf-token", "")
    if not given and isinstance(connection, Request):
        content_type = connection.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            given = str((await connection.form()).get("_csrf", ""))
    if not given or not secrets.compare_digest(given, expected):
        raise CsrfRefused("missing or wrong CSRF token: reload the page and try again")


async def access_guard(connection: ASGIConnection[Any, Any, Any, Any],
                       handler: BaseRouteHandler) -> None:
    principal = await authenticate(connection)
    if principal is None:
        raise NotAuthorizedException("log in first, or send an API token")
    connection.state.principal = principal  # also for the error page's navigation
    if handler.opt.get("role", "viewer") == "admin" and not principal.is_admin:
        raise PermissionDeniedException("admins only")
    if connection.scope.get("method") in UNSAFE and principal.via == "session":
        await check_csrf(connection, principal.csrf)


def principal_of(request: Request[Any, Any, Any]) -> Principal:
    return request.state.principal


def secure_cookies(settings: Settings) -> bool:
    """Secure cookies whenever the console is reached over HTTPS (a browser would not send a
    Secure cookie back over plain http on a LAN install)."""
    return settings.public_base_url.startswith("https://")


def cookie(settings: Settings, key: str, value: str, max_age: int | None,
           path: str = "/") -> Cookie:
    return Cookie(key=key, value=value, max_age=max_age, path=path, httponly=True,
                  secure=secure_cookies(settings), samesite="lax")


def clear_cookie(response: Response[Any], settings: Settings, key: str) -> None:
    response.set_cookie(cookie(settings, key, "", 0))


def client_address(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


def safe_next(target: str) -> str:
    """Only a path on this site: never an open redirect."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/console/calls"
