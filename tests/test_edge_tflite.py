"""TFLite export of the numeric subgraph (exporters/edge_tflite.py) run through the
offline runner (templates/edge-deployment/edge_model.py) with ai-edge-litert.

Parity gate (design.md §6 edge-deployment row, docs/pitfalls.md "Formats"): fp32 outputs
equal a float32 numpy reference (rtol 1e-3, atol 1e-5) AND the predicted class agrees on
100 % of the examples plus 1,000 generated inputs. int8 models: size and agreement are
reported; dynamic-range agreement is gated at 98 %, full-integer at 95 %.
"""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
import textwrap
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_mulm.loader import load_workflow, parse_workflow
from pytest_mulm.runtime import Runtime, Trace
from pytest_mulm.workflow import Workflow

if (
    importlib.util.find_spec("ai_edge_litert") is None
    or importlib.util.find_spec("tensorflow") is None
):
    pytest.skip("needs ai-edge-litert and tensorflow (the [edge] extra)", allow_module_level=True)

from pytest_mulm.exporters.edge_subgraph import (  # noqa: E402
    NumericSubgraph,
    evaluate_subgraph,
    example_traces,
    numeric_subgraph,
)
from pytest_mulm.exporters.edge_tflite import convert_tflite, tflite_ops  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EDGE_MODEL = ROOT / "templates" / "edge-deployment" / "edge_model.py"
WORKFLOWS = [
    "examples/iris-mlp.json",
    "examples/moe-router.json",
    "examples/sentiment-pipeline.json",
    "tests/workflows/own/sensor-fusion.json",
    "tests/workflows/own/top1-moe.json",
]
GENERATED = 1000
RTOL, ATOL = 1e-3, 1e-5
DYNAMIC_GATE, INT8_GATE = 0.98, 0.95


def load_edge_model() -> Any:
    spec = importlib.util.spec_from_file_location("mulm_edge_model", EDGE_MODEL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_subgraph(
    workflow: Workflow, sub: NumericSubgraph, feeds: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The subgraph's outputs by name, by the reference runtime's own block code."""
    return evaluate_subgraph(workflow, sub, feeds)


@dataclass
class Case:
    path: str
    workflow: Workflow
    sub: NumericSubgraph
    examples: dict[str, np.ndarray]  # input name -> [n_examples, width], from reference runs
    expected: dict[
        str, np.ndarray
    ]  # output name -> [n_examples, width], the runtime's Trace.values
    generated: dict[str, np.ndarray]  # input name -> [GENERATED, width]
    calibration: dict[str, np.ndarray]  # a separate generated set, for int8 calibration only
    fp32: bytes = b""
    seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return Path(self.path).stem

    def all_inputs(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate([self.examples[k], self.generated[k]]) for k in self.examples}


def generate(
    workflow: Workflow, sub: NumericSubgraph, examples: dict[str, np.ndarray], n: int, seed: int
) -> dict[str, np.ndarray]:
    """Inputs around the examples: workflow inputs drawn from the examples' per-feature
    mean and spread (widened 1.5x); values a Python block feeds in are its reference
    values of a random example, perturbed with noise (they need not be any text's
    features, only plausible)."""
    rng = np.random.default_rng(seed)
    out = {}
    for src, width in sub.inputs:
        name = sub.names[src]
        rows = examples[name]
        mean, spread = rows.mean(axis=0), rows.std(axis=0)
        spread = np.where(spread > 0, spread, 0.1 * np.abs(mean) + 0.1)
        if workflow.node(src).kind == "input":
            values = mean + 1.5 * spread * rng.standard_normal((n, width))
        else:
            picks = rows[rng.integers(0, len(rows), n)]
            values = picks + 0.25 * spread * rng.standard_normal((n, width))
        out[name] = values.astype(np.float32)
    return out


@pytest.fixture(scope="module")
def edge_model() -> Any:
    return load_edge_model()


@pytest.fixture(scope="module")
def summary(request: pytest.FixtureRequest) -> Any:
    """Collects one line per measurement; printed at the end of the module."""
    lines: list[str] = []
    yield lines
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or not lines:  # xdist workers have no terminal
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line("")
        reporter.write_sep("-", "edge TFLite summary")
        for line in lines:
            reporter.write_line(line)


@pytest.fixture(scope="module", params=WORKFLOWS, ids=lambda p: Path(p).stem)
def case(request: pytest.FixtureRequest) -> Case:
    wf = load_workflow(ROOT / request.param)
    traces = example_traces(wf)
    sub = numeric_subgraph(wf, traces[0])
    assert sub is not None
    examples = {
        sub.names[src]: np.stack([np.asarray(v[src], np.float32).reshape(width) for v in traces])
        for src, width in sub.inputs
    }
    expected = {
        sub.names[o]: np.stack([np.asarray(v[o], np.float32) for v in traces]) for o in sub.outputs
    }
    seed = zlib.crc32(request.param.encode())
    c = Case(
        request.param,
        wf,
        sub,
        examples,
        expected,
        generated=generate(wf, sub, examples, GENERATED, seed),
        calibration=generate(wf, sub, examples, 200, seed + 1),
    )
    start = time.perf_counter()
    c.fp32 = convert_tflite(wf, sub)
    c.seconds = time.perf_counter() - start
    return c


@pytest.fixture(scope="module", autouse=True)
def tensorflow_imported(summary: list[str]) -> None:
    """Import TensorFlow once up front so conversion times exclude it."""
    from pytest_mulm.exporters import edge_tflite

    start = time.perf_counter()
    edge_tflite._tf()
    summary.append(
        f"tensorflow import {time.perf_counter() - start:.2f} s (once, lazily, at the first conversion)"
    )


def write(tmp_path: Path, name: str, model: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(model)
    return path


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.argmax(a, axis=-1) == np.argmax(b, axis=-1)))


def test_fp32_parity(case: Case, edge_model: Any, tmp_path: Path, summary: list[str]) -> None:
    sub = case.sub
    model = edge_model.EdgeModel(write(tmp_path, "model.tflite", case.fp32), backend="litert")
    assert sorted(model.input_names) == sorted(sub.input_names())
    assert sorted(model.output_names) == sorted(sub.output_names())
    ops_used = tflite_ops(case.fp32)
    assert not [o for o in ops_used if o.startswith(("CUSTOM", "FLEX"))], (
        ops_used
    )  # LiteRT runs builtins only

    # the examples: the TFLite model equals the full runtime's values for the output nodes
    got = model.run(case.examples)
    for name, want in case.expected.items():
        np.testing.assert_allclose(
            got[name], want, rtol=RTOL, atol=ATOL, err_msg=f"{case.name} example {name}"
        )
        assert agreement(got[name], want) == 1.0

    # examples + generated: equal to the ops reference of the subgraph, class for class
    feeds = case.all_inputs()
    got = model.run(feeds)
    ref = reference_subgraph(case.workflow, sub, feeds)
    worst = []
    for name, want in ref.items():
        np.testing.assert_allclose(
            got[name], want, rtol=RTOL, atol=ATOL, err_msg=f"{case.name} {name}"
        )
        assert agreement(got[name], want) == 1.0, f"{case.name} {name}: argmax differs"
        err = np.abs(got[name].astype(np.float64) - want)
        rel = err / np.maximum(np.abs(want.astype(np.float64)), 1e-6)
        worst.append((name, float(err.max()), float(rel.max())))
    summary.append(
        f"{case.name:<20} {'fp32':<7} {len(case.fp32):>6} B  convert {case.seconds:.2f} s  rows {len(next(iter(feeds.values())))}  "
        + "  ".join(f"{n}: max abs {a:.2e} max rel {r:.2e}" for n, a, r in worst)
        + f"  ops {','.join(ops_used)}"
    )

    # one example given as 1-D comes back 1-D
    single = model.run({k: v[0] for k, v in case.examples.items()})
    for name, want in case.expected.items():
        assert single[name].shape == want[0].shape
        np.testing.assert_allclose(single[name], want[0], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("quantization", ["dynamic", "int8"])
def test_quantized(
    case: Case, quantization: str, edge_model: Any, tmp_path: Path, summary: list[str]
) -> None:
    representative = None
    if quantization == "int8":
        # calibration: the examples plus a generated set disjoint from the evaluation set
        representative = [case.examples, case.calibration]
    start = time.perf_counter()
    model_bytes = convert_tflite(
        case.workflow, case.sub, quantization=quantization, representative=representative
    )
    seconds = time.perf_counter() - start
    model = edge_model.EdgeModel(
        write(tmp_path, f"model-{quantization}.tflite", model_bytes), backend="litert"
    )
    feeds = case.all_inputs()
    got = model.run(feeds)
    ref = reference_subgraph(case.workflow, case.sub, feeds)
    agree = min(agreement(got[n], ref[n]) for n in ref)
    err = max(float(np.max(np.abs(got[n] - ref[n]))) for n in ref)
    ratio = len(model_bytes) / len(case.fp32)
    summary.append(
        f"{case.name:<20} {quantization:<7} {len(model_bytes):>6} B  size ratio {ratio:.2f}  "
        f"agreement {agree:.2%}  max abs {err:.3f}  convert {seconds:.2f} s"
    )
    assert agree >= (DYNAMIC_GATE if quantization == "dynamic" else INT8_GATE), (
        f"{case.name} {quantization}: class agreement {agree:.2%}"
    )
    if quantization == "int8":
        # full-integer: every FULLY_CONNECTED runs on int8 tensors, float in and out
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_content=model_bytes)
        tensors = {d["index"]: d for d in interp.get_tensor_details()}
        fcs = [op for op in interp._get_ops_details() if op["op_name"] == "FULLY_CONNECTED"]
        assert fcs and all(tensors[op["inputs"][0]]["dtype"] == np.int8 for op in fcs)
        details = interp.get_signature_runner().get_input_details()
        assert all(d["dtype"] == np.float32 for d in details.values())


def test_dynamic_range_quantizes_large_kernels(
    edge_model: Any, tmp_path: Path, summary: list[str]
) -> None:
    """TFLite's dynamic-range quantizer leaves weight tensors under 1,024 elements in
    float (a fixed converter threshold), so the example models do not shrink; a
    64 x 48 kernel does."""
    rng = np.random.default_rng(7)
    kernel1, kernel2 = rng.standard_normal((64, 48)) / 8, rng.standard_normal((48, 3)) / 7
    wf = parse_workflow(
        {
            "nodes": [
                {
                    "id": "x",
                    "data": {
                        "type": "input",
                        "config": {
                            "inputType": "tensor",
                            "shape": [64],
                            "examples": [rng.standard_normal(64).tolist()],
                        },
                    },
                },
                {
                    "id": "h",
                    "data": {
                        "type": "dense",
                        "config": {
                            "units": 48,
                            "activation": "gelu",
                            "weights": {"kernel": kernel1.tolist(), "bias": np.zeros(48).tolist()},
                        },
                    },
                },
                {
                    "id": "logits",
                    "data": {
                        "type": "dense",
                        "config": {
                            "units": 3,
                            "weights": {"kernel": kernel2.tolist(), "bias": [0.1, 0.0, -0.1]},
                        },
                    },
                },
                {"id": "sm", "data": {"type": "softmax", "config": {}}},
                {"id": "out", "data": {"type": "output", "config": {}}},
            ],
            "edges": [
                {"id": "a", "source": "x", "target": "h"},
                {"id": "b", "source": "h", "target": "logits"},
                {"id": "c", "source": "logits", "target": "sm"},
                {"id": "d", "source": "sm", "target": "out"},
            ],
        }
    )
    trace = Trace()
    Runtime(wf).run(wf.examples[0], trace)
    sub = numeric_subgraph(wf, trace.values)
    fp32 = convert_tflite(wf, sub)
    dynamic = convert_tflite(wf, sub, quantization="dynamic")
    x = rng.standard_normal((1000, 64)).astype(np.float32)
    got = edge_model.EdgeModel(write(tmp_path, "dyn.tflite", dynamic), backend="litert").run(
        {"x": x}
    )["sm"]
    agree = agreement(got, reference_subgraph(wf, sub, {"x": x})["sm"])
    summary.append(
        f"{'dense 64x48x3':<20} {'dynamic':<7} {len(dynamic):>6} B  size ratio "
        f"{len(dynamic) / len(fp32):.2f} (fp32 {len(fp32)} B)  agreement {agree:.2%}"
    )
    assert len(dynamic) < 0.5 * len(fp32)
    assert agree >= DYNAMIC_GATE


def test_conversion_is_deterministic(case: Case) -> None:
    assert convert_tflite(case.workflow, case.sub) == case.fp32
    rep = [case.examples]
    first = convert_tflite(case.workflow, case.sub, quantization="int8", representative=rep)
    assert convert_tflite(case.workflow, case.sub, quantization="int8", representative=rep) == first


def _router_workflow(bias: list[float], top_k: int) -> Workflow:
    n = len(bias)
    return parse_workflow(
        {
            "nodes": [
                {
                    "id": "x",
                    "data": {
                        "type": "input",
                        "config": {"inputType": "tensor", "shape": [3], "examples": [[1, 2, 3]]},
                    },
                },
                {
                    "id": "gate",
                    "data": {
                        "type": "router",
                        "config": {
                            "experts": n,
                            "topK": top_k,
                            "weights": {"kernel": [[0.0] * n] * 3, "bias": bias},
                        },
                    },
                },
                {"id": "out", "data": {"type": "output", "config": {}}},
            ],
            "edges": [
                {"id": "a", "source": "x", "target": "gate"},
                {"id": "b", "source": "gate", "target": "out"},
            ],
        }
    )


@pytest.mark.parametrize(
    ("bias", "top_k"),
    [
        ([0.0, 1.0, 0.0, 1.0, 1.0], 2),  # three-way tie for two places: experts 1 and 3 win
        ([0.0, 0.0, 0.0, 0.0], 1),  # all equal: expert 0
        ([0.5, 0.5, 0.5, 0.0], 2),
    ],
)
def test_router_ties_go_to_the_lower_index(
    bias: list[float], top_k: int, edge_model: Any, tmp_path: Path
) -> None:
    wf = _router_workflow(bias, top_k)
    trace = Trace()
    Runtime(wf).run(wf.examples[0], trace)
    sub = numeric_subgraph(wf, trace.values)
    model = edge_model.EdgeModel(
        write(tmp_path, "router.tflite", convert_tflite(wf, sub)), backend="litert"
    )
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    got = model.run({"x": x})["gate"]
    want = reference_subgraph(wf, sub, {"x": x})["gate"]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    assert np.count_nonzero(got[0]) == top_k


def test_bad_arguments(case: Case) -> None:
    with pytest.raises(ValueError, match="quantization must be one of"):
        convert_tflite(case.workflow, case.sub, quantization="int4")
    with pytest.raises(ValueError, match="representative"):
        convert_tflite(case.workflow, case.sub, quantization="int8")


def test_runner_matches_inputs_by_name(edge_model: Any, tmp_path: Path) -> None:
    wf = load_workflow(ROOT / "tests/workflows/own/sensor-fusion.json")
    trace = Trace()
    Runtime(wf).run(wf.examples[0], trace)
    sub = numeric_subgraph(wf, trace.values)
    model = edge_model.EdgeModel(
        write(tmp_path, "fusion.tflite", convert_tflite(wf, sub)), backend="litert"
    )
    feeds = {
        "sensor": np.array([[0.1, 20.5, 3.3]], np.float32),
        "encode": np.array([[3.0, 0.0, 1.0]], np.float32),
    }
    # the same feeds in the other dict order give the same answer
    a = model.run(feeds)
    b = model.run(dict(reversed(list(feeds.items()))))
    np.testing.assert_array_equal(a["sm"], b["sm"])
    np.testing.assert_allclose(
        a["sm"], reference_subgraph(wf, sub, feeds)["sm"], rtol=RTOL, atol=ATOL
    )
    with pytest.raises(KeyError, match="missing"):
        model.run({"sensor": feeds["sensor"]})
    with pytest.raises(ValueError, match="backend"):
        edge_model.EdgeModel(tmp_path / "fusion.tflite", backend="tensorflow")


def test_runner_onnxruntime_backend(edge_model: Any, tmp_path: Path) -> None:
    """The other backend, on a hand-built ONNX graph of the sentiment head."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    wf = load_workflow(ROOT / "examples/sentiment-pipeline.json")
    trace = Trace()
    Runtime(wf).run(wf.examples[0], trace)
    sub = numeric_subgraph(wf, trace.values)
    p = wf.node("classifier").params
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["featurize", "kernel"], ["mm"]),
            helper.make_node("Add", ["mm", "bias"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["softmax"], axis=-1),
        ],
        "head",
        [helper.make_tensor_value_info("featurize", TensorProto.FLOAT, ["batch", 7])],
        [helper.make_tensor_value_info("softmax", TensorProto.FLOAT, ["batch", 3])],
        initializer=[
            numpy_helper.from_array(np.asarray(p["kernel"], np.float32), "kernel"),
            numpy_helper.from_array(np.asarray(p["bias"], np.float32), "bias"),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    path = tmp_path / "head.onnx"
    path.write_bytes(proto.SerializeToString())
    model = edge_model.EdgeModel(path)  # onnxruntime is the default backend
    x = np.asarray(trace.values["featurize"], np.float32)
    got = model.run({"featurize": x})
    assert got["softmax"].shape == (3,)
    np.testing.assert_allclose(got["softmax"], trace.values["softmax"], rtol=RTOL, atol=ATOL)
    batch = model.run({"featurize": np.stack([x, x + 1])})
    np.testing.assert_allclose(
        batch["softmax"],
        reference_subgraph(wf, sub, {"featurize": np.stack([x, x + 1])})["softmax"],
        rtol=RTOL,
        atol=ATOL,
    )


def test_runner_never_imports_tensorflow(tmp_path: Path) -> None:
    wf = load_workflow(ROOT / "examples/moe-router.json")
    trace = Trace()
    Runtime(wf).run(wf.examples[0], trace)
    sub = numeric_subgraph(wf, trace.values)
    path = write(tmp_path, "moe.tflite", convert_tflite(wf, sub))
    example = np.asarray(trace.values["input"], np.float32).tolist()
    expected = np.asarray(trace.values["softmax"], np.float32).tolist()
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(EDGE_MODEL.parent)!r})
        import numpy as np
        import edge_model
        model = edge_model.EdgeModel({str(path)!r}, backend="litert")
        out = model.run({{"input": np.array({example!r}, np.float32)}})["softmax"]
        np.testing.assert_allclose(out, {expected!r}, rtol=1e-3, atol=1e-5)
        leaked = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))
        assert not leaked, leaked
        print("ok")
    """)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")
