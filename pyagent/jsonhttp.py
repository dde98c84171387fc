"""POST a JSON body to a service and get its JSON answer, or one error saying why not.

Shared by the clients of OPA, the model endpoint and HolmesGPT, which all treat a
connection error, a timeout, a non-200 status and a non-JSON body the same way.
"""

from __future__ import annotations

from typing import Any

import requests

from pyagent.errors import ServiceError


def post_json(
    session: requests.Session, url: str, body: object, timeout: float | tuple[float, float], who: str
) -> Any:
    """The decoded JSON of a 200 answer. Raises :class:`ServiceError` starting with ``who``."""
    try:
        response = session.post(url, json=body, timeout=timeout)
    except requests.RequestException as exc:
        raise ServiceError(f"{who}: {exc}") from exc
    if response.status_code != 200:
        raise ServiceError(f"{who} answered {response.status_code}: {response.text[:200]}")
    try:
        return response.json()
    except ValueError as exc:
        raise ServiceError(f"{who} answered non-JSON") from exc
