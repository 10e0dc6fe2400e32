"""The deployment artifacts under ``deploy/``, checked by the tools that own their formats.

Nothing here builds or runs an image (there is no container engine on the test machine):
the Kubernetes manifests go through Kubernetes' own OpenAPI schemas (kubernetes-validate,
strict), the compose file through the compose_spec parser, HAProxy's configuration
through ``haproxy -c``, and the Containerfiles through hadolint. PgBouncer has no
check-only mode: the cluster and pooling tests run it on the rendered template.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from compose_spec import PyCompose

from tests.cluster.engines import DEPLOY, render_pgbouncer, system_binary

# The oldest Kubernetes these manifests support (preStop's `sleep` action is beta in
# 1.30), and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_manifests_are_valid(manifest: Path, version: str) -> None:
    """Every resource passes Kubernetes' schema, strictly (unknown fields are errors)."""
    for document in _documents(manifest):
        kubernetes_validate.validate(document, version, strict=True)


def test_kubernetes_api_is_drain_aware() -> None:
    """The API Deployment: probes, preStop, a grace period covering drain + shutdown."""
    resources = {d["kind"]: d for d in _documents(DEPLOY / "kubernetes" / "api.yaml")}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= set(
        resources
    )
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    (api,) = pod["containers"]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "startupProbe" in api
    config = _documents(DEPLOY / "kubernetes" / "config.yaml")[0]["data"]
    budget = (
        api["lifecycle"]["preStop"]["sleep"]["seconds"]
        + float(config["LOOPWISE_DRAIN_DELAY"])
        + float(config["LOOPWISE_SHUTDOWN_GRACE"])
    )
    assert pod["terminationGracePeriodSeconds"] > budget
    kinds = {d["kind"] for p in MANIFESTS for d in _documents(p)}
    assert {"Job", "Secret", "ConfigMap"} <= kinds


def test_compose_file_is_valid_and_has_the_cluster_topology() -> None:
    """compose.yaml parses under the compose spec and runs what the test cluster runs."""
    # Anchors and merge keys resolved first, as compose itself does before validating.
    document = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    compose = PyCompose.from_json(json.dumps(document))
    assert set(compose.service_names()) == {
        "postgres", "pgbouncer", "migrate", "api1", "api2", "api3", "worker", "haproxy", "redis",
    }  # fmt: skip
    services = document["services"]
    assert [services[f"api{i}"]["command"] for i in (1, 2, 3)] == [["serve"]] * 3
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["migrate"]["command"] == ["migrate"]
    # The APIs share their downstream limits through the redis service, each 1 of 3.
    api_env = services["api1"]["environment"]
    assert api_env["LOOPWISE_REDIS_URL"].endswith("redis://redis:6379/0}")
    assert api_env["LOOPWISE_REDIS_PROCESSES"] == "3"


def test_kubernetes_shares_limits_through_its_redis() -> None:
    """config.yaml points every Pod at the redis Service, which redis.yaml defines."""
    config = _documents(DEPLOY / "kubernetes" / "config.yaml")[0]["data"]
    redis = {d["kind"]: d for d in _documents(DEPLOY / "kubernetes" / "redis.yaml")}
    assert config["LOOPWISE_REDIS_URL"] == f"redis://{redis['Service']['metadata']['name']}:6379/0"
    assert redis["Service"]["spec"]["ports"][0]["port"] == 6379
    api = {d["kind"]: d for d in _documents(DEPLOY / "kubernetes" / "api.yaml")}
    assert config["LOOPWISE_REDIS_PROCESSES"] == str(api["Deployment"]["spec"]["replicas"])


def test_compose_file_refuses_an_unknown_key() -> None:
    """The compose check can fail: a misspelt key is an error, not ignored."""
    document = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    document["services"]["api1"]["helthcheck"] = document["services"]["api1"]["healthcheck"]
    with pytest.raises(ValueError, match="helthcheck"):
        PyCompose.from_json(json.dumps(document))


def test_haproxy_config_is_valid() -> None:
    """haproxy -c accepts deploy/haproxy/haproxy.cfg with the variables it expects."""
    env = {
        "HAPROXY_BIND": "127.0.0.1:8080",
        "HAPROXY_STATS_BIND": "127.0.0.1:8404",
        "LOOPWISE_API1": "127.0.0.2:8000",
        "LOOPWISE_API2": "127.0.0.3:8000",
        "LOOPWISE_API3": "127.0.0.4:8000",
    }
    checked = subprocess.run(  # noqa: S603  # our own arguments
        [system_binary("haproxy"), "-c", "-f", str(DEPLOY / "haproxy" / "haproxy.cfg")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Configuration file is valid" in checked.stdout


def test_pgbouncer_template_renders_completely() -> None:
    """Every variable of the PgBouncer template is one the deployments set."""
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    env = compose["services"]["pgbouncer"]["environment"]
    values = {k: v for k, v in env.items() if k.startswith(("PGBOUNCER_", "POSTGRES_"))}
    # The path the image's entrypoint writes the users to.
    values["PGBOUNCER_AUTH_FILE"] = "/tmp/pgbouncer-users.txt"  # noqa: S108
    rendered = render_pgbouncer(values)
    assert "pool_mode = transaction" in rendered
    assert "${" not in rendered


@pytest.mark.parametrize(
    "containerfile",
    [DEPLOY / "Containerfile", DEPLOY / "pgbouncer" / "Containerfile"],
    ids=["loopwise", "pgbouncer"],
)
def test_containerfiles_pass_hadolint(containerfile: Path) -> None:
    """hadolint finds nothing (every ignore in the files carries its reason)."""
    hadolint = Path(sys.executable).parent / "hadolint"
    linted = subprocess.run(  # noqa: S603  # our own arguments
        [str(hadolint), "--no-color", str(containerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_image_is_multi_stage_non_root_with_the_three_entry_points() -> None:
    """The image: a uv build stage, a runtime stage, a numeric non-root user, `loopwise`."""
    text = (DEPLOY / "Containerfile").read_text()
    stages = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(stages) == 2
    assert "uv sync --locked --no-dev" in text
    assert "USER 10001:10001" in text
    assert 'ENTRYPOINT ["loopwise"]' in text
    for command in ("serve", "worker", "migrate"):
        assert f"loopwise {command}" in text
