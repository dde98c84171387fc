"""Console authentication and CSRF protection.

A person is known by one of:

* a session cookie, set by ``POST /console/login`` after the password matched the access
  file's scrypt hash; the cookie is signed (HMAC-SHA256 with the console secret),
  ``HttpOnly`` and ``SameSite=Strict``, and lasts 12 hours;
* a trusted reverse proxy's header (``console_proxy_header``, e.g. ``X-Forwarded-User``),
  believed only from the peers in ``console_trusted_proxies``;
* HTTP Basic credentials checked against the same access file (the CLI, on ``/api/``).

Every browser session, signed in or not, carries a random nonce; each form holds a CSRF
token derived from it (HMAC of the nonce), and every POST from a browser must return it
(as the ``csrf`` form field or the ``X-CSRF-Token`` header). A Basic-authenticated API
POST must be ``application/json``, which no cross-site form can send.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from pyagent.access import Access, Identity
from pyagent.console.web import Request, set_cookie

COOKIE = "pyagent_session"
SESSION_SECONDS = 12 * 3600


def load_secret(configured: str | None, path: Path) -> bytes:
    """The configured secret, or one kept in ``path`` (created once, readable by the owner only)."""
    if configured:
        return configured.encode()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip().encode()


@dataclass(frozen=True)
class Session:
    nonce: str
    user: str
    groups: tuple[str, ...]
    verified_by: str
    expires: float


@dataclass(frozen=True)
class Visitor:
    """Who made a request (None when nobody signed in), its session, and a cookie to set."""

    identity: Identity | None
    session: Session
    set_cookie: tuple[str, str] | None
    basic: bool = False


class Gate:
    def __init__(  # noqa: PLR0913, PLR0917 - the gate's configuration
        self,
        access: Access,
        secret: bytes,
        proxy_header: str | None = None,
        proxy_groups_header: str | None = None,
        trusted_proxies: frozenset[str] = frozenset(),
        secure_cookies: bool = False,
    ) -> None:
        self.access, self.secret = access, secret
        self.proxy_header = proxy_header.lower() if proxy_header else None
        self.proxy_groups_header = proxy_groups_header.lower() if proxy_groups_header else None
        self.trusted_proxies, self.secure = trusted_proxies, secure_cookies

    def _sign(self, data: bytes) -> str:
        return hmac.new(self.secret, data, hashlib.sha256).hexdigest()

    def _encode(self, session: Session) -> str:
        raw = json.dumps(
            [session.nonce, session.user, list(session.groups), session.verified_by, session.expires]
        )
        data = base64.urlsafe_b64encode(raw.encode()).decode()
        return f"{data}.{self._sign(data.encode())}"

    def _decode(self, cookie: str) -> Session | None:
        data, _, mac = cookie.partition(".")
        if not hmac.compare_digest(mac.encode(), self._sign(data.encode()).encode()):
            return None
        try:
            nonce, user, groups, verified_by, expires = json.loads(base64.urlsafe_b64decode(data))
        except (ValueError, TypeError, binascii.Error):
            return None
        if expires < time.time():
            return None
        return Session(str(nonce), str(user), tuple(groups), str(verified_by), float(expires))

    def sign(self, text: str) -> str:
        return self._sign(text.encode())

    def signed(self, text: str, mac: str) -> bool:
        return hmac.compare_digest(mac.encode(), self.sign(text).encode())

    def csrf_token(self, session: Session) -> str:
        return self._sign(f"csrf:{session.nonce}".encode())[:40]

    def csrf_ok(self, request: Request, visitor: Visitor) -> bool:
        """Whether a POST carries this session's CSRF token (or is a JSON API call with Basic auth)."""
        if visitor.basic:
            return request.headers.get("content-type", "").startswith("application/json")
        given = request.headers.get("x-csrf-token") or request.form().get("csrf", "")
        return hmac.compare_digest(given.encode(), self.csrf_token(visitor.session).encode())

    def visitor(self, request: Request) -> Visitor:
        session = self._decode(request.cookies.get(COOKIE, ""))
        cookie = None
        if session is None:
            session = Session(secrets.token_hex(16), "", (), "", time.time() + SESSION_SECONDS)
            cookie = set_cookie(COOKIE, self._encode(session), SESSION_SECONDS, self.secure)
        basic = self._basic(request)
        if basic is not None:
            return Visitor(basic, session, cookie, basic=True)
        proxied = self._proxied(request)
        if proxied is not None:
            return Visitor(proxied, session, cookie)
        if session.user:
            identity = Identity(session.user, frozenset(session.groups), "console", session.verified_by)
            return Visitor(identity, session, cookie)
        return Visitor(None, session, cookie)

    def _basic(self, request: Request) -> Identity | None:
        header = request.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return None
        try:
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        identity = self.access.login(name, password)
        return Identity(identity.name, identity.groups, "api", "password") if identity else None

    def _proxied(self, request: Request) -> Identity | None:
        if not self.proxy_header or request.remote_addr not in self.trusted_proxies:
            return None
        name = request.headers.get(self.proxy_header, "").strip()
        if not name:
            return None
        raw = request.headers.get(self.proxy_groups_header, "") if self.proxy_groups_header else ""
        return self.access.proxied(name, frozenset(g.strip() for g in raw.split(",") if g.strip()))

    def login(self, name: str, password: str) -> tuple[Identity, tuple[str, str]] | None:
        """Check a password; the identity and a fresh session cookie (new nonce) when it matches."""
        identity = self.access.login(name, password)
        if identity is None:
            return None
        session = Session(
            secrets.token_hex(16),
            identity.name,
            tuple(sorted(identity.groups)),
            "password",
            time.time() + SESSION_SECONDS,
        )
        return identity, set_cookie(COOKIE, self._encode(session), SESSION_SECONDS, self.secure)

    def logout(self) -> tuple[str, str]:
        return set_cookie(COOKIE, "", 0, self.secure)
