"""A browser's lasting identity: the server's cookie (random, a year, HttpOnly, SameSite=Lax) and the owner id the
app derives from it, the same in every session of that browser and unrelated to the token itself."""
from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace

import pytest

from vae_core import identity
from vae_core.ui import state


async def _page(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
    await send({"type": "http.response.body", "body": b"<html></html>"})


def set_cookies(cookie: str | None = None, scheme: str = "http", kind: str = "http") -> list[str]:
    """The Set-Cookie headers of the page's response to a request carrying `cookie`."""
    sent = []

    async def send(message):
        sent.append(message)

    headers = [(b"cookie", cookie.encode())] if cookie else []
    scope = {"type": kind, "scheme": scheme, "path": "/", "headers": headers, "query_string": b""}
    asyncio.run(identity.BrowserCookie(_page)(scope, None, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return [v.decode() for k, v in start["headers"] if k == b"set-cookie"]


def test_a_browser_without_the_cookie_gets_a_random_token_for_a_year():
    (header,) = set_cookies()
    parts = header.split("; ")
    name, value = parts[0].split("=")
    assert name == identity.COOKIE and re.fullmatch(r"[0-9a-f]{32}", value)  # 128 random bits
    assert {"Max-Age=31536000", "Path=/", "HttpOnly", "SameSite=Lax"} <= set(parts) and "Secure" not in parts
    assert set_cookies()[0].split(";")[0] != parts[0]  # another browser, another token
    assert "Secure" in set_cookies(scheme="https")[0].split("; ")


def test_a_browser_with_a_token_keeps_it_and_a_forged_value_is_replaced():
    good = "0123456789abcdef" * 2
    assert set_cookies(f"{identity.COOKIE}={good}; other=1") == []
    for forged in ("../x", "0" * 31, "0" * 33, "ABCDEF0123456789" * 2, ""):
        (header,) = set_cookies(f"{identity.COOKIE}={forged}")
        assert header.split(";")[0] != f"{identity.COOKIE}={forged}"
    assert identity.token({identity.COOKIE: good}) == good and identity.token({}) is None


def test_only_http_responses_are_touched():
    assert set_cookies(kind="websocket") == []  # a websocket's messages pass through as they are


@pytest.fixture
def new_session(monkeypatch):
    """A function making a new Streamlit session (empty session state) of a browser sending `cookies`."""
    def open_with(cookies: dict) -> str:
        monkeypatch.setattr(state.st, "session_state", {})
        monkeypatch.setattr(state.st, "context", SimpleNamespace(cookies=cookies))
        return state.browser_id()
    return open_with


def test_the_owner_id_follows_the_apps_cookie_across_sessions(new_session):
    token = "0123456789abcdef" * 2
    xsrf = "2|00000000|" + "ab" * 16 + "|1"
    first = new_session({identity.COOKIE: token, "_streamlit_xsrf": xsrf})
    assert new_session({identity.COOKIE: token}) == first  # the browser restarted: its session cookie is gone
    assert token not in first and len(first) == 16  # derived one way: the id does not reveal the token
    assert new_session({identity.COOKIE: "f" * 32}) != first
    # without the app's cookie (`streamlit run streamlit_app.py`): Streamlit's session cookie, then nothing
    assert new_session({"_streamlit_xsrf": xsrf}) == new_session({"_streamlit_xsrf": "2|ffffffff|" + "54" * 16 + "|9"})
    assert new_session({}) != new_session({})
