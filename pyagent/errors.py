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


class DeliveryFailed(PyagentError):
    """A notification channel (Slack, PagerDuty) did not take a message. ``retryable`` says
    whether sending the same message again may succeed (a timeout, 429, 5xx) or not (400, a
    rejected token); the outbox retries the first kind with backoff."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class ApprovalRefused(PyagentError):
    """An approval or rejection was refused and changed nothing. ``status`` is the HTTP status
    that says why (404 unknown, 409 already decided or expired or a different plan, 403 not
    allowed); not retryable as it stands."""

    status = 409


class ApprovalNotFound(ApprovalRefused):
    """No approval has this id. Nothing changed."""

    status = 404


class ApprovalClosed(ApprovalRefused):
    """The approval was already approved, rejected or expired: each is single use. Nothing changed."""


class PlanMismatch(ApprovalRefused):
    """The approver saw a different plan than the one pending (its hash differs). Nothing changed."""


class NotAuthorised(ApprovalRefused):
    """The authenticated person may not approve actions on this asset class. Nothing changed."""

    status = 403


class ChangeSystemUnavailable(PyagentError):
    """The configured change system (ServiceNow) could not file a change record: unreachable,
    timed out or refused. Nothing may execute on the regulated asset; safe to retry."""


class ApiRequestFailed(PyagentError):
    """The agent's JSON API refused a request or could not be reached; ``status`` is the HTTP
    status (0 when there was no answer). Retryable only when the agent was unreachable."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class ExecutorError(PyagentError):
    """An executor could not carry out, observe or undo an action: the API refused it, was
    unreachable or timed out. Whether a change was applied is unknown unless the message
    says so. Never retried blindly: the outcome is ``error`` and humans are told."""


class ActionRefused(ExecutorError):
    """The executor refused before changing anything (a paused Deployment, a missing target,
    an action it does not carry out). Not retryable: a human must look."""


class AbortRefused(PyagentError):
    """An abort cannot be honoured; ``reason`` says why (``unknown``: no such execution;
    ``no_window``: the level has no abort window; ``window_closed``; ``finished``: already
    rolled back or failed; ``not_executed``: nothing was changed). Not retryable."""

    def __init__(self, decision_id: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.decision_id = decision_id
        self.reason = reason
