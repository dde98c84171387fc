"""Traffic fraction from Prometheus: the share of user requests a target serves, 0..1.

An instant query per target (``traffic_query``), a PromQL template where ``{service}``,
``{namespace}`` and ``{deployment}`` are replaced by the target's (escaped for a label
matcher; other braces are PromQL's), for example::

    sum(rate(istio_requests_total{destination_workload="{deployment}",
        destination_workload_namespace="{namespace}"}[5m]))
      / sum(rate(istio_requests_total[5m]))

Several series count by their sum. The fraction is informational (no trigger reads it), so
a failed query, no series, or a value that is not a number in 0..1 only leaves a note and
the fraction at its worst case, 1.0.
"""

from __future__ import annotations

import math

import requests

from pyagent.sources.prometheus_budget import fill, instant_query


class PrometheusTraffic:
    """:class:`pyagent.sources.kube_inventory.TrafficSource` from a Prometheus HTTP API."""

    def __init__(
        self, url: str, query: str, *, timeout: float = 2.0, session: requests.Session | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.query = query
        self.timeout = timeout
        self.session = session or requests.Session()

    def fraction(self, service: str, namespace: str, deployment: str) -> float | str:
        """The target's share of traffic, or why it is unknown."""
        expression = fill(self.query, service=service, namespace=namespace, deployment=deployment)
        values = instant_query(self.session, self.url, expression, None, self.timeout)
        if isinstance(values, str):
            return values
        if not values:
            return f"no series for {expression}"
        total = math.fsum(values)
        if not 0.0 <= total <= 1.0:  # NaN fails both comparisons
            return f"{expression} is {total}, not a fraction in 0..1"
        return total
