"""POST a JSON body to a service and get its JSON answer, or one error saying why not.

Shared by the clients of OPA, the model endpoint and HolmesGPT, which all treat a
connection error, a timeout, a non-200 status and a non-JSON body the same way.
"""

from __future__ import annotations

from typing import Any

import requests

from pyagent.errors import ServiceError


class JsonEndpoint:
    """One URL that answers JSON POSTs, on a session.

    The request's URL, the session's headers and its environment settings are prepared
    once; each call only encodes its body. On a kept-alive loopback connection to OPA,
    preparing a request the way ``Session.post`` does costs more CPU than the request.
    """

    def __init__(self, session: requests.Session, url: str, who: str) -> None:
        self.session, self.url, self.who = session, url, who
        self._template = session.prepare_request(requests.Request("POST", url, json={}))
        self._settings = session.merge_environment_settings(url, {}, None, None, None)

    def post(self, body: object, timeout: float | tuple[float, float]) -> Any:
        """The decoded JSON of a 200 answer. Raises :class:`ServiceError` starting with ``who``."""
        prepared = self._template.copy()
        try:
            prepared.prepare_body(data=None, files=None, json=body)
            response = self.session.send(prepared, timeout=timeout, **self._settings)
        except requests.RequestException as exc:
            raise ServiceError(f"{self.who}: {exc}") from exc
        except ValueError as exc:  # a body that is not JSON-serialisable (NaN, an object)
            raise ServiceError(f"{self.who}: request body is not JSON: {exc}") from exc
        if response.status_code != 200:
            raise ServiceError(f"{self.who} answered {response.status_code}: {response.text[:200]}")
        try:
            return response.json()
        except ValueError as exc:
            raise ServiceError(f"{self.who} answered non-JSON") from exc


def post_json(
    session: requests.Session, url: str, body: object, timeout: float | tuple[float, float], who: str
) -> Any:
    """The decoded JSON of a 200 answer. Raises :class:`ServiceError` starting with ``who``."""
    return JsonEndpoint(session, url, who).post(body, timeout)
