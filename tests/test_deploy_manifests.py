"""The deployment files agree with relay itself.

Kubernetes, the Dockerfile and nginx each restate facts about relay (its routes, its port, its drain
time, its settings, its user); a change on either side would otherwise only show up in a cluster.
Run by `.ci/deploy-checks`, which sets RELAY_DEPLOY_CHECKS=1 so that nothing here is skipped.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from packaging.requirements import Requirement
from starlette.routing import Match

from relay.app import create_app
from relay.config import ConfigError, Settings
from tests.support import RedisServer, Replica

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
DEV_ENVIRON = {"RELAY_DEV_MODE": "true"}
# A production-mode secret of the length relay demands, standing in for the real Secret's value.
STAND_IN_SECRET = {"SUPABASE_JWT_SECRET": "s" * 48}


def _optional_import(name: str) -> Any:
    """Tools that .ci/deploy-checks installs; a plain `pytest` run without them skips, that script never."""
    if os.environ.get("RELAY_DEPLOY_CHECKS"):
        return importlib.import_module(name)
    return pytest.importorskip(name, reason=f"{name} is installed by .ci/deploy-checks")


# ---------------------------------------------------------------------------------------------- loading


def load_docs(path: Path) -> list[dict[str, Any]]:
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_docs(path):
            yield path, doc


def the(kind: str, name: str) -> dict[str, Any]:
    found = [doc for _, doc in manifests() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name} under k8s/, found {len(found)}"
    return found[0]


def relay_container() -> dict[str, Any]:
    containers = the("Deployment", "relay")["spec"]["template"]["spec"]["containers"]
    (container,) = [c for c in containers if c["name"] == "relay"]
    return dict(container)


def probes(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        key: container[key] for key in ("startupProbe", "livenessProbe", "readinessProbe") if key in container
    }


def configmap_environ() -> dict[str, str]:
    return {key: str(value) for key, value in the("ConfigMap", "relay-config")["data"].items()}


def prestop_pause_seconds(container: dict[str, Any]) -> float:
    pre_stop = container["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] in {"sleep", "/bin/sleep"} and len(command) == 2, f"preStop is not a pause: {command}"
    return float(command[1])


def dockerfile_final_stage() -> list[str]:
    """The instructions of the Dockerfile's last stage, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n\s*", " ", re.sub(r"^\s*#.*\n", "", text, flags=re.M))
    lines = [line.strip() for line in joined.splitlines() if line.strip()]
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[last_from:]


# ------------------------------------------------------------------------------------- probes and ports


@pytest.fixture(scope="module")
def app() -> Any:
    return create_app(Settings.from_environ(DEV_ENVIRON))


def _matches_get(app: Any, path: str) -> bool:
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "root_path": "",
        "headers": [],
        "query_string": b"",
    }
    return any(route.matches(scope)[0] is Match.FULL for route in app.router.routes)


def test_every_probe_path_is_a_get_route_of_relay(app: Any) -> None:
    """Each httpGet probe of the relay container names a route that create_app serves for GET."""
    container = relay_container()
    paths = {name: probe["httpGet"]["path"] for name, probe in probes(container).items()}
    assert set(paths) == {"startupProbe", "livenessProbe", "readinessProbe"}
    missing = {name: path for name, path in paths.items() if not _matches_get(app, path)}
    assert not missing, f"probes on paths relay does not route: {missing}"


def test_scrape_annotations_name_relays_metrics(app: Any, live_replica: Replica) -> None:
    """The prometheus.io annotations point at a route relay serves, on relay's port, in exposition format."""
    annotations = the("Deployment", "relay")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == Settings.from_environ(DEV_ENVIRON).port
    assert _matches_get(app, annotations["prometheus.io/path"])
    response = httpx.get(f"{live_replica.http}{annotations['prometheus.io/path']}", timeout=5)
    assert response.status_code == 200 and "relay_connections" in response.text


@pytest.fixture(scope="module")
def live_replica(redis_server: RedisServer) -> Iterator[Replica]:
    replica = Replica({"REDIS_URL": redis_server.url}, name="probes").start()
    yield replica
    replica.stop()


def test_probes_answer_200_on_a_healthy_relay(live_replica: Replica) -> None:
    """A relay process with Redis answers every probe path with 200, so the probes pass when they should."""
    for name, probe in probes(relay_container()).items():
        response = httpx.get(f"{live_replica.http}{probe['httpGet']['path']}", timeout=5)
        assert response.status_code == 200, f"{name} {probe['httpGet']['path']}: {response.status_code}"


def test_liveness_does_not_use_the_readiness_path() -> None:
    """Liveness and startup stay off /api/ready: a Redis outage must make pods unready, not restart them."""
    checks = probes(relay_container())
    assert checks["livenessProbe"]["httpGet"]["path"] == "/api/health"
    assert checks["startupProbe"]["httpGet"]["path"] == "/api/health"
    assert checks["readinessProbe"]["httpGet"]["path"] == "/api/ready"


def test_probe_ports_resolve_to_relays_port() -> None:
    """Probe ports name the container port, which is relay's default port and the ConfigMap's PORT."""
    container = relay_container()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    default_port = Settings.from_environ(DEV_ENVIRON).port
    assert default_port == 8000
    for name, probe in probes(container).items():
        port = probe["httpGet"]["port"]
        number = ports[port] if isinstance(port, str) else port
        assert number == default_port, (
            f"{name} probes port {port!r} = {number}, relay listens on {default_port}"
        )
    assert Settings.from_environ({**DEV_ENVIRON, **configmap_environ()}).port == default_port


def test_services_and_routes_reach_the_named_port() -> None:
    """Service → container port 'http'; Ingress and HTTPRoute → the Service's port; no session affinity."""
    service = the("Service", "relay")
    assert service["spec"].get("sessionAffinity", "None") == "None"
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in relay_container()["ports"]}
    for rule in the("Ingress", "relay")["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == "relay" and backend["port"] == {"name": port["name"]}
    for rule in the("HTTPRoute", "relay")["spec"]["rules"]:
        for ref in rule["backendRefs"]:
            assert (ref["name"], ref["port"]) == ("relay", port["port"])


# ----------------------------------------------------------------------------------------- termination


def test_grace_period_exceeds_prestop_plus_relay_drain() -> None:
    """The kubelet waits longer than preStop pause + RELAY_SHUTDOWN_GRACE before it SIGKILLs relay."""
    pod = the("Deployment", "relay")["spec"]["template"]["spec"]
    settings = Settings.from_environ({**configmap_environ(), **STAND_IN_SECRET})
    needed = prestop_pause_seconds(relay_container()) + settings.shutdown_grace
    assert pod["terminationGracePeriodSeconds"] > needed, (
        f"terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} must exceed "
        f"preStop pause + RELAY_SHUTDOWN_GRACE = {needed}"
    )


def test_rollout_never_drops_below_the_wanted_count() -> None:
    """maxUnavailable 0, three replicas, and the HPA never goes below them nor scales down in a hurry."""
    deployment = the("Deployment", "relay")["spec"]
    assert deployment["replicas"] == 3
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    hpa = the("HorizontalPodAutoscaler", "relay")["spec"]
    assert hpa["minReplicas"] >= deployment["replicas"]
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 600


# --------------------------------------------------------------------------------------------- settings


def test_configmap_is_a_valid_production_configuration() -> None:
    """relay accepts the ConfigMap in production mode (with a real secret), with Redis and one worker."""
    settings = Settings.from_environ({**configmap_environ(), **STAND_IN_SECRET})
    assert not settings.dev_mode
    assert settings.redis_url is not None, "replicas share nothing without REDIS_URL"
    assert settings.workers == 1
    assert settings.log_format == "json"


def test_secret_example_placeholders_are_refused_at_startup() -> None:
    """Deploying the example Secret unedited stops relay with a ConfigError instead of running."""
    secret = the("Secret", "relay-secrets")["stringData"]
    with pytest.raises(ConfigError):
        Settings.from_environ({**configmap_environ(), **secret})


def test_pods_get_no_service_link_variables() -> None:
    """No RELAY_PORT=tcp://... style variables from Services; relay ignores them anyway (no such setting)."""
    for name in ("relay", "redis"):
        assert the("Deployment", name)["spec"]["template"]["spec"]["enableServiceLinks"] is False
    settings = Settings.from_environ(
        {**DEV_ENVIRON, "RELAY_PORT": "tcp://10.96.0.10:80", "RELAY_SERVICE_HOST": "x"}
    )
    assert settings.port == 8000


# ------------------------------------------------------------------------------------------- lockdown


def test_relay_pod_is_locked_down() -> None:
    """Non-root, read-only root, no capabilities, RuntimeDefault seccomp, /tmp the only writable path."""
    pod = the("Deployment", "relay")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = relay_container()
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_image_user_and_port_match_the_pod() -> None:
    """The image's numeric USER is the pod's runAsUser, EXPOSE the containerPort, CMD `relay serve`."""
    stage = dockerfile_final_stage()
    (user,) = [line.split()[1] for line in stage if line.upper().startswith("USER ")]
    uid, _, gid = user.partition(":")
    pod_context = the("Deployment", "relay")["spec"]["template"]["spec"]["securityContext"]
    assert (int(uid), int(gid)) == (pod_context["runAsUser"], pod_context["runAsGroup"])
    (expose,) = [line.split()[1] for line in stage if line.upper().startswith("EXPOSE ")]
    assert int(expose) == relay_container()["ports"][0]["containerPort"]
    (cmd,) = [line[len("CMD ") :] for line in stage if line.upper().startswith("CMD ")]
    assert json.loads(cmd) == ["relay", "serve"]
    assert any(re.search(r"\bPYTHONUNBUFFERED=1\b", line) for line in stage if line.startswith("ENV "))


def test_both_build_stages_use_the_same_pinned_base() -> None:
    """The venv copied between stages points at the build stage's interpreter: both bases must be equal."""
    text = (ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert len(bases) == 2 and bases[0] == bases[1], bases
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", bases[0]), f"not a pinned 3.11 slim tag: {bases[0]}"


def _dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/").replace("**/", "*")
        if any(fnmatch.fnmatchcase(candidate, glob) for candidate in candidates):
            excluded = not negated
    return excluded


def test_dockerignore_sends_what_the_dockerfile_copies_and_nothing_secret() -> None:
    """Every file the Dockerfile COPYs is in the build context; .env, tests, the bench, docs, venvs and
    manifests are not: the image carries the product only."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    sources = [
        src
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for src in line.split()[1:-1]
    ]
    assert sources, "no COPY from the build context in the Dockerfile"
    copied = []
    for src in sources:
        path = ROOT / src
        assert path.exists(), f"the Dockerfile copies {src}, which does not exist"
        files = [p for p in path.rglob("*.py")] if path.is_dir() else [path]
        copied += [str(f.relative_to(ROOT)) for f in files if "__pycache__" not in f.parts]
    missing = [f for f in copied if _dockerignore_excludes(f, patterns)]
    assert not missing, f".dockerignore keeps these out of the build context: {missing}"
    not_product = [f for f in copied if f.split("/")[0] in ("bench", "tests", "docs")]
    assert not not_product, f"the Dockerfile copies more than the product: {not_product}"
    for private in (
        ".env",
        "tests/test_api.py",
        "bench/cli.py",
        "bench/baseline.py",
        "docs/performance.md",
        ".venv/bin/python",
        "k8s/deployment.yaml",
        ".git/config",
        "relay/__pycache__/app.cpython-311.pyc",
    ):
        assert _dockerignore_excludes(private, patterns), f"{private} would be sent to the Docker daemon"


# -------------------------------------------------------------------------------------- kustomization


def test_kustomization_lists_every_base_manifest() -> None:
    """Every manifest in k8s/ is in the kustomization but the Secret example and optional/ (on purpose)."""
    kustomization = load_docs(K8S / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == present
    assert all(doc.get("metadata", {}).get("namespace") in (None, "relay") for _, doc in manifests())


# ---------------------------------------------------------------------------------------- dependencies


def test_lock_pins_satisfy_pyproject() -> None:
    """Every dependency of pyproject.toml is pinned in requirements.lock at a version it accepts."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins: dict[str, str] = {}
    for raw in (ROOT / "requirements.lock").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"requirements.lock line is not a == pin: {raw!r}"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    for text in project["dependencies"]:
        requirement = Requirement(text)
        key = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert key in pins, f"{requirement.name} (pyproject.toml) is not pinned in requirements.lock"
        assert requirement.specifier.contains(pins[key], prereleases=True), (
            f"requirements.lock pins {requirement.name}=={pins[key]}, "
            f"pyproject.toml wants {requirement.specifier}"
        )


# -------------------------------------------------------------------------------------------- nginx


def test_nginx_example_logs_no_query_and_has_no_stickiness() -> None:
    """The example's access log format carries no query string, and its upstream has no affinity."""
    text = (ROOT / "deploy/nginx/relay.conf").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    log_format = re.search(r"log_format\s+(\w+)(.*?);", code, flags=re.S)
    assert log_format is not None
    assert not re.search(r"\$(request|request_uri|args|query_string|arg_\w+|http_referer)\b", log_format[2])
    access_logs = re.findall(r"access_log\s+\S+\s+(\w+)\s*;", code)
    assert access_logs and set(access_logs) == {log_format[1]}
    upstream = re.search(r"upstream\s+\w+\s*\{(.*?)\}", code, flags=re.S)
    assert upstream is not None
    assert len(re.findall(r"^\s*server\s", upstream[1], flags=re.M)) == 3
    assert not re.search(r"^\s*(ip_hash|hash|sticky|least_conn|random)\b", upstream[1], flags=re.M)
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade", code)
    assert re.search(r"proxy_read_timeout\s+3600s", code)


# ----------------------------------------------------------------------------------- Gateway API route

# kubernetes-validate ships schemas for built-in kinds only. Until it ships one for HTTPRoute, the
# route is checked against this transcription of the fields of gateway.networking.k8s.io/v1 HTTPRoute
# that relay's route uses (names, enums, patterns and limits from the Gateway API v1 reference), with
# unknown fields refused as `kubernetes-validate --strict` refuses them. A field outside this subset
# fails the check until it is added here from the reference.
_NAME = {"type": "string", "minLength": 1, "maxLength": 253}
_DURATION = {"type": "string", "pattern": r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"}
_HOSTNAME = {
    "type": "string",
    "maxLength": 253,
    "pattern": r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
}
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
_HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]


def _object(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def _array(items: dict[str, Any], max_items: int, min_items: int = 0) -> dict[str, Any]:
    return {"type": "array", "items": items, "maxItems": max_items, "minItems": min_items}


_PARENT_REF = _object(
    {
        "group": {"type": "string"},
        "kind": {"type": "string"},
        "name": _NAME,
        "namespace": _NAME,
        "sectionName": _NAME,
        "port": _PORT,
    },
    "name",
)
_PATH_MATCH = _object(
    {
        "type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]},
        "value": {"type": "string", "pattern": "^/", "maxLength": 1024},
    }
)
_MATCH = _object({"path": _PATH_MATCH, "method": {"enum": _HTTP_METHODS}})
_BACKEND_REF = _object(
    {
        "group": {"type": "string"},
        "kind": {"type": "string"},
        "name": _NAME,
        "namespace": _NAME,
        "port": _PORT,
        "weight": {"type": "integer", "minimum": 0, "maximum": 1000000},
    },
    "name",
)
_RULE = _object(
    {
        "name": _NAME,
        "matches": _array(_MATCH, 64),
        "backendRefs": _array(_BACKEND_REF, 16),
        "timeouts": _object({"request": _DURATION, "backendRequest": _DURATION}),
    }
)
_METADATA = _object(
    {
        "name": _NAME,
        "namespace": _NAME,
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "name",
)
HTTPROUTE_V1_SUBSET = _object(
    {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "kind": {"const": "HTTPRoute"},
        "metadata": _METADATA,
        "spec": _object(
            {
                "parentRefs": _array(_PARENT_REF, 32, min_items=1),
                "hostnames": _array(_HOSTNAME, 16),
                "rules": _array(_RULE, 16, min_items=1),
            },
            "parentRefs",
            "rules",
        ),
    },
    "apiVersion",
    "kind",
    "metadata",
    "spec",
)


def httproute_errors(route: dict[str, Any]) -> list[str]:
    """Schema violations of `route`, from kubernetes-validate's own schema if it has one, else the subset."""
    jsonschema = _optional_import("jsonschema")
    kv_utils = _optional_import("kubernetes_validate.utils")
    try:
        kv_utils.validate(route, kv_utils.latest_version(), strict=True)
    except kv_utils.SchemaNotFoundError:
        validator = jsonschema.Draft202012Validator(HTTPROUTE_V1_SUBSET)
        return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(route)]
    except kv_utils.ValidationError as error:
        return [str(error.message)]
    return []


def test_httproute_matches_the_gateway_api_v1_fields() -> None:
    """The optional HTTPRoute passes the schema check (upstream schema when available, else the subset)."""
    route = the("HTTPRoute", "relay")
    assert httproute_errors(route) == []
    paths = {m["path"]["value"] for rule in route["spec"]["rules"] for m in rule["matches"]}
    assert paths == {"/ws", "/api"}, "the route exposes exactly what the Ingress exposes"


@pytest.mark.parametrize(
    "breakage",
    [
        "spec.rules.0.timeouts.request=ten minutes",
        "spec.rules.0.matches.0.path.type=Prefix",
        "spec.rules.0.backendRefs.0.port=0",
        "spec.parentRef=[]",
        "spec.hostnames.0=Relay.Example.com",
    ],
)
def test_httproute_check_rejects_broken_routes(breakage: str) -> None:
    """The HTTPRoute check is not a formality: typical mistakes make it fail."""
    route = copy.deepcopy(the("HTTPRoute", "relay"))
    dotted, _, raw = breakage.partition("=")
    *parents, leaf = dotted.split(".")
    node: Any = route
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    value: Any = json.loads(raw) if raw[:1] in "[{0123456789" else raw
    if isinstance(node, list):
        node[int(leaf)] = value
    else:
        node[leaf] = value
    assert httproute_errors(route), f"accepted a broken route ({breakage})"


# ------------------------------------------------------------------------------------------ health check


def healthcheck_argv() -> list[str]:
    (line,) = [line for line in dockerfile_final_stage() if line.upper().startswith("HEALTHCHECK ")]
    match = re.search(r"\bCMD\s+(\[.*\])\s*$", line)
    assert match, f"HEALTHCHECK is not in exec form: {line}"
    argv = json.loads(match[1])
    assert argv[0] == "python", f"the health check should need nothing but python: {shlex.join(argv)}"
    return [str(arg) for arg in argv]


def _run_healthcheck(port: int) -> int:
    argv = [sys.executable, *healthcheck_argv()[1:]]
    env = {**os.environ, "PORT": str(port)}
    return subprocess.run(argv, env=env, capture_output=True, timeout=15, check=False).returncode


def test_image_healthcheck_passes_on_a_live_relay_and_fails_without_one() -> None:
    """The Dockerfile's HEALTHCHECK command, run as written, tells a serving relay from a stopped one."""
    replica = Replica({"REDIS_URL": ""}, name="healthcheck").start()
    try:
        assert _run_healthcheck(replica.port) == 0, replica.log()
    finally:
        replica.stop()
    assert _run_healthcheck(replica.port) != 0, "the health check passed with relay stopped"


def test_redis_cluster_component_is_a_valid_production_configuration() -> None:
    """k8s/optional/redis-cluster's ConfigMap patch over the base ConfigMap: relay starts in cluster mode
    (.ci/deploy-checks renders and validates the whole variant with kubectl kustomize)."""
    component = load_docs(K8S / "optional" / "redis-cluster" / "kustomization.yaml")[0]
    (patch,) = [p["patch"] for p in component["patches"] if p["target"]["kind"] == "ConfigMap"]
    data = yaml.safe_load(patch)["data"]
    settings = Settings.from_environ({**configmap_environ(), **data, **STAND_IN_SECRET})
    assert settings.redis_cluster
    assert settings.redis_wait_replicas == int(data["RELAY_REDIS_WAIT_REPLICAS"])
