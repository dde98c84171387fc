"""A client of the agent's JSON API, for the command line (``pyagent approvals ...``)."""

from __future__ import annotations

from typing import Any

import requests

from pyagent.errors import ApiRequestFailed


class ApiClient:
    """Calls ``/api/`` with HTTP Basic credentials from the access file, one session, timeouts."""

    def __init__(self, url: str, user: str, password: str, timeout: float = 10.0) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout
        self.session = requests.Session()
        self.session.auth = (user, password)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self.session.request(method, self.url + path, json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ApiRequestFailed(f"{self.url}: {type(exc).__name__}: {exc}") from exc
        try:
            answer: dict[str, Any] = response.json()
        except ValueError as exc:
            raise ApiRequestFailed(
                f"{self.url}{path}: HTTP {response.status_code}, not JSON", response.status_code
            ) from exc
        if response.status_code != 200:
            raise ApiRequestFailed(
                f"HTTP {response.status_code}: {answer.get('error', answer)}", response.status_code
            )
        return answer

    def approvals(self, state: str | None = None) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = self._call(
            "GET", "/api/approvals" + (f"?state={state}" if state else "")
        )["approvals"]
        return listed

    def approval(self, approval_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/approvals/{approval_id}")

    def decide(self, approval_id: str, verb: str, plan_hash: str) -> dict[str, Any]:
        return self._call("POST", f"/api/approvals/{approval_id}/{verb}", {"plan_hash": plan_hash})

    def abort(self, decision_id: str) -> dict[str, Any]:
        return self._call("POST", f"/api/actions/{decision_id}/abort", {})

    def close(self) -> None:
        self.session.close()
