"""The production diagnoser: the pattern catalog, a language model, and HolmesGPT together.

**Composite confidence, formula ``composite-v1``.** ``h`` is the catalog's heuristic
confidence (0 when no pattern matched; see :mod:`pyagent.sources.catalog`), ``m`` the
probability of the model's answer token, and the model *agrees* when it chose the
pattern the catalog matched:

- with ``m``: ``(m + h) / 2`` when it agrees, ``min(m, h) / 2`` when it does not;
- without ``m`` (the endpoint returned no log-probabilities): ``min(h, cap)`` when it
  agrees, ``min(h, cap) / 2`` when it does not. ``cap`` defaults to 0.84, below the
  policy's autonomous floor (0.85): never autonomous on heuristics alone.

The model never makes an unmatched alert known (its confidence then counts for nothing:
``h`` is 0), and the proposed action is always the catalog's. A model that fails (an
error, a timeout, an answer that is not one digit) is a failed context source: the
catalog's diagnosis stands with ``min(h, cap)``, and the reason is recorded, which caps
the decision at 1. Every decision records the formula version and each component.

HolmesGPT's analysis is attached for humans; it never changes the confidence, and its
failure only leaves a note. Without a model configured, the catalog's heuristic is the
confidence (the embedded default, whose catalog is reviewed like the policy).
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from pyagent.alerts import Alert
from pyagent.errors import ServiceError
from pyagent.sources import Diagnosis
from pyagent.sources.catalog import PATTERNS, CatalogDiagnoser, Pattern
from pyagent.sources.holmes import HolmesClient
from pyagent.sources.model import ChatModel, ModelChoice

FORMULA = "composite-v1"
DEFAULT_CAP = 0.84


def composite(heuristic: float, choice: ModelChoice, agrees: bool, cap: float) -> float:
    """The composite confidence of ``composite-v1`` (see the module's documentation)."""
    if choice.probability is None:
        capped = min(heuristic, cap)
        return round(capped if agrees else capped / 2, 6)
    m = choice.probability
    return round((m + heuristic) / 2 if agrees else min(m, heuristic) / 2, 6)


class CompositeDiagnoser:
    """:class:`pyagent.sources.Diagnoser` combining the catalog, a model and HolmesGPT."""

    def __init__(
        self,
        model: ChatModel | None = None,
        holmes: HolmesClient | None = None,
        *,
        cap_without_logprobs: float = DEFAULT_CAP,
        patterns: tuple[Pattern, ...] = PATTERNS,
    ) -> None:
        self.model = model
        self.holmes = holmes
        self.cap = cap_without_logprobs
        self.patterns = patterns
        self.catalog = CatalogDiagnoser(patterns)

    def diagnose(self, alert: Alert) -> Diagnosis:
        base = self.catalog.diagnose(alert)
        if not base.available:
            return base
        analysis, notes = self._analysis(alert)
        heuristic = base.confidence  # 0 when no pattern matched
        components: dict[str, object] = {"formula": FORMULA, "heuristic": heuristic}
        confidence, problems = base.confidence, base.problems
        if self.model is not None:
            try:
                choice = self.model.choose(alert, self.patterns)
            except (ServiceError, ValueError) as exc:
                confidence = min(heuristic, self.cap)
                problems = (*problems, f"model: {exc}")
                components.update(model=self.model.model, model_error=str(exc), cap=self.cap)
            else:
                agrees = base.known and choice.pattern_id == base.pattern_id
                confidence = composite(heuristic, choice, agrees, self.cap)
                components.update(
                    model=choice.model,
                    model_choice=choice.pattern_id,
                    model_probability=choice.probability,
                    agrees=agrees,
                    cap=self.cap,
                )
        return replace(
            base,
            confidence=confidence,
            problems=problems,
            components=MappingProxyType(components),
            analysis=analysis,
            notes=notes,
        )

    def _analysis(self, alert: Alert) -> tuple[str | None, tuple[str, ...]]:
        if self.holmes is None:
            return None, ()
        try:
            return self.holmes.investigate(alert), ()
        except ServiceError as exc:
            return None, (f"no analysis: {exc}",)
