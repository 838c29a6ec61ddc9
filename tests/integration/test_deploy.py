"""deploy/ validated: Kubernetes manifests (kubernetes-validate), systemd units
(systemd-analyze verify), docker-compose.yml (docker-compose config).

Each validator is also shown a broken file, so a validator that passes anything fails
here. A validator missing from this machine skips, or fails under
``LOGBUS_REQUIRE_BROKER=1`` (CI), where scripts/ensure-packages and the dev extras
install them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from logbus.ingest.config import read_service_file
from logbus.service import load_service
from logbus.worker.consume import SHUTDOWN_TIMEOUT

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
SYSTEMD = ROOT / "deploy" / "systemd"
# Kinds of operators' custom resources and kustomize: kubernetes-validate has no schema.
CUSTOM_KINDS = {"Kustomization", "RabbitmqCluster", "ServiceMonitor"}


def _tool(name: str, path: str | None) -> str:
    if path is None:
        message = f"{name} is not installed (scripts/ensure-packages, pip install -e '.[dev]')"
        if os.environ.get("LOGBUS_REQUIRE_BROKER") == "1":
            pytest.fail(f"LOGBUS_REQUIRE_BROKER=1 but {message}", pytrace=False)
        pytest.skip(message)
    return path


def _kubernetes_validate() -> str:
    beside = Path(sys.executable).parent / "kubernetes-validate"
    found = str(beside) if beside.exists() else shutil.which("kubernetes-validate")
    return _tool("kubernetes-validate", found)


def _documents() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path in sorted(KUBERNETES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def _deployments() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in _documents() if d["kind"] == "Deployment"}


def test_kubernetes_manifests_pass_kubernetes_validate_strictly() -> None:
    """Every built-in resource passes --strict; only the custom kinds lack a schema."""
    done = subprocess.run(
        [_kubernetes_validate(), "--strict", *map(str, sorted(KUBERNETES.glob("*.yaml")))],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    unknown = set(re.findall(r"Couldn't find schema for kind (\w+)", output))
    assert unknown <= CUSTOM_KINDS, output
    passed = len(re.findall(r" passed for resource ", output))
    assert passed == sum(1 for _, d in _documents() if d["kind"] not in CUSTOM_KINDS)


def test_kubernetes_validate_refuses_a_broken_deployment(tmp_path: Path) -> None:
    """A misspelt field in a Deployment fails validation (the validator is not a no-op)."""
    worker = (KUBERNETES / "worker.yaml").read_text().split("\n---\n")[0]
    broken = tmp_path / "broken.yaml"
    broken.write_text(worker.replace("readinessProbe:", "readynessProbe:"))
    done = subprocess.run(
        [_kubernetes_validate(), "--strict", str(broken)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode != 0, done.stdout


def test_kustomization_lists_every_manifest_and_its_files_exist() -> None:
    """kubectl apply -k applies them all: nothing left out, nothing missing."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    for generator in kustomization["configMapGenerator"]:
        for file in generator["files"]:
            assert (KUBERNETES / file).is_file(), file


def test_kubernetes_has_the_cluster_and_its_operators_resources() -> None:
    """A 3-replica RabbitmqCluster, PodDisruptionBudgets and a ServiceMonitor on metrics."""
    kinds = {d["kind"]: d for _, d in _documents()}
    assert kinds["RabbitmqCluster"]["spec"]["replicas"] == 3
    assert kinds["ServiceMonitor"]["spec"]["endpoints"][0]["port"] == "metrics"
    budgets = [d for _, d in _documents() if d["kind"] == "PodDisruptionBudget"]
    covered = {b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for b in budgets}
    assert {"logbus-worker", "logbus-ingest"} <= covered


def test_each_deployment_probes_healthz_runs_as_non_root_and_is_bounded() -> None:
    """Probes on /healthz at the metrics port, non-root, resources, grace over shutdown."""
    deployments = _deployments()
    assert set(deployments) == {f"logbus-{n}" for n in ("worker", "archiver", "alerter", "ingest")}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["terminationGracePeriodSeconds"] > SHUTDOWN_TIMEOUT, name
        (container,) = pod["containers"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert {"requests", "limits"} <= set(container["resources"]), name
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}, name


def test_deployment_ports_are_the_ports_their_services_serve_metrics_on() -> None:
    """The metrics containerPort is the port the service file (or the flag) names, on 0.0.0.0."""
    deployments = _deployments()
    services = KUBERNETES / "services"
    archiver = load_service(services / "archiver.toml").metrics
    alerter = load_service(services / "alerter.toml", extra_sections=("alerts",)).metrics
    ingest = read_service_file(services / "ingest.toml")
    expected = {
        "logbus-archiver": (archiver.port, archiver.host),
        "logbus-alerter": (alerter.port, alerter.host),
        "logbus-ingest": (ingest["metrics_port"], ingest["metrics_host"]),
    }
    for name, (port, host) in expected.items():
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        metrics = next(p for p in container["ports"] if p["name"] == "metrics")
        assert (metrics["containerPort"], host) == (port, "0.0.0.0"), name
    (worker,) = deployments["logbus-worker"]["spec"]["template"]["spec"]["containers"]
    flags = worker["command"]
    port = next(p for p in worker["ports"] if p["name"] == "metrics")["containerPort"]
    assert flags[flags.index("--metrics-port") + 1] == str(port)
    assert flags[flags.index("--metrics-host") + 1] == "0.0.0.0"


def _verify(tmp_path: Path, units: dict[str, str]) -> str:
    """systemd-analyze verify's complaints about ``units`` (name: text), run on copies whose
    ExecStart points at this virtualenv's logbus (verify checks the program exists)."""
    analyze = _tool("systemd-analyze", shutil.which("systemd-analyze"))
    logbus = Path(sys.executable).parent / "logbus"
    for name, text in units.items():
        (tmp_path / name).write_text(text.replace("/opt/logbus/venv/bin/logbus", str(logbus)))
    done = subprocess.run(
        [analyze, "verify", *(str(tmp_path / name) for name in units)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    mine = [line for line in (done.stdout + done.stderr).splitlines() if str(tmp_path) in line]
    return "\n".join(mine) + ("" if done.returncode == 0 else f"\nexit {done.returncode}")


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """The worker, ingest and broker units verify without a complaint."""
    units = {path.name: path.read_text() for path in SYSTEMD.glob("*.service")}
    assert set(units) == {"logbus-worker.service", "logbus-ingest.service", "logbus-broker.service"}
    assert _verify(tmp_path, units) == ""


def test_systemd_analyze_verify_names_a_broken_directive(tmp_path: Path) -> None:
    """A misspelt Restart= is reported (the check above would see it)."""
    text = (SYSTEMD / "logbus-worker.service").read_text()
    broken = text.replace("Restart=on-failure", "Restart=on-failures")
    assert "restart specifier" in _verify(tmp_path, {"logbus-worker.service": broken})


def test_systemd_units_restart_sandbox_and_outwait_the_shutdown() -> None:
    """Restart=on-failure, strict sandboxing, and a stop timeout over the drain's."""
    for path in SYSTEMD.glob("*.service"):
        settings = dict(
            line.split("=", 1) for line in path.read_text().splitlines() if re.match(r"^\w+=", line)
        )
        assert settings["Restart"] == "on-failure", path.name
        assert settings["ProtectSystem"] == "strict", path.name
        assert settings["NoNewPrivileges"] == "yes", path.name
        assert settings["DynamicUser"] == "yes", path.name
        assert int(settings["TimeoutStopSec"]) > SHUTDOWN_TIMEOUT, path.name


def _compose(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    compose = _tool("docker-compose", shutil.which("docker-compose"))
    file = ROOT / "docker-compose.yml"
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(text)
    return subprocess.run(
        [compose, "-f", str(copy), "--project-directory", str(ROOT), "config"],
        capture_output=True, text=True, timeout=120, check=False, cwd=file.parent,
    )  # fmt: skip


def test_docker_compose_config_accepts_the_file_with_ingest_and_health_checks(
    tmp_path: Path,
) -> None:
    """docker-compose config reads it; ingest, archiver and alerter each have a health check."""
    done = _compose(tmp_path, (ROOT / "docker-compose.yml").read_text())
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    for name in ("ingest", "archiver", "alerter", "rabbitmq"):
        assert "healthcheck" in resolved["services"][name], name
    assert "ingest-spool" in resolved["volumes"]


def test_docker_compose_config_refuses_a_broken_file(tmp_path: Path) -> None:
    """A misspelt service key is refused (the validator is not a no-op)."""
    text = (ROOT / "docker-compose.yml").read_text().replace("healthcheck:", "healthchek:", 1)
    assert _compose(tmp_path, text).returncode != 0
