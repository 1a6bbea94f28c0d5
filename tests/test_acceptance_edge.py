"""End to end: `pytest --mulm-workflow=<wf> --mulm-format=edge-deployment`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("tensorflow", reason="needs pytest-mulm[edge] (TensorFlow converts the TFLite models)")

ROOT = Path(__file__).resolve().parent
WORKFLOWS = [ROOT.parent / "examples" / f"{n}.json" for n in ("iris-mlp", "moe-router", "sentiment-pipeline")]
WORKFLOWS += [ROOT / "workflows" / "own" / f"{n}.json" for n in ("top1-moe", "sensor-fusion")]
WORKFLOWS += [ROOT / "workflows" / "edge" / "wide-mlp.json"]  # weights dominate: the int8 size gate applies


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.stem)
def test_edge_bundle_verifies(pytester: pytest.Pytester, workflow: Path, mulm_security) -> None:
    result = pytester.runpytest_subprocess(
        f"--mulm-workflow={workflow}", "--mulm-format=edge-deployment", "-p", "no:cacheprovider", "-rs",
        *mulm_security.args,
    )
    report = json.loads((pytester.path / "mulm-out" / "mulm-report.json").read_text())
    fmt = report["formats"]["edge-deployment"]
    failed = {c["nodeid"]: c["message"] for c in fmt["checks"]
              if c["outcome"] != "passed" and not mulm_security.is_security(c)}
    assert not failed, failed
    mulm_security.check(report, "edge-deployment")
    assert report["tests_total"] == 17 + mulm_security.items
    bench = fmt["benchmark"]
    for backend in ("onnxruntime", "litert"):
        assert bench[f"{backend}_int8"]["agreement"] >= 0.98
        for errors in bench[f"{backend}_parity"].values():
            assert errors["max_abs"] < 1e-3
    if workflow.stem == "wide-mlp":
        for backend in ("onnxruntime", "litert"):
            assert bench[f"{backend}_int8"]["weights_dominate"] is True
            assert bench[f"{backend}_int8"]["size_ratio"] <= 0.35
    assert result.ret == pytest.ExitCode.OK
