"""ServiceNow change requests: the fields of one, and the Table API to file, cancel and close it.

``POST {url}`` with the record's fields, answered 201 with ``result.number`` and
``result.sys_id``; ``PATCH {url}/{sys_id}`` to move it on, answered 200. Basic auth, and a
few retries for the answers that ask for one (429, 5xx).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from pyagent.briefing import Briefing
from pyagent.contract import Trigger
from pyagent.errors import ChangeSystemUnavailable
from pyagent.executors import ProposedAction

# change_request states: Canceled is allowed from every state but Closed and Review; Closed
# takes a close code (successful, successful_issues, unsuccessful) and close notes
CANCELED = "4"
CLOSED = "3"
# the plans of an action the catalog gives none for
GENERIC_PLANS = {
    "implementation_plan": "{type} of {kind} {namespace}/{name} by the agent after a human's approval",
    "backout_plan": "undo {type} on {kind} {namespace}/{name} (the executor's rollback)",
    "test_plan": "verify {kind} {namespace}/{name} is healthy and the alert resolves",
}
SERVICENOW_TIME = "%Y-%m-%d %H:%M:%S"


def _risk_impact(briefing: Briefing, reversible: bool) -> tuple[str, str, str]:
    """ServiceNow risk (2 high, 3 moderate, 4 low), impact (1 high, 2 medium, 3 low), and why."""
    wide = briefing.services > 1 or briefing.shared_infrastructure or len(briefing.namespaces) > 1
    impact = "1" if wide else "2" if briefing.replica_fraction > 0.2 else "3"
    risk = {"1": 2, "2": 3, "3": 4}[impact] - (0 if reversible else 1)
    why = (
        f"blast radius: {briefing.blast_radius}; error budget {briefing.error_budget_remaining:.0%} left; "
        f"{'reversible' if reversible else 'not reversible'}; "
        f"frameworks: {', '.join(briefing.frameworks) or 'none'}"
    )
    return str(risk), impact, why


def build_fields(  # noqa: PLR0913, PLR0917 - a change record is made of these
    action: ProposedAction,
    triggers: tuple[Trigger, ...],
    briefing: Briefing,
    summary: str,
    catalog_entry: Mapping[str, Any],
    assignment_group: str,
    now: datetime,
) -> dict[str, str]:
    """The change request's fields for ``action`` on its target."""
    names = {
        "type": action.type,
        "kind": action.kind,
        "namespace": action.namespace,
        "name": action.name,
        "replicas_delta": str(action.replicas_delta),
    }
    plans = {
        key: str(catalog_entry.get(key, generic)).format(**names) for key, generic in GENERIC_PLANS.items()
    }
    risk, impact, why = _risk_impact(briefing, bool(catalog_entry.get("reversible", False)))
    window = float(catalog_entry.get("verify_seconds", 600)) + float(
        catalog_entry.get("rollback_seconds", 600)
    )
    end = datetime.fromtimestamp(now.timestamp() + window, UTC)
    return {
        "short_description": f"{action.type} of {action.kind} {action.namespace}/{action.name}",
        "description": f"{briefing.alert_name}: {summary}",
        "justification": "; ".join(f"{t.id}: {t.message}" for t in triggers) or "policy decision",
        **plans,
        "risk_impact_analysis": why,
        "risk": risk,
        "impact": impact,
        "cmdb_ci": briefing.service,
        "assignment_group": assignment_group,
        "start_date": now.strftime(SERVICENOW_TIME),
        "end_date": end.strftime(SERVICENOW_TIME),
        "type": "normal",
    }


class ServiceNow:
    """A client of one change_request table URL."""

    def __init__(self, url: str, user: str | None, password: str | None, timeout: float = 5.0) -> None:
        self.url = url
        self.session = requests.Session()
        if user and password:
            self.session.auth = (user, password)
        retry = Retry(
            total=2,
            backoff_factor=0.3,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=None,
            raise_on_status=False,
        )
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))
        self.timeout = timeout

    def file(self, fields: Mapping[str, str]) -> tuple[str, str]:
        """(number, sys_id) of the new change request; raises ChangeSystemUnavailable."""
        try:
            response = self.session.post(
                self.url, json=dict(fields), headers={"Accept": "application/json"}, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise ChangeSystemUnavailable(f"ServiceNow {self.url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code not in {200, 201}:
            raise ChangeSystemUnavailable(f"ServiceNow {self.url}: HTTP {response.status_code}")
        try:
            result = response.json()["result"]
            return str(result["number"]), str(result["sys_id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ChangeSystemUnavailable(f"ServiceNow {self.url}: unexpected answer: {exc}") from exc

    def cancel(self, sys_id: str, note: str) -> None:
        """Set a filed change request to Canceled, with ``note`` as a work note; raises
        ChangeSystemUnavailable."""
        self._update(sys_id, {"state": CANCELED, "work_notes": note})

    def close(self, sys_id: str, close_code: str, notes: str) -> None:
        """Set a filed change request to Closed with ``close_code`` and ``notes`` as its close
        notes; raises ChangeSystemUnavailable."""
        self._update(sys_id, {"state": CLOSED, "close_code": close_code, "close_notes": notes})

    def _update(self, sys_id: str, fields: dict[str, Any]) -> None:
        url = f"{self.url}/{sys_id}"
        try:
            response = self.session.patch(
                url, json=fields, headers={"Accept": "application/json"}, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise ChangeSystemUnavailable(f"ServiceNow {url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise ChangeSystemUnavailable(f"ServiceNow {url}: HTTP {response.status_code}")

    def shutdown(self) -> None:
        self.session.close()


def outcome_notes(decision_id: str, action: ProposedAction, outcome: str, detail: str = "") -> str:
    """A closed record's notes: what was done, how it ended, and where its steps are."""
    why = f" ({detail})" if detail else ""
    return (
        f"{action.type} of {action.kind} {action.namespace}/{action.name} by pyagent: {outcome}{why};"
        f" decision {decision_id}, every step in pyagent's audit log"
    )
