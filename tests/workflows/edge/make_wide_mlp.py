"""Writes wide-mlp.json and wide-mlp.npz: an MLP whose weights dominate its model files,
so the edge suite's int8 size gate applies (python make_wide_mlp.py; deterministic)."""

import json
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
rng = np.random.default_rng(7)
sizes = [32, 256, 128, 8]
arrays = {}
for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
    arrays[f"l{i}/kernel"] = (rng.normal(0, 1 / np.sqrt(n_in), (n_in, n_out))).astype(np.float32)
    arrays[f"l{i}/bias"] = (rng.normal(0, 0.05, n_out)).astype(np.float32)
# fixed zip timestamps so the file (and the workflow's content hash) is reproducible
with zipfile.ZipFile(HERE / "wide-mlp.npz", "w") as zf:
    for name, arr in arrays.items():
        buf = BytesIO()
        np.save(buf, arr)
        info = zipfile.ZipInfo(f"{name}.npy", date_time=(2026, 1, 1, 0, 0, 0))
        zf.writestr(info, buf.getvalue())


def node(nid, type_, config, x):
    return {"id": nid, "type": "aiBlock", "position": {"x": x, "y": 100},
            "data": {"label": nid.title(), "type": type_, "category": "neuralNetwork", "config": config}}


acts = ["gelu", "relu", "linear"]
nodes = [node("x", "input", {"inputType": "tensor", "shape": [32],
                             "examples": np.round(rng.normal(0, 1, (5, 32)), 3).tolist()}, 0)]
nodes += [node(f"l{i}", "dense", {"units": sizes[i + 1], "activation": acts[i], "weightsFile": "wide-mlp.npz",
                                  "weightsKey": f"l{i}"}, 200 * (i + 1)) for i in range(3)]
nodes += [node("sm", "softmax", {}, 800), node("out", "output", {"labels": [f"c{i}" for i in range(8)]}, 1000)]
ids = [n["id"] for n in nodes]
edges = [{"id": f"e{i}", "source": a, "target": b} for i, (a, b) in enumerate(zip(ids, ids[1:], strict=False))]
doc = {"id": "wide-mlp", "name": "Wide MLP", "version": "1.0.0",
       "description": "An MLP large enough that its weights dominate the model files.",
       "nodes": nodes, "edges": edges,
       "deploymentConfig": {"edgeConfig": {"targetFramework": "both", "quantization": "dynamic"}}}
(HERE / "wide-mlp.json").write_text(json.dumps(doc, indent=1) + "\n")
