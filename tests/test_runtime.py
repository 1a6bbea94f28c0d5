"""The reference runtime and its numeric primitives, checked against independent math."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_mulm import ops
from pytest_mulm.loader import parse_workflow
from pytest_mulm.runtime import BlockFailure, Runtime, run_workflow


def test_gelu_is_the_exact_erf_form() -> None:
    xs = np.linspace(-6, 6, 101, dtype=np.float32)
    expected = [x * 0.5 * (1 + math.erf(x / math.sqrt(2))) for x in xs.astype(float)]
    np.testing.assert_allclose(ops.gelu(xs), expected, rtol=1e-6, atol=1e-7)
    # the tanh approximation differs measurably; we must not be using it
    approx = 0.5 * xs * (1 + np.tanh(np.sqrt(2 / np.pi) * (xs + 0.044715 * xs**3)))
    assert np.max(np.abs(ops.gelu(xs) - approx)) > 1e-5


def test_activations_and_dtype() -> None:
    x = np.array([-2.0, 0.0, 3.0])
    assert ops.activate(x, "relu").tolist() == [0.0, 0.0, 3.0]
    np.testing.assert_allclose(ops.activate(x, "sigmoid"), 1 / (1 + np.exp(-x)), rtol=1e-6)
    np.testing.assert_allclose(ops.activate(x, "tanh"), np.tanh(x), rtol=1e-6)
    for name in ("linear", "relu", "gelu", "tanh", "sigmoid", "softmax"):
        assert ops.activate(x, name).dtype == np.float32
    with pytest.raises(ValueError):
        ops.activate(x, "swish")


def test_router_top_k_keeps_k_and_renormalises() -> None:
    rng = np.random.default_rng(0)
    x, k, b = rng.normal(size=(5, 4)), rng.normal(size=(4, 6)), rng.normal(size=6)
    gate = ops.router(x, k, b, top_k=2)
    assert gate.shape == (5, 6)
    assert (np.count_nonzero(gate, axis=1) == 2).all()
    np.testing.assert_allclose(gate.sum(axis=1), 1, rtol=1e-6)
    full = np.exp(x @ k + b)
    full /= full.sum(axis=1, keepdims=True)
    top = np.argsort(-full, axis=1)[:, :2]
    for row in range(5):
        kept = full[row, top[row]]
        np.testing.assert_allclose(gate[row, top[row]], kept / kept.sum(), rtol=1e-5)


def test_mixture_weights_experts_by_gate() -> None:
    gate = np.array([[0.25, 0.75]], dtype=np.float32)
    e0, e1 = np.array([[1.0, 2.0]]), np.array([[3.0, 5.0]])
    np.testing.assert_allclose(ops.mixture(gate, [e0, e1]), [[2.5, 4.25]])


def test_vector_and_batch_agree() -> None:
    rng = np.random.default_rng(1)
    x, k, b = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(4, 2)), rng.normal(size=2)
    batch = ops.dense(x, k, b, "gelu")
    for i in range(3):
        np.testing.assert_allclose(ops.dense(x[i], k, b, "gelu"), batch[i], rtol=1e-6)


def test_differences() -> None:
    assert ops.differences({"a": [1.0, "x"]}, {"a": [1.0 + 1e-7, "x"]}) == []
    assert ops.differences(1.0, 1.1) == ["$: 1.0 != 1.1 (rtol 1e-05)"]
    assert ops.differences("a", "b") == ["$: 'a' != 'b'"]
    assert ops.differences(1, True) != []
    assert ops.differences({"a": 1}, {"b": 1}) != []
    assert ops.differences([1], [1, 2]) != []


def python_doc(source: str, extra_nodes=(), extra_edges=()) -> dict:
    return {
        "nodes": [
            {"id": "in", "data": {"type": "input", "config": {"inputType": "text", "examples": ["Hi There"]}}},
            {"id": "py", "data": {"type": "preprocessing", "sourceCode": source}},
            *extra_nodes,
        ],
        "edges": [{"id": "e1", "source": "in", "target": "py"}, *extra_edges],
    }


def test_python_block_runs_and_is_deterministic() -> None:
    wf = parse_workflow(python_doc("def clean(text):\n    return re.sub(r'\\s+', '-', text.lower())\n"))
    assert wf.node("py").implicit_imports == (("re", "re"),)
    assert run_workflow(wf, "Hi  There") == "hi-there"
    runtime = Runtime(wf)
    assert [runtime.run("A B") for _ in range(3)] == ["a-b"] * 3


def test_several_upstream_values_are_keyword_arguments() -> None:
    doc = {
        "nodes": [
            {"id": "in", "data": {"type": "input", "config": {"inputType": "number", "examples": [3]}}},
            {"id": "a", "data": {"type": "x", "sourceCode": "def a(v):\n    return v + 1\n"}},
            {"id": "b", "data": {"type": "x", "sourceCode": "def b(v):\n    return v * 10\n"}},
            {"id": "join", "data": {"type": "output", "sourceCode": "def join(left, right):\n    return [left, right]\n"}},
        ],
        "edges": [
            {"id": "e1", "source": "in", "target": "a"}, {"id": "e2", "source": "in", "target": "b"},
            {"id": "e3", "source": "a", "target": "join", "targetHandle": "left"},
            {"id": "e4", "source": "b", "target": "join", "targetHandle": "right"},
        ],
    }
    assert run_workflow(parse_workflow(doc), 3) == [4, 30]


def test_block_failure_names_the_block() -> None:
    wf = parse_workflow(python_doc("def boom(text):\n    return 1 / 0\n"))
    with pytest.raises(BlockFailure, match=r"node 'py' failed: ZeroDivisionError: division by zero"):
        run_workflow(wf, "x")


def test_llm_block_uses_the_template_fallback_and_sandbox() -> None:
    llm = {"id": "llm", "data": {"type": "llm", "config": {
        "promptTemplate": "Say {{ input }} {{ ''.__class__.__mro__ }}", "model": "gpt-4o-mini"}}}
    with pytest.raises(BlockFailure, match="SecurityError|unsafe"):
        run_workflow(parse_workflow(python_doc("def f(t):\n    return t\n", [llm], [{"id": "e2", "source": "py", "target": "llm"}])), "x")
    llm["data"]["config"]["promptTemplate"] = "Say {{ input | upper }}"
    wf = parse_workflow(python_doc("def f(t):\n    return t\n", [llm], [{"id": "e2", "source": "py", "target": "llm"}]))
    assert run_workflow(wf, "hello") == "[template fallback: no model was called] Say HELLO"
