"""Observability end to end: a real Prometheus (Debian's package) scrapes a LocalCluster shaped like
the docker compose stack (2 edges x 3 workers) with the scrape jobs and labels of
``deploy/prometheus/prometheus.yml``, after an hgc job planned by the planner and an uncoded job.
Then every query of every Grafana panel must return data, ``promtool`` must accept every service's
metrics and the deploy config, and the dashboards must refer to the provisioned data source.

The gossip dashboard is checked the same way against a second stack shaped like the compose
profile ``goco``: a coordinator and 8 peers scraped with ``deploy/prometheus/goco.yml``, after a
GOCO job with emulated stragglers.

No Grafana server runs here, so the dashboards are checked through their queries.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgecode.cluster.local import LocalCluster, LocalGossipCluster, default_setup, gossip_peers
from edgecode.gossip_records import GossipJobSpec
from edgecode.master.client import MasterClient
from edgecode.records import JobConfig
from edgecode.v1 import master_pb2
from helpers import require_infra

pytestmark = [pytest.mark.infra, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GOCO_CONFIG = ROOT / "deploy" / "prometheus" / "goco.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCE_FILE = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDER_FILE = GRAFANA / "provisioning" / "dashboards" / "edgecode.yml"

#: The uids other dashboards, links and bookmarks rely on: changing one is a breaking change.
DASHBOARD_UIDS = {
    "edgecode-straggler-latency",
    "edgecode-stragglers",
    "edgecode-round-time",
    "edgecode-training-loss",
    "edgecode-bytes",
    "edgecode-health",
    "edgecode-gossip",
}
#: Dashboards of gossip jobs: checked against the gossip stack (compose profile goco).
GOSSIP_DASHBOARDS = ("gossip",)
GOSSIP_PEERS = 8
ROUNDS = 20
EDGES, WORKERS_PER_EDGE = 2, 3
#: Grafana's built-in interval variables, as Grafana would expand them for a short time range.
#: The windows are long enough to cover both jobs, so every rate has samples to work on.
GRAFANA_INTERVALS = {"$__rate_interval": "1m", "$__interval": "5s", "$__range": "5m"}
#: The test scrapes faster than the deploy config's 5 s so the run stays short.
SCRAPE_INTERVAL = "1s"
START_SECONDS = 60.0


# ---- static files ------------------------------------------------------------------------
def load_dashboard(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def panels_of(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    ref_id: str
    expr: str
    #: Grafana runs range queries for graphs and instant ones for "instant" targets.
    instant: bool = True


def dashboard_queries(gossip: bool = False) -> list[Query]:
    """Every panel query of the worker-stack dashboards (or, with ``gossip``, the gossip ones)."""
    return [
        Query(
            path.stem,
            panel["title"],
            target["refId"],
            target["expr"],
            bool(target.get("instant", False)),
        )
        for path in DASHBOARDS
        if (path.stem in GOSSIP_DASHBOARDS) == gossip
        for panel in panels_of(load_dashboard(path))
        for target in panel.get("targets", [])
    ]


def variable_queries(gossip: bool = False) -> list[Query]:
    """Template variables' ``label_values(selector, label)``, as the PromQL that has to return
    series for the variable to offer any value."""
    queries = []
    for path in DASHBOARDS:
        if (path.stem in GOSSIP_DASHBOARDS) != gossip:
            continue
        for variable in load_dashboard(path)["templating"]["list"]:
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
            assert match, f"{path.name}: variable {variable['name']} is not label_values(...)"
            selector, label = match.groups()
            queries.append(
                Query(path.stem, f"${variable['name']}", "var", f"count by ({label}) ({selector})")
            )
    return queries


def expand(expr: str) -> str:
    """What Grafana sends to Prometheus with every template variable set to "All" (``.*``)."""
    for name, value in GRAFANA_INTERVALS.items():
        expr = expr.replace(name, value)
    return re.sub(r"\$\{\w+(?::\w+)?\}|\$\w+|\[\[\w+\]\]", ".*", expr)


def provisioned_datasource_uid() -> str:
    # The file is YAML; the uid line is all that is needed, so no YAML parser is required.
    uids = re.findall(r"^\s*uid:\s*(\S+)\s*$", DATASOURCE_FILE.read_text(), re.MULTILINE)
    assert len(uids) == 1, f"expected one data source uid in {DATASOURCE_FILE}, found {uids}"
    return str(uids[0])


def datasource_refs(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            else:
                yield from datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasource_refs(item)


def test_dashboard_uids_are_stable_and_unique() -> None:
    uids = [load_dashboard(path)["uid"] for path in DASHBOARDS]
    assert len(uids) == len(set(uids)), uids
    assert set(uids) == DASHBOARD_UIDS
    assert all(len(uid) <= 40 for uid in uids)  # Grafana's limit


def test_dashboards_use_the_provisioned_datasource() -> None:
    uid = provisioned_datasource_uid()
    for path in DASHBOARDS:
        dashboard = load_dashboard(path)
        for panel in panels_of(dashboard):
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": uid}, (
                path.name,
                panel["title"],
            )
            assert panel["targets"], (path.name, panel["title"])
        refs = [ref for ref in datasource_refs(dashboard) if ref.get("type") != "grafana"]
        assert refs and all(ref == {"type": "prometheus", "uid": uid} for ref in refs), path.name


def test_dashboard_provider_loads_the_dashboard_directory() -> None:
    text = PROVIDER_FILE.read_text()
    assert re.search(r"^\s*type:\s*file\s*$", text, re.MULTILINE)
    assert re.search(r"^\s*path:\s*/var/lib/grafana/dashboards\s*$", text, re.MULTILINE)


@pytest.mark.parametrize("config", [PROMETHEUS_CONFIG, GOCO_CONFIG], ids=lambda p: p.name)
def test_promtool_accepts_the_deploy_config(config: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        require_infra("promtool (Debian package prometheus) is not installed")
        return
    result = subprocess.run(
        [promtool, "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---- the live stack ------------------------------------------------------------------------
@dataclass
class Stack:
    cluster: LocalCluster
    prometheus_url: str
    #: When Prometheus started scraping the cluster: the start of every range query.
    start: float
    #: Evaluation time for every query: after the last scrape that saw both jobs complete.
    at: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def local_config(
    cluster: LocalCluster, prometheus_address: str, config: Path = PROMETHEUS_CONFIG
) -> str:
    """The deploy config with each compose target swapped for the matching local process
    (``worker-i`` is the i-th worker of the setup, edge by edge) and a faster scrape."""
    text = config.read_text()
    workers = [w.name for w in cluster.setup.workers]
    targets = {"localhost:9090": prometheus_address}
    for name, process in cluster.processes.items():
        targets[f"{name}:9100"] = f"127.0.0.1:{process.info['metrics_port']}"
    for index, name in enumerate(workers):
        targets[f"worker-{index}:9100"] = (
            f"127.0.0.1:{cluster.processes[name].info['metrics_port']}"
        )
        text = text.replace(f"worker: worker-{index}}}", f"worker: {name}}}")
    found = re.findall(r'"([\w.-]+:\d+)"', text)
    missing = set(found) - set(targets)
    assert not missing, f"deploy targets with no local process: {missing}"
    text = re.sub(r'"([\w.-]+:\d+)"', lambda m: f'"{targets[m.group(1)]}"', text)
    text = re.sub(r"scrape_interval: \w+", f"scrape_interval: {SCRAPE_INTERVAL}", text)
    return re.sub(r"scrape_timeout: \w+", f"scrape_timeout: {SCRAPE_INTERVAL}", text)


def api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as error:  # a bad query: show Prometheus's reason
        body = json.load(error)
    assert body["status"] == "success", f"{params}: {body}"
    return body["data"]


def scalar(base: str, expr: str) -> float:
    result = api(base, "/api/v1/query", query=expr)["result"]
    return float(result[0]["value"][1]) if result else math.nan


def wait_for(what: str, condition: Any, timeout: float = START_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except OSError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout} s")
        time.sleep(0.2)


def run_job(client: MasterClient, config: JobConfig) -> None:
    status = client.wait(client.submit(config), timeout=120)
    assert status.state == master_pb2.JOB_STATE_SUCCEEDED, status.message


@contextmanager
def prometheus_for(cluster: LocalCluster, config: Path, tmp: Path) -> Iterator[str]:
    """A Prometheus scraping ``cluster`` with the deploy ``config`` (targets swapped), every
    target up; yields its base URL."""
    prometheus = shutil.which("prometheus")
    assert prometheus is not None
    address = f"127.0.0.1:{free_port()}"
    local = tmp / "prometheus.yml"
    local.write_text(local_config(cluster, address, config))
    log = (tmp / "prometheus.log").open("wb")
    server = subprocess.Popen(
        [
            prometheus,
            f"--config.file={local}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address={address}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://{address}"
    try:
        wait_for(
            "prometheus ready",
            lambda: urllib.request.urlopen(f"{base}/-/ready", timeout=2).status == 200,
        )
        targets = len(re.findall(r'"[\w.-]+:\d+"', config.read_text()))
        wait_for("every target scraped up", lambda: scalar(base, "sum(up)") == targets)
        yield base
    except TimeoutError as error:
        log.flush()
        tail = (tmp / "prometheus.log").read_text(errors="replace")[-2000:]
        raise TimeoutError(f"{error}; prometheus log:\n{tail}") from error
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
        log.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if shutil.which("prometheus") is None:
        require_infra("prometheus (Debian package prometheus) is not installed")
        return
    tmp = tmp_path_factory.mktemp("observability")
    setup = default_setup(edges=EDGES, workers_per_edge=WORKERS_PER_EDGE, compute_seconds=0.02)
    with (
        LocalCluster(setup, workdir=tmp / "cluster") as cluster,
        prometheus_for(cluster, PROMETHEUS_CONFIG, tmp) as base,
    ):
        start = time.time()
        client = cluster.client()
        try:
            run_job(
                client,
                JobConfig(scheme="hgc", s_edge=-1, s_worker=1, rounds=ROUNDS, checkpoint_every=0),
            )
            # The planner's prediction is a gauge of the plan in use: the uncoded job sets it to 0
            # at its first round. A short hgc job can end between two scrapes (on a busy machine
            # Prometheus itself is late), so let a scrape see it before the next job starts.
            wait_for(
                "the hgc job's prediction scraped",
                lambda: scalar(base, "edgecode_master_predicted_round_seconds") > 0,
            )
            run_job(client, JobConfig(scheme="uncoded", rounds=ROUNDS, checkpoint_every=0))
        finally:
            client.close()
        # Each round is recorded at the master and the edges within milliseconds of each
        # other: once Prometheus has seen every round at the master, a few more scrapes
        # take in the rest, and give every rate a sample past the last round.
        wait_for(
            "both jobs scraped",
            lambda: scalar(base, "sum(edgecode_master_rounds_total)") >= 2 * ROUNDS,
        )
        time.sleep(3 * float(SCRAPE_INTERVAL.rstrip("s")))
        yield Stack(cluster, base, start, time.time())


@pytest.fixture(scope="module")
def gossip_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The compose profile goco's shape: a coordinator and 8 peers, after a GOCO job with
    emulated Bernoulli stragglers (so gradients are really skipped)."""
    if shutil.which("prometheus") is None:
        require_infra("prometheus (Debian package prometheus) is not installed")
        return
    tmp = tmp_path_factory.mktemp("gossip-observability")
    with (
        LocalGossipCluster(gossip_peers(GOSSIP_PEERS), workdir=tmp / "cluster") as cluster,
        prometheus_for(cluster, GOCO_CONFIG, tmp) as base,
    ):
        start = time.time()
        client = cluster.gossip_client()
        try:
            spec = GossipJobSpec(
                job_id="observed",
                graph="torus",
                replication=3,
                straggle_probability=0.3,
                dataset="synthetic-lsq:n=400,d=5,noise=0.5",
                rounds=ROUNDS,
                partition_deadline_seconds=0.01,
                gossip_deadline_seconds=0.5,
                straggle="bernoulli:p=0.3,factor=5",
                compute_seconds=0.04,
            )
            client.start(spec)
            status = client.wait(spec.job_id, timeout=120)
            assert status.state == "succeeded", status.message
        finally:
            client.close()
        wait_for(
            "the gossip job scraped",
            lambda: (
                scalar(base, "sum(edgecode_peer_rounds_total)") >= GOSSIP_PEERS * ROUNDS
                and scalar(base, "sum(edgecode_coordinator_gossip_rounds_total)") >= ROUNDS
            ),
        )
        time.sleep(3 * float(SCRAPE_INTERVAL.rstrip("s")))
        yield Stack(cluster, base, start, time.time())


@pytest.mark.parametrize(
    "query",
    dashboard_queries() + variable_queries(),
    ids=lambda q: f"{q.dashboard}:{q.panel}:{q.ref_id}",
)
def test_every_dashboard_query_returns_data(stack: Stack, query: Query) -> None:
    """Each query, as Grafana would send it over the test's time range, returns at least one
    finite number (NaN alone would draw an empty panel); it must also be a valid instant query."""
    returns_data(stack, query)


@pytest.mark.parametrize(
    "query",
    dashboard_queries(gossip=True) + variable_queries(gossip=True),
    ids=lambda q: f"{q.dashboard}:{q.panel}:{q.ref_id}",
)
def test_every_gossip_dashboard_query_returns_data(gossip_stack: Stack, query: Query) -> None:
    returns_data(gossip_stack, query)


def test_the_gossip_dashboard_is_checked() -> None:
    queries = dashboard_queries(gossip=True)
    assert {q.dashboard for q in queries} == set(GOSSIP_DASHBOARDS)
    assert any("edgecode_peer_" in q.expr for q in queries)
    assert not any(q.dashboard in GOSSIP_DASHBOARDS for q in dashboard_queries())


def returns_data(stack: Stack, query: Query) -> None:
    expr = expand(query.expr)
    instant = api(stack.prometheus_url, "/api/v1/query", query=expr, time=f"{stack.at:.3f}")
    if query.instant:
        values = [float(series["value"][1]) for series in instant["result"]]
    else:
        data = api(
            stack.prometheus_url,
            "/api/v1/query_range",
            query=expr,
            start=f"{stack.start:.3f}",
            end=f"{stack.at:.3f}",
            step=SCRAPE_INTERVAL,
        )
        values = [float(v) for series in data["result"] for _, v in series["values"]]
    assert values, f"no data for {expr}"
    assert any(math.isfinite(v) for v in values), f"only NaN/Inf for {expr}"


def test_promtool_accepts_every_service_metrics(stack: Stack) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        require_infra("promtool (Debian package prometheus) is not installed")
        return
    for name, process in stack.cluster.processes.items():
        with urllib.request.urlopen(process.metrics_url, timeout=10) as response:
            text = response.read()
        result = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30
        )
        problems = (result.stdout + result.stderr).decode()
        assert result.returncode == 0 and not problems.strip(), f"{name}: {problems}"


def test_every_service_is_scraped_with_its_role_and_edge(stack: Stack) -> None:
    data = api(stack.prometheus_url, "/api/v1/targets", state="active")
    seen = {
        (t["labels"]["job"], t["labels"].get("edge", ""), t["health"])
        for t in data["activeTargets"]
    }
    expected = {("coordinator", "", "up"), ("master", "", "up"), ("prometheus", "", "up")}
    expected |= {("edge", f"edge-{e}", "up") for e in range(EDGES)}
    expected |= {("worker", f"edge-{e}", "up") for e in range(EDGES)}
    assert seen == expected
    loss_labels = api(
        stack.prometheus_url, "/api/v1/labels", **{"match[]": "edgecode_master_training_loss"}
    )
    assert "job_id" in loss_labels and "exported_job" not in loss_labels


def test_promtool_accepts_every_peer_metrics(gossip_stack: Stack) -> None:
    test_promtool_accepts_every_service_metrics(gossip_stack)


def test_every_peer_is_scraped_with_its_name(gossip_stack: Stack) -> None:
    data = api(gossip_stack.prometheus_url, "/api/v1/targets", state="active")
    seen = {
        (t["labels"]["job"], t["labels"].get("peer", ""), t["health"])
        for t in data["activeTargets"]
    }
    expected = {("coordinator", "", "up"), ("prometheus", "", "up")}
    expected |= {("peer", f"peer-{i}", "up") for i in range(GOSSIP_PEERS)}
    assert seen == expected
