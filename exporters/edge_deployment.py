"""The ``edge-deployment`` format: the numeric blocks as ONNX and TFLite models, checked
number by number, and an offline runner package that never needs TensorFlow.

The bundle: ``models/model.onnx`` (fp32), ``models/model.int8.onnx`` (onnxruntime
dynamic quantisation), ``models/model.tflite`` (fp32), ``models/model.int8.tflite``
(dynamic range, or full integer with a representative dataset from the examples when
``edgeConfig.quantization`` is ``int8``), a runner package (the workflow's Python blocks
around one model call, on onnxruntime or LiteRT) and ``edge-manifest.json`` (sizes, peak
memory and latency measured at export, target platforms, thresholds).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from pytest_mulm.blocks import NUMERIC_KINDS
from pytest_mulm.checks import PEAK_MB
from pytest_mulm.errors import ExportError, MissingDependencyError
from pytest_mulm.exporter import ExportContext, Exporter
from pytest_mulm.hookspecs import hookimpl
from pytest_mulm.workflow import Workflow

from .edge_subgraph import NumericSubgraph, example_traces, numeric_subgraph
from .library import library_requirements, names_for, write_library

FORMAT = "edge-deployment"
NO_NUMERIC = "the workflow has no numeric blocks, so there is no model to put on the edge"
DEFAULT_PLATFORMS = ("linux_x86_64", "linux_aarch64", "macos_arm64", "windows_x86_64")
# runtime wheels the runner needs, pinned to what was verified (2026-12-04)
BACKEND_REQUIREMENTS = {"onnxruntime": "onnxruntime==1.32.0", "litert": "ai-edge-litert==2.3.0"}
TARGETS = {"onnx": ("onnxruntime",), "tflite": ("litert",), "both": ("onnxruntime", "litert")}


def edge_config(workflow: Workflow) -> tuple[dict[str, Any], list[str]]:
    """Settings from µLM's edgeConfig (top level or under deploymentConfig), with problems."""
    raw = workflow.deployment.get("edgeConfig")
    if not isinstance(raw, dict):
        raw = workflow.raw.get("edgeConfig") if isinstance(workflow.raw.get("edgeConfig"), dict) else {}
    problems = []
    where = "edgeConfig"
    target = str(raw.get("targetFramework", "both")).lower()
    target = {"onnxruntime": "onnx", "tensorflow-lite": "tflite", "litert": "tflite"}.get(target, target)
    if target not in TARGETS:
        problems.append(f"{where}.targetFramework: {raw.get('targetFramework')!r}; valid: onnx, tflite, both")
        target = "both"
    quant = str(raw.get("quantization", "dynamic")).lower()
    if quant not in ("none", "dynamic", "int8"):
        problems.append(f"{where}.quantization: {raw.get('quantization')!r}; valid: none, dynamic, int8")
        quant = "dynamic"

    def number(key: str, default: float | None) -> float | None:
        value = raw.get(key, default)
        if value is None:
            return None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            problems.append(f"{where}.{key}: {value!r}; give a positive number")
            return default
        return float(value)

    platforms = raw.get("platforms", list(DEFAULT_PLATFORMS))
    if not isinstance(platforms, list) or not all(p in PLATFORM_TAGS for p in platforms):
        problems.append(f"{where}.platforms: {platforms!r}; valid: {', '.join(PLATFORM_TAGS)}")
        platforms = list(DEFAULT_PLATFORMS)
    return {
        "target": target,
        "backends": list(TARGETS[target]),
        "quantization": quant,
        "optimization": str(raw.get("optimization", "")),
        "max_memory_mb": number("maxMemory", 512),
        "max_cpu_usage": number("maxCpuUsage", None),
        "latency_budget_ms": number("latencyBudgetMs", 50),
        "int8_min_agreement": number("int8MinAgreement", 0.98),
        "int8_max_size_ratio": number("int8MaxSizeRatio", 0.35),
        "allow_degradation": bool(raw.get("allowDegradation", False)),
        "platforms": list(platforms),
    }, problems


# pip's --platform tags per target platform: every glibc / macOS level a wheel may be
# tagged with (pip does not widen an explicit manylinux_2_X tag to older levels itself)
PLATFORM_TAGS = {
    "linux_x86_64": tuple(f"manylinux_2_{v}_x86_64" for v in range(17, 40)) + ("manylinux2014_x86_64",),
    "linux_aarch64": tuple(f"manylinux_2_{v}_aarch64" for v in range(17, 40)) + ("manylinux2014_aarch64",),
    "macos_arm64": tuple(f"macosx_{v}_0_arm64" for v in range(11, 16)),
    "windows_x86_64": ("win_amd64",),
}


class EdgeDeploymentExporter(Exporter):
    name = FORMAT
    description = "ONNX and TFLite (fp32 + int8) models of the numeric blocks, and an offline runner"
    supported_blocks = frozenset({"input", "output", "python", "llm", *NUMERIC_KINDS})
    project_subdir = "runner"  # the installable part of the bundle

    def check(self, workflow: Workflow) -> list[str]:
        config, problems = edge_config(workflow)
        llm = [n for n in workflow.nodes if n.kind == "llm"]
        if llm and not config["allow_degradation"]:
            problems += [
                f"{n.title}: an llm block cannot run offline on the edge; set edgeConfig.allowDegradation "
                "to true to use the template fallback instead" for n in llm
            ]
        return problems

    def warnings(self, workflow: Workflow) -> list[str]:
        llm = [n.id for n in workflow.nodes if n.kind == "llm"]
        if llm and edge_config(workflow)[0]["allow_degradation"]:
            return [f"llm block(s) {', '.join(llm)} run degraded on the edge: the template fallback answers"]
        return []

    def options(self, workflow: Workflow) -> dict[str, Any]:
        return {"edge": edge_config(workflow)[0]}

    def requirements(self, workflow: Workflow) -> list[str]:
        config = edge_config(workflow)[0]
        backends = {BACKEND_REQUIREMENTS[b] for b in config["backends"]}
        return sorted({*library_requirements(workflow, extra=("numpy",)), *backends}, key=str.lower)

    def export(self, ctx: ExportContext) -> None:
        import numpy as np

        wf = ctx.workflow
        config = ctx.options["edge"]
        if not wf.has_numeric:  # nothing to put on the edge; the suite skips, saying why
            ctx.write_json("edge-manifest.json", {"schema": 1, "skipped_all": NO_NUMERIC})
            ctx.write_text("README.md", f"# Edge deployment\n\n{NO_NUMERIC}\n")
            return
        traces = example_traces(wf)
        sub = numeric_subgraph(wf, traces[0])
        if sub is None:
            raise ExportError(f"{FORMAT}: the workflow has no numeric blocks")
        feeds = [{sub.names[src]: np.asarray(t[src], dtype=np.float32).reshape(1, -1).tolist() for src, _ in sub.inputs}
                 for t in traces]
        models = _write_models(ctx, sub, config, feeds)
        names = {**names_for(wf)}
        names["dist"] = f"{names['dist'][:55].rstrip('-')}-edge"
        names["command"] = names["dist"]
        pkg = f"runner/src/{names['package']}"
        common = write_library(ctx, pkg, names, model=sub)
        common["requirements"] = self.requirements(wf)
        edge_model = resources.files("pytest_mulm.templates").joinpath("edge-deployment/edge_model.py")
        ctx.write_text(f"{pkg}/edge_model.py", edge_model.read_text(encoding="utf-8"))
        runner_models = {}
        for backend in config["backends"]:
            file = models["fp32"][backend]
            ctx.write_bytes(f"{pkg}/{Path(file).name}", ctx.path(file).read_bytes())
            runner_models[backend] = Path(file).name
        ctx.write_json(f"{pkg}/edge_config.json", {"backend": config["backends"][0], "models": runner_models,
                                                    "inputs": sub.input_names(), "outputs": sub.output_names()})
        for template, target in (("__main__.py.jinja", f"{pkg}/__main__.py"), ("cli.py.jinja", f"{pkg}/cli.py")):
            ctx.render(template, target, folder="python-package", **common)
        ctx.render("test_package.py.jinja", f"runner/tests/test_{names['package']}.py", folder="python-package", **common)
        ctx.render("runner_pyproject.toml.jinja", "runner/pyproject.toml", model_files=sorted(runner_models.values()), **common)
        ctx.render("README.md.jinja", "runner/README.md", folder="python-package", **common)
        ctx.write_json("edge-manifest.json", _manifest(ctx, sub, config, models, feeds))
        ctx.render("README.md.jinja", "README.md", sub=sub, config=config, models=models, **common)


def _write_models(ctx: ExportContext, sub: NumericSubgraph, config: dict[str, Any], feeds: list) -> dict[str, Any]:

    from .edge_onnx import build_onnx

    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(f"{FORMAT} needs {' and '.join(missing)} to build its models: pip install 'pytest-mulm[edge]'")
    onnx_model = build_onnx(ctx.workflow, sub)
    ctx.write_bytes("models/model.onnx", onnx_model.SerializeToString())
    models: dict[str, Any] = {"fp32": {"onnxruntime": "models/model.onnx"}, "int8": {}, "skipped": {}}
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        quantize_dynamic(str(ctx.path("models/model.onnx")), str(Path(tmp) / "q.onnx"), weight_type=QuantType.QInt8)
        ctx.write_bytes("models/model.int8.onnx", (Path(tmp) / "q.onnx").read_bytes())
    models["int8"]["onnxruntime"] = "models/model.int8.onnx"
    try:
        import tensorflow  # noqa: F401  (conversion only; the runner never imports it)
    except ImportError:
        models["skipped"]["litert"] = "TensorFlow is not installed where the export ran: pip install 'pytest-mulm[edge]'"
        return models
    from .edge_tflite import convert_tflite

    ctx.write_bytes("models/model.tflite", convert_tflite(ctx.workflow, sub, quantization="none"))
    models["fp32"]["litert"] = "models/model.tflite"
    representative = _representative(feeds)
    quant = "int8" if config["quantization"] == "int8" else "dynamic"
    ctx.write_bytes("models/model.int8.tflite", convert_tflite(
        ctx.workflow, sub, quantization=quant, representative=representative if quant == "int8" else None))
    models["int8"]["litert"] = "models/model.int8.tflite"
    models["int8_mode"] = quant
    return models


def _representative(feeds: list[dict[str, Any]], extra: int = 200) -> list[dict[str, Any]]:
    """Calibration rows for full-integer int8: the examples plus rows drawn around them.

    Five examples alone give activation ranges too narrow for inputs a little outside
    them; the seed differs from the one the suite's generated test inputs use."""
    import numpy as np

    rows = [{k: np.asarray(v, dtype=np.float32) for k, v in f.items()} for f in feeds]
    rng = np.random.default_rng(1207)
    names = list(rows[0])
    stacked = {n: np.concatenate([r[n] for r in rows]) for n in names}
    spread = {n: stacked[n].std(axis=0) + 0.1 * (np.abs(stacked[n]).mean(axis=0) + 1) for n in names}
    for _ in range(extra):
        rows.append({n: rng.normal(stacked[n].mean(axis=0), spread[n], size=(1, stacked[n].shape[1])).astype(np.float32)
                     for n in names})
    return rows


def _measure(path: Path, backend: str, feeds: list[dict[str, Any]]) -> dict[str, float]:
    """Peak memory and p50 latency of one model, in a fresh process (TensorFlow stays out)."""
    template = resources.files("pytest_mulm.templates").joinpath("edge-deployment/edge_model.py")
    code = (
        "import json, resource, sys, time, importlib.util\n"
        "import numpy as np\n"
        + PEAK_MB +
        "spec = importlib.util.spec_from_file_location('edge_model', sys.argv[1]); m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "model = m.EdgeModel(sys.argv[2], backend=sys.argv[3])\n"
        "feeds = [{k: np.asarray(v, dtype=np.float32) for k, v in f.items()} for f in json.loads(sys.stdin.read())]\n"
        "for f in feeds * 5: model.run(f)\n"
        "times = []\n"
        "for _ in range(200):\n"
        "    for f in feeds:\n"
        "        t = time.perf_counter(); model.run(f); times.append(time.perf_counter() - t)\n"
        "times.sort()\n"
        "print(json.dumps({'p50_ms': times[len(times)//2]*1000, 'peak_rss_mb': _peak_mb()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(template), str(path), backend], input=json.dumps(feeds),
                         capture_output=True, text=True, timeout=300, check=False)
    if out.returncode != 0:
        raise ExportError(f"{FORMAT}: measuring {path.name} on {backend} failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout)


def _manifest(ctx: ExportContext, sub: NumericSubgraph, config: dict[str, Any], models: dict[str, Any], feeds: list) -> dict[str, Any]:
    files = {}
    for precision in ("fp32", "int8"):
        for backend, rel in models[precision].items():
            entry = {"file": rel, "bytes": ctx.path(rel).stat().st_size, "backend": backend, "precision": precision}
            entry.update(_measure(ctx.path(rel), backend, feeds))
            files[f"{backend}-{precision}"] = entry
    return {
        "schema": 1,
        "inputs": [{"name": sub.names[src], "from": src, "width": w} for src, w in sub.inputs],
        "outputs": [{"name": sub.names[n], "node": n, "width": sub.widths[n]} for n in sub.outputs],
        "numeric_nodes": list(sub.nodes),
        "models": files,
        "skipped": models["skipped"],
        "int8_mode": models.get("int8_mode", "dynamic"),
        "config": config,
        "platforms": config["platforms"],
        "python_version": f"{sys.version_info.major}.{sys.version_info.minor}",
    }


@hookimpl
def register_exporters(register: Callable[[Exporter], None]) -> None:
    register(EdgeDeploymentExporter())


@hookimpl
def register_suites(register: Callable[[str, str], None]) -> None:
    register(FORMAT, "pytest_mulm.suites.edge_deployment")
