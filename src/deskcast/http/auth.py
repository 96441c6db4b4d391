"""Who may do what on ``serve``: the listen token (optional, for everything but the page's
static assets) and the metadata token (``POST /api/metadata``).

Listening is read-only and open by default, like a radio. With a listen token, every request
but :data:`OPEN_PATHS` and CORS preflights needs ``?token=TOKEN`` or HTTP basic auth with any
user name and the token as password. Changing state needs the bearer token, always.
"""

from __future__ import annotations

import hmac

from aiohttp import BasicAuth, web
from aiohttp.typedefs import Handler, Middleware

from deskcast.http.responses import error

OPEN_PATHS = frozenset({"/app.js", "/app.css", "/api/metadata"})
"""Paths a listen token does not guard: static, secret-free assets, and the metadata POST
(guarded by its own bearer token). Everything else, present or future, needs the token."""


def listen_guard(listen_token: str) -> Middleware:
    """The middleware refusing (401) requests without ``listen_token`` ("": lets all in)."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if listen_token and request.method != "OPTIONS" and \
                request.path not in OPEN_PATHS and not has_listen_token(request, listen_token):
            resp = error(401, "this server needs the listen token: add ?token=TOKEN to the "
                         "URL, or log in with any user name and the token as password")
            resp.headers["WWW-Authenticate"] = 'Basic realm="deskcast", charset="UTF-8"'
            return resp
        return await handler(request)

    return guard


def has_listen_token(request: web.Request, listen_token: str) -> bool:
    """Whether the request carries the token, as ``?token=`` or as a basic-auth password."""
    given = request.query.get("token")
    if given is None:
        try:
            given = BasicAuth.decode(request.headers.get("Authorization", ""),
                                     encoding="utf-8").password
        except ValueError:  # no header, another scheme, bad base64 or UTF-8, no colon
            return False
    return hmac.compare_digest(given.encode(), listen_token.encode())


def bearer_refusal(request: web.Request, token: str) -> web.Response | None:
    """None if the request carries ``Authorization: Bearer TOKEN``, else the 401 to answer."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token and \
            hmac.compare_digest(given.strip().encode(), token.encode()):
        return None
    resp = error(401, "missing or wrong token: send 'Authorization: Bearer TOKEN' "
                 "(the token is in the serve log, or set it with --token)")
    resp.headers["WWW-Authenticate"] = 'Bearer realm="deskcast"'
    return resp
