"""Every error the agent raises, one class per thing that happened.

Each docstring says what the caller may do about it.
"""

from __future__ import annotations


class PyagentError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(PyagentError):
    """The configuration is unusable. Not retryable: fix the configuration."""


class InvalidDocument(PyagentError):
    """A JSON document failed its schema.

    ``path`` is the JSON path of the first problem (``alerts[0].labels``) and
    ``keyword`` the failing JSON Schema keyword. Not retryable: the sender must
    fix the document.
    """

    def __init__(self, what: str, path: str, keyword: str, message: str) -> None:
        super().__init__(f"{what}: {path}: {message}")
        self.what = what
        self.path = path
        self.keyword = keyword
        self.message = message


class ServiceError(PyagentError):
    """A service (OPA, a model endpoint, HolmesGPT) gave no usable answer: unreachable, timed
    out, an error status, or an answer that is not what its protocol promises."""


class PolicyError(PyagentError):
    """OPA gave no usable decision. The agent falls back to level 1 with ``reason``."""

    reason = "policy_error"


class PolicyEngineUnavailable(PolicyError):
    """OPA could not be reached, timed out, or answered with an error status. Safe to retry."""

    reason = "policy_engine_unavailable"


class PolicyUndefined(PolicyError):
    """OPA answered without a ``result``: the decision rule is undefined or not loaded.

    Retrying will not help until the policy is fixed or loaded.
    """

    reason = "policy_undefined"


class PolicyInvalid(PolicyError):
    """OPA's result is not a valid decision document. Not retryable: the policy has a bug."""

    reason = "policy_invalid"

    def __init__(self, problem: InvalidDocument) -> None:
        super().__init__(str(problem))
        self.problem = problem


class OpaStartError(PyagentError):
    """The embedded OPA could not be started. Not retryable without fixing the cause named."""


class StoreUnavailable(PyagentError):
    """The store could not write or read. Safe to retry; the webhook answers 503 so Alertmanager does."""


class HistoryError(PyagentError):
    """The incident history database refused a read or write (unreadable, locked, corrupt, or a value
    its constraints reject). Nothing was written; safe to retry once the database is fixed.
    """


class AuditChainBroken(PyagentError):
    """The audit log at ``path`` fails verification at record ``seq`` for ``reason``.

    Nothing more is appended after a broken chain. Not retryable: an operator must
    inspect the log (``pyagent.audit.verify``) and move it aside or restore it.
    """

    def __init__(self, path: str, seq: int, reason: str) -> None:
        super().__init__(f"audit log {path} is broken at seq {seq}: {reason}")
        self.path = path
        self.seq = seq
        self.reason = reason
