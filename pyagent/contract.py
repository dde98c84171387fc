"""The decision contract: the JSON Schemas and the typed decision document.

The schemas in ``pyagent/schemas/`` are the same files ``opa check --strict`` types
the policy with, so the agent and the policy agree on every field name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, cast

import fastjsonschema
import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from pyagent.errors import InvalidDocument

LEVEL_NAMES = ("manual", "assisted", "supervised", "conditional_autonomous", "autonomous")


@cache
def schema(name: str) -> dict[str, Any]:
    """The JSON Schema ``pyagent/schemas/<name>.schema.json``, checked once."""
    text = resources.files("pyagent").joinpath("schemas", f"{name}.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    jsonschema.Draft7Validator.check_schema(loaded)
    return loaded


@cache
def _validator(name: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(schema(name), format_checker=jsonschema.FormatChecker())


def json_path(error: ValidationError) -> str:
    """``alerts[0].labels`` for an error at ``["alerts", 0, "labels"]``; ``$`` for the root."""
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "$"


@cache
def _fast_validator(name: str) -> Callable[[object], object]:
    validator: Callable[[object], object] = fastjsonschema.compile(schema(name))
    return validator


def _fast_path(error: fastjsonschema.JsonSchemaValueException) -> str:
    out = ""
    for part in (error.path or [])[1:]:  # the first element is fastjsonschema's name for the root
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "$"


def validate(name: str, document: object) -> None:
    """Raise :class:`InvalidDocument` naming the best-matching problem, if any.

    A document is checked by code fastjsonschema generates from the schema (every webhook
    and every decision passes here, so this is on the hot path). Only an invalid document
    is checked again by jsonschema, whose ``best_match`` names the most relevant problem;
    when jsonschema finds none (it checks ``format`` only with optional packages), the
    generated code's own problem is reported.
    """
    try:
        _fast_validator(name)(document)
    except fastjsonschema.JsonSchemaValueException as fast:
        error = best_match(_validator(name).iter_errors(document))
        if error is not None:
            raise InvalidDocument(name, json_path(error), str(error.validator), error.message) from None
        raise InvalidDocument(name, _fast_path(fast), str(fast.rule), fast.message) from None


@dataclass(frozen=True)
class Trigger:
    """One fired trigger: its id, the ceiling it sets, and why it fired."""

    id: str
    ceiling: int
    message: str
    field: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "ceiling": self.ceiling, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


@dataclass(frozen=True)
class Approval:
    required: bool
    timeout_seconds: int
    on_timeout: str


@dataclass(frozen=True)
class PolicyInfo:
    version: str
    approvers: tuple[str, ...]
    last_review: str
    next_review: str


@dataclass(frozen=True)
class Decision:
    """The decision document ``data.escalation.decision`` returns, typed."""

    level: int
    name: str
    triggers: tuple[Trigger, ...]
    execute: bool
    approval: Approval
    abort_window_seconds: int | None
    change_record_required: bool
    logging: tuple[str, ...]
    policy: PolicyInfo

    @classmethod
    def from_json(cls, document: object) -> Decision:
        """Validate against the decision schema, then type. Raises :class:`InvalidDocument`."""
        validate("decision", document)
        document = cast(dict[str, Any], document)  # an object: the schema says so
        return cls(
            level=document["level"],
            name=document["name"],
            triggers=tuple(Trigger(**t) for t in document["triggers"]),
            execute=document["execute"],
            approval=Approval(**document["approval"]),
            abort_window_seconds=document["abort_window_seconds"],
            change_record_required=document["change_record_required"],
            logging=tuple(document["logging"]),
            policy=PolicyInfo(
                version=document["policy"]["version"],
                approvers=tuple(document["policy"]["approvers"]),
                last_review=document["policy"]["last_review"],
                next_review=document["policy"]["next_review"],
            ),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "name": self.name,
            "triggers": [t.to_json() for t in self.triggers],
            "execute": self.execute,
            "approval": {
                "required": self.approval.required,
                "timeout_seconds": self.approval.timeout_seconds,
                "on_timeout": self.approval.on_timeout,
            },
            "abort_window_seconds": self.abort_window_seconds,
            "change_record_required": self.change_record_required,
            "logging": list(self.logging),
            "policy": {
                "version": self.policy.version,
                "approvers": list(self.policy.approvers),
                "last_review": self.policy.last_review,
                "next_review": self.policy.next_review,
            },
        }
