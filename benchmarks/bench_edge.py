"""Edge figures per workflow: parity errors, int8 size and agreement, latency table.

Runs the edge-deployment suite's parity, int8, resources and runtime-benchmark items for
each workflow and tabulates what they recorded in mulm-report.json. The reference
(numpy), onnxruntime and LiteRT timings come from the same run on the same inputs.

    python benchmarks/bench_edge.py [--json benchmarks/edge-results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = [ROOT / "examples" / f"{n}.json" for n in ("iris-mlp", "moe-router", "sentiment-pipeline")]
WORKFLOWS += [ROOT / "tests" / "workflows" / "own" / f"{n}.json" for n in ("top1-moe", "sensor-fusion")]


def measure(workflow: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", f"--mulm-workflow={workflow}", "--mulm-format=edge-deployment",
             "-k", "parity or int8 or resources or benchmark_runtimes", "-p", "no:cacheprovider", "-q"],
            cwd=tmp, env=env, capture_output=True, text=True, check=False, timeout=1200,
        )
        report = Path(tmp) / "mulm-out" / "mulm-report.json"
        if proc.returncode != 0 or not report.is_file():
            raise SystemExit(f"{workflow.stem}: the run failed:\n{proc.stdout[-3000:]}")
        return json.loads(report.read_text())["formats"]["edge-deployment"]["benchmark"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {wf.stem: measure(wf) for wf in WORKFLOWS}
    print("parity (max abs error over examples + 1,000 generated inputs; class agreement is 100 % or the item fails)")
    for name, b in results.items():
        onnx = max(e["max_abs"] for e in b["onnxruntime_parity"].values())
        lite = max(e["max_abs"] for e in b["litert_parity"].values())
        print(f"  {name:<20} onnx {onnx:.2e}   tflite {lite:.2e}")
    print("int8 (size ratio int8/fp32, class agreement with fp32)")
    for name, b in results.items():
        o, t = b["onnxruntime_int8"], b["litert_int8"]
        print(f"  {name:<20} onnx {o['size_ratio']:.3f} {o['agreement']:.1%}   tflite {t['size_ratio']:.3f} {t['agreement']:.1%}"
              f"   (weights dominate the file: {o['weights_dominate']})")
    print("p50 latency ms: numpy reference / onnxruntime / LiteRT")
    for name, b in results.items():
        cells = []
        for batch in (1, 256):
            f = b[f"p50_ms_batch{batch}"]
            cells.append(f"batch {batch}: {f['numpy']:.4f} / {f['onnxruntime']:.4f} / {f['litert']:.4f}")
        print(f"  {name:<20} " + "   ".join(cells) + f"   runner p50 {b['runner']['p50_ms']:.3f} ms, peak {b['runner']['peak_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
