"""The example workflows in examples/ load, run in the reference runtime and give the
answers they were built to give (examples/train_examples.py writes them)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pytest_mulm.loader import load_workflow, parse_workflow
from pytest_mulm.runtime import run_workflow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
IRIS = EXAMPLES / "iris-mlp.json"
MOE = EXAMPLES / "moe-router.json"
SENTIMENT = EXAMPLES / "sentiment-pipeline.json"

# The true species of the iris rows used as examples (rows 0, 25, 52, 77, 101, 140).
IRIS_EXPECTED = ["setosa", "setosa", "versicolor", "versicolor", "virginica", "virginica"]
SENTIMENT_EXPECTED = ["positive", "negative", "neutral", "positive", "negative"]


def _raw_nodes(path: Path) -> dict[str, dict]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    return {n["id"]: n for n in doc["nodes"]}


# -- iris ----------------------------------------------------------------------------------


def test_iris_loads_as_mulm_workflow_with_npz_weights():
    wf = load_workflow(IRIS)
    assert (wf.id, wf.version) == ("iris-mlp", "1.0.0")
    assert [wf.node(n).kind for n in wf.order] == ["input", "normalize", "dense", "dense", "softmax", "output"]
    assert wf.outputs == ("output",)
    assert not wf.examples_synthesized and not wf.problems
    assert wf.node("hidden").params["kernel"].shape == (4, 16)
    assert wf.node("hidden").params["bias"].shape == (16,)
    assert wf.node("logits").params["kernel"].shape == (16, 3)
    assert wf.node("logits").params["kernel"].dtype == np.float32
    raw = _raw_nodes(IRIS)
    assert raw["hidden"]["data"]["config"]["weightsFile"] == "iris-mlp.npz"
    assert all(n["type"] == "aiBlock" and "position" in n for n in raw.values())


@pytest.mark.parametrize("index", range(len(IRIS_EXPECTED)))
def test_iris_example_predicts_true_species(index):
    wf = load_workflow(IRIS)
    assert len(wf.examples) == len(IRIS_EXPECTED)
    result = run_workflow(wf, wf.examples[index])
    assert result["label"] == IRIS_EXPECTED[index]
    probs = result["probabilities"]
    assert list(probs) == ["setosa", "versicolor", "virginica"]
    assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-5)
    assert probs[IRIS_EXPECTED[index]] > 0.5


def test_iris_batch_matches_single_runs():
    wf = load_workflow(IRIS)
    batch = run_workflow(wf, [list(e) for e in wf.examples])
    assert [r["label"] for r in batch] == IRIS_EXPECTED


# -- mixture of experts --------------------------------------------------------------------


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf)(x)


def _numpy_moe(raw: dict[str, dict], x) -> tuple[np.ndarray, np.ndarray]:
    """The MoE forward pass recomputed from the JSON, independent of pytest_mulm.ops."""
    cfg = {nid: n["data"]["config"] for nid, n in raw.items()}
    x = np.asarray(x, dtype=np.float64)
    z = (x - np.asarray(cfg["normalize"]["mean"])) / np.asarray(cfg["normalize"]["std"])

    def affine(nid, v):
        w = cfg[nid]["weights"]
        return v @ np.asarray(w["kernel"]) + np.asarray(w["bias"])

    def softmax(v):
        e = np.exp(v - v.max())
        return e / e.sum()

    gate = softmax(affine("router", z))
    k = cfg["router"]["topK"]
    keep = np.argsort(-gate)[:k]
    masked = np.zeros_like(gate)
    masked[keep] = gate[keep]
    gate = masked / masked.sum()

    acts = {
        "relu": lambda v: np.maximum(v, 0.0),
        "gelu": lambda v: v * 0.5 * (1.0 + _erf(v / math.sqrt(2.0))),
        "tanh": np.tanh,
        "linear": lambda v: v,
    }
    experts = [acts[cfg[f"expert{i}"]["activation"]](affine(f"expert{i}", z))
               for i in range(cfg["router"]["experts"])]
    mixed = sum(g * e for g, e in zip(gate, experts, strict=False))
    return gate, softmax(affine("head", mixed))


def _router_only(path: Path) -> dict:
    """The MoE document cut after the router, with the gate as the output."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    keep = {"input", "normalize", "router"}
    cut = copy.deepcopy(doc)
    cut["nodes"] = [n for n in doc["nodes"] if n["id"] in keep]
    cut["nodes"].append({"id": "gate_out", "type": "aiBlock", "position": {"x": 0, "y": 0},
                         "data": {"label": "Gate", "type": "output", "config": {}}})
    cut["edges"] = [e for e in doc["edges"] if e["source"] in keep and e["target"] in keep]
    cut["edges"].append({"id": "e-gate", "source": "router", "target": "gate_out"})
    return cut


def test_moe_loads_with_router_experts_and_mixture():
    wf = load_workflow(MOE)
    assert wf.id == "moe-router"  # bare React Flow file: id from the file name
    kinds = {n.id: n.kind for n in wf.nodes}
    assert kinds["router"] == "router" and kinds["mixture"] == "mixture"
    assert [kinds[f"expert{i}"] for i in range(3)] == ["expert"] * 3
    acts = [wf.node(f"expert{i}").config["activation"] for i in range(3)]
    assert acts == ["relu", "gelu", "tanh"]
    handles = sorted(e.target_handle for e in wf.upstream("mixture"))
    assert handles == ["expert0", "expert1", "expert2", "gate"]
    assert wf.node("router").config["topK"] == 2
    assert len(wf.examples) == 5 and all(len(e) == 6 for e in wf.examples)


def test_moe_outputs_are_probability_vectors_matching_numpy():
    wf = load_workflow(MOE)
    raw = _raw_nodes(MOE)
    labels = raw["output"]["data"]["config"]["labels"]
    for example in wf.examples:
        result = run_workflow(wf, example)
        probs = np.array([result["probabilities"][lab] for lab in labels])
        assert np.all(probs >= 0) and np.all(probs <= 1)
        assert math.isclose(probs.sum(), 1.0, abs_tol=1e-5)
        _, expected = _numpy_moe(raw, example)
        np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-6)
        assert result["label"] == labels[int(np.argmax(expected))]


def test_moe_router_keeps_exactly_top_k_gates():
    wf = load_workflow(MOE)
    raw = _raw_nodes(MOE)
    top_k = raw["router"]["data"]["config"]["topK"]
    gate_wf = parse_workflow(_router_only(MOE), base_dir=EXAMPLES)
    for example in wf.examples:
        expected_gate, _ = _numpy_moe(raw, example)
        assert np.count_nonzero(expected_gate) == top_k
        gate = np.asarray(run_workflow(gate_wf, example))
        assert gate.shape == (raw["router"]["data"]["config"]["experts"],)
        assert np.count_nonzero(gate) == top_k
        assert math.isclose(gate.sum(), 1.0, abs_tol=1e-5)
        np.testing.assert_array_equal(gate == 0, expected_gate == 0)
        np.testing.assert_allclose(gate, expected_gate, rtol=1e-4, atol=1e-6)


def test_moe_examples_use_more_than_one_expert_pair():
    wf = load_workflow(MOE)
    raw = _raw_nodes(MOE)
    pairs = {tuple(np.flatnonzero(_numpy_moe(raw, e)[0])) for e in wf.examples}
    assert len(pairs) > 1


# -- sentiment -----------------------------------------------------------------------------


def test_sentiment_structure():
    wf = load_workflow(SENTIMENT)
    assert (wf.id, wf.version) == ("sentiment-pipeline", "1.0.0")
    assert wf.outputs == ("report",)
    report = wf.node("report")
    assert report.kind == "output" and report.entrypoint == "report"
    assert sorted(e.target_handle for e in wf.upstream("report")) == ["explanation", "prediction"]
    assert wf.node("explain").kind == "llm"
    assert wf.node("explain").config["model"] == "gpt-4o-mini"
    assert {wf.node(n).kind for n in ("clean", "featurize", "label")} == {"python"}
    assert wf.node("classifier").kind == "dense"
    assert "import re" in wf.node("clean").source
    assert not wf.problems


@pytest.mark.parametrize("index", range(len(SENTIMENT_EXPECTED)))
def test_sentiment_example_labels(index):
    wf = load_workflow(SENTIMENT)
    assert len(wf.examples) == len(SENTIMENT_EXPECTED)
    text = wf.examples[index]
    result = run_workflow(wf, text)
    assert result["label"] == SENTIMENT_EXPECTED[index]
    assert set(result["probabilities"]) == {"negative", "neutral", "positive"}
    assert math.isclose(sum(result["probabilities"].values()), 1.0, abs_tol=1e-3)
    assert result["confidence"] == max(result["probabilities"].values())
    # no model is called in the reference runtime: the explanation is the rendered prompt
    explanation = result["explanation"]
    assert isinstance(explanation, str)
    assert f"why this text is {SENTIMENT_EXPECTED[index]}" in explanation
    assert text in explanation


def test_sentiment_featurizer_is_fixed_length_floats():
    from pytest_mulm.runtime import load_block_function

    wf = load_workflow(SENTIMENT)
    clean = load_block_function(wf.node("clean"))
    featurize = load_block_function(wf.node("featurize"))
    assert clean("Don't   STOP, it's GREAT!") == "dont stop its great"
    lengths = set()
    for text in wf.examples:
        features = featurize(clean(text))
        assert all(isinstance(f, float) for f in features)
        lengths.add(len(features))
    assert lengths == {wf.node("classifier").params["kernel"].shape[0]}
    # negation flips: "not bad" counts as a negated negative, "not good" as a negated positive
    assert featurize("not bad")[3] == 1.0 and featurize("not good")[2] == 1.0
