"""What every request passes through: the API key, the body limit, security headers, and
one access-log line and metric per request that names the route, never the text.

The key is compared in constant time. The page's files, /health and the API description
are open (they hold no notes); everything else needs `Authorization: Bearer KEY` when the
server has a key. A body over the limit is refused by its Content-Length, or while it is
read if it has none.
"""
from __future__ import annotations

import hmac
import logging
import os
import re
import time

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

log = logging.getLogger("mimicsearch.serve")

OPEN_PATHS = ("/", "/health", "/openapi.json", "/docs", "/favicon.ico")
OPEN_PREFIXES = ("/static/", "/docs/")
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")
DOCS_CSP = PAGE_CSP.replace("script-src 'self'", "script-src 'self' 'unsafe-inline'").replace(
    "style-src 'self'", "style-src 'self' 'unsafe-inline'")
HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
           (b"x-frame-options", b"DENY"), (b"cache-control", b"no-store")]


_ABSOLUTE = re.compile(r"(?<![\w.:/-])(/[^\s'\"/,;()\[\]]+)((?:/[^\s'\"/,;()\[\]]+)*)")


def redact_paths(message: str) -> str:
    """`message` with every absolute path on this machine cut to its last part: an error
    tells the client what was wrong, never where the server keeps its model or index. A
    path counts as this machine's when its top directory exists here (a route such as
    /notes/7 does not)."""
    def cut(m: re.Match) -> str:
        top, rest = m.group(1), m.group(2)
        if not os.path.isdir(top):
            return m.group(0)
        return (rest or top).rsplit("/", 1)[-1]
    return _ABSOLUTE.sub(cut, message)


def error_body(status: int, message: str, param: str | None = None,
               code: str | None = None) -> dict:
    """The one error shape of every route (OpenAI's): {"error": {type, message, param,
    code}}, its message free of server paths."""
    kind = {400: "invalid_request_error", 401: "authentication_error",
            404: "not_found_error", 405: "invalid_request_error",
            413: "request_too_large", 422: "invalid_request_error",
            503: "unavailable"}.get(status, "server_error" if status >= 500
                                    else "invalid_request_error")
    return {"error": {"type": kind, "message": redact_paths(message), "param": param,
                      "code": code}}


class Guard:
    """ASGI middleware around the whole app."""

    def __init__(self, app, *, api_key: str | None, max_body_bytes: int, metrics):
        self.app = app
        self.key = None if api_key is None else api_key.encode("utf-8")
        self.max_body = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        path = scope["path"]
        status = [500]
        csp = (DOCS_CSP if path == "/docs" or path.startswith("/docs/") else PAGE_CSP).encode()

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), *HEADERS,
                                      (b"content-security-policy", csp)]
            await send(message)

        try:
            refusal = self._refuse(scope)
            if refusal is not None:
                await refusal(scope, receive, send_with_headers)
            else:
                await self.app(scope, self._limited(receive), send_with_headers)
        finally:
            route = _route_name(scope)
            seconds = time.perf_counter() - start
            self.metrics.observe(scope["method"], route, status[0], seconds)
            client = (scope.get("client") or ("-",))[0]
            log.info("%s %s %s %d %.1fms", client, scope["method"], route, status[0],
                     seconds * 1000)

    def _refuse(self, scope):
        path = scope["path"]
        if self.key is not None and not (path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)):
            given = b""
            for name, value in scope["headers"]:
                if name == b"authorization":
                    given = value
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                return JSONResponse(
                    error_body(401, "missing or wrong API key: send 'Authorization: Bearer KEY' "
                               "(the key in the server's --api-key-file)",
                               code="invalid_api_key"),
                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    return JSONResponse(error_body(400, "Content-Length is not a number"),
                                        status_code=400)
                if size > self.max_body:
                    return JSONResponse(self._too_large(), status_code=413)
        return None

    def _too_large(self) -> dict:
        return error_body(413, f"request body over {self.max_body} bytes (the server's "
                          "--max-body-bytes); send fewer or shorter texts per request")

    def _limited(self, receive):
        seen = [0]

        async def wrapped():
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.max_body:
                    raise HTTPException(413, self._too_large()["error"]["message"])
            return message

        return wrapped


def _route_name(scope) -> str:
    route = scope.get("route")
    if route is not None and getattr(route, "path", None):
        return route.path
    path = scope["path"]
    if path.startswith("/static/"):
        return "/static"
    if path.startswith("/docs"):
        return "/docs"
    return "unmatched"
