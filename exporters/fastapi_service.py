"""The ``fastapi-service`` format: the workflow behind a secure-by-default HTTP API.

The artifact embeds the same workflow library as ``python-package`` and adds a FastAPI
app (auth, rate limiting, body limit, metrics, JSON logs), its own tests, a Dockerfile,
Kubernetes manifests and a Grafana dashboard. Everything the workflow decides about the
service (ports, auth, limits) is written to ``service_config.json`` as data.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

from pytest_mulm.blocks import NUMERIC_KINDS
from pytest_mulm.exporter import ExportContext, Exporter
from pytest_mulm.hookspecs import hookimpl
from pytest_mulm.loader import INPUT_TYPES
from pytest_mulm.workflow import Workflow

from .library import library_requirements, names_for, write_library

FORMAT = "fastapi-service"

# Tested together on 2026-12-04 (fastapi 0.165.0 needs pydantic 2); bump deliberately.
SERVICE_REQUIREMENTS = (
    "fastapi==0.165.0",
    "uvicorn==0.55.0",
    "prometheus-client==0.26.0",
    "pyjwt[crypto]==2.15.1",
)
TEST_REQUIREMENTS = ("httpx==0.28.1",)
AUTH_TYPES = {
    None: "api-key+jwt", "": "api-key+jwt", "default": "api-key+jwt", "api-key+jwt": "api-key+jwt",
    "apikey": "api-key", "api-key": "api-key", "api_key": "api-key", "apiKey": "api-key",
    "jwt": "jwt", "bearer": "jwt", "none": "none",
}


def service_names(workflow: Workflow) -> dict[str, str]:
    names = names_for(workflow)
    base = names["dist"][:52].rstrip("-")  # "-service" keeps names within 60 characters
    return {
        **names,
        "service_dist": f"{base}-service",
        "service_package": f"{names['package'][:52].rstrip('_')}_service",
        "service_command": f"{base}-service",
    }


def _section(workflow: Workflow, key: str) -> dict[str, Any]:
    value = workflow.deployment.get(key)
    return value if isinstance(value, dict) else {}


def service_config(workflow: Workflow) -> tuple[dict[str, Any], list[str]]:
    """The service's settings from deploymentConfig, and one problem line per bad value."""
    problems: list[str] = []
    where = "deploymentConfig"
    auth = _section(workflow, "authentication")
    auth_type = AUTH_TYPES.get(auth.get("type"))
    if auth_type is None:
        problems.append(f"{where}.authentication.type: {auth.get('type')!r} is not known; valid: api-key, jwt, api-key+jwt, none")
        auth_type = "api-key+jwt"
    roles = auth.get("roles") or auth.get("scopes")
    required_scope = auth.get("requiredScope") or ("predict" if roles else None)
    rate = _section(workflow, "rateLimit")
    limit = rate.get("requests", rate.get("limit", 60))
    window = rate.get("window", rate.get("windowSeconds", 60))
    strategy = rate.get("strategy", "sliding")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        problems.append(f"{where}.rateLimit.requests: {limit!r}; give a whole number of requests, at least 1")
        limit = 60
    if not isinstance(window, (int, float)) or isinstance(window, bool) or window <= 0:
        problems.append(f"{where}.rateLimit.window: {window!r}; give the window in seconds, more than 0")
        window = 60
    if strategy not in ("fixed", "sliding"):
        problems.append(f"{where}.rateLimit.strategy: {strategy!r}; valid: fixed, sliding")
        strategy = "sliding"
    api = _section(workflow, "apiConfig")
    cors = api.get("cors")
    origins = cors.get("origins", []) if isinstance(cors, dict) else (cors if isinstance(cors, list) else [])
    inputs = []
    for nid in workflow.inputs:
        node = workflow.node(nid)
        kind = "any" if node.source else INPUT_TYPES.get(str(node.config.get("inputType", "any")), "any")
        shape = node.config.get("shape") if kind == "tensor" else None
        if kind == "tensor" and not shape:
            kind = "any"
        inputs.append({"id": nid, "type": kind, "shape": shape, "maxLength": node.config.get("maxLength")})
    outputs = []
    for nid in workflow.outputs:
        node = workflow.node(nid)
        labels = node.config.get("labels") if node.kind == "output" and not node.source else None
        upstream = [workflow.node(e.source).kind for e in workflow.upstream(nid)]
        numeric = not node.source and upstream and upstream[0] in NUMERIC_KINDS
        outputs.append({"id": nid, "labels": [str(v) for v in labels] if labels else None,
                        "type": "tensor" if numeric and not labels else "any"})
    return {
        "service_name": workflow.slug,
        "auth_type": auth_type,
        "jwt_audience": str(auth.get("audience") or workflow.slug),
        "required_scope": required_scope,
        "rate_limit": limit,
        "rate_window": float(window),
        "rate_strategy": strategy,
        "max_body_bytes": int(api.get("maxBodyBytes", 1_048_576)),
        "max_batch_size": int(api.get("maxBatchSize", 64)),
        "input_range": float(api.get("inputRange", 1e6)),
        "cors_origins": [str(o) for o in origins],
        "inputs": inputs,
        "outputs": outputs,
    }, problems


QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")


def kubernetes_problems(workflow: Workflow) -> list[str]:
    """One line per kubernetes value that would give an invalid manifest."""
    kube = _section(workflow, "kubernetes")
    where = "deploymentConfig.kubernetes"
    problems = []

    def whole(value: Any, name: str, low: int, high: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            problems.append(f"{where}.{name}: {value!r}; give a whole number from {low} to {high}")

    if "replicas" in kube:
        whole(kube["replicas"], "replicas", 1, 1000)
    for key in ("cpuRequest", "cpuLimit", "memoryRequest", "memoryLimit"):
        if key in kube and not QUANTITY.match(str(kube[key])):
            problems.append(f"{where}.{key}: {kube[key]!r} is not a Kubernetes quantity such as 250m, 1, 256Mi")
    if "image" in kube and (not isinstance(kube["image"], str) or not re.fullmatch(r"[a-z0-9][a-z0-9._/:@-]{0,254}", kube["image"])):
        problems.append(f"{where}.image: {kube['image']!r} is not an image reference such as registry/name:1.0")
    scaling = kube.get("autoscaling")
    if scaling is not None:
        if not isinstance(scaling, dict):
            problems.append(f"{where}.autoscaling: must be an object with minReplicas, maxReplicas, targetCPU")
        else:
            low, high = scaling.get("minReplicas", 1), scaling.get("maxReplicas", 5)
            whole(low, "autoscaling.minReplicas", 1, 1000)
            whole(high, "autoscaling.maxReplicas", 1, 1000)
            whole(scaling.get("targetCPU", 70), "autoscaling.targetCPU", 1, 100)
            if isinstance(low, int) and isinstance(high, int) and low > high:
                problems.append(f"{where}.autoscaling: minReplicas {low} is above maxReplicas {high}")
    return problems


def kubernetes_config(workflow: Workflow) -> dict[str, Any]:
    kube = _section(workflow, "kubernetes")
    scaling = kube.get("autoscaling") if isinstance(kube.get("autoscaling"), dict) else None
    return {
        "replicas": int(kube.get("replicas", 2)),
        "autoscaling": scaling,
        "cpu_request": str(kube.get("cpuRequest", "250m")),
        "cpu_limit": str(kube.get("cpuLimit", "1")),
        "memory_request": str(kube.get("memoryRequest", "256Mi")),
        "memory_limit": str(kube.get("memoryLimit", "512Mi")),
        "image": str(kube.get("image", "")),
    }


class FastAPIServiceExporter(Exporter):
    name = FORMAT
    description = "FastAPI microservice: API-key/JWT auth, rate limiting, metrics, Docker and Kubernetes"
    supported_blocks = frozenset({"input", "output", "python", "llm", *NUMERIC_KINDS})

    def check(self, workflow: Workflow) -> list[str]:
        return service_config(workflow)[1] + kubernetes_problems(workflow)

    def warnings(self, workflow: Workflow) -> list[str]:
        if service_config(workflow)[0]["auth_type"] == "none":
            return ["authentication is DISABLED (deploymentConfig.authentication.type = none): "
                    "anyone who reaches the service can call it"]
        return []

    def options(self, workflow: Workflow) -> dict[str, Any]:
        return {"service": service_config(workflow)[0], "kubernetes": kubernetes_config(workflow)}

    def requirements(self, workflow: Workflow) -> list[str]:
        return sorted({*library_requirements(workflow), *SERVICE_REQUIREMENTS}, key=str.lower)

    def export(self, ctx: ExportContext) -> None:
        wf = ctx.workflow
        names = service_names(wf)
        lib = f"src/{names['package']}"
        svc = f"src/{names['service_package']}"
        common = write_library(ctx, lib, names)
        common["requirements"] = self.requirements(wf)
        service = ctx.options["service"]
        variables = {
            **common, "service": service, "kube": ctx.options["kubernetes"],
            "test_requirements": list(TEST_REQUIREMENTS), "python_version": "3.11",
        }
        ctx.write_json(f"{svc}/service_config.json", service)
        ctx.render("service_init.py.jinja", f"{svc}/__init__.py", **variables)
        ctx.render("service_main.py.jinja", f"{svc}/__main__.py", **variables)
        for module in ("app", "config", "security", "ratelimit", "limits", "schemas", "observability"):
            ctx.render(f"{module}.py.jinja", f"{svc}/{module}.py", **variables)
        ctx.render("test_service.py.jinja", f"tests/test_{names['service_package']}.py", **variables)
        ctx.render("pyproject.toml.jinja", "pyproject.toml", **variables)
        ctx.write_text("requirements.txt", "".join(f"{r}\n" for r in common["requirements"]))
        ctx.render("gitignore.jinja", ".gitignore", folder="python-package", **variables)
        ctx.render("README.md.jinja", "README.md", **variables)
        for template, target in DEPLOY_FILES:
            ctx.render(template, target, **variables)
        if variables["kube"]["autoscaling"]:
            ctx.render("k8s/hpa.yaml.jinja", "k8s/hpa.yaml", **variables)
        # CI that runs the service's own tests and lints its Dockerfile, on the Python
        # version that exported it (python_version above is the Docker base image's)
        ci_python = f"{sys.version_info.major}.{sys.version_info.minor}"
        ctx.render("github-ci.yml.jinja", ".github/workflows/test.yml", ci_python=ci_python, **variables)
        ctx.render("gitlab-ci.yml.jinja", ".gitlab-ci.yml", ci_python=ci_python, **variables)


# (template, output path) of the deployment files; see templates/fastapi-service/
DEPLOY_FILES = (
    ("Dockerfile.jinja", "Dockerfile"),
    ("dockerignore.jinja", ".dockerignore"),
    ("k8s/deployment.yaml.jinja", "k8s/deployment.yaml"),
    ("k8s/service.yaml.jinja", "k8s/service.yaml"),
    ("grafana-dashboard.json.jinja", "grafana/dashboard.json"),
)


@hookimpl
def register_exporters(register: Callable[[Exporter], None]) -> None:
    register(FastAPIServiceExporter())


@hookimpl
def register_suites(register: Callable[[str, str], None]) -> None:
    register(FORMAT, "pytest_mulm.suites.fastapi_service")
    register(FORMAT, "pytest_mulm.suites.fastapi_deploy")
