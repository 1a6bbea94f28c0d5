"""Verification suite of the ``edge-deployment`` format (design.md §6).

The models are compared number by number with the reference runtime on every example
plus 1,000 generated inputs; int8 models are gated on size and class agreement; the
runner is installed into a fresh venv without TensorFlow and run with the network
blocked; memory and latency are checked against the budgets; every target platform
must have wheels for every runtime requirement.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from pytest_mulm.checks import PEAK_MB, error_line, library_package, run_artifact_tests
from pytest_mulm.ops import differences

MULM_FORMAT = "edge-deployment"
RTOL, ATOL = 1e-3, 1e-5
GENERATED = 1000
BACKENDS = ("onnxruntime", "litert")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "platform" in metafunc.fixturenames:
        from pytest_mulm.exporters.edge_deployment import DEFAULT_PLATFORMS, edge_config
        from pytest_mulm.plugin import settings_of

        wf = settings_of(metafunc.config).workflow
        platforms = edge_config(wf)[0]["platforms"] if wf is not None else list(DEFAULT_PLATFORMS)
        metafunc.parametrize("platform", platforms)


@pytest.fixture
def manifest(mulm_export) -> dict:
    data = json.loads((mulm_export.path / "edge-manifest.json").read_text(encoding="utf-8"))
    if "skipped_all" in data:
        pytest.skip(data["skipped_all"])
    return data


@pytest.fixture
def traces(mulm_workflow) -> list[dict]:
    from pytest_mulm.exporters.edge_subgraph import example_traces

    return example_traces(mulm_workflow)


@pytest.fixture
def subgraph(mulm_workflow, traces):
    from pytest_mulm.exporters.edge_subgraph import numeric_subgraph

    return numeric_subgraph(mulm_workflow, traces[0])


@pytest.fixture
def feeds(subgraph, traces) -> dict[str, np.ndarray]:
    """Every example's subgraph inputs plus 1,000 generated rows around them (seeded)."""
    rows: dict[str, list] = {subgraph.names[src]: [] for src, _ in subgraph.inputs}
    for values in traces:
        for src, _ in subgraph.inputs:
            rows[subgraph.names[src]].append(np.asarray(values[src], dtype=np.float32).reshape(-1))
    rng = np.random.default_rng(20261204)
    out = {}
    for name, examples in rows.items():
        base = np.stack(examples)
        mean, spread = base.mean(axis=0), base.std(axis=0) + 0.1 * (np.abs(base).mean(axis=0) + 1)
        generated = rng.normal(mean, spread, size=(GENERATED, base.shape[1])).astype(np.float32)
        out[name] = np.concatenate([base, generated])
    return out


def _edge_model(manifest_entry: dict, export):
    import importlib.util

    from pytest_mulm.templating import builtin_templates_dir

    path = builtin_templates_dir() / "edge-deployment" / "edge_model.py"
    spec = importlib.util.spec_from_file_location("mulm_edge_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.EdgeModel(str(export.path / manifest_entry["file"]), backend=manifest_entry["backend"])


def _model_entry(manifest: dict, backend: str, precision: str) -> dict:
    key = f"{backend}-{precision}"
    if key not in manifest["models"]:
        pytest.skip(manifest["skipped"].get(backend, f"no {precision} {backend} model in this export "
                                            f"(edgeConfig.targetFramework = {manifest['config']['target']})"))
    if backend == "litert":
        pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed: pip install 'pytest-mulm[edge]'")
    else:
        pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install 'pytest-mulm[edge]'")
    return manifest["models"][key]


def test_onnx_checker(manifest, mulm_export):
    onnx = pytest.importorskip("onnx", reason="onnx is not installed: pip install 'pytest-mulm[edge]'")
    for rel in ("models/model.onnx", "models/model.int8.onnx"):
        model = onnx.load(str(mulm_export.path / rel))
        onnx.checker.check_model(model, full_check=True)
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        assert opset >= 17, f"{rel}: opset {opset}"
        batch = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim][:1]
        assert batch == ["batch"], f"{rel}: the batch dimension must be dynamic, got {batch}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_parity(request, backend, manifest, mulm_export, mulm_workflow, subgraph, feeds):
    """fp32 model == reference runtime on the examples and 1,000 generated inputs."""
    from pytest_mulm.exporters.edge_subgraph import evaluate_subgraph

    entry = _model_entry(manifest, backend, "fp32")
    got = _edge_model(entry, mulm_export).run(feeds)
    want = evaluate_subgraph(mulm_workflow, subgraph, feeds)
    figures = {}
    for name, expected in want.items():
        actual = np.asarray(got[name])
        assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
        abs_err = np.abs(actual - expected)
        figures[name] = {"max_abs": float(abs_err.max()), "max_rel": float((abs_err / (np.abs(expected) + 1e-12)).max())}
        bad = ~np.isclose(actual, expected, rtol=RTOL, atol=ATOL)
        assert not bad.any(), f"{name}: {int(bad.sum())} values differ beyond rtol {RTOL} / atol {ATOL}; max abs error {abs_err.max():.3g}"
        agree = float((actual.argmax(axis=-1) == expected.argmax(axis=-1)).mean())
        assert agree == 1.0, f"{name}: predicted class agrees on {agree:.2%} of {len(actual)} inputs, not 100 %"
    request.node.user_properties.append(("mulm_benchmark", {f"{backend}_parity": figures}))


@pytest.mark.parametrize("backend", BACKENDS)
def test_int8(request, backend, manifest, mulm_export, mulm_workflow, subgraph, feeds):
    """int8 model: class agreement with fp32 and file size, gated by edgeConfig thresholds."""
    fp32 = _model_entry(manifest, backend, "fp32")
    int8 = _model_entry(manifest, backend, "int8")
    config = manifest["config"]
    a = _edge_model(fp32, mulm_export).run(feeds)
    b = _edge_model(int8, mulm_export).run(feeds)
    agreement = min(float((np.asarray(a[n]).argmax(-1) == np.asarray(b[n]).argmax(-1)).mean()) for n in a)
    ratio = int8["bytes"] / fp32["bytes"]
    weight_bytes = sum(v.nbytes for nid in subgraph.nodes for v in mulm_workflow.node(nid).params.values())
    weights_dominate = weight_bytes >= 0.5 * fp32["bytes"]
    request.node.user_properties.append(("mulm_benchmark", {f"{backend}_int8": {
        "agreement": round(agreement, 4), "size_ratio": round(ratio, 3), "fp32_bytes": fp32["bytes"],
        "int8_bytes": int8["bytes"], "weights_dominate": weights_dominate}}))
    assert agreement >= config["int8_min_agreement"], \
        f"int8 agrees with fp32 on {agreement:.2%} of inputs; edgeConfig.int8MinAgreement is {config['int8_min_agreement']:.0%}"
    if weights_dominate:
        assert ratio <= config["int8_max_size_ratio"], \
            f"int8 file is {ratio:.0%} of fp32; edgeConfig.int8MaxSizeRatio is {config['int8_max_size_ratio']:.0%}"


def test_runner_install(mulm_install):
    assert mulm_install["ok"], f"the runner did not install into a fresh venv:\n{mulm_install['log']}"


def test_runner_without_tensorflow(mulm_venv):
    out = mulm_venv.python_run("import importlib.util as u; print(u.find_spec('tensorflow') is None)")
    assert out.ok and out.stdout.strip() == "True", "TensorFlow must not be installed with the runner"


GUARD = (
    "import socket\n"
    "def _blocked(*a, **k):\n"
    "    raise OSError('network access blocked by the mulm edge suite')\n"
    "socket.socket.connect = _blocked\n"
    "socket.socket.connect_ex = _blocked\n"
    "socket.create_connection = _blocked\n"
    "socket.getaddrinfo = _blocked\n"
)


@pytest.mark.parametrize("backend", BACKENDS)
def test_runner_offline(backend, manifest, mulm_venv, mulm_export, mulm_reference):
    """The installed runner answers every example with the network blocked, like the reference."""
    if backend not in manifest["config"]["backends"] or f"{backend}-fp32" not in manifest["models"]:
        pytest.skip(f"the runner is not built for {backend} (edgeConfig.targetFramework = {manifest['config']['target']})")
    from pytest_mulm.fixtures import artifact_scripts

    package = library_package(mulm_export.project_dir)
    code = GUARD + (
        "import json, sys\n"
        f"import {package} as runner\n"
        "values = json.loads(sys.stdin.read())\n"
        "print(json.dumps([runner.run(v) for v in values]))\n"
    )
    assert artifact_scripts(mulm_export), "the runner declares its command line"
    out = mulm_venv.python_run(code, input=json.dumps([r.input for r in mulm_reference]), timeout=300,
                               env=_venv_env(mulm_venv, MULM_EDGE_BACKEND=backend))
    assert out.ok, f"the runner failed offline: {error_line(out.stderr)}"
    problems = []
    for i, (got, ref) in enumerate(zip(json.loads(out.stdout), mulm_reference, strict=True)):
        problems += [f"example {i}: {d}" for d in differences(got, ref.output, rtol=RTOL, atol=ATOL)]
    assert not problems, "the runner disagrees with the reference runtime:\n" + "\n".join(problems[:20])


def _venv_env(venv, **extra: str) -> dict[str, str]:
    import os

    from pytest_mulm.venv import clean_env

    return clean_env(PATH=f"{venv.bin}{os.pathsep}{os.environ.get('PATH', '')}", **extra)


def test_runner_own_tests(manifest, mulm_venv, mulm_export, mulm_run_dir):
    out, summary = run_artifact_tests(mulm_venv, mulm_export, mulm_run_dir)
    assert out.returncode == 0, "the runner's own tests failed inside the venv:\n" + "\n".join(summary + ["", out.tail(40)])


def test_resources(request, manifest, mulm_venv, mulm_export, mulm_reference):
    """Peak memory and p50 latency of the installed runner against maxMemory and the budget."""
    package = library_package(mulm_export.project_dir)
    code = (
        "import json, resource, sys, time\n"
        + PEAK_MB +
        f"import {package} as runner\n"
        "values = json.loads(sys.stdin.read())\n"
        "for v in values * 3: runner.run(v)\n"
        "times = []\n"
        "for _ in range(100):\n"
        "    for v in values:\n"
        "        t = time.perf_counter(); runner.run(v); times.append(time.perf_counter() - t)\n"
        "times.sort()\n"
        "print(json.dumps({'p50_ms': times[len(times)//2] * 1000, 'peak_mb': _peak_mb()}))\n"
    )
    out = mulm_venv.python_run(code, input=json.dumps([r.input for r in mulm_reference]), timeout=600)
    assert out.ok, out.tail()
    figures = json.loads(out.stdout)
    config = manifest["config"]
    request.node.user_properties.append(("mulm_benchmark", {"runner": {k: round(v, 3) for k, v in figures.items()}}))
    assert figures["peak_mb"] <= config["max_memory_mb"], \
        f"peak memory {figures['peak_mb']:.0f} MB is above edgeConfig.maxMemory {config['max_memory_mb']:.0f} MB"
    assert figures["p50_ms"] <= config["latency_budget_ms"], \
        f"p50 latency {figures['p50_ms']:.2f} ms is above edgeConfig.latencyBudgetMs {config['latency_budget_ms']} ms"


def test_platform_wheels(platform, manifest, mulm_export):
    """Every runtime requirement of the runner has a wheel for the platform and Python."""
    import tomllib

    from pytest_mulm.exporters.edge_deployment import PLATFORM_TAGS
    from pytest_mulm.venv import run

    requirements = tomllib.loads((mulm_export.project_dir / "pyproject.toml").read_text())["project"]["dependencies"]
    tags = [arg for tag in PLATFORM_TAGS[platform] for arg in ("--platform", tag)]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        out = run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
                   *tags, "--python-version", manifest["python_version"], "--implementation", "cp",
                   "--target", str(Path(tmp) / "t"), "--quiet", "--report", str(report), *requirements], timeout=600)
        missing = [line for line in out.stderr.splitlines() if "No matching distribution" in line or "Could not find" in line]
        assert out.ok, f"{platform}: no wheel for {', '.join(missing) or out.tail(5)}"
        wheels = [item["download_info"]["url"].rsplit("/", 1)[-1] for item in json.loads(report.read_text())["install"]]
    assert all(w.endswith(".whl") for w in wheels), wheels
    names = {w.split("-")[0].lower().replace("_", "-") for w in wheels}
    for req in requirements:
        assert req.split("==")[0].split("[")[0].lower().replace("_", "-") in names, f"{platform}: {req} not resolved"


@pytest.mark.parametrize("batch", [1, 256])
def test_benchmark_runtimes(request, batch, manifest, mulm_export, mulm_workflow, subgraph, feeds):
    """Reference numpy vs onnxruntime vs LiteRT at batch 1 and 256 (figures to the report)."""
    import time

    from pytest_mulm.exporters.edge_subgraph import evaluate_subgraph

    batch_feeds = {k: v[:batch] for k, v in feeds.items()}
    runners = {"numpy": lambda: evaluate_subgraph(mulm_workflow, subgraph, batch_feeds)}
    for backend in BACKENDS:
        key = f"{backend}-fp32"
        if key in manifest["models"]:
            model = _edge_model(manifest["models"][key], mulm_export)
            runners[backend] = lambda model=model: model.run(batch_feeds)
    figures = {}
    for name, fn in runners.items():
        for _ in range(5):
            fn()
        times = []
        for _ in range(50):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        times.sort()
        figures[name] = round(times[len(times) // 2] * 1000, 4)
    assert set(figures) >= {"numpy", "onnxruntime"}
    request.node.user_properties.append(("mulm_benchmark", {f"p50_ms_batch{batch}": figures}))
