"""Measuring an installed artifact: the in-process call latency of the workflow library.

Used by the ``python-package`` suite's ``test_benchmark_call`` item and by the gates'
end-to-end test, so the figure the benchmark gate compares is measured one way only.

The measurement runs *inside the artifact's venv* (a separate process), imports the
installed package and calls its ``run`` on each example: the figure is what a user of the
package gets, not what pytest-mulm's reference runtime gets. pytest-benchmark cannot time
code in another process, so this does not use its ``benchmark`` fixture and therefore also
runs under xdist (where the figures are noisier: see docs/ci.md for a ``-n 0`` benchmark
step).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .venv import Venv

__all__ = ["CallLatencyError", "measure_call_latency"]

# Run inside the artifact's venv with ``python -c``. Parameters arrive as JSON on stdin,
# so no value is ever pasted into the code. Each example is warmed up first (imports,
# lazy weights, caches), then the examples are called round-robin so one slow example
# cannot dominate a stretch of samples; the loop stops at max_calls, or at max_seconds
# once min_calls are taken, so a slow workflow (an llm block, a sleep) stays bounded.
_MEASURE = """\
import importlib, json, sys, time
params = json.loads(sys.stdin.read())
pkg = importlib.import_module(params["package"])
inputs = params["inputs"]
if inputs is None:
    inputs = [e["input"] for e in pkg.examples()]
if not inputs:
    raise SystemExit("the package has no examples to call")
for value in inputs:
    for _ in range(params["warmup"]):
        pkg.run(value)
times = []
started = time.perf_counter()
while len(times) < params["max_calls"]:
    value = inputs[len(times) % len(inputs)]
    t = time.perf_counter()
    pkg.run(value)
    times.append(time.perf_counter() - t)
    if len(times) >= params["min_calls"] and time.perf_counter() - started > params["max_seconds"]:
        break
print(json.dumps({"times": times, "examples": len(inputs)}))
"""


class CallLatencyError(RuntimeError):
    """The measurement could not run: the package did not import or ``run`` raised."""


def _nearest_rank(ordered: list[float], q: float) -> float:
    # the same nearest-rank rule as the fastapi-service benchmark, so p95 means one thing
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def measure_call_latency(
    venv: Venv,
    package: str,
    inputs: list[Any] | None = None,
    *,
    warmup: int = 3,
    min_calls: int = 20,
    max_calls: int = 300,
    max_seconds: float = 5.0,
    timeout: float = 600,
) -> dict[str, float | int]:
    """Time ``package.run(value)`` inside ``venv``; return the benchmark figures.

    ``inputs`` defaults to the package's own ``examples()``. Returns
    ``{"call_p50_ms": float, "call_p95_ms": float, "calls": int}`` (milliseconds per
    call, nearest-rank percentiles over every timed call). Raises
    :class:`CallLatencyError` with the tail of the output when the measurement fails.
    """
    if min_calls < 1 or max_calls < min_calls:
        raise ValueError(f"need 1 <= min_calls <= max_calls, got min_calls={min_calls}, max_calls={max_calls}")
    params = {"package": package, "inputs": inputs, "warmup": warmup, "min_calls": min_calls,
              "max_calls": max_calls, "max_seconds": max_seconds}
    out = venv.python_run(_MEASURE, input=json.dumps(params), timeout=timeout)
    if not out.ok:
        raise CallLatencyError(f"measuring {package}.run in {venv.path} failed (exit {out.returncode}):\n{out.tail()}")
    try:
        times = sorted(json.loads(out.stdout.strip().splitlines()[-1])["times"])
    except (ValueError, KeyError, IndexError):
        raise CallLatencyError(f"measuring {package}.run printed no figures:\n{out.tail()}") from None
    if not times:
        raise CallLatencyError(f"measuring {package}.run timed no call:\n{out.tail()}")
    return {
        "call_p50_ms": round(_nearest_rank(times, 0.5) * 1000, 4),
        "call_p95_ms": round(_nearest_rank(times, 0.95) * 1000, 4),
        "calls": len(times),
    }
