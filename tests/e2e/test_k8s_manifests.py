"""The Kubernetes manifests (k8s/): every kustomization builds, every object passes the official
schemas, and the objects agree with each other and with the services.

No cluster is needed: ``kubectl kustomize`` renders each target, ``kubernetes-validate --strict``
checks every object offline against the bundled OpenAPI schemas, and the consistency checks below
read the rendered objects the way Kubernetes and the services would (selectors, DNS names,
downward-API environment, the role's config built by the real CLI code).

Each consistency check is a function returning a list of problems; ``test_checks_catch_breakage``
breaks a rendered target on purpose and asserts the matching check reports it, so no check can
pass vacuously.
"""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import require_infra

pytestmark = [pytest.mark.infra, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = sorted(
    p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists()
)
TARGETS = ["base", *(f"overlays/{name}" for name in OVERLAYS)]
SERVICE_MONITOR = K8S / "optional" / "servicemonitor.yaml"
# Oldest and newest Kubernetes the manifests target: gRPC probes are GA since 1.27, k3s and EKS
# currently ship 1.28-1.33.
KUBERNETES_VERSIONS = ("1.28.0", "1.33.0")
# The architecture each overlay pins its pods to.
OVERLAY_ARCH = {"k3s-raspberrypi": "arm64", "aws": "amd64", "goco": "arm64"}
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
ROLE_OF_COMPONENT = {
    "coordinator": "coordinator",
    "master": "master",
    "edge": "aggregator",
    "worker": "worker",
    "peer": "peer",
}
PART_OF = "app.kubernetes.io/part-of"

Objects = list[dict[str, Any]]


# --- rendering -------------------------------------------------------------------------------


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        require_infra("kubectl (with kustomize) is not installed")
    assert kubectl is not None
    return kubectl


def _kubernetes_validate() -> str:
    found = Path(sys.executable).with_name("kubernetes-validate")
    command = str(found) if found.exists() else shutil.which("kubernetes-validate")
    if command is None:
        require_infra("kubernetes-validate is not installed (pip install kubernetes-validate)")
    assert command is not None
    return command


@pytest.fixture(scope="module")
def rendered() -> Iterator[dict[str, str]]:
    """``kubectl kustomize`` output per target, rendered once for the module."""
    kubectl = _kubectl()
    cache: dict[str, str] = {}
    for target in TARGETS:
        result = subprocess.run(
            [kubectl, "kustomize", str(K8S / target)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"kubectl kustomize k8s/{target} failed:\n{result.stderr}"
        cache[target] = result.stdout
    yield cache


def load(text: str) -> Objects:
    return [doc for doc in yaml.safe_load_all(text) if doc]


# --- helpers that read objects the way Kubernetes does ----------------------------------------


def of_kind(objects: Objects, *kinds: str) -> Objects:
    return [o for o in objects if o["kind"] in kinds]


def named(objects: Objects, kind: str, name: str) -> dict[str, Any] | None:
    return next((o for o in of_kind(objects, kind) if o["metadata"]["name"] == name), None)


def pod_template(workload: dict[str, Any]) -> dict[str, Any]:
    template: dict[str, Any] = workload["spec"]["template"]
    return template


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_template(workload)["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_names(workload: dict[str, Any]) -> list[str]:
    """The pod names a StatefulSet creates (ordinal = index); one stand-in name otherwise."""
    name = workload["metadata"]["name"]
    if workload["kind"] == "StatefulSet":
        return [f"{name}-{i}" for i in range(workload["spec"].get("replicas", 1))]
    return [f"{name}-5d8f9c7b6-x2x4q"]


def pod_env(workload: dict[str, Any], container: dict[str, Any], pod: str) -> dict[str, str]:
    """The container's environment as the kubelet would set it for pod ``pod``: downward-API
    fields resolved, ``$(VAR)`` references expanded in order."""
    template = pod_template(workload)
    metadata = {
        "metadata.name": pod,
        "metadata.namespace": workload["metadata"].get("namespace", "default"),
    }
    for key, value in template["metadata"].get("labels", {}).items():
        metadata[f"metadata.labels['{key}']"] = value
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), var["value"]
            )
        elif "fieldRef" in var.get("valueFrom", {}):
            path = var["valueFrom"]["fieldRef"]["fieldPath"]
            # A missing label yields an empty string in Kubernetes; keep that behaviour.
            env[var["name"]] = metadata.get(path, "")
    return env


def services_selecting(objects: Objects, workload: dict[str, Any]) -> Objects:
    labels = pod_template(workload)["metadata"].get("labels", {})
    return [
        s for s in of_kind(objects, "Service") if selects(s["spec"].get("selector", {}), labels)
    ]


def container_port(container: dict[str, Any], name: str) -> int | None:
    return next((p["containerPort"] for p in container.get("ports", []) if p["name"] == name), None)


def config_map_data(objects: Objects, workload: dict[str, Any], mount_path: str) -> dict[str, str]:
    """Files the pod sees under ``mount_path`` from a ConfigMap volume."""
    spec = pod_template(workload)["spec"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for container in spec["containers"]:
        for mount in container.get("volumeMounts", []):
            volume = volumes.get(mount["name"], {})
            if mount["mountPath"] == mount_path and "configMap" in volume:
                config_map = named(objects, "ConfigMap", volume["configMap"]["name"])
                return {} if config_map is None else config_map.get("data", {})
    return {}


def mounted_file(objects: Objects, workload: dict[str, Any], path: str) -> str | None:
    directory, _, filename = path.rpartition("/")
    return config_map_data(objects, workload, directory).get(filename)


def component(obj: dict[str, Any]) -> str:
    return str(obj["metadata"].get("labels", {}).get("app.kubernetes.io/component", ""))


def edge_names(objects: Objects) -> set[str]:
    return {
        pod
        for w in of_kind(objects, "StatefulSet")
        if component(w) == "edge"
        for pod in pod_names(w)
    }


# --- consistency checks: each returns a list of problems ---------------------------------------


def check_labels(objects: Objects) -> list[str]:
    problems = [
        f"{o['kind']}/{o['metadata']['name']}: no {PART_OF} label"
        for o in objects
        if o["metadata"].get("labels", {}).get(PART_OF) != "edgecode"
    ]
    for obj in of_kind(objects, "Service", *WORKLOAD_KINDS):
        labels = (
            pod_template(obj)["metadata"].get("labels", {})
            if obj["kind"] in WORKLOAD_KINDS
            else obj["metadata"].get("labels", {})
        )
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/component"):
            if not labels.get(key):
                problems.append(f"{obj['kind']}/{obj['metadata']['name']}: no {key} label")
    return problems


def check_namespace(objects: Objects) -> list[str]:
    namespaces = {o["metadata"]["name"] for o in of_kind(objects, "Namespace")}
    return [
        f"{o['kind']}/{o['metadata']['name']}: namespace {o['metadata'].get('namespace')!r} is "
        f"not one of the Namespace objects {sorted(namespaces)}"
        for o in objects
        if o["kind"] != "Namespace" and o["metadata"].get("namespace") not in namespaces
    ]


def check_service_selectors(objects: Objects) -> list[str]:
    problems = []
    workloads = of_kind(objects, *WORKLOAD_KINDS)
    for service in of_kind(objects, "Service"):
        selector = service["spec"].get("selector", {})
        matches = [
            w for w in workloads if selects(selector, pod_template(w)["metadata"].get("labels", {}))
        ]
        if not matches:
            problems.append(
                f"Service/{service['metadata']['name']}: selector {selector} matches no pods"
            )
        if len(matches) > 1:
            names = [w["metadata"]["name"] for w in matches]
            problems.append(
                f"Service/{service['metadata']['name']}: selects several workloads {names}"
            )
    for workload in workloads:
        matchlabels = workload["spec"]["selector"]["matchLabels"]
        if not selects(matchlabels, pod_template(workload)["metadata"].get("labels", {})):
            problems.append(f"{workload['metadata']['name']}: selector does not match its own pods")
    return problems


def check_statefulset_services(objects: Objects) -> list[str]:
    problems = []
    for sts in of_kind(objects, "StatefulSet"):
        name, service_name = sts["metadata"]["name"], sts["spec"].get("serviceName")
        service = named(objects, "Service", service_name or "")
        if service is None:
            problems.append(f"StatefulSet/{name}: serviceName {service_name!r} is no Service")
            continue
        if service["spec"].get("clusterIP") != "None":
            problems.append(f"Service/{service_name}: not headless (clusterIP: None)")
        if service["spec"].get("publishNotReadyAddresses") is not True:
            problems.append(f"Service/{service_name}: publishNotReadyAddresses is not true")
        if service not in services_selecting(objects, sts):
            problems.append(
                f"Service/{service_name}: does not select the pods of StatefulSet/{name}"
            )
    return problems


def check_ports_and_probes(objects: Objects) -> list[str]:
    problems = []
    for workload in of_kind(objects, *WORKLOAD_KINDS):
        wname = workload["metadata"]["name"]
        services = services_selecting(objects, workload)
        annotations = pod_template(workload)["metadata"].get("annotations", {})
        for container in pod_template(workload)["spec"]["containers"]:
            where = f"{wname}/{container['name']}"
            grpc_port = container_port(container, "grpc")
            metrics_port = container_port(container, "metrics")
            if grpc_port is None or metrics_port is None:
                problems.append(f"{where}: needs container ports named grpc and metrics")
                continue
            env = pod_env(workload, container, pod_names(workload)[0])
            if env.get("EDGECODE_PORT") != str(grpc_port):
                problems.append(f"{where}: EDGECODE_PORT {env.get('EDGECODE_PORT')} != {grpc_port}")
            if env.get("EDGECODE_METRICS_PORT") != str(metrics_port):
                problems.append(f"{where}: EDGECODE_METRICS_PORT != {metrics_port}")
            for host in ("EDGECODE_HOST", "EDGECODE_METRICS_HOST"):
                if env.get(host) != "0.0.0.0":
                    problems.append(f"{where}: {host} must be 0.0.0.0 in a pod")
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                spec = container.get(probe)
                if probe != "startupProbe" and spec is None:
                    problems.append(f"{where}: no {probe}")
                elif spec is not None and spec.get("grpc", {}).get("port") != grpc_port:
                    problems.append(f"{where}: {probe} is not a gRPC probe on port {grpc_port}")
            wanted = {"prometheus.io/scrape": "true", "prometheus.io/port": str(metrics_port)}
            wanted["prometheus.io/path"] = "/metrics"
            for key, value in wanted.items():
                if annotations.get(key) != value:
                    problems.append(
                        f"{where}: annotation {key}={annotations.get(key)!r}, want {value!r}"
                    )
        for service in services:
            for port in service["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                numbers = [
                    container_port(c, target) if isinstance(target, str) else target
                    for c in pod_template(workload)["spec"]["containers"]
                ]
                if port["port"] not in numbers:
                    problems.append(
                        f"Service/{service['metadata']['name']} port {port['name']}: "
                        f"{port['port']} -> {target} does not reach the same port of {wname}"
                    )
            if {p["name"] for p in service["spec"]["ports"]} != {"grpc", "metrics"}:
                problems.append(
                    f"Service/{service['metadata']['name']}: ports must be grpc and metrics"
                )
    return problems


def check_resources(objects: Objects) -> list[str]:
    problems = []
    for workload in of_kind(objects, *WORKLOAD_KINDS):
        for container in containers(workload):
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in resources.get(kind, {}):
                        problems.append(
                            f"{workload['metadata']['name']}/{container['name']}: no {kind}.{resource}"
                        )
    return problems


def check_security(objects: Objects) -> list[str]:
    problems = []
    for workload in of_kind(objects, *WORKLOAD_KINDS):
        pod = pod_template(workload)["spec"].get("securityContext", {})
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            own = container.get("securityContext", {})
            if not (own.get("runAsNonRoot", pod.get("runAsNonRoot"))):
                problems.append(f"{where}: runAsNonRoot is not set")
            if own.get("runAsUser", pod.get("runAsUser", 1)) == 0:
                problems.append(f"{where}: runs as uid 0")
            if own.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
    return problems


def check_addresses(objects: Objects) -> list[str]:
    """Advertise hosts are the pod's own stable DNS name; coordinator addresses name the
    coordinator Service's DNS name and gRPC port."""
    problems = []
    coordinators = [
        f"{s['metadata']['name']}.{s['metadata'].get('namespace', 'default')}.svc:{p['port']}"
        for w in of_kind(objects, *WORKLOAD_KINDS)
        if component(w) == "coordinator"
        for s in services_selecting(objects, w)
        for p in s["spec"]["ports"]
        if p["name"] == "grpc"
    ]
    for workload in of_kind(objects, *WORKLOAD_KINDS):
        namespace = workload["metadata"].get("namespace", "default")
        for pod in pod_names(workload):
            for container in pod_template(workload)["spec"]["containers"]:
                where = f"{pod}/{container['name']}"
                env = pod_env(workload, container, pod)
                if workload["kind"] == "StatefulSet":
                    own = {f"{pod}.{workload['spec']['serviceName']}.{namespace}.svc"}
                else:
                    own = {
                        f"{s['metadata']['name']}.{namespace}.svc"
                        for s in services_selecting(objects, workload)
                    }
                if env.get("EDGECODE_ADVERTISE_HOST") not in own:
                    problems.append(
                        f"{where}: advertises {env.get('EDGECODE_ADVERTISE_HOST')!r}, "
                        f"its DNS name is one of {sorted(own)}"
                    )
                if component(workload) == "coordinator":
                    continue
                if env.get("EDGECODE_COORDINATOR") not in coordinators:
                    problems.append(
                        f"{where}: coordinator {env.get('EDGECODE_COORDINATOR')!r} is not "
                        f"one of {coordinators}"
                    )
                if (
                    component(workload) in ("edge", "worker", "peer")
                    and env.get("EDGECODE_NAME") != pod
                ):
                    problems.append(
                        f"{where}: EDGECODE_NAME {env.get('EDGECODE_NAME')!r} != pod name"
                    )
    return problems


def check_workers_have_edges(objects: Objects) -> list[str]:
    problems = []
    edges = edge_names(objects)
    if not edges:
        problems.append("no edge StatefulSet")
    workers = [w for w in of_kind(objects, "StatefulSet") if component(w) == "worker"]
    if not workers:
        problems.append("no worker StatefulSet")
    for sts in workers:
        for container in pod_template(sts)["spec"]["containers"]:
            edge = pod_env(sts, container, pod_names(sts)[0]).get("EDGECODE_EDGE", "")
            if edge not in edges:
                problems.append(
                    f"StatefulSet/{sts['metadata']['name']}: EDGECODE_EDGE {edge!r} is not a "
                    f"deployed edge {sorted(edges)} (raise the edge replicas?)"
                )
            elif sts["metadata"]["name"] != f"workers-{edge}":
                problems.append(
                    f"StatefulSet/{sts['metadata']['name']}: workers of {edge} must be workers-{edge}"
                )
    return problems


def check_cluster_spec(objects: Objects) -> list[str]:
    """The coordinator's cluster spec names exactly the deployed edges and workers, each worker
    under its own edge, and loads with the planner's own parser."""
    from edgecode.planning.spec import load_spec

    coordinator = next(
        (w for w in of_kind(objects, *WORKLOAD_KINDS) if component(w) == "coordinator"), None
    )
    if coordinator is None:
        return ["no coordinator"]
    container = pod_template(coordinator)["spec"]["containers"][0]
    spec_path = config_for(objects, coordinator, container, "coordinator").spec
    text = mounted_file(objects, coordinator, spec_path) if spec_path else None
    if text is None:
        return [f"coordinator: cluster spec {spec_path!r} is not mounted from a ConfigMap"]
    path = Path(_scratch()) / "cluster.toml"
    path.write_text(text)
    spec = load_spec(path)
    listed = {(edge.name, worker.name) for edge in spec.edges for worker in edge.workers}
    deployed = {
        (pod_env(sts, c, pod).get("EDGECODE_EDGE", ""), pod)
        for sts in of_kind(objects, "StatefulSet")
        if component(sts) == "worker"
        for pod in pod_names(sts)
        for c in pod_template(sts)["spec"]["containers"]
    }
    problems = [
        f"worker {w} of {e} is deployed but not in the cluster spec" for e, w in deployed - listed
    ]
    problems += [
        f"cluster spec lists {w} of {e}, which is not deployed" for e, w in listed - deployed
    ]
    extra_edges = {edge.name for edge in spec.edges} - edge_names(objects)
    problems += [f"cluster spec lists edge {e}, which is not deployed" for e in sorted(extra_edges)]
    return problems


def config_for(
    objects: Objects, workload: dict[str, Any], container: dict[str, Any], role: str
) -> Any:
    """The role's frozen config exactly as ``edgecode ROLE`` builds it inside the pod: the args'
    --config file (from the mounted ConfigMap), then the pod's environment."""
    from edgecode.cli._config import build_config

    args = [*container.get("command", []), *container.get("args", [])]
    config_path = args[args.index("--config") + 1] if "--config" in args else None
    namespace = argparse.Namespace(config=None)
    if config_path is not None:
        text = mounted_file(objects, workload, config_path)
        if text is None:
            raise ValueError(f"--config {config_path} is not mounted from a ConfigMap")
        path = Path(_scratch()) / f"{role}.toml"
        path.write_text(text)
        namespace.config = str(path)
    return build_config(
        role_config_class(role),
        namespace,
        role,
        pod_env(workload, container, pod_names(workload)[0]),
    )


def role_config_class(role: str) -> type:
    """The frozen config dataclass ``edgecode ROLE`` builds (the peer's too)."""
    from edgecode.cli.services import config_class

    if role == "peer":
        from edgecode.peer.run import PeerConfig

        return PeerConfig
    return config_class(role)


def check_role_configs(objects: Objects) -> list[str]:
    """Every container runs `edgecode ROLE` for its component, and the real CLI accepts the
    resulting config (known keys, right types, mounted files)."""
    problems = []
    for workload in of_kind(objects, *WORKLOAD_KINDS):
        role = ROLE_OF_COMPONENT.get(component(workload))
        for container in pod_template(workload)["spec"]["containers"]:
            where = f"{workload['metadata']['name']}/{container['name']}"
            args = [*container.get("command", []), *container.get("args", [])]
            if role is None or args[:2] != ["edgecode", role]:
                problems.append(f"{where}: runs {args[:2]}, expected ['edgecode', {role!r}]")
                continue
            try:
                config = config_for(objects, workload, container, role)
            except (ValueError, FileNotFoundError) as exc:
                problems.append(f"{where}: {exc}")
                continue
            if role == "master" and not _on_persistent_volume(
                objects, workload, config.checkpoint_dir
            ):
                problems.append(
                    f"{where}: checkpoint_dir {config.checkpoint_dir!r} is not on a PVC"
                )
    return problems


def _on_persistent_volume(objects: Objects, workload: dict[str, Any], path: str) -> bool:
    spec = pod_template(workload)["spec"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in spec.get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    return bool(path) and any(
        (path + "/").startswith(mount["mountPath"].rstrip("/") + "/")
        and named(objects, "PersistentVolumeClaim", claims.get(mount["name"], "")) is not None
        for container in spec["containers"]
        for mount in container.get("volumeMounts", [])
    )


def check_peers(objects: Objects) -> list[str]:
    """Gossip peers (when deployed): the coordinator orders peers by the number their name ends in
    (edgecode.coordinator.gossip_plan.peer_index), so every pod's index must be its ordinal; they
    register under their pod name and run with the coordinator in the same namespace."""
    from edgecode.coordinator.gossip_plan import order_peers, peer_index

    problems = []
    for sts in of_kind(objects, "StatefulSet"):
        if component(sts) != "peer":
            continue
        pods = pod_names(sts)
        if [peer_index(pod) for pod in pods] != list(range(len(pods))):
            problems.append(
                f"StatefulSet/{sts['metadata']['name']}: pod names do not end in 0..N-1"
            )
        if [name for name, _ in order_peers([(pod, "") for pod in reversed(pods)])] != pods:
            problems.append(f"StatefulSet/{sts['metadata']['name']}: peers would not be ordered")
        if sts["spec"].get("replicas", 1) < 2:
            problems.append(f"StatefulSet/{sts['metadata']['name']}: gossip needs >= 2 peers")
    return problems


def check_node_arch(objects: Objects, arch: str) -> list[str]:
    return [
        f"{w['kind']}/{w['metadata']['name']}: nodeSelector kubernetes.io/arch is not {arch}"
        for w in of_kind(objects, *WORKLOAD_KINDS)
        if pod_template(w)["spec"].get("nodeSelector", {}).get("kubernetes.io/arch") != arch
    ]


CHECKS: dict[str, Callable[[Objects], list[str]]] = {
    "labels": check_labels,
    "namespace": check_namespace,
    "service_selectors": check_service_selectors,
    "statefulset_services": check_statefulset_services,
    "ports_and_probes": check_ports_and_probes,
    "resources": check_resources,
    "security": check_security,
    "addresses": check_addresses,
    "workers_have_edges": check_workers_have_edges,
    "cluster_spec": check_cluster_spec,
    "role_configs": check_role_configs,
    "peers": check_peers,
}

_SCRATCH: list[str] = []


def _scratch() -> str:
    """A per-test scratch folder (set by the autouse fixture) for files the CLI code reads."""
    return _SCRATCH[-1]


@pytest.fixture(autouse=True)
def scratch_folder(tmp_path: Path) -> Iterator[None]:
    _SCRATCH.append(str(tmp_path))
    yield
    _SCRATCH.pop()


# --- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_kustomize_builds(rendered: dict[str, str], target: str) -> None:
    kinds = {o["kind"] for o in load(rendered[target])}
    assert {
        "Namespace",
        "ConfigMap",
        "Service",
        "PersistentVolumeClaim",
        "Deployment",
        "StatefulSet",
    } <= kinds


def test_every_overlay_is_tested() -> None:
    assert set(OVERLAYS) == set(OVERLAY_ARCH), "add the new overlay's architecture to OVERLAY_ARCH"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("target", TARGETS)
def test_kubernetes_validate_strict(
    rendered: dict[str, str], target: str, version: str, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(rendered[target])
    result = _validate(manifest, version)
    passed = result.stdout.count(" passed for resource ")
    assert result.returncode == 0, result.stdout + result.stderr
    # A kind without a schema only WARNs with exit code 0: require a pass for every object.
    assert passed == len(load(rendered[target])), result.stdout


def test_kubernetes_validate_rejects_unknown_fields(
    rendered: dict[str, str], tmp_path: Path
) -> None:
    """The validator really is strict: a misspelt field fails (guards the test above)."""
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(
        rendered["base"].replace("publishNotReadyAddresses", "publishNotReadyAdresses")
    )
    result = _validate(manifest, KUBERNETES_VERSIONS[-1])
    assert result.returncode != 0 and "publishNotReadyAdresses" in result.stdout


def _validate(manifest: Path, version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_kubernetes_validate(), "--strict", "--kubernetes-version", version, str(manifest)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("target", TARGETS)
def test_consistency(rendered: dict[str, str], target: str, check: str) -> None:
    assert CHECKS[check](load(rendered[target])) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_pins_architecture(rendered: dict[str, str], overlay: str) -> None:
    assert check_node_arch(load(rendered[f"overlays/{overlay}"]), OVERLAY_ARCH[overlay]) == []


def test_service_monitor_selects_every_service(rendered: dict[str, str]) -> None:
    """The optional ServiceMonitor (not in any kustomization: its CRD may be absent) scrapes a
    port every edgecode Service has, in the overlays' namespace."""
    monitor = yaml.safe_load(SERVICE_MONITOR.read_text())
    assert (
        monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "ServiceMonitor"
    )
    selector = monitor["spec"]["selector"]["matchLabels"]
    ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    for target in TARGETS:
        services = of_kind(load(rendered[target]), "Service")
        assert services and all(selects(selector, s["metadata"]["labels"]) for s in services)
        assert all(ports <= {p["name"] for p in s["spec"]["ports"]} for s in services)
        namespaces = {s["metadata"]["namespace"] for s in services}
        assert namespaces == set(monitor["spec"]["namespaceSelector"]["matchNames"])


def _breakages() -> dict[str, Callable[[Objects], None]]:
    """One deliberate mistake per check, applied to a rendered target."""

    def first(objects: Objects, kind: str, comp: str) -> dict[str, Any]:
        return next(o for o in of_kind(objects, kind) if component(o) == comp)

    def worker_container(objects: Objects) -> dict[str, Any]:
        container: dict[str, Any] = pod_template(first(objects, "StatefulSet", "worker"))["spec"][
            "containers"
        ][0]
        return container

    def set_env(container: dict[str, Any], name: str, value: str) -> None:
        container["env"] = [v for v in container["env"] if v["name"] != name]
        container["env"].append({"name": name, "value": value})

    def unlabel(objects: Objects) -> None:
        del of_kind(objects, "ConfigMap")[0]["metadata"]["labels"][PART_OF]

    def wrong_namespace(objects: Objects) -> None:
        first(objects, "Deployment", "master")["metadata"]["namespace"] = "default"

    def selector_typo(objects: Objects) -> None:
        first(objects, "Service", "master")["spec"]["selector"]["app.kubernetes.io/component"] = (
            "mastr"
        )

    def not_headless(objects: Objects) -> None:
        del first(objects, "Service", "edge")["spec"]["publishNotReadyAddresses"]

    def probe_wrong_port(objects: Objects) -> None:
        worker_container(objects)["readinessProbe"]["grpc"]["port"] = 9100

    def no_limits(objects: Objects) -> None:
        del worker_container(objects)["resources"]["limits"]

    def as_root(objects: Objects) -> None:
        pod_template(first(objects, "StatefulSet", "edge"))["spec"]["securityContext"][
            "runAsUser"
        ] = 0

    def wrong_coordinator(objects: Objects) -> None:
        set_env(worker_container(objects), "EDGECODE_COORDINATOR", "coordinator:50052")

    def missing_edge(objects: Objects) -> None:
        first(objects, "StatefulSet", "edge")["spec"]["replicas"] = 1
        for sts in of_kind(objects, "StatefulSet"):
            if component(sts) == "worker":
                sts["spec"]["replicas"] = 1  # keep the spec check independent

    def extra_worker(objects: Objects) -> None:
        first(objects, "StatefulSet", "worker")["spec"]["replicas"] += 1

    def bad_config(objects: Objects) -> None:
        set_env(worker_container(objects), "EDGECODE_COMPUTE_SECONDS", "fast")

    def too_few_peers(objects: Objects) -> None:
        first(objects, "StatefulSet", "peer")["spec"]["replicas"] = 1

    return {
        "peers": too_few_peers,
        "labels": unlabel,
        "namespace": wrong_namespace,
        "service_selectors": selector_typo,
        "statefulset_services": not_headless,
        "ports_and_probes": probe_wrong_port,
        "resources": no_limits,
        "security": as_root,
        "addresses": wrong_coordinator,
        "workers_have_edges": missing_edge,
        "cluster_spec": extra_worker,
        "role_configs": bad_config,
    }


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_checks_catch_breakage(rendered: dict[str, str], check: str) -> None:
    objects = load(rendered["overlays/goco" if check == "peers" else "overlays/k3s-raspberrypi"])
    assert CHECKS[check](objects) == []
    broken = copy.deepcopy(objects)
    _breakages()[check](broken)
    assert CHECKS[check](broken) != []


def test_arch_check_catches_a_missing_node_selector(rendered: dict[str, str]) -> None:
    objects = load(rendered["overlays/k3s-raspberrypi"])
    del pod_template(of_kind(objects, "StatefulSet")[-1])["spec"]["nodeSelector"]
    assert len(check_node_arch(objects, "arm64")) == 1
    assert check_node_arch(load(rendered["base"]), "arm64") != []


def test_every_check_has_a_breakage() -> None:
    assert set(_breakages()) == set(CHECKS)


def test_toml_files_parse() -> None:
    for path in sorted(K8S.rglob("*.toml")):
        with path.open("rb") as handle:
            tomllib.load(handle)


def test_the_goco_overlay_adds_the_peers_to_the_pi_overlay(rendered: dict[str, str]) -> None:
    """k8s/overlays/goco = k3s-raspberrypi + components/peers: the same objects plus the peers'
    StatefulSet and headless Service, and peer.toml merged into the shared ConfigMap."""
    pi, goco = load(rendered["overlays/k3s-raspberrypi"]), load(rendered["overlays/goco"])
    names = {(o["kind"], o["metadata"]["name"]) for o in goco}
    pi_names = {(o["kind"], o["metadata"]["name"]) for o in pi}
    changed = {n for n in names - pi_names if n[0] != "ConfigMap"}
    assert changed == {("StatefulSet", "peers"), ("Service", "peers")}
    peers = named(goco, "StatefulSet", "peers")
    assert peers is not None and peers["spec"]["replicas"] == 8
    assert not any(component(o) == "peer" for o in load(rendered["base"]))
    config = of_kind(goco, "ConfigMap")[0]["data"]
    assert {"edgecode.toml", "cluster.toml", "peer.toml"} <= set(config)
    assert "[peer]" in config["peer.toml"]
