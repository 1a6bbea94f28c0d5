"""TFLite conversion of a workflow's numeric subgraph (design.md §4 numeric table, §6
edge-deployment row).

The subgraph is rebuilt with TensorFlow ops inside a ``tf.Module`` whose one
``tf.function`` takes one ``[batch, width]`` float32 tensor per subgraph input (named by
``sub.names``) and returns a dict ``{name: tensor}`` per subgraph output, so the TFLite
signature ``serving_default`` matches inputs and outputs BY NAME. The model then runs
with ai-edge-litert (the generated runner never imports TensorFlow; docs/pitfalls.md
"Formats").

TensorFlow is needed only here, to convert, and is imported lazily: it takes seconds.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from pytest_mulm.workflow import Workflow

from .edge_subgraph import NumericSubgraph

__all__ = ["QUANTIZATIONS", "convert_tflite", "tflite_ops"]

QUANTIZATIONS = ("none", "dynamic", "int8")


# native log lines TensorFlow and the converter print on every run, whatever the log level
_NOISE = (
    "All log messages before absl::InitializeLog()",
    "oneDNN custom operations are on",
    "fully_quantize:",
    "Created TensorFlow Lite XNNPACK delegate",
)


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Hold back what C++ code writes to file descriptor 2 and drop the known noise.

    Anything else is written back afterwards, and everything is when the block raises,
    so a converter error keeps its diagnostics."""
    fd = 2  # native code writes here whatever sys.stderr has been replaced with
    try:
        saved = os.dup(fd)
    except OSError:  # no stderr at all (daemonised)
        yield
        return
    with tempfile.TemporaryFile() as sink:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(sink.fileno(), fd)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            lines = sink.read().decode(errors="replace").splitlines()
            keep = [
                ln for ln in lines if failed or (ln.strip() and not any(n in ln for n in _NOISE))
            ]
            if keep:
                os.write(fd, ("\n".join(keep) + "\n").encode())


def _tf() -> Any:
    """TensorFlow, imported on first use with its C++ and Python logging quietened.

    oneDNN is switched off (unless the caller chose otherwise): its fused CPU kernels
    are not bit-reproducible, and the converter constant-folds with TF kernels."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    with _quiet_native_stderr():
        import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl ships with tensorflow
        pass
    return tf


def _activation(tf: Any, x: Any, name: str | None, where: str) -> Any:
    if name in (None, "", "linear", "identity"):
        return x
    if name == "relu":
        return tf.nn.relu(x)
    if name == "gelu":
        # the exact form (design.md §4); the converter fuses this pattern into the
        # GELU builtin with approximate=False, so no Erf (a Flex op) reaches the model
        return x * 0.5 * (1.0 + tf.math.erf(x / np.float32(math.sqrt(2.0))))
    if name == "tanh":
        return tf.math.tanh(x)
    if name == "sigmoid":
        return tf.math.sigmoid(x)
    if name == "softmax":
        return tf.nn.softmax(x, axis=-1)
    raise ValueError(f"{where}: unknown activation {name!r}")


def _router(tf: Any, x: Any, kernel: np.ndarray, bias: np.ndarray, top_k: Any, where: str) -> Any:
    gate = tf.nn.softmax(tf.matmul(x, kernel) + bias, axis=-1)
    n = int(kernel.shape[1])
    if top_k is None or int(top_k) >= n:
        return gate
    k = int(top_k)
    if k < 1:
        raise ValueError(f"{where}: topK must be at least 1, got {top_k!r}")
    # top_k orders equal values lower index first (as ops.router's stable argsort does,
    # and TFLite's TOPK_V2 keeps that); the kept positions become a boolean mask by
    # comparing indices (EQUAL + REDUCE_ANY on int32/bool), then the gate is renormalised.
    # Not tf.one_hot: in full-int8 models the converter quantizes ONE_HOT's on/off values
    # as raw int8 constants, so "off" dequantizes to ~0.5 and the mask keeps every expert.
    _, idx = tf.math.top_k(gate, k=k, sorted=True)
    positions = tf.constant(np.arange(n, dtype=np.int32).reshape(1, 1, n))
    keep = tf.reduce_any(tf.equal(tf.expand_dims(idx, -1), positions), axis=-2)
    kept = tf.where(keep, gate, tf.constant(0.0, tf.float32))
    return kept / tf.reduce_sum(kept, axis=-1, keepdims=True)


def _build(
    tf: Any, workflow: Workflow, sub: NumericSubgraph, tensors: dict[str, Any]
) -> dict[str, Any]:
    """Evaluate the subgraph with TF ops; ``tensors`` holds the inputs by source id."""
    for nid in sub.nodes:
        node = workflow.node(nid)
        k, p, c = node.kind, node.params, node.config
        edges = workflow.upstream(nid)  # ordered by handle: in0, in1, ... / expert0, ...
        ins = [tensors[e.source] for e in edges]
        where = node.title
        if k == "normalize":
            y = (ins[0] - np.asarray(p["mean"], np.float32)) / np.asarray(p["std"], np.float32)
        elif k in ("dense", "expert"):
            y = tf.matmul(ins[0], np.asarray(p["kernel"], np.float32)) + np.asarray(
                p["bias"], np.float32
            )
            y = _activation(tf, y, c.get("activation", "linear"), where)
        elif k == "activation":
            y = _activation(tf, ins[0], c.get("function", c.get("activation")), where)
        elif k == "softmax":
            y = tf.nn.softmax(ins[0], axis=-1)
        elif k == "concat":
            y = tf.concat(ins, axis=-1)
        elif k == "router":
            y = _router(
                tf,
                ins[0],
                np.asarray(p["kernel"], np.float32),
                np.asarray(p["bias"], np.float32),
                c.get("topK"),
                where,
            )
        elif k == "mixture":
            gate = next(tensors[e.source] for e in edges if e.target_handle == "gate")
            experts = [
                tensors[e.source] for e in edges if (e.target_handle or "").startswith("expert")
            ]
            y = None
            for i, expert in enumerate(experts):
                term = gate[:, i : i + 1] * expert
                y = term if y is None else y + term
            if y is None:
                raise ValueError(f"{where}: a mixture needs at least one expert")
        else:
            raise ValueError(f"{where}: block type {k!r} has no TFLite conversion")
        tensors[nid] = y
    return {sub.names[o]: tf.identity(tensors[o], name=sub.names[o]) for o in sub.outputs}


def _representative(sub: NumericSubgraph, samples: Sequence[dict[str, np.ndarray]]) -> Any:
    """A calibration generator yielding one ``{input name: [1, width]}`` dict per row.

    Dicts keyed by signature input name (not lists in some order) leave no doubt about
    which tensor gets which value; rows one at a time keep the calibrated shape fixed.
    Keys may be tensor names or the source ids they were derived from."""
    names = [(src, sub.names[src], width) for src, width in sub.inputs]
    batches: list[dict[str, np.ndarray]] = []
    for sample in samples:
        batch = {}
        for src, name, width in names:
            value = sample[name] if name in sample else sample[src]
            batch[name] = np.asarray(value, np.float32).reshape(-1, width)
        batches.append(batch)

    def gen() -> Iterator[dict[str, np.ndarray]]:
        for batch in batches:
            rows = len(next(iter(batch.values()))) if batch else 0
            for r in range(rows):
                yield {name: value[r : r + 1] for name, value in batch.items()}

    return gen


def convert_tflite(
    workflow: Workflow,
    sub: NumericSubgraph,
    *,
    quantization: str = "none",
    representative: list[dict[str, np.ndarray]] | None = None,
) -> bytes:
    """The numeric subgraph as a TFLite flatbuffer.

    ``quantization``: ``"none"`` (float32), ``"dynamic"`` (dynamic-range: int8 weights,
    float activations, no calibration data) or ``"int8"`` (full-integer with calibration
    on ``representative``: a list of ``{input name: [width] or [n, width]}`` dicts).
    Every model keeps float32 inputs and outputs, so one runner serves all three.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}"
        )
    if quantization == "int8" and not representative:
        raise ValueError("int8 quantization needs representative input samples for calibration")
    tf = _tf()
    specs = [
        tf.TensorSpec([None, width], tf.float32, name=sub.names[src]) for src, width in sub.inputs
    ]
    sources = [src for src, _ in sub.inputs]

    def model(*args: Any) -> dict[str, Any]:
        return _build(tf, workflow, sub, dict(zip(sources, args, strict=True)))

    module = tf.Module()
    module.serve = tf.function(model, input_signature=specs, autograph=False)
    concrete = module.serve.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    if quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(sub, representative)  # type: ignore[arg-type]
        # int8 kernels wherever TFLite has them (FULLY_CONNECTED, SOFTMAX, GELU, LOGISTIC,
        # TANH, ...); listing TFLITE_BUILTINS too lets an op with no int8 kernel (the
        # router's TOPK_V2/ONE_HOT mask path, for one) stay float between quantize and
        # dequantize ops instead of failing the conversion.
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
        converter.inference_input_type = tf.float32  # the runner feeds float32 ...
        converter.inference_output_type = tf.float32  # ... and reads float32 back
    with _quiet_native_stderr(), warnings.catch_warnings():
        # int8 calibration runs TensorFlow's own (deprecated) tf.lite.Interpreter
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        return bytes(converter.convert())


def tflite_ops(model_bytes: bytes) -> list[str]:
    """The builtin operators a TFLite model uses, sorted (for the resource manifest).

    Reads the flatbuffer with the schema bundled in ai-edge-litert; no interpreter runs."""
    from ai_edge_litert import schema_py_generated as schema

    codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(bytearray(model_bytes), 0)
    names = set()
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        # builtin codes above 127 live in BuiltinCode; older files only fill the deprecated byte
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        if code == schema.BuiltinOperator.CUSTOM:
            names.add(f"CUSTOM:{(oc.CustomCode() or b'').decode()}")
        else:
            names.add(codes.get(code, f"BUILTIN_{code}"))
    return sorted(names)
