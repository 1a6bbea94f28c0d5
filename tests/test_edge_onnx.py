"""The ONNX model of the numeric subgraph against the reference (design.md §6 edge row).

Every workflow is checked on its examples and on 1,000 generated inputs: elementwise
(rtol 1e-3, atol 1e-5) *and* predicted-class agreement (pitfalls.md "Formats"). The MoE
workflows are also recomputed from their JSON with plain numpy, without pytest_mulm.ops,
so a bug shared by the reference and the exporter cannot hide.
"""

from __future__ import annotations

import importlib.util
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from pytest_mulm.exporters.edge_onnx import IR_VERSION, build_onnx, run_onnx
from pytest_mulm.exporters.edge_subgraph import (
    NumericSubgraph,
    block_values,
    example_traces,
    numeric_subgraph,
)

from pytest_mulm import __version__
from pytest_mulm.loader import load_workflow, parse_workflow
from pytest_mulm.workflow import Workflow

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = [
    "examples/iris-mlp.json",
    "examples/moe-router.json",
    "examples/sentiment-pipeline.json",
    "tests/workflows/own/sensor-fusion.json",
    "tests/workflows/own/top1-moe.json",
]
MOE = ["examples/moe-router.json", "tests/workflows/own/top1-moe.json"]
RTOL, ATOL = 1e-3, 1e-5
GENERATED = 1_000


@dataclass
class Case:
    workflow: Workflow
    sub: NumericSubgraph
    traces: list[dict[str, Any]]  # every block's value, one dict per example
    model: onnx.ModelProto


@pytest.fixture(scope="module", params=WORKFLOWS, ids=lambda p: Path(p).stem)
def case(request: pytest.FixtureRequest) -> Case:
    workflow = load_workflow(ROOT / request.param)
    traces = example_traces(workflow)
    sub = numeric_subgraph(workflow, traces[0])
    assert sub is not None
    return Case(workflow, sub, traces, build_onnx(workflow, sub))


def reference_subgraph(workflow: Workflow, sub: NumericSubgraph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every numeric block's value on a batch, by the reference runtime's block code; ``feeds`` by source id."""
    return block_values(workflow, sub, dict(feeds))


def example_feeds(case: Case) -> dict[str, np.ndarray]:
    """The subgraph inputs the examples produce, by source id, as [n_examples, width]."""
    return {src: np.array([t[src] for t in case.traces], dtype=np.float32) for src, _ in case.sub.inputs}


def generated_feeds(case: Case, n: int = GENERATED, seed: int = 20240611) -> dict[str, np.ndarray]:
    """Inputs near the examples: input blocks drawn per feature around the examples' mean
    and spread; values made by a Python block (which no one can sample directly) are its
    example values with noise added."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for src, width in case.sub.inputs:
        rows = example_feeds(case)[src]
        spread = rows.std(axis=0) + 0.1 * np.abs(rows.mean(axis=0)) + 0.1  # never a zero spread
        if case.workflow.node(src).kind == "input":
            drawn = rng.normal(rows.mean(axis=0), 1.5 * spread, size=(n, width))
        else:
            picks = rows[rng.integers(0, len(rows), size=n)]
            drawn = picks + rng.normal(0.0, 0.25 * spread, size=(n, width))
        feeds[src] = drawn.astype(np.float32)
    return feeds


def compare(case: Case, feeds: dict[str, np.ndarray]) -> tuple[float, float]:
    """Assert ONNX == reference on ``feeds``; return the max absolute and relative error."""
    expected = reference_subgraph(case.workflow, case.sub, feeds)
    actual = run_onnx(case.model, {case.sub.names[src]: v for src, v in feeds.items()})
    max_abs = max_rel = 0.0
    for nid in case.sub.outputs:
        got, want = actual[case.sub.names[nid]], expected[nid]
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=nid)
        disagree = int(np.sum(np.argmax(got, axis=-1) != np.argmax(want, axis=-1)))
        assert disagree == 0, f"{nid}: predicted class differs on {disagree} of {len(want)} rows"
        err = np.abs(got.astype(np.float64) - want)
        max_abs = max(max_abs, float(err.max()))
        big = np.abs(want) > 1e-6  # relative error of values near zero says nothing
        max_rel = max(max_rel, float((err[big] / np.abs(want[big])).max()) if big.any() else 0.0)
    return max_abs, max_rel


def test_model_is_valid_and_described(case: Case) -> None:
    model, sub = case.model, case.sub
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == IR_VERSION
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert dict((p.key, p.value) for p in model.metadata_props) == {
        "mulm.workflow_id": case.workflow.id,
        "mulm.content_hash": case.workflow.content_hash,
        "mulm.version": __version__,
    }

    def signature(values: Any) -> list[tuple[str, list[Any]]]:
        return [(v.name, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values]

    assert signature(model.graph.input) == [(sub.names[s], ["batch", w]) for s, w in sub.inputs]
    assert signature(model.graph.output) == [(sub.names[n], ["batch", sub.widths[n]]) for n in sub.outputs]
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in model.graph.initializer if "__" in t.name
               and not t.name.startswith("const__"))
    ops_used = {n.op_type for n in model.graph.node}
    has_gelu = any(case.workflow.node(n).config.get("activation") == "gelu" for n in sub.nodes)
    assert ("Erf" in ops_used) == has_gelu


def test_reference_subgraph_equals_the_runtime(case: Case) -> None:
    values = reference_subgraph(case.workflow, case.sub, example_feeds(case))
    for nid in case.sub.nodes:
        runtime = np.array([t[nid] for t in case.traces], dtype=np.float32)
        np.testing.assert_allclose(values[nid], runtime, rtol=1e-6, atol=1e-7, err_msg=nid)


def test_onnx_equals_the_reference(case: Case) -> None:
    on_examples = compare(case, example_feeds(case))
    on_generated = compare(case, generated_feeds(case))
    print(f"\n{case.workflow.id}: examples max abs {on_examples[0]:.3g} rel {on_examples[1]:.3g}; "
          f"{GENERATED} generated max abs {on_generated[0]:.3g} rel {on_generated[1]:.3g}")


def test_a_single_row_batch_runs(case: Case) -> None:
    row = {src: v[:1] for src, v in example_feeds(case).items()}
    compare(case, row)


# ---- independent MoE check: plain numpy from the JSON, no pytest_mulm ----

def _numpy_forward(doc: dict, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Evaluate a MoE workflow's numeric blocks straight from the JSON, in float64."""
    nodes = {n["id"]: n["data"] for n in doc["nodes"]}
    incoming: dict[str, list[dict]] = {nid: [] for nid in nodes}
    for e in doc["edges"]:
        incoming[e["target"]].append(e)
    erf = np.vectorize(math.erf)
    acts = {
        "linear": lambda v: v, "relu": lambda v: np.maximum(v, 0.0), "tanh": np.tanh,
        "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)), "gelu": lambda v: v * 0.5 * (1.0 + erf(v / math.sqrt(2.0))),
    }

    def softmax(v: np.ndarray) -> np.ndarray:
        e = np.exp(v - v.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    values = {k: v.astype(np.float64) for k, v in feeds.items()}
    pending = [nid for nid, d in nodes.items() if d["type"] in
               ("normalize", "router", "expert", "mixture", "dense", "softmax")]
    while pending:
        for nid in list(pending):
            if not all(e["source"] in values for e in incoming[nid]):
                continue
            data, cfg = nodes[nid], nodes[nid].get("config", {})
            ins = incoming[nid]
            x = values[ins[0]["source"]]
            w = cfg.get("weights", {})
            if data["type"] == "normalize":
                out = (x - np.array(cfg["mean"])) / np.array(cfg["std"])
            elif data["type"] in ("dense", "expert"):
                out = acts[cfg.get("activation") or "linear"](x @ np.array(w["kernel"]) + np.array(w["bias"]))
            elif data["type"] == "softmax":
                out = softmax(x)
            elif data["type"] == "router":
                gate = softmax(x @ np.array(w["kernel"]) + np.array(w["bias"]))
                k = cfg.get("topK") or gate.shape[1]
                out = np.zeros_like(gate)
                for r, row in enumerate(gate):
                    keep = sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]  # ties: lower index
                    out[r, keep] = row[keep] / row[keep].sum()
            else:  # mixture
                gate = next(values[e["source"]] for e in ins if e["targetHandle"] == "gate")
                experts = {int(e["targetHandle"][len("expert"):]): values[e["source"]]
                           for e in ins if e["targetHandle"].startswith("expert")}
                out = sum(gate[:, [i]] * experts[i] for i in range(gate.shape[1]))
            values[nid] = out
            pending.remove(nid)
    return values


@pytest.mark.parametrize("path", MOE, ids=lambda p: Path(p).stem)
def test_moe_matches_plain_numpy(path: str) -> None:
    doc = json.loads((ROOT / path).read_text(encoding="utf-8"))
    workflow = load_workflow(ROOT / path)
    sub = numeric_subgraph(workflow)
    assert sub is not None and len(sub.inputs) == 1
    src, width = sub.inputs[0]
    examples = np.array(nodes_config(doc, src)["examples"], dtype=np.float32)
    rng = np.random.default_rng(7)
    x = np.concatenate([examples, rng.normal(examples.mean(0), 2 * examples.std(0) + 0.1, (GENERATED, width))])
    x = x.astype(np.float32)
    expected = _numpy_forward(doc, {src: x})
    models = {"onnx": run_onnx(build_onnx(workflow, sub), {sub.names[src]: x})}
    # the TFLite model against the same independent computation, run by LiteRT
    if importlib.util.find_spec("tensorflow") and importlib.util.find_spec("ai_edge_litert"):
        from pytest_mulm.exporters.edge_tflite import convert_tflite

        with tempfile.TemporaryDirectory() as tmp:
            path_tflite = Path(tmp) / "model.tflite"
            path_tflite.write_bytes(convert_tflite(workflow, sub))
            models["tflite"] = _edge_model_module().EdgeModel(str(path_tflite), backend="litert").run({sub.names[src]: x})
    for runtime, actual in models.items():
        for nid in sub.outputs:
            got, want = actual[sub.names[nid]], expected[nid]
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"{runtime} {nid}")
            assert (np.argmax(got, axis=1) == np.argmax(want, axis=1)).all()
            print(f"\n{workflow.id} {runtime} vs plain numpy: max abs {np.abs(got - want).max():.3g}")


def _edge_model_module():
    spec = importlib.util.spec_from_file_location("edge_model", ROOT / "templates" / "edge-deployment" / "edge_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nodes_config(doc: dict, nid: str) -> dict:
    return next(n["data"]["config"] for n in doc["nodes"] if n["id"] == nid)


# ---- edge cases the example workflows do not reach ----

def tied_moe_doc(ids: dict[str, str]) -> dict:
    """Four experts behind a router whose gates are all exactly equal (zero kernel)."""
    x, gate, mix = ids["x"], ids["gate"], ids["mix"]
    experts = [f"{ids['expert']}{i}" for i in range(4)]
    nodes = [
        {"id": x, "data": {"type": "input", "config": {"inputType": "tensor", "shape": [2], "examples": [[1.0, -2.0]]}}},
        {"id": gate, "data": {"type": "router", "config": {
            "experts": 4, "topK": 2, "weights": {"kernel": [[0.0] * 4] * 2, "bias": [0.5] * 4}}}},
        *({"id": e, "data": {"type": "expert", "config": {
            "units": 2, "activation": "linear", "weights": {"kernel": [[i + 1.0, 0.0], [0.0, -(i + 1.0)]], "bias": [0.0, 0.0]}}}}
          for i, e in enumerate(experts)),
        {"id": mix, "data": {"type": "mixture", "config": {}}},
        {"id": "out", "data": {"type": "output", "config": {}}},
    ]
    edges = [
        {"id": "g", "source": x, "target": gate}, {"id": "m", "source": gate, "target": mix, "targetHandle": "gate"},
        *({"id": f"x{i}", "source": x, "target": e} for i, e in enumerate(experts)),
        *({"id": f"e{i}", "source": e, "target": mix, "targetHandle": f"expert{i}"} for i, e in enumerate(experts)),
        {"id": "o", "source": mix, "target": "out"},
    ]
    return {"id": "tied", "nodes": nodes, "edges": edges}


def test_router_ties_keep_the_lower_experts_like_the_reference() -> None:
    workflow = parse_workflow(tied_moe_doc({"x": "x", "gate": "gate", "mix": "mix", "expert": "e"}))
    sub = numeric_subgraph(workflow)
    assert sub is not None
    x = np.array([[1.0, -2.0], [3.0, 4.0]], dtype=np.float32)
    got = run_onnx(build_onnx(workflow, sub), {"x": x})
    # equal gates, top 2: experts 0 and 1 at 0.5 each, not all four and not the last two
    expected = 0.5 * (x * [1, -1]) + 0.5 * (x * [2, -2])
    np.testing.assert_allclose(got["mix"], expected, rtol=1e-6)
    np.testing.assert_allclose(got["mix"], reference_subgraph(workflow, sub, {"x": x})["mix"], rtol=1e-6)


def test_hostile_node_ids_become_plain_tensor_names(tmp_path: Path) -> None:
    ids = {"x": "in put\n../x", "gate": "gate'; DROP", "mix": "mix\u202e", "expert": "exp/../"}
    workflow = parse_workflow(tied_moe_doc(ids))
    sub = numeric_subgraph(workflow)
    assert sub is not None
    model = build_onnx(workflow, sub)
    names = {t for n in model.graph.node for t in [*n.input, *n.output, n.name]}
    assert all(name.replace("_", "a").isalnum() and name.isascii() for name in names)
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    x = np.array([[1.0, -2.0]], dtype=np.float32)
    got = run_onnx(path, {sub.names[ids["x"]]: x})  # a file path works as well as a model
    np.testing.assert_allclose(got[sub.names[ids["mix"]]], [[1.5, 3.0]], rtol=1e-6)


@pytest.mark.parametrize("function", ["linear", "relu", "gelu", "tanh", "sigmoid", "softmax"])
def test_each_activation_tightly(function: str) -> None:
    # rtol 1e-3 after a few layers would let the tanh approximation of gelu pass (it is
    # off by up to ~5e-4); one layer on a wide range at 1e-6 does not
    doc = {"nodes": [
        {"id": "x", "data": {"type": "input", "config": {"inputType": "tensor", "shape": [3], "examples": [[0.0, 1.0, 2.0]]}}},
        {"id": "d", "data": {"type": "dense", "config": {
            "units": 3, "activation": function, "weights": {"kernel": np.eye(3).tolist(), "bias": [0.0] * 3}}}},
        {"id": "out", "data": {"type": "output", "config": {}}},
    ], "edges": [{"id": "a", "source": "x", "target": "d"}, {"id": "b", "source": "d", "target": "out"}]}
    workflow = parse_workflow(doc)
    sub = numeric_subgraph(workflow)
    assert sub is not None
    x = np.linspace(-8, 8, 3 * 401, dtype=np.float32).reshape(-1, 3)
    got = run_onnx(build_onnx(workflow, sub), {"x": x})["d"]
    np.testing.assert_allclose(got, reference_subgraph(workflow, sub, {"x": x})["d"], rtol=1e-5, atol=1e-6)
