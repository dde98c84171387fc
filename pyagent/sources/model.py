"""Diagnosis by a language model behind an OpenAI-compatible chat completions API.

The model is asked to choose the alert's pattern from the catalog with a constrained
answer: one digit, ``1``..``N`` for the catalog's patterns in order, ``0`` for none of
them. The request asks for ``logprobs`` with ``top_logprobs``; the model's confidence is
the probability of the answer token (``exp(logprob)``). An endpoint that returns no
log-probabilities gives an answer but no confidence.

Works with LiteLLM proxy, Ollama (``/v1``), GitHub Models and other servers of the same
protocol: ``POST {base_url}/chat/completions`` with a bearer key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import requests

from pyagent.alerts import Alert
from pyagent.errors import ServiceError
from pyagent.jsonhttp import post_json
from pyagent.sources.catalog import Pattern

NONE_OF_THEM = "0"
SYSTEM_PROMPT = (
    "You classify Kubernetes production alerts. Answer with exactly one digit and nothing else: "
    "the number of the failure pattern that explains the alert, or 0 if none of them does."
)


@dataclass(frozen=True)
class ModelChoice:
    """What the model answered: a pattern id (None for none of them), and how sure it was."""

    pattern_id: str | None
    probability: float | None  # None when the endpoint gave no log-probabilities
    model: str


def prompt(alert: Alert, patterns: tuple[Pattern, ...]) -> str:
    """The user message: the alert's labels and annotations, then the numbered patterns."""
    lines = [f"Alert {alert.name}", "Labels:"]
    lines.extend(f"  {k}={v}" for k, v in sorted(alert.labels.items()))
    if alert.annotations:
        lines.append("Annotations:")
        lines.extend(f"  {k}: {v}" for k, v in sorted(alert.annotations.items()))
    lines.append("Patterns:")
    lines.extend(f"  {n}. {p.id}: {p.summary}" for n, p in enumerate(patterns, start=1))
    lines.append(f"  {NONE_OF_THEM}. none of these")
    return "\n".join(lines)


class ChatModel:
    """A client for one model of an OpenAI-compatible endpoint."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.session = session or requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def choose(self, alert: Alert, patterns: tuple[Pattern, ...]) -> ModelChoice:
        """The model's choice. Raises :class:`ServiceError` naming what went wrong."""
        if len(patterns) > 9:
            raise ValueError("at most 9 patterns fit a one-digit answer")
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": prompt(alert, patterns)},
            ],
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": 5,
        }
        who = f"model endpoint {self.base_url}"
        found = post_json(self.session, self.base_url + "/chat/completions", body, self.timeout, who)
        try:
            choice = found["choices"][0]
            answer = str(choice["message"]["content"]).strip()
        except (KeyError, IndexError, TypeError) as exc:
            raise ServiceError(f"{who}: malformed answer ({exc})") from exc
        index = int(answer[:1]) if answer[:1].isdigit() else -1
        if not 0 <= index <= len(patterns):
            raise ServiceError(f"model answered {answer[:20]!r}, not a number from 0 to {len(patterns)}")
        pattern_id = None if index == 0 else patterns[index - 1].id
        return ModelChoice(pattern_id, _probability(choice.get("logprobs"), answer[:1]), self.model)


def _probability(logprobs: Any, token: str) -> float | None:
    """exp(logprob) of the answer token, or None when the endpoint gave none."""
    try:
        first = logprobs["content"][0]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(first, dict) or not isinstance(first.get("logprob"), int | float):
        return None
    if str(first.get("token", "")).strip() != token:
        return None
    return round(math.exp(min(0.0, float(first["logprob"]))), 6)
