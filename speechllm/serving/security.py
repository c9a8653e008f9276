"""ASGI guards in front of every route, outermost first:

- BrowserGuard: the Host header must name this server (a DNS-rebinding page names its own domain), a server
  without an API key refuses state-changing requests from other sites (a cross-site form post carries no key to
  stop it), and every response carries headers that keep the page out of frames and off other origins' scripts;
- KeyGuard: the API key, checked from the headers alone, before any body is read or parsed;
- BodyDeadline: the whole request body must arrive within `body_timeout_s`, so a client that stops half-way does
  not hold its connection (and a buffer) open forever.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

from starlette.datastructures import Headers

from .config import ServerConfig
from .errors import APIError, error_body
from .limits import check_api_key

PUBLIC_PATHS = ("/", "/health")  # plus /static/: the page and a liveness answer work without the key
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [(b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"), (b"cross-origin-opener-policy", b"same-origin")]
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def key_matches(config: ServerConfig, authorization: str | None) -> bool:
    """Whether a request with this Authorization header may use the server (always, when it has no key)."""
    try:
        check_api_key(config, authorization)
    except APIError:
        return False
    return True


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith("/static/")


def host_name(host_header: str) -> str:
    """The name in a Host header, without port, brackets or a trailing dot, lower case: "[::1]:8000" -> "::1"."""
    value = host_header.strip().lower()
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        value = value.partition(":")[0]
    return value.rstrip(".")


def host_allowed(host_header: str | None, allowed: list[str] | None) -> bool:
    """Whether the Host header names one of `allowed` (None or "*": any). A request without Host (HTTP/1.0) passes:
    browsers always send one."""
    if allowed is None or "*" in allowed or not host_header:
        return True
    return host_name(host_header) in {host_name(h) for h in allowed}


def cross_site(headers: Headers) -> bool:
    """Whether a browser says the request comes from another site: Sec-Fetch-Site, else an Origin other than the
    Host. Non-browser clients send neither and pass."""
    if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        return True
    origin = headers.get("origin")
    if origin is None:
        return False
    return origin == "null" or urlsplit(origin).netloc.lower() != headers.get("host", "").lower()


async def send_error(send, status: int, message: str, code: str, headers: list | None = None) -> None:
    body = json.dumps(error_body(status, message, code)).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class BrowserGuard:
    """Host check, cross-site refusal for a keyless server, and security headers on every response."""

    def __init__(self, app, config: ServerConfig):
        self.app, self.config = app, config

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        headers = Headers(scope=scope)
        if not host_allowed(headers.get("host"), self.config.allowed_hosts):
            return await send_error(send_with_headers, 400, f"this server does not answer to the host "
                                    f"{headers.get('host')!r}; add it to allowed_hosts in the server config if "
                                    f"clients reach the server by that name", "invalid_host")
        if self.config.api_key is None and scope["method"] not in _SAFE_METHODS and cross_site(headers):
            return await send_error(send_with_headers, 403, "cross-site request refused: a server without an API "
                                    "key takes requests only from its own page and non-browser clients (set "
                                    "api_key to serve other sites)", "cross_site_request")
        await self.app(scope, receive, send_with_headers)


class KeyGuard:
    """401 for a request without the right key, before its body is read (the page and /health stay public)."""

    def __init__(self, app, config: ServerConfig):
        self.app, self.config = app, config

    async def __call__(self, scope, receive, send):
        if (scope["type"] == "http" and self.config.api_key is not None and not is_public(scope["path"])
                and not key_matches(self.config, Headers(scope=scope).get("authorization"))):
            return await send_error(send, 401, "missing or wrong API key: send the header `Authorization: Bearer "
                                    "<key>`", "invalid_api_key", [(b"www-authenticate", b"Bearer")])
        await self.app(scope, receive, send)


class BodyTimedOut(Exception):
    pass


class BodyDeadline:
    """408 (and the connection closed) when the request body has not arrived in full within `seconds`."""

    def __init__(self, app, seconds: float):
        self.app, self.seconds = app, seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        deadline, body_done, started = loop.time() + self.seconds, False, False

        async def timed_receive():
            nonlocal body_done
            if body_done:  # afterwards only http.disconnect comes, whenever the client leaves
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), deadline - loop.time())
            except TimeoutError:
                raise BodyTimedOut from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, tracking_send)
        except BodyTimedOut:
            if not started:
                await send_error(send, 408, f"the request body did not arrive within {self.seconds:g} s "
                                 f"(body_timeout_s)", "body_timeout", [(b"connection", b"close")])
