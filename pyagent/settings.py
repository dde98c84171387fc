"""Configuration, loaded once into a frozen object: defaults, then the config file, then
environment variables, then command-line flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from pyagent.errors import ConfigError
from pyagent.opa import default_policy_dir
from pyagent.sources import DEFAULT_SHARED_LABELS, DEFAULT_SHARED_NAMESPACES
from pyagent.sources.prometheus_budget import SLOTH_QUERY

ENV_PREFIX = "PYAGENT_"


@dataclass(frozen=True)
class Settings:
    listen: str = "127.0.0.1:9095"
    state_dir: Path = Path("var")
    opa_url: str | None = None
    opa_binary: str | None = None
    policy_dir: Path = field(default_factory=default_policy_dir)
    webhook_token: str | None = None
    max_body_bytes: int = 1024 * 1024
    inventory: Path = Path("examples/inventory.yaml")
    kill_switch: bool = False
    kill_switch_file: Path | None = None
    splunk_url: str | None = None
    splunk_token: str | None = None
    workers: int = 1  # threads deciding alerts; levels 3 and 4 execute on max_concurrent_actions others
    server_threads: int = 4  # threads answering the console's, API's and Slack's requests
    opa_parallel_requests: int = 2  # a large batch is split into up to this many requests at once
    error_budget: str = "inventory"  # or "prometheus"
    prometheus_url: str | None = None
    prometheus_query: str = SLOTH_QUERY
    prometheus_max_sample_age: float = 300.0
    prometheus_timeout: float = 2.0
    llm_url: str | None = None  # OpenAI-compatible base URL, e.g. http://litellm:4000/v1
    llm_model: str | None = None
    llm_api_key: str | None = None
    llm_timeout: float = 10.0
    confidence_cap_without_logprobs: float = 0.84
    holmes_url: str | None = None
    holmes_timeout: float = 60.0
    kubeconfig: Path | None = None  # a kubeconfig file; unset means ~/.kube/config or KUBECONFIG
    kube_context: str | None = None
    kube_in_cluster: bool = False  # use the pod's service account instead of a kubeconfig
    kube_timeout: float = 3.0
    console_url: str | None = None  # the agent's public base URL, for links in Slack and pages
    console_users: Path | None = None  # the access file: users, password hashes, approver groups
    console_proxy_header: str | None = None  # e.g. X-Forwarded-User, set by a trusted reverse proxy
    console_proxy_groups_header: str | None = None  # e.g. X-Forwarded-Groups (comma-separated)
    console_trusted_proxies: str = "127.0.0.1,::1"  # peers whose proxy headers are believed
    console_secret: str | None = None  # signs sessions; default: a key kept in STATE_DIR/console.key
    slack_api_url: str = "https://slack.com/api"
    slack_bot_token: str | None = None
    slack_channel: str | None = None
    slack_signing_secret: str | None = None
    pagerduty_url: str = "https://events.pagerduty.com/v2/enqueue"
    pagerduty_routing_key: str | None = None
    servicenow_url: str | None = (
        None  # Table API, e.g. https://example.service-now.com/api/now/table/change_request
    )
    servicenow_user: str | None = None
    servicenow_password: str | None = None
    change_assignment_group: str = "sre"
    notification_give_up_seconds: float = 3600.0
    executor: str = "dry-run"  # the executor of every target no route names: dry-run, kubernetes, docker
    executor_routes: dict[str, str] | None = None  # "Kind/namespace/name" pattern -> executor name
    docker_url: str | None = None  # the Docker engine, e.g. unix:///var/run/docker.sock
    docker_timeout: float = 10.0
    max_concurrent_actions: int = 4
    inventory_source: str = "file"  # or "kubernetes"
    kube_cache_seconds: float = 30.0  # how long a Deployment's facts are reused; 0 reads every time
    shared_infrastructure_namespaces: tuple[str, ...] = DEFAULT_SHARED_NAMESPACES
    shared_infrastructure_labels: tuple[str, ...] = DEFAULT_SHARED_LABELS  # key=value
    traffic_query: str | None = None  # PromQL for a target's share of traffic, 0..1
    novelty_threshold: float = 0.5  # below this similarity to every past incident, a pattern is novel
    instance: str = field(default_factory=lambda: os.uname().nodename)

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0] or "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def kill_switch_path(self) -> Path:
        return self.kill_switch_file or self.state_dir / "kill-switch"


def _coerce(name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    try:
        if "tuple" in str(kind):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(item).strip() for item in items if str(item).strip())
        if "Path" in str(kind):
            return Path(value) if value is not None else None
        if "int" in str(kind):
            return int(value)
        if "float" in str(kind):
            return float(value)
        if "bool" in str(kind):
            return value if isinstance(value, bool) else str(value).lower() in {"1", "true", "yes", "on"}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: {value!r} is not a valid {kind}") from exc
    return value


def _apply(settings: Settings, values: Mapping[str, Any], where: str) -> Settings:
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    return replace(settings, **{k: _coerce(k, v) for k, v in values.items() if v is not None})


def load(config_file: Path | None, environ: Mapping[str, str], flags: Mapping[str, Any]) -> Settings:
    """Settings from defaults, ``config_file`` (YAML mapping), ``PYAGENT_*`` variables, then flags."""
    settings = Settings()
    if config_file is not None:
        try:
            loaded = yaml.safe_load(config_file.read_text("utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"config file {config_file}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {config_file}: must be a mapping of setting: value")
        settings = _apply(settings, {k.replace("-", "_"): v for k, v in loaded.items()}, str(config_file))
    from_env = {
        key[len(ENV_PREFIX) :].lower(): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :].lower() in {f.name for f in fields(Settings)}
    }
    settings = _apply(settings, from_env, "environment")
    return _checked(_apply(settings, dict(flags), "command line"))


EXECUTORS = ("dry-run", "kubernetes", "docker")


def _checked(settings: Settings) -> Settings:
    routes = settings.executor_routes or {}
    if not isinstance(routes, dict) or not all(isinstance(k, str) for k in routes):
        raise ConfigError("executor_routes: must map target patterns (Kind/namespace/name) to executor names")
    for name in (settings.executor, *routes.values()):
        if name not in EXECUTORS:
            raise ConfigError(f"executor {name!r} is not one of {', '.join(EXECUTORS)}")
    for key in ("max_concurrent_actions", "workers", "server_threads", "opa_parallel_requests"):
        if getattr(settings, key) < 1:
            raise ConfigError(f"{key}: must be at least 1")
    if settings.error_budget not in {"inventory", "prometheus"}:
        raise ConfigError(f"error_budget: {settings.error_budget!r} is not inventory or prometheus")
    if settings.error_budget == "prometheus" and not settings.prometheus_url:
        raise ConfigError("error_budget is prometheus but prometheus_url is not set")
    if bool(settings.slack_bot_token) != bool(settings.slack_channel):
        raise ConfigError("slack_bot_token and slack_channel go together: set both or neither")
    if settings.inventory_source not in {"file", "kubernetes"}:
        raise ConfigError(f"inventory_source: {settings.inventory_source!r} is not file or kubernetes")
    if not 0.0 <= settings.novelty_threshold <= 1.0:
        raise ConfigError(f"novelty_threshold: {settings.novelty_threshold} is not in 0..1")
    if settings.traffic_query and not settings.prometheus_url:
        raise ConfigError("traffic_query is set but prometheus_url is not")
    if bool(settings.llm_url) != bool(settings.llm_model):
        raise ConfigError("llm_url and llm_model go together: set both or neither")
    return settings
