"""Assemble the agent from settings: the one place that builds stores, sources and channels."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from pyagent.abort import abort
from pyagent.access import Access
from pyagent.agent import Agent
from pyagent.audit import AuditLog
from pyagent.changes import ChangeDesk
from pyagent.console.auth import Gate, load_secret
from pyagent.console.desk import Desk
from pyagent.context import Sources
from pyagent.execution import execute_action
from pyagent.executors import Executor
from pyagent.executors.dryrun import DryRunExecutor
from pyagent.executors.guardrails import Guardrails
from pyagent.executors.routing import ExecutorRoutes
from pyagent.hands import Case, Hands
from pyagent.metrics import Metrics
from pyagent.notifiers.console import ConsoleNotifier
from pyagent.notifiers.messages import LOG, PAGERDUTY, SLACK, Messages, OutboxNotifier
from pyagent.notifiers.outbox import Channel, Outbox
from pyagent.notifiers.pagerduty import PagerDutyChannel
from pyagent.notifiers.slack import SlackChannel
from pyagent.opa import EmbeddedOpa, OpaClient
from pyagent.recovery import recover
from pyagent.servicenow import ServiceNow
from pyagent.settings import Settings
from pyagent.sources import ErrorBudgetSource, InventorySource
from pyagent.sources.catalog import ActionCatalog, policy_data, rate_limit_window
from pyagent.sources.composite import CompositeDiagnoser
from pyagent.sources.guardrails import FileGuardrails
from pyagent.sources.history_sqlite import HistorySQLite
from pyagent.sources.holmes import HolmesClient
from pyagent.sources.inventory_file import InventoryFile
from pyagent.sources.model import ChatModel
from pyagent.sources.novelty import HistoryNovelty
from pyagent.sources.prometheus_budget import PrometheusErrorBudget
from pyagent.sources.prometheus_traffic import PrometheusTraffic
from pyagent.splunk import SplunkForwarder
from pyagent.store import Store
from pyagent.supervision import Policy, Supervisor


@dataclass(frozen=True)
class Running:
    agent: Agent
    opa_url: str
    desk: Desk


def build_sources(settings: Settings, history_path: Path) -> Sources:
    """The context sources the settings choose, with history in ``history_path``."""
    history = HistorySQLite(history_path)
    data = settings.policy_dir / "escalation" / "policy.json"
    window = rate_limit_window(data)
    catalog = ActionCatalog.load(data)
    return Sources(
        inventory=_inventory(settings),
        history=history,
        diagnoser=_diagnoser(settings),
        guardrails=FileGuardrails(settings.kill_switch_path, history, window, settings.kill_switch),
        catalog=catalog,
        budget=_budget_source(settings),
        novelty=HistoryNovelty(history, settings.novelty_threshold),
    )


def _inventory(settings: Settings) -> InventorySource:
    """The inventory file, or the Kubernetes API with the file for the figures the cluster lacks."""
    figures = InventoryFile(settings.inventory)
    if settings.inventory_source != "kubernetes":
        return figures
    # the Kubernetes client is imported only by deployments that use it
    from pyagent.kube import KubeTarget  # noqa: PLC0415
    from pyagent.sources.kube_facts import KubeInventoryConfig  # noqa: PLC0415
    from pyagent.sources.kube_inventory import KubeInventory  # noqa: PLC0415

    traffic = None
    if settings.traffic_query and settings.prometheus_url:
        traffic = PrometheusTraffic(
            settings.prometheus_url, settings.traffic_query, timeout=settings.prometheus_timeout
        )
    config = KubeInventoryConfig(
        shared_namespaces=frozenset(settings.shared_infrastructure_namespaces),
        shared_labels=settings.shared_infrastructure_labels,
        cache_seconds=settings.kube_cache_seconds,
        timeout=settings.kube_timeout,
    )
    return KubeInventory(
        KubeTarget(settings.kubeconfig, settings.kube_context, settings.kube_in_cluster),
        config,
        figures=figures,
        budget_from_figures=settings.error_budget != "prometheus",
        traffic=traffic,
    )


def _diagnoser(settings: Settings) -> CompositeDiagnoser:
    """The catalog, with the model and HolmesGPT when they are configured."""
    model = None
    if settings.llm_url and settings.llm_model:
        model = ChatModel(
            settings.llm_url, settings.llm_model, api_key=settings.llm_api_key, timeout=settings.llm_timeout
        )
    holmes = (
        HolmesClient(settings.holmes_url, timeout=settings.holmes_timeout) if settings.holmes_url else None
    )
    return CompositeDiagnoser(model, holmes, cap_without_logprobs=settings.confidence_cap_without_logprobs)


def _budget_source(settings: Settings) -> ErrorBudgetSource | None:
    """The configured error-budget source; None keeps the inventory's figures."""
    if settings.error_budget != "prometheus" or not settings.prometheus_url:
        return None
    return PrometheusErrorBudget(
        settings.prometheus_url,
        settings.prometheus_query,
        max_sample_age=settings.prometheus_max_sample_age,
        timeout=settings.prometheus_timeout,
    )


def build_executor(
    settings: Settings, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> ExecutorRoutes:
    """The executor of each target: ``executor`` by default, ``executor_routes`` by pattern.
    Clients are made only for the executors named; the dry-run and Kubernetes executors
    stamp a restart with the time on ``clock``."""
    routes = settings.executor_routes or {}
    names = {settings.executor, *routes.values()}
    made: dict[str, Executor] = {"dry-run": DryRunExecutor(clock)}
    if "kubernetes" in names:
        from pyagent.executors.kubernetes import KubernetesExecutor  # noqa: PLC0415 - only when used
        from pyagent.kube import KubeTarget, api_client  # noqa: PLC0415

        target = KubeTarget(settings.kubeconfig, settings.kube_context, settings.kube_in_cluster)
        api = api_client(target, retries=0)  # no transport retries: an executor call is never resent
        made["kubernetes"] = KubernetesExecutor(api, timeout=settings.kube_timeout, clock=clock)
    if "docker" in names:
        from pyagent.executors.docker import DockerExecutor  # noqa: PLC0415

        made["docker"] = DockerExecutor.connect(settings.docker_url, timeout=settings.docker_timeout)
    return ExecutorRoutes.named(made, settings.executor, routes)


def verify_seconds(settings: Settings) -> dict[str, float]:
    """Each catalogued action's verification deadline (``verify_seconds``), from the policy data."""
    catalog = policy_data(settings.policy_dir / "escalation" / "policy.json").get("catalog", {})
    return {name: float(entry.get("verify_seconds", 300)) for name, entry in catalog.items()}


def guardrails(settings: Settings) -> Guardrails:
    """The guardrails outside the policy: the kill switch (setting or file), the global cap."""
    kill_file = settings.kill_switch_path
    return Guardrails(
        kill_switch=lambda: settings.kill_switch or kill_file.exists(),
        max_concurrent=settings.max_concurrent_actions,
    )


@contextmanager
def policy_client(settings: Settings) -> Iterator[OpaClient]:
    """A client for ``settings.opa_url``, or for an OPA started here on the policy directory."""
    with ExitStack() as stack:
        yield _policy_engine(settings, stack)[1]


@contextmanager
def running_agent(settings: Settings) -> Iterator[Running]:
    """The agent with its OPA (started here unless ``opa_url`` is set), stores and workers."""
    with ExitStack() as stack:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        opa_url, client = _policy_engine(
            settings, stack, log_path=settings.state_dir / "opa.log", parallel=settings.opa_parallel_requests
        )
        audit = _audit_log(settings, stack)
        store = Store(settings.state_dir / "agent.db")
        stack.callback(store.close)
        sources = build_sources(settings, settings.state_dir / "history.db")
        messages, outbox = _channels(settings, store, audit, stack)
        changes = _change_desk(settings, store, audit, stack)

        def run_approved(case: Case) -> str:
            return execute_action(case, hands)

        access = Access.load(settings.console_users)
        supervisor = Supervisor(
            store, outbox, messages, changes, access, audit, Policy(sources, client), run_approved
        )
        outbox.on_failure = supervisor.on_delivery_failure
        hands = Hands(
            build_executor(settings),
            OutboxNotifier(outbox, messages),
            store,
            audit,
            changes,
            supervisor,
            history=sources.history,
            guardrails=guardrails(settings),
            verify_seconds=verify_seconds(settings),
        )
        metrics = Metrics()
        metrics.watch_ai_quality(sources.history)
        metrics.watch_change_records(changes.backlog)
        workers, executions = settings.workers, settings.max_concurrent_actions
        agent = Agent(store, audit, client, sources, hands, metrics, workers=workers, executions=executions)
        recover(hands)  # before anything can start an execution that would look like a stopped one
        for part in (outbox, supervisor, agent):  # each stopped, in reverse, when the stack closes
            part.start()
            stack.callback(part.stop)
        desk = replace(
            _desk(settings, supervisor, store, outbox, messages, access),
            abort=lambda decision_id, who: abort(decision_id, who.name, who.via, hands).to_json(),
        )
        yield Running(agent, opa_url, desk)


def _policy_engine(
    settings: Settings, stack: ExitStack, *, log_path: Path | None = None, parallel: int = 1
) -> tuple[str, OpaClient]:
    """OPA's URL and a client for it, sending up to ``parallel`` requests at once:
    ``settings.opa_url``, or an OPA started here on the policy directory (logging to
    ``log_path``), stopped when ``stack`` closes."""
    opa_url = settings.opa_url
    if not opa_url:
        opa_url = stack.enter_context(
            EmbeddedOpa(settings.policy_dir, binary=settings.opa_binary, log_path=log_path)
        ).url
    client = OpaClient(opa_url, parallel=parallel)
    stack.callback(client.close)
    return opa_url, client


def _audit_log(settings: Settings, stack: ExitStack) -> AuditLog:
    """The audit log in the state directory, forwarding to Splunk's HEC when one is set."""
    forwarder = None
    if settings.splunk_url and settings.splunk_token:
        forwarder = SplunkForwarder(settings.splunk_url, settings.splunk_token)
        stack.callback(forwarder.close)
    audit = AuditLog(settings.state_dir / "audit.jsonl", settings.instance, forwarder=forwarder)
    stack.callback(audit.close)
    return audit


def _channels(settings: Settings, store: Store, audit: AuditLog, stack: ExitStack) -> tuple[Messages, Outbox]:
    """The configured notification channels (the log always), and their outbox."""
    channels: dict[str, Channel] = {LOG: ConsoleNotifier()}
    if settings.slack_bot_token and settings.slack_channel:
        slack = SlackChannel(settings.slack_api_url, settings.slack_bot_token, settings.slack_channel)
        stack.callback(slack.close)
        channels[SLACK] = slack
    if settings.pagerduty_routing_key:
        pagerduty = PagerDutyChannel(settings.pagerduty_routing_key, settings.pagerduty_url)
        stack.callback(pagerduty.close)
        channels[PAGERDUTY] = pagerduty
    outbox = Outbox(
        store,
        channels,
        audit,
        give_up_after=settings.notification_give_up_seconds,
        unaudited=frozenset({LOG}),  # the terminal's copy; every other channel's delivery is audited
        immediate=frozenset({LOG}),
    )
    return Messages(frozenset(channels), settings.console_url), outbox


def _change_desk(settings: Settings, store: Store, audit: AuditLog, stack: ExitStack) -> ChangeDesk:
    """Change records kept in the store, filed with ServiceNow when one is set."""
    servicenow = None
    if settings.servicenow_url:
        servicenow = ServiceNow(
            settings.servicenow_url, settings.servicenow_user, settings.servicenow_password
        )
    changes = ChangeDesk(
        store,
        audit,
        settings.policy_dir / "escalation" / "policy.json",
        servicenow,
        settings.change_assignment_group,
    )
    stack.callback(changes.close)
    return changes


def _desk(  # noqa: PLR0913, PLR0917 - the parts the console works with
    settings: Settings,
    supervisor: Supervisor,
    store: Store,
    outbox: Outbox,
    messages: Messages,
    access: Access,
) -> Desk:
    gate = Gate(
        access,
        load_secret(settings.console_secret, settings.state_dir / "console.key"),
        settings.console_proxy_header,
        settings.console_proxy_groups_header,
        frozenset(p.strip() for p in settings.console_trusted_proxies.split(",") if p.strip()),
        secure_cookies=bool(settings.console_url and settings.console_url.startswith("https:")),
    )
    return Desk(
        supervisor,
        store,
        gate,
        outbox,
        messages,
        settings.state_dir / "audit.jsonl",
        settings.policy_dir,
        settings.slack_signing_secret,
    )
