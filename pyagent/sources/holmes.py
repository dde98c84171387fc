"""HolmesGPT: an investigation whose analysis text is shown to humans.

``POST {url}/api/investigate`` with the alert as ``title``, ``description``, ``subject``
and ``context``; the answer's ``analysis`` is attached to the decision. HolmesGPT gives no
confidence, so its output never raises one; when it fails, the decision simply carries no
analysis, and the reason is noted.
"""

from __future__ import annotations

from typing import Any

import requests

from pyagent.alerts import Alert


class HolmesClient:
    def __init__(self, url: str, *, timeout: float = 60.0, session: requests.Session | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()

    def investigate(self, alert: Alert) -> str:
        """The analysis text. Raises ``RuntimeError`` or ``TypeError`` naming what went wrong."""
        body = {
            "source": "prometheus",
            "title": alert.annotations.get("summary") or alert.name,
            "description": alert.annotations.get("description", ""),
            "subject": {
                "name": alert.labels.get("deployment") or alert.labels.get("pod") or alert.name,
                "namespace": alert.labels.get("namespace", ""),
                "kind": "deployment" if alert.labels.get("deployment") else "",
            },
            "context": {"labels": dict(alert.labels), "annotations": dict(alert.annotations)},
            "include_tool_calls": False,
            "include_tool_call_results": False,
        }
        try:
            response = self.session.post(self.url + "/api/investigate", json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise RuntimeError(f"HolmesGPT at {self.url}: {exc}") from exc
        if response.status_code != 200:
            raise RuntimeError(f"HolmesGPT at {self.url} answered {response.status_code}")
        try:
            found: Any = response.json()
            analysis = found["analysis"]
        except (ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(f"HolmesGPT at {self.url}: no analysis in the answer ({exc})") from exc
        if not isinstance(analysis, str):
            raise TypeError(f"HolmesGPT at {self.url}: analysis is not text")
        return analysis
