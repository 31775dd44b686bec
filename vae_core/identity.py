"""Who a browser is, for as long as it keeps the app's cookie: a random 128-bit token in a cookie of the app's own,
set by the server (`BrowserCookie`, installed by serve.py) on the first response to a browser without one, kept
for a year (HttpOnly, SameSite=Lax, Secure over HTTPS). Streamlit's own cookie ends with the browser session, so
runs keyed to it would vanish from their owner's list when the browser restarts; runs keyed to this token stay
(`ui.state.browser_id`). Torch- and streamlit-free: the server imports it before anything else.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping

from starlette.requests import HTTPConnection

COOKIE = "vae_browser"
MAX_AGE_S = 365 * 24 * 3600
_TOKEN = re.compile(r"[0-9a-f]{32}")


def token(cookies: Mapping[str, str]) -> str | None:
    """The browser's token from its cookies; None when it has none, or one that is not a token of ours."""
    value = cookies.get(COOKIE)
    return value if isinstance(value, str) and _TOKEN.fullmatch(value) else None


def owner_id(token: str) -> str:
    """The id a browser's runs and uploads are recorded under: one-way from its token, so records never hold it."""
    return hashlib.sha256(f"vae-browser:{token}".encode()).hexdigest()[:16]


def set_cookie(secure: bool) -> bytes:
    """A Set-Cookie header value giving a browser a new random token."""
    attributes = [f"{COOKIE}={secrets.token_hex(16)}", f"Max-Age={MAX_AGE_S}", "Path=/", "HttpOnly", "SameSite=Lax"]
    return "; ".join(attributes + (["Secure"] if secure else [])).encode("latin-1")


class BrowserCookie:
    """ASGI middleware: every HTTP response to a request without a valid token sets one (the page's first
    response does; the browser sends it from then on, its websocket included)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or token(HTTPConnection(scope).cookies) is not None:
            await self.app(scope, receive, send)
            return
        header = set_cookie(secure=scope.get("scheme") == "https")

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", header)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)
