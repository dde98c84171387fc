"""The model and HolmesGPT clients against loopback servers speaking their protocols."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

from pyagent.alerts import Alert, parse_webhook
from pyagent.opa import free_port
from pyagent.sources.catalog import PATTERNS
from pyagent.sources.composite import CompositeDiagnoser, composite
from pyagent.sources.holmes import HolmesClient
from pyagent.sources.model import ChatModel, ModelChoice
from tests.fakes import Answer, FakeJsonApi
from tests.serving import example

OOM_INDEX = str(1 + [p.id for p in PATTERNS].index("oom-memory-leak"))


def _completion(content: str, logprob: float | None) -> dict[str, Any]:
    """An OpenAI chat completion; ``logprobs`` only when the server computes them."""
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content}}
    choice["finish_reason"] = "length"
    if logprob is not None:
        choice["logprobs"] = {
            "content": [
                {"token": content, "logprob": logprob, "bytes": list(content.encode()),
                 "top_logprobs": [{"token": content, "logprob": logprob, "bytes": list(content.encode())}]}
            ]
        }  # fmt: skip
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "m", "choices": [choice]}


@pytest.fixture
def served() -> Iterator[list[FakeJsonApi]]:
    started: list[FakeJsonApi] = []
    yield started
    for fake in started:
        fake.close()


def _api(served: list[FakeJsonApi], answer: Answer) -> FakeJsonApi:
    fake = FakeJsonApi(lambda _path, _body: answer)
    served.append(fake)
    return fake


def _oom() -> Alert:
    [alert] = parse_webhook(json.dumps(example("level-4-oom-restart")).encode()).alerts
    return alert


def test_model_request_is_constrained_and_asks_for_logprobs(served: list[FakeJsonApi]) -> None:
    fake = _api(served, Answer(200, _completion(OOM_INDEX, math.log(0.9))))
    choice = ChatModel(fake.url + "/v1", "gpt-4o-mini", api_key="k").choose(_oom(), PATTERNS)
    assert ModelChoice("oom-memory-leak", 0.9, "gpt-4o-mini") == choice
    [(path, body, authorization)] = fake.requests
    assert ("/v1/chat/completions", "Bearer k") == (path, authorization)
    assert (1, 0, True) == (body["max_tokens"], body["temperature"], body["logprobs"])
    assert body["top_logprobs"] >= 1
    assert f"{OOM_INDEX}. oom-memory-leak" in body["messages"][1]["content"]


def test_agreeing_model_with_logprobs_averages_with_the_heuristic(served: list[FakeJsonApi]) -> None:
    fake = _api(served, Answer(200, _completion(OOM_INDEX, math.log(0.9))))
    diagnosis = CompositeDiagnoser(ChatModel(fake.url, "m")).diagnose(_oom())
    assert 0.925 == pytest.approx(diagnosis.confidence)  # (0.9 + 0.95) / 2
    assert {
        "formula": "composite-v1",
        "heuristic": 0.95,
        "model_probability": 0.9,
        "agrees": True,
    }.items() <= (dict(diagnosis.components).items())
    assert () == diagnosis.problems


def test_model_without_logprobs_is_capped_below_autonomy(served: list[FakeJsonApi]) -> None:
    fake = _api(served, Answer(200, _completion(OOM_INDEX, None)))
    diagnosis = CompositeDiagnoser(ChatModel(fake.url, "m")).diagnose(_oom())
    assert 0.84 == diagnosis.confidence
    assert diagnosis.components["model_probability"] is None


def test_disagreeing_model_halves_the_lower_confidence(served: list[FakeJsonApi]) -> None:
    fake = _api(served, Answer(200, _completion("0", math.log(0.8))))
    diagnosis = CompositeDiagnoser(ChatModel(fake.url, "m")).diagnose(_oom())
    assert 0.4 == pytest.approx(diagnosis.confidence)
    assert diagnosis.components["agrees"] is False
    assert "rolling_restart" == diagnosis.action_type  # the catalog's action, not the model's


@pytest.mark.parametrize(
    ("answer", "timeout", "problem"),
    [
        (Answer(500, {"error": {"message": "upstream down"}}), 2.0, "answered 500"),
        (Answer(200, _completion("7", math.log(0.9)), delay=1.0), 0.2, "timed out"),
        (Answer(200, _completion("x", math.log(0.9))), 2.0, "not a number"),
        (Answer(200, {"choices": []}), 2.0, "malformed"),
    ],
)
def test_failing_model_is_a_recorded_problem_and_the_capped_heuristic(
    served: list[FakeJsonApi], answer: Answer, timeout: float, problem: str
) -> None:
    fake = _api(served, answer)
    diagnosis = CompositeDiagnoser(ChatModel(fake.url, "m", timeout=timeout)).diagnose(_oom())
    assert 0.84 == diagnosis.confidence
    assert problem in diagnosis.problems[0]


def test_holmes_analysis_is_attached_and_never_raises_confidence(served: list[FakeJsonApi]) -> None:
    holmes = _api(
        served, Answer(200, {"analysis": "checkout leaks memory in the cart cache", "tool_calls": []})
    )
    model = _api(served, Answer(200, _completion(OOM_INDEX, None)))
    diagnosis = CompositeDiagnoser(ChatModel(model.url, "m"), HolmesClient(holmes.url)).diagnose(_oom())
    assert "checkout leaks memory in the cart cache" == diagnosis.analysis
    assert 0.84 == diagnosis.confidence
    [(path, body, _)] = holmes.requests
    assert "/api/investigate" == path
    assert {"name": "checkout", "namespace": "shop", "kind": "deployment"} == body["subject"]


def test_holmes_failure_leaves_a_note_not_a_problem(served: list[FakeJsonApi]) -> None:
    holmes = _api(served, Answer(500, {"detail": "boom"}))
    diagnosis = CompositeDiagnoser(holmes=HolmesClient(holmes.url)).diagnose(_oom())
    assert diagnosis.analysis is None
    assert "answered 500" in diagnosis.notes[0]
    assert () == diagnosis.problems
    assert 0.95 == diagnosis.confidence


@pytest.mark.parametrize(
    ("heuristic", "probability", "agrees", "expected"),
    [(0.95, 0.9, True, 0.925), (0.95, 0.9, False, 0.45), (0.95, None, True, 0.84), (0.5, None, False, 0.25)],
)
def test_composite_formula(
    heuristic: float, probability: float | None, agrees: bool, expected: float
) -> None:
    assert expected == pytest.approx(composite(heuristic, ModelChoice("p", probability, "m"), agrees, 0.84))


def test_model_unreachable_is_a_recorded_problem() -> None:
    """Nothing listens on the model's port: the capped heuristic, and the reason."""
    model = ChatModel(f"http://127.0.0.1:{free_port()}/v1", "m", timeout=2.0)
    diagnosis = CompositeDiagnoser(model).diagnose(_oom())
    assert 0.84 == diagnosis.confidence
    assert 1 == len(diagnosis.problems)
    assert "model:" in diagnosis.problems[0]


def test_holmes_unreachable_leaves_a_note() -> None:
    holmes = HolmesClient(f"http://127.0.0.1:{free_port()}", timeout=2.0)
    diagnosis = CompositeDiagnoser(holmes=holmes).diagnose(_oom())
    assert (None, (), 0.95) == (diagnosis.analysis, diagnosis.problems, diagnosis.confidence)
    assert 1 == len(diagnosis.notes)
