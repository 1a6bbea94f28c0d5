"""Write the example workflows in this folder, deterministically.

Run from anywhere (needs numpy and scikit-learn, both in the ``dev`` extra)::

    python examples/train_examples.py

It (re)writes, next to itself:

* ``iris-mlp.json`` + ``iris-mlp.npz``: a 4-16-3 MLP trained with scikit-learn on
  standardised iris, exported as normalize -> dense(relu) -> dense -> softmax -> output;
  the weights live in the .npz (``weightsFile`` / ``weightsKey``).
* ``moe-router.json``: a small mixture of experts with seeded random inline weights
  (router with top-2 gating over three experts using relu, gelu and tanh).
* ``sentiment-pipeline.json``: text -> Python cleaning -> Python featurizer -> dense with
  hand-set weights -> softmax -> Python labeller -> LLM explanation -> Python report.

Every seed is fixed and the .npz is written with fixed zip timestamps, so running the
script twice gives byte-identical files. After writing, each workflow is loaded with
:func:`pytest_mulm.loader.load_workflow` and run with the reference runtime on its
examples; the iris test accuracy printed is that of the exported workflow.
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from pytest_mulm.loader import load_workflow  # noqa: E402 (after the sys.path line above)
from pytest_mulm.runtime import run_workflow  # noqa: E402

IRIS_SEED = 0
MOE_SEED = 20240607
IRIS_LABELS = ["setosa", "versicolor", "virginica"]
# Row indices into sklearn's iris data used as workflow examples (two per class).
IRIS_EXAMPLE_ROWS = [0, 25, 52, 77, 101, 140]


# -- helpers -------------------------------------------------------------------------------


def write_json(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez`` but byte-for-byte reproducible (fixed zip timestamps, sorted names)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def rounded(a: np.ndarray, digits: int = 4) -> list:
    """Nested lists of Python floats, rounded: small, readable inline weights."""
    return np.round(np.asarray(a, dtype=np.float64), digits).tolist()


def node(nid: str, x: int, y: int, *, label: str, category: str, type_: str, description: str,
         config: dict | None = None, source: str | None = None) -> dict:
    data: dict = {"label": label, "category": category, "type": type_, "description": description,
                  "config": config or {}}
    if source is not None:
        data["sourceCode"] = source
    return {"id": nid, "type": "aiBlock", "position": {"x": x, "y": y}, "data": data}


def edge(source: str, target: str, handle: str | None = None) -> dict:
    eid = f"e-{source}-{target}" + (f"-{handle}" if handle else "")
    return {"id": eid, "source": source, "target": target, "sourceHandle": None, "targetHandle": handle}


# -- iris MLP ------------------------------------------------------------------------------


def build_iris() -> float:
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    iris = load_iris()
    X, y = iris.data.astype(np.float64), iris.target
    assert list(iris.target_names) == IRIS_LABELS
    mean = np.round(X.mean(axis=0), 6)
    std = np.round(X.std(axis=0), 6)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=IRIS_SEED
    )
    clf = MLPClassifier(hidden_layer_sizes=(16,), activation="relu", solver="lbfgs",
                        alpha=1e-3, max_iter=2000, random_state=IRIS_SEED)
    clf.fit((X_train - mean) / std, y_train)
    sk_acc = clf.score((X_test - mean) / std, y_test)

    write_npz(HERE / "iris-mlp.npz", {
        "hidden/kernel": clf.coefs_[0].astype(np.float32),      # [4, 16]
        "hidden/bias": clf.intercepts_[0].astype(np.float32),   # [16]
        "logits/kernel": clf.coefs_[1].astype(np.float32),      # [16, 3]
        "logits/bias": clf.intercepts_[1].astype(np.float32),   # [3]
    })
    examples = [X[i].tolist() for i in IRIS_EXAMPLE_ROWS]
    doc = {
        "id": "iris-mlp",
        "name": "Iris MLP classifier",
        "description": "Classifies an iris flower from its four measurements (sepal length, "
                       "sepal width, petal length, petal width; cm) with a 4-16-3 MLP trained "
                       "with scikit-learn.",
        "version": "1.0.0",
        "category": "classification",
        "tags": ["tabular", "classification", "mlp", "iris"],
        "nodes": [
            node("input", 100, 200, label="Flower measurements", category="input", type_="input",
                 description="Sepal length, sepal width, petal length, petal width (cm)",
                 config={"inputType": "tensor", "shape": [4], "examples": examples,
                         "featureNames": list(iris.feature_names)}),
            node("normalize", 350, 200, label="Standardize", category="preprocessing",
                 type_="normalize", description="(x - mean) / std with the iris dataset statistics",
                 config={"mean": mean.tolist(), "std": std.tolist()}),
            node("hidden", 600, 200, label="Hidden layer", category="mlAlgorithm", type_="dense",
                 description="16 ReLU units (sklearn MLPClassifier coefs_[0])",
                 config={"units": 16, "activation": "relu", "weightsFile": "iris-mlp.npz",
                         "weightsKey": "hidden"}),
            node("logits", 850, 200, label="Class scores", category="mlAlgorithm", type_="dense",
                 description="3 linear units, one per species (coefs_[1])",
                 config={"units": 3, "activation": "linear", "weightsFile": "iris-mlp.npz",
                         "weightsKey": "logits"}),
            node("softmax", 1100, 200, label="Softmax", category="mlAlgorithm", type_="softmax",
                 description="Class probabilities", config={"axis": -1}),
            node("output", 1350, 200, label="Species", category="output", type_="output",
                 description="Predicted species with probabilities",
                 config={"labels": IRIS_LABELS}),
        ],
        "edges": [edge("input", "normalize"), edge("normalize", "hidden"), edge("hidden", "logits"),
                  edge("logits", "softmax"), edge("softmax", "output")],
    }
    write_json(HERE / "iris-mlp.json", doc)

    wf = load_workflow(HERE / "iris-mlp.json")
    predicted = [run_workflow(wf, row.tolist())["label"] for row in X_test]
    acc = float(np.mean([p == IRIS_LABELS[t] for p, t in zip(predicted, y_test, strict=False)]))
    for row in IRIS_EXAMPLE_ROWS:
        got = run_workflow(wf, X[row].tolist())["label"]
        assert got == IRIS_LABELS[y[row]], f"iris example row {row}: {got} != {IRIS_LABELS[y[row]]}"
    print(f"iris-mlp: sklearn test accuracy {sk_acc:.4f}; exported workflow (run_workflow) "
          f"test accuracy {acc:.4f} on {len(y_test)} held-out flowers")
    print(f"  examples rows {IRIS_EXAMPLE_ROWS} -> {[IRIS_LABELS[y[r]] for r in IRIS_EXAMPLE_ROWS]}")
    return acc


# -- mixture of experts --------------------------------------------------------------------


def build_moe() -> None:
    rng = np.random.default_rng(MOE_SEED)
    n_in, n_experts, units, n_out = 6, 3, 4, 3
    centre = np.array([0.5, -1.0, 2.0, 0.0, 10.0, -3.0])
    scale = np.array([1.0, 0.5, 2.0, 1.0, 4.0, 0.25])
    data = centre + scale * rng.standard_normal((256, n_in))
    mean, std = np.round(data.mean(axis=0), 4), np.round(data.std(axis=0), 4)
    examples = rounded(data[:5], 3)

    def layer(n_from: int, n_to: int, sd: float) -> dict:
        return {"kernel": rounded(rng.normal(0.0, sd, (n_from, n_to))),
                "bias": rounded(rng.normal(0.0, 0.1, n_to))}

    router = layer(n_in, n_experts, 0.4)
    experts = [layer(n_in, units, 0.5) for _ in range(n_experts)]
    head = layer(units, n_out, 1.0)
    activations = ["relu", "gelu", "tanh"]

    def aib(nid: str, x: int, y: int, label: str, type_: str, config: dict) -> dict:
        return {"id": nid, "type": "aiBlock", "position": {"x": x, "y": y},
                "data": {"label": label, "type": type_, "config": config}}

    nodes = [
        aib("input", 0, 300, "Sensor vector", "input",
            {"inputType": "tensor", "shape": [n_in], "examples": examples}),
        aib("normalize", 250, 300, "Normalize", "normalize",
            {"mean": mean.tolist(), "std": std.tolist()}),
        aib("router", 500, 0, "Router", "router", {"experts": n_experts, "topK": 2, "weights": router}),
    ]
    for i, (w, act) in enumerate(zip(experts, activations, strict=False)):
        nodes.append(aib(f"expert{i}", 500, 200 + 150 * i, f"Expert {i} ({act})", "expert",
                         {"units": units, "activation": act, "weights": w}))
    nodes += [
        aib("mixture", 750, 300, "Mixture", "mixture", {}),
        aib("head", 1000, 300, "Head", "dense", {"units": n_out, "activation": "linear", "weights": head}),
        aib("softmax", 1250, 300, "Softmax", "softmax", {}),
        aib("output", 1500, 300, "Class", "output", {"labels": ["alpha", "beta", "gamma"]}),
    ]
    edges = [edge("input", "normalize"), edge("normalize", "router")]
    edges += [edge("normalize", f"expert{i}") for i in range(n_experts)]
    edges += [edge("router", "mixture", "gate")]
    edges += [edge(f"expert{i}", "mixture", f"expert{i}") for i in range(n_experts)]
    edges += [edge("mixture", "head"), edge("head", "softmax"), edge("softmax", "output")]
    # Bare React Flow export (nodes, edges, canvas viewport) plus the deployment settings
    # the services read: JWT roles (the predict scope), a fixed-window rate limit.
    deployment = {
        "authentication": {"type": "api-key+jwt", "roles": ["predict"]},
        "rateLimit": {"requests": 20, "window": 60, "strategy": "fixed"},
        "apiConfig": {"maxBodyBytes": 65536, "maxBatchSize": 32},
    }
    write_json(HERE / "moe-router.json",
               {"nodes": nodes, "edges": edges, "viewport": {"x": 0, "y": 0, "zoom": 0.75},
                "deploymentConfig": deployment})

    wf = load_workflow(HERE / "moe-router.json")
    k, b = np.asarray(router["kernel"]), np.asarray(router["bias"])
    for ex in wf.examples:
        z = (np.asarray(ex) - mean) / std
        logits = z @ k + b
        gate = np.exp(logits - logits.max())
        gate /= gate.sum()
        top = np.sort(gate)[::-1]
        # keep top-2 selection unambiguous across runtimes (no near ties at the cut)
        assert top[1] - top[2] > 1e-3, f"moe example {ex}: gate near tie {top}"
        out = run_workflow(wf, ex)
        print(f"moe-router: gate {np.round(gate, 3).tolist()} -> {out['label']}")


# -- sentiment pipeline --------------------------------------------------------------------

CLEAN_SRC = '''import re


def clean(text):
    """Lowercase, drop punctuation (apostrophes too: "don't" -> "dont"), squeeze spaces."""
    text = text.lower().replace("'", "").replace("\\u2019", "")
    text = re.sub(r"[^\\w\\s]", " ", text)
    return re.sub(r"\\s+", " ", text).strip()
'''

FEATURIZE_SRC = '''POSITIVE = {"love", "loved", "great", "good", "excellent", "amazing", "recommend",
            "happy", "fantastic", "wonderful", "best", "perfect", "nice", "helpful"}
NEGATIVE = {"hate", "hated", "terrible", "awful", "bad", "poor", "disappointing", "worst",
            "broken", "horrible", "useless", "slow", "boring", "rude"}
NEGATIONS = {"not", "no", "never", "dont", "doesnt", "didnt", "isnt", "wasnt", "cant",
             "wont", "nothing", "hardly"}
WINDOW = 3  # a negation flips sentiment words up to 3 words after it


def featurize(text):
    """7 floats: positive, negative, negated positive, negated negative and negation
    counts, length in tens of words, share of words that carry sentiment."""
    words = text.split()
    pos = neg = neg_pos = neg_neg = negations = 0
    for i, word in enumerate(words):
        if word in NEGATIONS:
            negations += 1
            continue
        negated = any(w in NEGATIONS for w in words[max(0, i - WINDOW):i])
        if word in POSITIVE:
            if negated:
                neg_pos += 1
            else:
                pos += 1
        elif word in NEGATIVE:
            if negated:
                neg_neg += 1
            else:
                neg += 1
    n = max(len(words), 1)
    share = (pos + neg + neg_pos + neg_neg) / n
    return [float(pos), float(neg), float(neg_pos), float(neg_neg), float(negations),
            len(words) / 10.0, share]
'''

LABEL_SRC = '''LABELS = ["negative", "neutral", "positive"]


def to_label(probabilities):
    """Probability vector -> {"label", "confidence", "probabilities"}."""
    probs = [float(p) for p in probabilities]
    best = max(range(len(probs)), key=lambda i: probs[i])
    return {
        "label": LABELS[best],
        "confidence": probs[best],
        "probabilities": dict(zip(LABELS, probs)),
    }
'''

REPORT_SRC = '''def report(prediction, explanation):
    """Combine the classifier's prediction with the LLM's explanation."""
    return {
        "label": prediction["label"],
        "confidence": round(prediction["confidence"], 4),
        "probabilities": {k: round(v, 4) for k, v in prediction["probabilities"].items()},
        "explanation": explanation.strip(),
    }
'''

# Hand-set classifier over the 7 features; columns are (negative, neutral, positive).
SENTIMENT_KERNEL = [
    [-1.0, -0.5, 2.0],   # positive words
    [2.0, -0.5, -1.0],   # negative words
    [1.5, 0.0, -1.0],    # negated positive ("not good")
    [-0.5, 0.3, 1.2],    # negated negative ("not bad")
    [0.3, 0.0, -0.2],    # negations
    [0.0, 0.1, 0.0],     # length / 10
    [0.0, -2.0, 0.0],    # share of sentiment words
]
SENTIMENT_BIAS = [0.0, 1.0, 0.0]
SENTIMENT_EXAMPLES = [
    "I absolutely love this product, it works great!",
    "This was a terrible experience and the support was awful.",
    "The package arrived on Tuesday and contains two cables.",
    "Not bad at all, I would recommend it to a friend.",
    "Honestly, it's not good. The battery is disappointing.",
]


def build_sentiment() -> None:
    doc = {
        "id": "sentiment-pipeline",
        "name": "Sentiment Pipeline",
        "description": "Rule features and a small linear classifier label text as negative, "
                       "neutral or positive; an LLM explains the label in one sentence.",
        "version": "1.0.0",
        "category": "nlp",
        "tags": ["nlp", "classification", "llm"],
        "nodes": [
            node("input", 100, 200, label="Text Input", category="input", type_="input",
                 description="A sentence or short review to classify",
                 config={"inputType": "text", "placeholder": "Enter text to analyze...",
                         "examples": SENTIMENT_EXAMPLES}),
            node("clean", 350, 200, label="Clean Text", category="nlp", type_="preprocessing",
                 description="Lowercase, strip punctuation, collapse whitespace", source=CLEAN_SRC),
            node("featurize", 600, 200, label="Featurize", category="nlp", type_="featureExtraction",
                 description="Counts of positive/negative/negated words plus length features",
                 source=FEATURIZE_SRC),
            node("classifier", 850, 200, label="Sentiment Classifier", category="mlAlgorithm",
                 type_="dense", description="Hand-set linear layer: 7 features -> 3 class scores",
                 config={"units": 3, "activation": "linear",
                         "weights": {"kernel": SENTIMENT_KERNEL, "bias": SENTIMENT_BIAS}}),
            node("softmax", 1100, 200, label="Softmax", category="mlAlgorithm", type_="softmax",
                 description="Class probabilities (negative, neutral, positive)"),
            node("label", 1350, 200, label="Label", category="utility", type_="postprocessing",
                 description="Probabilities -> label, confidence and named probabilities",
                 source=LABEL_SRC),
            node("explain", 1600, 50, label="Explain", category="llm", type_="llm",
                 description="One-sentence explanation of the predicted label",
                 config={"model": "gpt-4o-mini",
                         "systemPrompt": "You explain sentiment labels briefly and neutrally.",
                         "promptTemplate": "Explain in one sentence why this text is "
                                           "{{ prediction.label }} "
                                           "(confidence {{ prediction.confidence | round(2) }}): "
                                           "\"{{ text }}\"",
                         "temperature": 0.0, "maxTokens": 60}),
            node("report", 1850, 200, label="Sentiment Report", category="output", type_="output",
                 description="Label, confidence, probabilities and the explanation",
                 source=REPORT_SRC),
        ],
        "edges": [
            edge("input", "clean"), edge("clean", "featurize"), edge("featurize", "classifier"),
            edge("classifier", "softmax"), edge("softmax", "label"),
            edge("input", "explain", "text"), edge("label", "explain", "prediction"),
            edge("label", "report", "prediction"), edge("explain", "report", "explanation"),
        ],
    }
    doc["deploymentConfig"] = {
        "authentication": {"type": "api-key+jwt", "audience": "sentiment-api"},
        "rateLimit": {"requests": 30, "window": 60, "strategy": "sliding"},
        "kubernetes": {"replicas": 2, "autoscaling": {"minReplicas": 2, "maxReplicas": 6, "targetCPU": 70}},
        # the llm block cannot run offline: on the edge its template fallback answers
        "edgeConfig": {"targetFramework": "both", "quantization": "dynamic", "allowDegradation": True},
    }
    write_json(HERE / "sentiment-pipeline.json", doc)
    wf = load_workflow(HERE / "sentiment-pipeline.json")
    for ex in wf.examples:
        out = run_workflow(wf, ex)
        print(f"sentiment: {out['label']:<8} {out['confidence']:.3f}  {ex}")


def main() -> None:
    build_iris()
    build_moe()
    build_sentiment()


if __name__ == "__main__":
    main()
