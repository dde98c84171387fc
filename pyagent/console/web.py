"""The little HTTP the console needs, on plain WSGI: a parsed request and response helpers."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import SimpleCookie
from typing import Any

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
MAX_FORM_BYTES = 64 * 1024


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    cookies: Mapping[str, str]
    remote_addr: str
    body: bytes

    @classmethod
    def from_environ(cls, environ: Mapping[str, Any]) -> Request:
        try:
            length = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_FORM_BYTES)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {
            k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items() if k.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = str(environ["CONTENT_TYPE"])
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is no cookie
            cookie = SimpleCookie()
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(environ.get("QUERY_STRING", "")).items()}
        return cls(
            str(environ.get("REQUEST_METHOD", "GET")),
            str(environ.get("PATH_INFO", "")),
            query,
            headers,
            {k: m.value for k, m in cookie.items()},
            str(environ.get("REMOTE_ADDR", "")),
            body,
        )

    def form(self) -> dict[str, str]:
        parsed = urllib.parse.parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[-1] for k, v in parsed.items()}

    def json(self) -> dict[str, Any]:
        try:
            loaded = json.loads(self.body or b"{}")
        except ValueError:
            return {}
        return loaded if isinstance(loaded, dict) else {}


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, start: StartResponse) -> Iterable[bytes]:
        status = HTTPStatus(self.status)
        headers = [
            ("Content-Type", self.content_type),
            ("Content-Length", str(len(self.body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "same-origin"),
            *self.headers,
        ]
        start(f"{status.value} {status.phrase}", headers)
        return [self.body]


def json_response(status: int, body: object, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, json.dumps(body).encode(), "application/json", headers or [])


def redirect(location: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(303, b"", "text/plain", [("Location", location), *(headers or [])])


def set_cookie(name: str, value: str, max_age: int, secure: bool) -> tuple[str, str]:
    flags = f"; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")
    return ("Set-Cookie", f"{name}={value}{flags}")
