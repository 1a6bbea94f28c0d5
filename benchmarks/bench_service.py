"""Latency, throughput and overhead of the fastapi-service export, per example.

Runs the suite's `test_benchmark_latency` item (pytest-benchmark, so no xdist) for each
shipped example and tabulates what it recorded in mulm-report.json: p50/p95 of
sequential requests over loopback, p50/p95 and throughput with 8 concurrent clients, the
bare in-process call of the same workflow in the same venv, and the service's overhead
over it (p50 minus bare p50). Both sides are measured in the same run, on the same
machine, so the overhead is a side-by-side figure, not a comparison across runs.

    python benchmarks/bench_service.py [--json benchmarks/service-results.json]
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
EXAMPLES = ("iris-mlp", "moe-router", "sentiment-pipeline")
COLUMNS = ("p50_ms", "p95_ms", "concurrent_p50_ms", "concurrent_p95_ms", "throughput_rps", "bare_p50_ms", "overhead_p50_ms")


def measure(example: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", f"--mulm-workflow={ROOT / 'examples' / (example + '.json')}",
             "--mulm-format=fastapi-service", "-k", "benchmark_latency", "-p", "no:cacheprovider", "-q"],
            cwd=tmp, env=env, capture_output=True, text=True, check=False, timeout=900,
        )
        report_path = Path(tmp) / "mulm-out" / "mulm-report.json"
        if proc.returncode != 0 or not report_path.is_file():
            raise SystemExit(f"{example}: the benchmark run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
        bench = json.loads(report_path.read_text())["formats"]["fastapi-service"]["benchmark"]
    return bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    results = {example: measure(example) for example in EXAMPLES}
    print(f"{'example':<20}" + "".join(f"{c:>19}" for c in COLUMNS))
    for example, bench in results.items():
        print(f"{example:<20}" + "".join(f"{bench[c]:>19}" for c in COLUMNS))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
