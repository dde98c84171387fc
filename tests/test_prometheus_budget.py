"""The Prometheus error-budget source against a real Prometheus scraping a test exporter."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import yaml

from pyagent.alerts import parse_webhook
from pyagent.app import build_sources
from pyagent.evaluate import Evaluation, evaluate
from pyagent.executors.dryrun import DryRunExecutor
from pyagent.opa import OpaClient, free_port
from pyagent.settings import Settings
from pyagent.sources.prometheus_budget import PYRRA_QUERY, PrometheusErrorBudget
from pyagent.sources.prometheus_traffic import PrometheusTraffic
from tests.serving import EXAMPLES, example

BINARY = "prometheus"
OLD_SECONDS = 120
EXPOSITION = """\
# TYPE slo:period_error_budget_remaining:ratio gauge
slo:period_error_budget_remaining:ratio{{sloth_service="checkout",sloth_slo="availability"}} 0.42
slo:period_error_budget_remaining:ratio{{sloth_service="checkout",sloth_slo="latency"}} 0.9
slo:period_error_budget_remaining:ratio{{sloth_service="payments",sloth_slo="availability"}} NaN
slo:period_error_budget_remaining:ratio{{sloth_service="ledger",sloth_slo="availability"}} 0.8 {old_ms}
# TYPE pyrra_availability gauge
pyrra_availability{{slo="search-availability"}} 0.9995
# TYPE pyrra_objective gauge
pyrra_objective{{slo="search-availability"}} 0.999
# TYPE traffic_share gauge
traffic_share{{namespace="shop",deployment="checkout",route="api"}} 0.03
traffic_share{{namespace="shop",deployment="checkout",route="web"}} 0.02
traffic_share{{namespace="shop",deployment="cart",route="api"}} 1.5
"""


@dataclass
class Exporter:
    """A /metrics endpoint serving fixed text, as an SLO exporter would."""

    text: str
    port: int = field(default_factory=free_port)


def _handler(exporter: Exporter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = exporter.text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    return Handler


@dataclass(frozen=True)
class Prometheus:
    url: str
    started: float


def _ready(url: str) -> bool:
    try:
        return requests.get(url + "/-/ready", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


def _has(url: str, query: str) -> bool:
    found = requests.get(url + "/api/v1/query", params={"query": query}, timeout=5).json()
    return bool(found["data"]["result"])


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Prometheus on loopback scraping the exporter every second, until every series is in."""
    binary = shutil.which(BINARY)
    if binary is None:
        pytest.fail(f"{BINARY} is not installed: `make setup` installs the prometheus package")
    workdir = tmp_path_factory.mktemp("prometheus")
    started = time.time()
    exporter = Exporter(EXPOSITION.format(old_ms=int((started - OLD_SECONDS) * 1000)))
    server = ThreadingHTTPServer(("127.0.0.1", exporter.port), _handler(exporter))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "slo", "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}]}
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 60
        while not (
            _ready(url)
            and _has(url, "pyrra_objective")
            and _has(url, "traffic_share")
            and _has(url, 'slo:period_error_budget_remaining:ratio{sloth_service="ledger"}')
        ):
            if time.monotonic() > deadline or process.poll() is not None:
                text = (workdir / "prometheus.log").read_text()
                pytest.fail(f"Prometheus did not scrape the exporter; its log:\n{text}")
            time.sleep(0.2)
        yield Prometheus(url, started)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        server.shutdown()
        server.server_close()


def _now() -> datetime:
    return datetime.now(UTC)


def test_lowest_remaining_budget_of_the_service_counts(prometheus: Prometheus) -> None:
    facts = PrometheusErrorBudget(prometheus.url).remaining("checkout", "shop", _now())
    assert (0.42, ()) == (facts.remaining, facts.problems)


def test_missing_series_is_the_worst_case(prometheus: Prometheus) -> None:
    facts = PrometheusErrorBudget(prometheus.url).remaining("search", "search", _now())
    assert 0.0 == facts.remaining
    assert "no series" in facts.problems[0]


def test_nan_is_the_worst_case(prometheus: Prometheus) -> None:
    facts = PrometheusErrorBudget(prometheus.url).remaining("payments", "payments", _now())
    assert 0.0 == facts.remaining
    assert "not a number" in facts.problems[0]


def test_stale_sample_is_the_worst_case(prometheus: Prometheus) -> None:
    source = PrometheusErrorBudget(prometheus.url, max_sample_age=30)
    facts = source.remaining("ledger", "ledger", _now())
    assert 0.0 == facts.remaining
    assert "old, over 30 s" in facts.problems[0]
    assert (
        0.8
        == PrometheusErrorBudget(prometheus.url, max_sample_age=3600)
        .remaining("ledger", "x", _now())
        .remaining
    )


def test_pyrra_query_computes_remaining_budget(prometheus: Prometheus) -> None:
    facts = PrometheusErrorBudget(prometheus.url, PYRRA_QUERY).remaining("search", "search", _now())
    assert facts.problems == ()
    assert 0.5 == pytest.approx(facts.remaining)


def test_query_error_is_the_worst_case(prometheus: Prometheus) -> None:
    facts = PrometheusErrorBudget(prometheus.url, "slo:(").remaining("checkout", "shop", _now())
    assert 0.0 == facts.remaining
    assert "answered 400" in facts.problems[0]


def test_prometheus_down_is_the_worst_case() -> None:
    facts = PrometheusErrorBudget(f"http://127.0.0.1:{free_port()}", timeout=0.5).remaining(
        "checkout", "shop", _now()
    )
    assert 0.0 == facts.remaining
    assert "Prometheus at" in facts.problems[0]


def test_label_values_are_escaped(prometheus: Prometheus) -> None:
    facts = PrometheusErrorBudget(prometheus.url).remaining('checkout"} or vector(1) #', "shop", _now())
    assert "no series" in facts.problems[0]


def _decide(prometheus: Prometheus, opa: OpaClient, tmp_path: Path, example_name: str) -> Evaluation:
    settings = Settings(
        state_dir=tmp_path,
        inventory=EXAMPLES / "inventory.yaml",
        error_budget="prometheus",
        prometheus_url=prometheus.url,
    )
    delivery = parse_webhook(json.dumps(example(example_name)).encode())
    [evaluation] = evaluate(
        delivery, build_sources(settings, tmp_path / "history.db"), opa, DryRunExecutor(), _now()
    )
    return evaluation


def test_agent_takes_the_budget_from_prometheus(
    prometheus: Prometheus, opa: OpaClient, tmp_path: Path
) -> None:
    """The inventory says checkout has 0.8 left; Prometheus says 0.42, and Prometheus wins."""
    evaluation = _decide(prometheus, opa, tmp_path, "level-4-oom-restart")
    assert 0.42 == evaluation.context.policy_input()["error_budget"]["remaining"]
    assert "error_budget_degraded" in {t.id for t in evaluation.verdict.decision.triggers}


def test_agent_freezes_autonomy_when_the_budget_cannot_be_read(
    prometheus: Prometheus, opa: OpaClient, tmp_path: Path
) -> None:
    evaluation = _decide(prometheus, opa, tmp_path, "regulated-pci")  # payments exports NaN
    assert 1 == evaluation.verdict.decision.level
    assert "error_budget_exhausted" in {t.id for t in evaluation.verdict.decision.triggers}
    assert evaluation.context.problems[0].startswith("error budget: ")


TRAFFIC = 'traffic_share{namespace="{namespace}",deployment="{deployment}"}'


def test_traffic_fraction_sums_the_target_series(prometheus: Prometheus) -> None:
    assert 0.05 == pytest.approx(
        PrometheusTraffic(prometheus.url, TRAFFIC).fraction("shop", "shop", "checkout")
    )


@pytest.mark.parametrize(("deployment", "problem"), [("ghost", "no series"), ("cart", "not a fraction")])
def test_traffic_fraction_unknown_says_why(prometheus: Prometheus, deployment: str, problem: str) -> None:
    answer = PrometheusTraffic(prometheus.url, TRAFFIC).fraction("shop", "shop", deployment)
    assert isinstance(answer, str)
    assert problem in answer


def test_traffic_fraction_with_prometheus_down_says_why() -> None:
    answer = PrometheusTraffic(f"http://127.0.0.1:{free_port()}", TRAFFIC, timeout=0.5).fraction(
        "s", "n", "d"
    )
    assert isinstance(answer, str)
    assert "Prometheus at" in answer
