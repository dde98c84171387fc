"""Who is who, and who may approve what.

The access file (``console_users``, YAML) lists people and the approver groups per asset class::

    users:
      - name: alice
        password_hash: "scrypt$16384$8$1$<salt>$<hash>"   # pyagent console hash-password
        groups: [sre, pci-approvers]
        slack_user_id: U024BE7LH
    approver_groups:
      default: [sre]              # any asset without a rule of its own
      pci-dss: [pci-approvers]    # a regulated framework: a member of one of these groups

An identity always comes from the authenticated channel: the console's login (or a trusted
proxy's header), or the ``user.id`` of a Slack request whose signature verified, mapped to
a person here. A regulated asset needs, for each of its frameworks, a member of a group
configured for that framework (or for ``regulated``); with no such rule nobody may approve
it, and the request goes to on-call when it times out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from pyagent.errors import ConfigError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
DEFAULT_CLASS, REGULATED_CLASS = "default", "regulated"


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64), the form the access file stores."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    encode = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encode(salt).decode()}${encode(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (compared in constant time)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@dataclass(frozen=True)
class Identity:
    """An authenticated person: ``via`` the channel, ``verified_by`` how it was proven."""

    name: str
    groups: frozenset[str]
    via: str  # console, api, slack
    verified_by: str  # password, proxy_header, slack_signature

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "groups": sorted(self.groups),
            "via": self.via,
            "verified_by": self.verified_by,
        }


@dataclass(frozen=True)
class User:
    name: str
    password_hash: str | None
    groups: frozenset[str]
    slack_user_id: str | None = None


@dataclass(frozen=True)
class Access:
    """The people and the approver rules, loaded once from the access file."""

    users: Mapping[str, User] = field(default_factory=lambda: MappingProxyType({}))
    approver_groups: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def load(cls, path: Path | None) -> Access:
        """The access file at ``path``, or nobody when there is none. Raises ConfigError."""
        if path is None:
            return cls()
        try:
            raw: Any = yaml.safe_load(path.read_text("utf-8")) or {}
            users = {
                str(u["name"]): User(
                    str(u["name"]),
                    u.get("password_hash"),
                    frozenset(map(str, u.get("groups", []))),
                    u.get("slack_user_id"),
                )
                for u in raw.get("users", [])
            }
            rules = {str(k): frozenset(map(str, v)) for k, v in (raw.get("approver_groups") or {}).items()}
        except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"access file {path}: {type(exc).__name__}: {exc}") from exc
        return cls(MappingProxyType(users), MappingProxyType(rules))

    def login(self, name: str, password: str) -> Identity | None:
        user = self.users.get(name)
        if user is None or not user.password_hash or not check_password(password, user.password_hash):
            hash_password(password)  # as slow for an unknown name as for a wrong password
            return None
        return Identity(user.name, user.groups, "console", "password")

    def proxied(self, name: str, groups: frozenset[str]) -> Identity:
        """A person a trusted reverse proxy authenticated; groups from the access file when listed."""
        user = self.users.get(name)
        return Identity(name, user.groups if user else groups, "console", "proxy_header")

    def slack(self, slack_user_id: str) -> Identity | None:
        """The person a verified Slack ``user.id`` belongs to, or None when it is nobody listed."""
        for user in self.users.values():
            if user.slack_user_id and hmac.compare_digest(user.slack_user_id, slack_user_id):
                return Identity(user.name, user.groups, "slack", "slack_signature")
        return None

    def refusal(self, identity: Identity, classes: tuple[str, ...]) -> str | None:
        """Why ``identity`` may not approve an action on assets of ``classes``; None when it may."""
        for asset_class in classes:
            required = self.approver_groups.get(asset_class)
            if required is None and asset_class != DEFAULT_CLASS:
                required = self.approver_groups.get(REGULATED_CLASS)
                if required is None:
                    return f"no approver group is configured for regulated asset class {asset_class!r}"
            if required is None:
                continue  # unregulated and no default rule: any authenticated person
            if not identity.groups & required:
                return f"{identity.name} is in none of {sorted(required)} required for {asset_class!r}"
        return None


def asset_classes(regulated: bool, frameworks: tuple[str, ...]) -> tuple[str, ...]:
    """The classes an asset belongs to: its frameworks when regulated, else ``default``."""
    if frameworks:
        return tuple(sorted(set(frameworks)))
    return (REGULATED_CLASS,) if regulated else (DEFAULT_CLASS,)
