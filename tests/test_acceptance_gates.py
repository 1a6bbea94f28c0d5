"""End to end through pytest: the benchmark gate and the last known good (issue 7's "done when").

A workflow whose one Python block sleeps 50 ms per call is verified and its figures saved
as the baseline; the same workflow (same id) sleeping 65 ms, 30 % slower, must then fail
the benchmark gate, turn the exit code non-zero although every item passed, and leave the
last known good on the first export. Without a baseline the gate is a skip with its reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def sleepy(path: Path, seconds: float) -> Path:
    source = f"import time\n\n\ndef wait(x):\n    time.sleep({seconds!r})\n    return x\n"
    path.write_text(json.dumps({
        "id": "sleepy", "name": "Sleepy", "version": "1.0.0",
        "nodes": [
            {"id": "in", "type": "aiBlock", "data": {"label": "In", "type": "input",
                                                     "config": {"inputType": "number", "examples": [1, 2]}}},
            {"id": "wait", "type": "aiBlock", "data": {"label": "Wait", "type": "preprocessing", "sourceCode": source}},
            {"id": "out", "type": "aiBlock", "data": {"label": "Out", "type": "output", "config": {}}},
        ],
        "edges": [{"id": "e1", "source": "in", "target": "wait"}, {"id": "e2", "source": "wait", "target": "out"}],
    }))
    return path


def run(pytester: pytest.Pytester, workflow: Path, *extra: str) -> tuple[pytest.RunResult, dict]:
    result = pytester.runpytest_subprocess(f"--mulm-workflow={workflow}", "--mulm-format=python-package",
                                           "-p", "no:cacheprovider", *extra)
    return result, json.loads((pytester.path / "mulm-out" / "mulm-report.json").read_text())


def test_30_percent_slowdown_fails_the_benchmark_gate_and_keeps_the_last_known_good(pytester: pytest.Pytester) -> None:
    fast, slow = sleepy(pytester.path / "fast.json", 0.050), sleepy(pytester.path / "slow.json", 0.065)

    result, report = run(pytester, fast)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    gate = report["gates"]["benchmark"]
    assert gate["outcome"] == "skipped"
    assert gate["message"].startswith("no baseline yet for workflow 'sleepy' on machine ")
    assert "run with --mulm-save-baseline to save one" in gate["message"]
    result.stdout.fnmatch_lines(["gate benchmark: skipped: no baseline yet for workflow 'sleepy'*"])
    first_key = report["formats"]["python-package"]["cache_key"]
    assert report["last_known_good"]["python-package"]["key"] == first_key

    result, report = run(pytester, fast, "--mulm-save-baseline")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    saved = report["baseline"]["saved"]
    assert saved and Path(saved).is_file() and Path(saved).parent.parent == pytester.path / ".benchmarks"

    result, report = run(pytester, slow)
    assert report["tests_failed"] == 0 and report["tests_passed"] > 0  # every item passed ...
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # ... and the gate failed the run
    gate = report["gates"]["benchmark"]
    assert gate["outcome"] == "failed", gate
    p50 = next(row for row in gate["details"] if row["figure"] == "call_p50_ms")
    assert p50["outcome"] == "failed" and 25 < p50["change_percent"] < 40, p50
    result.stdout.fnmatch_lines(["gate benchmark: FAILED: *python-package call_p50_ms * -> * (+*"])
    lkg = report["last_known_good"]["python-package"]
    assert report["formats"]["python-package"]["cache_key"] != first_key
    assert lkg["recorded"] is False and lkg["key"] == first_key and "a gate failed" in lkg["reason"]
    assert any("pip install --force-reinstall" in c for c in lkg["rollback"])
    assert any("call_p50_ms is" in r and "slower than the baseline" in r for r in report["recommendations"])
    markdown = (pytester.path / "mulm-out" / "mulm-report.md").read_text()
    assert "❌ failed" in markdown and "### Last known good" in markdown
    assert "call_p50_ms" in (pytester.path / "mulm-out" / "mulm-report.html").read_text()
