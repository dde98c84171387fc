"""HolmesGPT: an investigation whose analysis text is shown to humans.

``POST {url}/api/investigate`` with the alert as ``title``, ``description``, ``subject``
and ``context``; the answer's ``analysis`` is attached to the decision. HolmesGPT gives no
confidence, so its output never raises one; when it fails, the decision simply carries no
analysis, and the reason is noted.
"""

from __future__ import annotations

import requests

from pyagent.alerts import Alert
from pyagent.errors import ServiceError
from pyagent.jsonhttp import post_json


class HolmesClient:
    def __init__(self, url: str, *, timeout: float = 60.0, session: requests.Session | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()

    def investigate(self, alert: Alert) -> str:
        """The analysis text. Raises :class:`ServiceError` naming what went wrong."""
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
        who = f"HolmesGPT at {self.url}"
        found = post_json(self.session, self.url + "/api/investigate", body, self.timeout, who)
        analysis = found.get("analysis") if isinstance(found, dict) else None
        if not isinstance(analysis, str):
            raise ServiceError(f"{who}: no analysis text in the answer")
        return analysis
