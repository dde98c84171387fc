"""Error-budget source: an instant query to Prometheus per target service.

The query is a PromQL template; ``{service}`` and ``{namespace}`` are replaced by the
target's service and namespace (escaped for a label matcher); other braces are PromQL's.
The default reads Sloth's recording rule::

    slo:period_error_budget_remaining:ratio{sloth_service="{service}"}

For Pyrra (generic rules), configure::

    (pyrra_availability{slo=~"{service}-.*"} - pyrra_objective{slo=~"{service}-.*"})
      / (1 - pyrra_objective{slo=~"{service}-.*"})

When the query returns several series (several SLOs of one service), the lowest
remaining budget counts. The query is evaluated at the decision's ``now``.

**Worst case** (budget exhausted, which freezes autonomy, with the reason recorded): the
query fails (connection, timeout, non-200, ``status: error``), returns no series, returns
a value that is not a number (NaN included), or its newest sample is older than
``max_sample_age`` seconds (checked with a second query, ``timestamp(...)``, which sees
sample times only for plain selectors; for a computed expression Prometheus gives the
evaluation time, so only missing series count as stale there).
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

import requests

from pyagent.sources import BudgetFacts

SLOTH_QUERY = 'slo:period_error_budget_remaining:ratio{sloth_service="{service}"}'
PYRRA_QUERY = (
    '(pyrra_availability{slo=~"{service}-.*"} - pyrra_objective{slo=~"{service}-.*"})'
    ' / (1 - pyrra_objective{slo=~"{service}-.*"})'
)


def label_value(value: str) -> str:
    """``value`` escaped for a double-quoted PromQL label matcher."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def fill(template: str, **values: str) -> str:
    """``template`` with each ``{name}`` replaced by its value escaped for a label matcher.

    Only the given names are placeholders: PromQL's own braces stay as written."""
    if not values:
        return template
    placeholder = re.compile("|".join(re.escape("{" + name + "}") for name in values))
    return placeholder.sub(lambda found: label_value(values[found.group()[1:-1]]), template)


class PrometheusErrorBudget:
    """:class:`pyagent.sources.ErrorBudgetSource` from a Prometheus HTTP API."""

    def __init__(
        self,
        url: str,
        query: str = SLOTH_QUERY,
        *,
        max_sample_age: float = 300.0,
        timeout: float = 2.0,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.query = query
        self.max_sample_age = max_sample_age
        self.timeout = timeout
        self.session = session or requests.Session()

    def remaining(self, service: str, namespace: str, now: datetime) -> BudgetFacts:
        expression = fill(self.query, service=service, namespace=namespace)
        at = now.timestamp()
        values = self._instant(expression, at)
        if isinstance(values, str):
            return BudgetFacts.worst_case(values)
        if not values:
            return BudgetFacts.worst_case(f"no series for {expression}")
        if any(math.isnan(v) or math.isinf(v) for v in values):
            return BudgetFacts.worst_case(f"{expression} is not a number: {values}")
        stamps = self._instant(f"timestamp({expression})", at)
        if isinstance(stamps, str):
            return BudgetFacts.worst_case(stamps)
        age = at - min(stamps, default=at)
        if age > self.max_sample_age:
            return BudgetFacts.worst_case(
                f"{expression}: newest sample is {age:.0f} s old, over {self.max_sample_age:.0f} s"
            )
        return BudgetFacts(remaining=min(values))

    def _instant(self, expression: str, at: float) -> list[float] | str:
        """The values of an instant query, or why there are none."""
        return instant_query(self.session, self.url, expression, at, self.timeout)


def instant_query(
    session: requests.Session, url: str, expression: str, at: float | None, timeout: float
) -> list[float] | str:
    """The values of an instant query at ``at`` (None: now) to the Prometheus at ``url``, or why
    there are none (connection, timeout, non-200, ``status: error``, not a vector, malformed)."""
    params = {"query": expression} if at is None else {"query": expression, "time": f"{at:.3f}"}
    try:
        response = session.get(url + "/api/v1/query", params=params, timeout=timeout)
    except requests.RequestException as exc:
        return f"Prometheus at {url}: {exc}"
    try:
        body: Any = response.json()
    except ValueError:
        return f"Prometheus at {url} answered {response.status_code} with non-JSON"
    if response.status_code != 200 or body.get("status") != "success":
        return f"Prometheus at {url} answered {response.status_code}: {body.get('error', body)}"
    data = body.get("data", {})
    if data.get("resultType") != "vector":
        return f"{expression} is a {data.get('resultType')}, not an instant vector"
    try:
        return [float(sample["value"][1]) for sample in data["result"]]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return f"Prometheus at {url}: malformed result ({exc})"
