"""The encoders built once write exactly what ``json.dumps`` with their options writes, so
audit logs, policy input hashes and plan hashes made before them still match."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pyagent.encoders import CANONICAL, CANONICAL_ASCII, SORTED

DOCUMENTS: list[Any] = [
    {},
    {"zeta": [1, {"b": "é", "a": None}], "alpha": 1e-05, "mid": 0.1 + 0.2},
    {"target": {"namespace": "shop", "name": "cart ✓"}, "replicas_delta": -2, "big": 10**20},
    ["unsorted", {"y": True, "x": False}],
]
OPTIONS = [
    (CANONICAL, {"sort_keys": True, "separators": (",", ":"), "ensure_ascii": False}),
    (CANONICAL_ASCII, {"sort_keys": True, "separators": (",", ":")}),
    (SORTED, {"sort_keys": True}),
]


@pytest.mark.parametrize("document", DOCUMENTS)
@pytest.mark.parametrize(("encoder", "options"), OPTIONS)
def test_an_encoder_writes_what_json_dumps_writes(
    encoder: json.JSONEncoder, options: dict[str, Any], document: Any
) -> None:
    assert json.dumps(document, **options) == encoder.encode(document)
