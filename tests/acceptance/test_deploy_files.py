"""The Procfile's commands come up against the test services; docker-compose.yml is valid, and so
are the monitoring files it mounts (Prometheus's scrape config, Grafana's provisioning and the
timers dashboard)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
import yaml

from tests.support import processes, skips
from tests.support.services import API_KEY, LOCAL_NETWORKS, Services
from timers.embedded import free_port

PROCFILE = processes.ROOT / "Procfile"

# What each process prints once it is up.
READY: dict[str, str | None] = {
    "release": None,  # runs to completion
    "api": "Application startup complete",
    "scheduler": "scheduler started",
    "worker": "ready",
    "flower": "Visit me at",
}


def procfile() -> dict[str, str]:
    entries = {}
    for line in PROCFILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = command.strip()
    return entries


def test_procfile_has_the_four_processes_and_the_release_step() -> None:
    assert set(procfile()) == set(READY)


def test_each_procfile_command_comes_up(services: Services, database_url: str) -> None:
    port, flower_port = free_port(), free_port()
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": services.redis_database(13),
        "TIMERS_ALLOWED_NETWORKS": LOCAL_NETWORKS,
        "API_KEY": API_KEY,
        "PORT": str(port),
        "FLOWER_PORT": str(flower_port),
        "FLOWER_BASIC_AUTH": "admin:s3cret-flower",
        "PATH": f"{processes.BIN}{os.pathsep}{os.environ['PATH']}",
    }
    commands = procfile()
    release = subprocess.run(
        ["bash", "-c", commands["release"]],
        env={**os.environ, **env},
        cwd=processes.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert release.returncode == 0, release.stderr
    started = []
    try:
        for name, command in commands.items():
            if READY[name] is None:
                continue
            argv = shlex.split(command)
            started.append((name, processes.Process(name, argv, env)))
        for name, proc in started:
            assert proc.wait_for_output(READY[name] or "", 60), f"{name}:\n{proc.output()}"
            assert proc.popen.poll() is None, f"{name} exited:\n{proc.output()}"
    finally:
        for _, proc in started:
            proc.stop()


def test_procfile_flower_wants_a_password_and_listens_on_loopback(services: Services) -> None:
    port = free_port()
    env = {
        "REDIS_URL": services.redis_database(13),
        "FLOWER_PORT": str(port),
        "PATH": f"{processes.BIN}{os.pathsep}{os.environ['PATH']}",
    }
    argv = shlex.split(procfile()["flower"])
    # Without a password it refuses to start, saying what to set.
    for unset in (
        {"FLOWER_BASIC_AUTH": ""},
        {"FLOWER_BASIC_AUTH": "", "FLOWER_ADDRESS": "0.0.0.0"},
    ):
        refused = processes.Process("flower", argv, {**env, **unset})
        try:
            assert refused.popen.wait(30) != 0, refused.output()
        except subprocess.TimeoutExpired:
            pytest.fail(f"flower started without FLOWER_BASIC_AUTH:\n{refused.output()}")
        finally:
            refused.stop()
        assert "FLOWER_BASIC_AUTH" in refused.output()
    flower = processes.Process("flower", argv, {**env, "FLOWER_BASIC_AUTH": "admin:s3cret-flower"})
    try:
        assert flower.wait_for_output("Visit me at", 60), flower.output()
        url = f"http://127.0.0.1:{port}/"
        assert wait_for_status(url, None) == 401
        assert wait_for_status(url, ("admin", "s3cret-flower")) == 200
        listening = [
            c.laddr
            for c in psutil.Process(flower.popen.pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening
    finally:
        flower.stop()


def wait_for_status(url: str, auth: tuple[str, str] | None, timeout: float = 30) -> int:
    """The HTTP status `url` answers with, once it answers at all."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return requests.get(url, auth=auth, timeout=5).status_code
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_is_valid_and_keeps_flower_private() -> None:
    command = compose_command()
    if command is None:
        skips.skip(skips.COMPOSE, "neither `docker compose` nor `docker-compose` is installed")

    def config(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, "config"],
            cwd=processes.ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    result = config(API_KEY="k" * 32, FLOWER_BASIC_AUTH="admin:secret")
    assert result.returncode == 0, result.stderr
    for service in ("postgres", "redis", "migrate", "api", "scheduler", "worker", "flower"):
        assert f"  {service}:" in result.stdout
    assert "service_completed_successfully" in result.stdout
    assert "service_healthy" in result.stdout
    # Flower can shut workers down: behind a password, and on this host's loopback only.
    assert "FLOWER_BASIC_AUTH: admin:secret" in result.stdout
    assert "127.0.0.1:5555:5555" in result.stdout
    refused = config(API_KEY="k" * 32, FLOWER_BASIC_AUTH="")
    assert refused.returncode != 0
    assert "FLOWER_BASIC_AUTH" in refused.stderr


# --- Monitoring: docker compose's `monitoring` profile, Prometheus and Grafana -------------------

COMPOSE_FILE = processes.ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = processes.ROOT / "deploy" / "prometheus.yml"
GRAFANA = processes.ROOT / "deploy" / "grafana"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "timers.yml"
DASHBOARD = GRAFANA / "dashboards" / "timers.json"
OPERATIONS = processes.ROOT / "docs" / "operations.md"
MONITORING = ("prometheus", "grafana")

# The metrics the processes expose, as the metrics contract fixes them (name: type). The metrics
# table of docs/operations.md is the reference once it exists; this list is the fallback and what
# the dashboard must show in full.
CONTRACT_METRICS = {
    "timers_callback_lateness_seconds": "histogram",
    "timers_deliveries_total": "counter",
    "timers_delivery_duration_seconds": "histogram",
    "timers_deliveries_in_flight": "gauge",
    "timers_enqueued_total": "counter",
    "timers_claim_duration_seconds": "histogram",
    "timers_load_duration_seconds": "histogram",
    "timers_recovered_total": "counter",
    "timers_cache_size": "gauge",
    "timers_due_backlog": "gauge",
    "timers_pending": "gauge",
    "timers_purged_total": "counter",
    "timers_api_requests_total": "counter",
    "timers_api_request_duration_seconds": "histogram",
}
# Labels of those metrics, plus the ones Prometheus and histograms add.
KNOWN_LABELS = {"kind", "outcome", "route", "method", "code", "le", "instance", "job"}


def compose_file() -> dict[str, Any]:
    """docker-compose.yml as YAML (anchors and merge keys resolved, nothing interpolated)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_config(*args: str, env: dict[str, str]) -> dict[str, Any]:
    """What `docker compose [args] config` makes of docker-compose.yml, parsed."""
    command = compose_command()
    if command is None:
        skips.skip(skips.COMPOSE, "neither `docker compose` nor `docker-compose` is installed")
    # Nothing from the caller's environment may turn the profile on or supply the password.
    dropped = {"COMPOSE_PROFILES", "COMPOSE_FILE", "GRAFANA_ADMIN_PASSWORD"}
    base = {k: v for k, v in os.environ.items() if k not in dropped}
    result = subprocess.run(
        [*command, *args, "config"],
        cwd=processes.ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def published_ports(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) of each published port, in either spelling."""
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):  # docker compose v2: the long syntax
            ports.append(
                (str(port.get("host_ip", "")), str(port["published"]), str(port["target"]))
            )
            continue
        parts = str(port).split("/")[0].split(":")  # docker-compose v1: "127.0.0.1:3000:3000/tcp"
        parts = [""] * (3 - len(parts)) + parts
        ports.append((parts[0], parts[1], parts[2]))
    return ports


def mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read-only) of each volume, in either spelling."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found.append(
                (str(volume.get("source", "")), volume["target"], bool(volume.get("read_only")))
            )
            continue
        source, target, *mode = str(volume).split(":")
        found.append((source, target, "ro" in mode))
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def monitoring_env(**extra: str) -> dict[str, str]:
    return {"API_KEY": "k" * 32, "FLOWER_BASIC_AUTH": "admin:secret", **extra}


def test_docker_compose_monitoring_profile_is_valid_and_private() -> None:
    config = compose_config(
        "--profile", "monitoring", env=monitoring_env(GRAFANA_ADMIN_PASSWORD="s3cret-grafana")
    )
    services = config["services"]
    for name in MONITORING:
        assert name in services, f"{name} missing under --profile monitoring"
        assert services[name].get("profiles") == ["monitoring"]
        # Published on this host's loopback only, like Flower.
        ports = published_ports(services[name])
        assert ports, f"{name} publishes nothing"
        assert all(host == "127.0.0.1" for host, _, _ in ports), ports
    assert ("127.0.0.1", "9090", "9090") in published_ports(services["prometheus"])
    assert ("127.0.0.1", "3000", "3000") in published_ports(services["grafana"])
    assert environment(services["grafana"])["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret-grafana"
    # The configuration is mounted read-only from deploy/.
    prometheus_mounts = {t: (Path(s), ro) for s, t, ro in mounts(services["prometheus"])}
    assert prometheus_mounts["/etc/prometheus/prometheus.yml"] == (PROMETHEUS_CONFIG, True)
    grafana_mounts = {t: (Path(s), ro) for s, t, ro in mounts(services["grafana"])}
    assert grafana_mounts["/etc/grafana/provisioning"] == (GRAFANA / "provisioning", True)
    assert grafana_mounts["/etc/grafana/dashboards"] == (GRAFANA / "dashboards", True)
    # The scheduler and the workers serve /metrics where deploy/prometheus.yml scrapes them; the
    # API serves it on its own port.
    assert environment(services["scheduler"])["TIMERS_METRICS_PORT"] == "9101"
    assert environment(services["worker"])["TIMERS_METRICS_PORT"] == "9102"
    assert "TIMERS_METRICS_PORT" not in environment(services["api"])
    # The merged environments keep everything the shared anchor gives.
    for name in ("scheduler", "worker"):
        env = environment(services[name])
        assert env["API_KEY"] == "k" * 32
        assert env["DATABASE_URL"] == environment(services["api"])["DATABASE_URL"]


def test_docker_compose_default_profile_leaves_monitoring_out() -> None:
    # No GRAFANA_ADMIN_PASSWORD: a plain `docker compose up` must not ask for it.
    config = compose_config(env=monitoring_env())
    services = config["services"]
    for name in ("postgres", "redis", "migrate", "api", "scheduler", "worker", "flower"):
        assert name in services
        assert not services[name].get("profiles"), f"{name} must run without a profile"
    for name in MONITORING:
        # docker compose v2 leaves disabled services out; docker-compose v1 prints them with their
        # profile, and `up` starts them only with that profile.
        if name in services:
            assert services[name].get("profiles") == ["monitoring"], name


def test_grafana_refuses_to_start_without_an_admin_password() -> None:
    """GRAFANA_ADMIN_PASSWORD can't be `${…:?}` (compose interpolates services of every profile),
    so Grafana's entrypoint checks it: without it Grafana would create admin/admin."""
    grafana = compose_file()["services"]["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-}"
    # Compose turns `$$` into `$`; then the entrypoint runs as the container would run it.
    argv = [part.replace("$$", "$") for part in grafana["entrypoint"]]
    assert argv[:2] == ["/bin/sh", "-c"]

    def start(password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", *argv[1:]],
            env={"PATH": os.environ["PATH"], "GF_SECURITY_ADMIN_PASSWORD": password},
            capture_output=True,
            text=True,
            timeout=10,
        )

    refused = start("")
    assert refused.returncode == 1
    assert "GRAFANA_ADMIN_PASSWORD" in refused.stderr
    # With a password it goes on to Grafana's own /run.sh (absent outside the image).
    started = start("s3cret-grafana")
    assert "GRAFANA_ADMIN_PASSWORD" not in started.stderr
    assert "/run.sh" in started.stderr or started.returncode == 0


def test_prometheus_scrapes_the_compose_services_where_they_serve_metrics() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["global"]["scrape_interval"] == "15s"
    targets: dict[str, str] = {}
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets[host] = port
    # The compose services, by the names compose's network gives them.
    services = compose_file()["services"]
    assert set(targets) == {"api", "scheduler", "worker"} <= set(services), targets
    # The API serves /metrics on the port its command listens on; the scheduler and the workers
    # on TIMERS_METRICS_PORT, which the shared anchor (so the API and Flower) doesn't set.
    api_command = services["api"]["command"]
    assert targets["api"] == api_command[api_command.index("--port") + 1] == "8080"
    assert targets["scheduler"] == services["scheduler"]["environment"]["TIMERS_METRICS_PORT"]
    assert targets["worker"] == services["worker"]["environment"]["TIMERS_METRICS_PORT"]
    assert (targets["scheduler"], targets["worker"]) == ("9101", "9102")
    assert "TIMERS_METRICS_PORT" not in compose_file()["x-timers"]["environment"]
    assert "TIMERS_METRICS_PORT" not in services["flower"]["environment"]


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    datasources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert len(datasources) == 1
    source = datasources[0]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"  # the compose service and its port
    providers = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"]
    assert [p["type"] for p in providers] == ["file"]
    grafana = compose_file()["services"]["grafana"]
    # Bind mounts from this repository: its folder -> the path in the container.
    targets = {
        (processes.ROOT / source).resolve(): target
        for source, target, *_ in (volume.split(":") for volume in grafana["volumes"])
        if source.startswith(".")
    }
    assert providers[0]["options"]["path"] == targets[DASHBOARD.parent.resolve()]
    assert targets[DATASOURCES.parent.parent.resolve()] == "/etc/grafana/provisioning"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{providers[0]['options']['path']}/{DASHBOARD.name}"


def documented_metrics() -> dict[str, str | None]:
    """Metric names (and types where given) from the metrics table of docs/operations.md: backticked
    `timers_…` names in table rows under a heading that contains "Metrics". Empty without one."""
    found: dict[str, str | None] = {}
    level = None
    fenced = False
    for line in OPERATIONS.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        heading = re.match(r"(#+)\s+(.*)", line)
        if heading:
            depth = len(heading.group(1))
            if level is not None and depth <= level:
                level = None
            if level is None and "metrics" in heading.group(2).lower():
                level = depth
            continue
        if level is None or not line.lstrip().startswith("|"):
            continue
        kind = re.search(r"\b(counter|gauge|histogram)\b", line, re.IGNORECASE)
        for name in re.findall(r"`(timers_[a-z0-9_]+)", line):
            found[name] = kind.group(1).lower() if kind else CONTRACT_METRICS.get(name)
    return found


def exposed_names(metrics: dict[str, str | None]) -> set[str]:
    """The series names prometheus-client exposes for these metrics."""
    names = set()
    for name, kind in metrics.items():
        if kind == "histogram":
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            names |= {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
        elif kind == "counter":
            names.add(name if name.endswith("_total") else f"{name}_total")
        elif kind == "gauge":
            names.add(name)
        else:
            names |= {name, f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def dashboard_queries() -> list[tuple[str, dict[str, Any]]]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = []
    for panel in dashboard["panels"]:
        panels.extend([panel, *panel.get("panels", [])])  # rows may hold panels
    return [(panel["title"], target) for panel in panels for target in panel.get("targets", [])]


def test_dashboard_is_provisionable_and_reads_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "timers"
    assert 36 <= dashboard["schemaVersion"] <= 41
    uid = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["uid"]
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert len(titles) == len(set(titles)), titles
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]
            assert target["expr"].strip(), panel["title"]
    # The panels the dashboard is for.
    wanted = [
        "lateness p50 / p99 by kind",
        "deliveries per second by kind and outcome",
        "failure ratio",
        "due backlog",
        "pending",
        "cache size",
        "in-flight deliveries",
        "claim and load duration p99",
        "recoveries and purges per second",
        "api requests per second by route and code",
        "api p99 latency",
    ]
    lowered = [title.lower() for title in titles]
    for words in wanted:
        assert any(words in title for title in lowered), f"no panel for {words!r}: {titles}"


def test_dashboard_queries_only_metrics_the_processes_expose() -> None:
    documented = documented_metrics()
    # Before docs/operations.md lists the metrics, the contract's names stand in for it.
    reference = documented or dict(CONTRACT_METRICS)
    allowed = exposed_names(reference)
    used: set[str] = set()
    for title, target in dashboard_queries():
        expr = target["expr"]
        names = set(re.findall(r"\btimers_[a-z0-9_]+", expr))
        assert names, f"{title}: {expr} queries no timers metric"
        unknown = names - allowed
        assert not unknown, f"{title}: {sorted(unknown)} not among {sorted(reference)}"
        used |= names
        if "histogram_quantile" in expr:
            assert all(name.endswith("_bucket") for name in names), f"{title}: {expr}"
        labels = set()
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            labels |= {label.strip() for label in group.split(",") if label.strip()}
        labels |= set(re.findall(r"([a-z_]+)\s*=~?", re.sub(r"\[[^]]*\]", "", expr)))
        labels |= set(re.findall(r"\{\{\s*([a-z_]+)\s*\}\}", target.get("legendFormat", "")))
        assert labels <= KNOWN_LABELS, f"{title}: unknown labels {sorted(labels - KNOWN_LABELS)}"
    # Every metric of the contract is on the dashboard.
    shown = {name for name in CONTRACT_METRICS if exposed_names({name: None}) & used}
    assert shown == set(CONTRACT_METRICS), sorted(set(CONTRACT_METRICS) - shown)
