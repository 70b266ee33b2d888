"""The dashboard at /ui (SPEC §10): a sign-in form, one server-rendered page, and its script and
styles, which ship inside the package (nothing from a CDN: it works offline).

Signing in exchanges the API token for a session cookie that scripts cannot read (HttpOnly,
SameSite=Strict): an HMAC of its expiry keyed by the token, so every worker and replica accepts it
and changing the token ends every session. The token itself is never in a URL or a cookie. The
page's script reads /v1 with that cookie (api.BearerAuth takes it for GET), and follows the live
feed on /v1/stream.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import html
from pathlib import Path
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.clock import Clock
from providers import EVENT_PROVIDERS, PROVIDERS

ASSETS = Path(__file__).parent / "assets"
COOKIE = "status_gateway_session"
SESSION_SECONDS = 12 * 3600
MAX_FORM_BYTES = 4096


def session_value(token: str, expires: int) -> str:
    mac = hmac.new(token.encode(), f"status-gateway-ui\x1f{expires}".encode(), hashlib.sha256).hexdigest()
    return f"{expires}.{mac}"


def valid_session(token: str, value: str | None, now: float) -> bool:
    if not value or "." not in value:
        return False
    expires, _, _ = value.partition(".")
    if not expires.isdigit() or int(expires) < now:
        return False
    return hmac.compare_digest(value, session_value(token, int(expires)))


def ui_routes(token: str, clock: Clock, *, https: bool = False) -> list[Route | Mount]:
    """`https`: the gateway's public URL is https (a proxy may end TLS before it): the cookie is Secure."""
    async def page(request: Request) -> Response:
        if not valid_session(token, request.cookies.get(COOKIE), clock().timestamp()):
            return RedirectResponse("/ui/login", status_code=303)
        return HTMLResponse(_page("dashboard.html"), headers=SECURITY_HEADERS)

    async def login_form(request: Request) -> Response:
        return HTMLResponse(_page("login.html").replace("{error}", ""), headers=SECURITY_HEADERS)

    async def login(request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                break
        given = parse_qs(body[:MAX_FORM_BYTES].decode("utf-8", "replace")).get("token", [""])[0]
        if not hmac.compare_digest(given.encode(), token.encode()):
            error = '<p class="error" role="alert">That is not this gateway\'s API token.</p>'
            return HTMLResponse(_page("login.html").replace("{error}", error), status_code=401,
                                headers=SECURITY_HEADERS)
        expires = int(clock().timestamp()) + SESSION_SECONDS
        response = RedirectResponse("/ui", status_code=303)
        response.set_cookie(COOKIE, session_value(token, expires), max_age=SESSION_SECONDS, path="/",
                            httponly=True, samesite="strict", secure=https or request.url.scheme == "https")
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    return [
        Route("/ui", page),
        Route("/ui/login", login_form, methods=["GET"]),
        Route("/ui/login", login, methods=["POST"]),
        Route("/ui/logout", logout, methods=["POST"]),
        Mount("/ui/assets", app=StaticFiles(directory=ASSETS), name="ui-assets"),
    ]


# The page loads nothing from anywhere else, and nothing may frame it.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
                               " frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@functools.cache
def _page(name: str) -> str:
    """A page, read from the package and filled in once per process, not per request."""
    text = (ASSETS / name).read_text()
    first = next(iter(PROVIDERS))
    return (text.replace("{providers}", html.escape(",".join(EVENT_PROVIDERS)))
            .replace("{simulate}", html.escape(f"status-gateway simulate {first} --scenario lifecycle")))


__all__ = ["COOKIE", "ui_routes", "valid_session"]
