"""End to end: `pytest --mulm-workflow=<wf> --mulm-format=fastapi-service`, real servers on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent
EXAMPLES = ROOT.parent / "examples"
AUTH_CHECKS = {
    "test_auth_rejects_missing_credentials", "test_auth_rejects_wrong_key", "test_jwt_accepts_valid_token",
    "test_jwt_rejects_expired", "test_jwt_rejects_bad_signature", "test_jwt_rejects_wrong_audience",
    "test_jwt_scope_policy",
}


@pytest.fixture(autouse=True)
def _not_an_xdist_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    # The inner pytest runs are their own sessions; when this suite itself runs under
    # xdist, the worker's variables would make pytest-benchmark disable itself there.
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)


def run_suite(pytester: pytest.Pytester, workflow: Path, security) -> dict:
    result = pytester.runpytest_subprocess(
        f"--mulm-workflow={workflow}", "--mulm-format=fastapi-service", "-p", "no:cacheprovider", "-rs", *security.args,
    )
    report = json.loads((pytester.path / "mulm-out" / "mulm-report.json").read_text())
    security.check(report, "fastapi-service")
    # the API's auth, rate-limit and leak checks are part of the security summary
    api = {c["check"] for c in report["security"]["fastapi-service"]["api"]}
    assert {"test_rate_limit_429_with_retry_after", "test_no_traceback_or_path_in_errors"} <= api
    report["formats"]["fastapi-service"]["checks"] = [
        c for c in report["formats"]["fastapi-service"]["checks"] if not security.is_security(c)]
    report["_result"] = result
    return report


WORKFLOWS = [EXAMPLES / f"{name}.json" for name in ("iris-mlp", "moe-router", "sentiment-pipeline")]
WORKFLOWS += sorted((ROOT / "workflows" / "own").glob("*.json"))


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.stem)
def test_service_verifies_with_auth(pytester: pytest.Pytester, workflow: Path, mulm_security) -> None:
    report = run_suite(pytester, workflow, mulm_security)
    fmt = report["formats"]["fastapi-service"]
    outcomes = {c["check"]: c["outcome"] for c in fmt["checks"]}
    not_passed = {k: v for k, v in outcomes.items() if v != "passed"}
    messages = {c["check"]: c["message"] for c in fmt["checks"] if c["outcome"] != "passed"}
    assert not not_passed, messages
    assert AUTH_CHECKS <= set(outcomes)
    assert {"test_schemathesis", "test_benchmark_latency", "test_rate_limit_429_with_retry_after",
            "test_dockerfile_hadolint", "test_kubernetes_manifests"} <= set(outcomes)
    bench = fmt["benchmark"]
    assert bench["p50_ms"] > 0 and bench["throughput_rps"] > 0 and bench["bare_p50_ms"] > 0
    assert fmt["warnings"] == []
    assert report["_result"].ret == pytest.ExitCode.OK


def test_service_without_auth_passes_the_rest_and_is_flagged(pytester: pytest.Pytester, mulm_security) -> None:
    report = run_suite(pytester, ROOT / "workflows" / "service" / "open-text-stats.json", mulm_security)
    fmt = report["formats"]["fastapi-service"]
    outcomes = {c["check"]: c for c in fmt["checks"]}
    for name, check in outcomes.items():
        if name in AUTH_CHECKS:
            assert check["outcome"] == "skipped", check
            assert "authentication is disabled by the workflow" in check["message"]
        else:
            assert check["outcome"] == "passed", check
    assert any("authentication is DISABLED" in w for w in fmt["warnings"])
    report["_result"].stdout.fnmatch_lines(["WARNING fastapi-service: authentication is DISABLED*"])
    readme = (Path(fmt["export_dir"]) / "README.md").read_text()
    assert "Warning: authentication is disabled" in readme
