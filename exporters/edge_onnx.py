"""The numeric subgraph of a workflow as an ONNX model (design.md §4 table, §6 edge row).

One ONNX node sequence per numeric block, computing exactly what :mod:`pytest_mulm.ops`
computes in float32: same activations (gelu in its exact erf form), same top-k rule for
the router (ties to the lower expert index), same expert order in the mixture. Every
tensor is ``[batch, features]`` with a dynamic ``batch`` dimension.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from os import PathLike
from typing import Any

import numpy as np

from pytest_mulm import __version__
from pytest_mulm.errors import ExportError
from pytest_mulm.workflow import Workflow

from .edge_subgraph import NumericSubgraph

# onnx is in the [edge] extra, not the core install: bound on first use (_load_onnx)
onnx: Any = None
helper: Any = None
numpy_helper: Any = None
TensorProto: Any = None


def _load_onnx() -> None:
    global onnx, helper, numpy_helper, TensorProto
    if onnx is None:
        import onnx as onnx_module
        from onnx import TensorProto as tensor_proto
        from onnx import helper as helper_module
        from onnx import numpy_helper as numpy_helper_module

        onnx, helper, numpy_helper, TensorProto = onnx_module, helper_module, numpy_helper_module, tensor_proto

__all__ = ["IR_VERSION", "build_onnx", "run_onnx"]

# IR 8 is what opset 17 was released with: the oldest IR that can carry it, so the model
# loads in every onnxruntime since 1.13, not only in the one that produced it
IR_VERSION = 8
BATCH = "batch"


class _Graph:
    """Collects nodes and initializers; hands out tensor names that never collide.

    Block tensors are named by ``sub.names`` (sanitized identifiers, which never contain
    ``__``); everything the builder adds is ``<block>__<what>``, so it cannot clash with them.
    """

    def __init__(self, reserved: set[str]):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._used = set(reserved)
        self._consts: dict[tuple[str, bytes], str] = {}

    def fresh(self, base: str) -> str:
        name, i = base, 2
        while name in self._used:
            name, i = f"{base}_{i}", i + 1
        self._used.add(name)
        return name

    def weight(self, name: str, array: np.ndarray) -> str:
        name = self.fresh(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return name

    def const(self, array: np.ndarray) -> str:
        """A shared small constant (scalars, axes, k), added once however often it is used."""
        key = (f"{array.dtype}{array.shape}", array.tobytes())
        if key not in self._consts:
            name = self.fresh(f"const__{len(self._consts)}")
            self.initializers.append(numpy_helper.from_array(array, name))
            self._consts[key] = name
        return self._consts[key]

    def op(self, op_type: str, inputs: list[str], out: str, **attrs: Any) -> str:
        """Add one node writing ``out`` (a block tensor name or ``<block>__<suffix>``)."""
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{out}__{op_type}", **attrs))
        return out

    def step(self, op_type: str, inputs: list[str], block: str, suffix: str, **attrs: Any) -> str:
        """An intermediate tensor of ``block``: ``<block>__<suffix>``."""
        return self.op(op_type, inputs, self.fresh(f"{block}__{suffix}"), **attrs)


def _f32(value: float) -> np.ndarray:
    return np.array(value, dtype=np.float32)


def _i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _activation(g: _Graph, x: str, function: str | None, block: str, out: str) -> str:
    fn = function or "linear"
    if fn in ("linear", "identity"):
        return g.op("Identity", [x], out)
    if fn == "relu":
        return g.op("Relu", [x], out)
    if fn == "tanh":
        return g.op("Tanh", [x], out)
    if fn == "sigmoid":
        return g.op("Sigmoid", [x], out)
    if fn == "softmax":
        return g.op("Softmax", [x], out, axis=-1)
    if fn == "gelu":
        # exact gelu, x * 0.5 * (1 + erf(x / sqrt(2))); opset 17 has no Gelu op, and the
        # tanh approximation would differ from the reference (design.md §4)
        scaled = g.step("Div", [x, g.const(_f32(math.sqrt(2.0)))], block, "gelu_scaled")
        erf = g.step("Erf", [scaled], block, "gelu_erf")
        one_plus = g.step("Add", [erf, g.const(_f32(1.0))], block, "gelu_1p")
        half = g.step("Mul", [one_plus, g.const(_f32(0.5))], block, "gelu_half")
        return g.op("Mul", [x, half], out)
    raise ExportError(f"activation {fn!r} of block tensor '{block}' has no ONNX form")


def _affine(g: _Graph, x: str, params: Mapping[str, np.ndarray], block: str, out: str | None = None) -> str:
    """x @ kernel + bias, written to ``out`` when the block has nothing after it."""
    kernel = g.weight(f"{block}__kernel", params["kernel"])
    bias = g.weight(f"{block}__bias", params["bias"])
    product = g.step("MatMul", [x, kernel], block, "matmul")
    return g.op("Add", [product, bias], out or g.fresh(f"{block}__linear"))


def _top_k(g: _Graph, gate: str, k: int, block: str, out: str) -> str:
    """Keep the k largest gates, zero the rest, renormalise (ops.router).

    TopK(sorted=1) lists equal values lower index first, as the reference's stable argsort
    does; scattering ones at exactly those indices reproduces its choice on ties, which a
    ``gate >= kth value`` comparison would not (it keeps every tied expert)."""
    values, indices = g.fresh(f"{block}__topk_values"), g.fresh(f"{block}__topk_indices")
    g.nodes.append(helper.make_node(
        "TopK", [gate, g.const(_i64(k))], [values, indices], name=f"{block}__TopK", axis=-1, largest=1, sorted=1,
    ))
    zeros = g.step("ConstantOfShape", [g.step("Shape", [gate], block, "gate_shape")], block, "zeros",
                   value=numpy_helper.from_array(np.zeros(1, np.float32)))
    ones = g.step("ConstantOfShape", [g.step("Shape", [indices], block, "topk_shape")], block, "ones",
                  value=numpy_helper.from_array(np.ones(1, np.float32)))
    mask = g.step("ScatterElements", [zeros, indices, ones], block, "mask", axis=-1)
    kept = g.step("Mul", [gate, mask], block, "kept")
    total = g.step("ReduceSum", [kept, g.const(_i64(-1))], block, "kept_sum", keepdims=1)
    return g.op("Div", [kept, total], out)


def _mixture(g: _Graph, gate: str, experts: list[str], block: str, out: str) -> str:
    """sum_i gate[:, i] * expert_i: stack experts to [batch, n, units], gate to [batch, n, 1]."""
    axis1 = g.const(_i64(1))
    rows = [g.step("Unsqueeze", [e, axis1], block, f"expert{i}") for i, e in enumerate(experts)]
    stacked = g.step("Concat", rows, block, "stacked", axis=1)
    weights = g.step("Unsqueeze", [gate, g.const(_i64(2))], block, "gate3")
    weighted = g.step("Mul", [stacked, weights], block, "weighted")
    return g.op("ReduceSum", [weighted, axis1], out, keepdims=0)


def _block(g: _Graph, workflow: Workflow, sub: NumericSubgraph, nid: str) -> None:
    node = workflow.node(nid)
    kind, params, config = node.kind, node.params, node.config
    out = sub.names[nid]
    ups = workflow.upstream(nid)  # ordered by handle: in0, in1, ... / expert0, ..., gate
    xs = [sub.names[e.source] for e in ups]
    if kind == "normalize":
        centred = g.step("Sub", [xs[0], g.weight(f"{out}__mean", params["mean"])], out, "centred")
        g.op("Div", [centred, g.weight(f"{out}__std", params["std"])], out)
    elif kind in ("dense", "expert"):
        activation = config.get("activation", "linear")
        if activation in (None, "", "linear", "identity"):
            _affine(g, xs[0], params, out, out)
        else:
            _activation(g, _affine(g, xs[0], params, out), activation, out, out)
    elif kind == "activation":
        _activation(g, xs[0], config.get("function", config.get("activation")), out, out)
    elif kind == "softmax":
        g.op("Softmax", [xs[0]], out, axis=-1)  # the reference always uses the last axis
    elif kind == "concat":
        g.op("Concat", xs, out, axis=-1)
    elif kind == "router":
        n = int(params["kernel"].shape[1])
        top_k = config.get("topK")
        if top_k is None or int(top_k) >= n:
            g.op("Softmax", [_affine(g, xs[0], params, out)], out, axis=-1)
        elif int(top_k) < 1:
            raise ExportError(f"router '{out}' has topK {top_k}; it must be at least 1")
        else:
            gate = g.step("Softmax", [_affine(g, xs[0], params, out)], out, "softmax", axis=-1)
            _top_k(g, gate, int(top_k), out, out)
    elif kind == "mixture":
        gate = next(sub.names[e.source] for e in ups if e.target_handle == "gate")
        experts = [sub.names[e.source] for e in ups if (e.target_handle or "").startswith("expert")]
        _mixture(g, gate, experts, out, out)
    else:
        raise ExportError(f"block tensor '{out}' is a {kind!r} block, which has no ONNX form")


def _value_info(name: str, width: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH, width])


def build_onnx(workflow: Workflow, sub: NumericSubgraph, *, opset: int = 17) -> onnx.ModelProto:
    """The ONNX model of ``sub``: one graph input per ``sub.inputs``, one graph output per
    ``sub.outputs``, all float32 ``[batch, width]``; checked with the full checker."""
    _load_onnx()
    g = _Graph(set(sub.names.values()))
    for nid in sub.nodes:
        _block(g, workflow, sub, nid)
    inputs = [_value_info(sub.names[src], width) for src, width in sub.inputs]
    outputs = [_value_info(sub.names[nid], sub.widths[nid]) for nid in sub.outputs]
    inner = [_value_info(sub.names[nid], sub.widths[nid]) for nid in sub.nodes if nid not in sub.outputs]
    graph = helper.make_graph(g.nodes, "mulm_numeric", inputs, outputs, g.initializers, value_info=inner)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        ir_version=IR_VERSION,
        producer_name="pytest-mulm",
        producer_version=__version__,
        # no workflow strings here: the doc string is read by tools that may print it raw
        doc_string="Numeric subgraph of a µLM workflow, exported by pytest-mulm.",
    )
    helper.set_model_props(model, {
        "mulm.workflow_id": workflow.id,
        "mulm.content_hash": workflow.content_hash,
        "mulm.version": __version__,
    })
    onnx.checker.check_model(model, full_check=True)
    return model


def run_onnx(
    model: onnx.ModelProto | bytes | str | PathLike[str], feeds: Mapping[str, Any],
) -> dict[str, np.ndarray]:
    """Run a model on CPU with onnxruntime; feeds are cast to float32 ``[batch, width]``."""
    _load_onnx()
    import onnxruntime as ort  # only the runner needs it, not the export

    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    source = str(source) if isinstance(source, PathLike) else source
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    arrays = {name: np.atleast_2d(np.asarray(value, dtype=np.float32)) for name, value in feeds.items()}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, arrays), strict=True))
