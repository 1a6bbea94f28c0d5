"""The controller's end of a run: gates applied, last known good kept, baseline saved (session_end)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_mulm.gates import load_baseline, save_baseline
from pytest_mulm.plugin import MulmSettings
from pytest_mulm.session_end import decide, partial_run, security_section


def settings(tmp_path: Path, **extra) -> MulmSettings:
    workflow = SimpleNamespace(id="wf", name="WF", version="1.0.0", content_hash="h" * 16)
    return MulmSettings(workflow_path=tmp_path / "wf.json", formats=("python-package",), out_dir=tmp_path / "out",
                        templates_dir=None, workflow=workflow, baseline_dir=tmp_path / ".benchmarks", **extra)


def export(tmp_path: Path, key: str) -> dict:
    folder = tmp_path / "out" / "python-package" / key
    folder.mkdir(parents=True)
    (folder / "mulm-manifest.json").write_text(json.dumps({"key": key}))
    return {"python-package": {"export_dir": str(folder), "cache_key": key}}


def entry(check: str, outcome: str, *, module: str = "python_package", fmt: str = "python-package", **extra) -> dict:
    return {"nodeid": f"mulm/{module}::{check}[{fmt}]", "format": fmt, "check": check, "outcome": outcome,
            "message": extra.pop("message", ""), **extra}


def test_security_section_keeps_scanner_records_and_api_checks() -> None:
    record = {"check": "bandit", "findings": [{"rule": "B602", "node": "parse"}]}
    results = [
        entry("test_bandit", "failed", module="security", security=record, message="bandit: 1 finding"),
        entry("test_safety", "skipped", module="security", message="safety is off"),
        entry("test_rate_limit_429_with_retry_after", "passed", module="fastapi_service", fmt="fastapi-service"),
        entry("test_parity", "passed"),
    ]
    section = security_section(results)
    bandit, safety = section["python-package"]["checks"]
    assert bandit["check"] == "bandit" and bandit["findings"] == record["findings"] and bandit["outcome"] == "failed"
    assert safety == {"check": "safety", "item": "test_safety", "nodeid": "mulm/security::test_safety[python-package]",
                      "outcome": "skipped", "message": "safety is off"}
    assert section["python-package"]["api"] == []
    assert [c["check"] for c in section["fastapi-service"]["api"]] == ["test_rate_limit_429_with_retry_after"]


@pytest.mark.parametrize("option, args, expected", [
    ({}, [], None),
    ({"keyword": "parity"}, [], "-k 'parity' selected part of the checks"),
    ({"markexpr": "not slow"}, [], "-m 'not slow' selected part of the checks"),
    ({"deselect": ["x"]}, [], "--deselect left checks out"),
    ({"lf": True}, [], "--lf ran only the last failures"),
    ({}, ["mulm/python_package::test_parity[python-package]"], "node ids on the command line selected part of the checks"),
])
def test_partial_runs_are_recognised(option: dict, args: list, expected: str | None) -> None:
    defaults = {"keyword": "", "markexpr": "", "deselect": None, "lf": False}
    config = SimpleNamespace(option=SimpleNamespace(**{**defaults, **option}), args=args)
    assert partial_run(config) == expected


def test_passing_run_becomes_last_known_good_and_a_failing_one_leaves_it(tmp_path: Path) -> None:
    s = settings(tmp_path)
    good = decide(s, [entry("test_parity", "passed")], export(tmp_path, "k1"), None, None, None)
    assert not good.gate_failed
    lkg = good.last_known_good["python-package"]
    assert lkg["recorded"] and lkg["key"] == "k1" and Path(lkg["export_dir"]) == s.out_dir / "last-known-good" / "python-package"
    assert lkg["rollback"][-1].startswith("pip install --force-reinstall ")

    failing = [entry("test_parity", "passed"), entry("test_bandit", "failed", module="security", message="B602")]
    bad = decide(s, failing, export(tmp_path, "k2"), None, None, None)
    assert bad.gates["security"]["outcome"] == "failed" and bad.gate_failed
    lkg = bad.last_known_good["python-package"]
    assert lkg["recorded"] is False and lkg["key"] == "k1"
    assert lkg["reason"] == "a gate failed; the last known good stays k1"
    assert json.loads((s.out_dir / "last-known-good" / "python-package" / "lkg.json").read_text())["key"] == "k1"


def test_partial_run_neither_records_nor_saves(tmp_path: Path) -> None:
    s = settings(tmp_path, save_baseline=True)
    results = [entry("test_benchmark_call", "passed", benchmark={"call_p50_ms": 1.0})]
    verdict = decide(s, results, export(tmp_path, "k1"), None, None, "-k 'bench' selected part of the checks")
    assert verdict.last_known_good["python-package"]["recorded"] is False
    assert verdict.last_known_good["python-package"]["reason"].startswith("partial run (-k 'bench'")
    assert verdict.baseline == {"saved": None, "reason": "baseline not saved: partial run (-k 'bench' selected part of the checks)"}
    assert load_baseline(s.baseline_dir, "wf") is None


def test_saved_baseline_keeps_other_formats_figures(tmp_path: Path) -> None:
    s = settings(tmp_path, save_baseline=True)
    save_baseline(s.baseline_dir, "wf", {"fastapi-service": {"p50_ms": 3.0}, "python-package": {"call_p50_ms": 9.0}})
    results = [entry("test_benchmark_call", "passed", benchmark={"call_p50_ms": 1.0})]
    verdict = decide(s, results, export(tmp_path, "k1"), None, None, None)
    # compared with the older baseline first: 9 ms -> 1 ms is an improvement
    assert verdict.gates["benchmark"]["outcome"] == "passed"
    assert verdict.baseline["reason"] == "saved python-package (kept the previous figures of fastapi-service)"
    assert load_baseline(s.baseline_dir, "wf").figures == {"fastapi-service": {"p50_ms": 3.0},
                                                           "python-package": {"call_p50_ms": 1.0}}


def test_failed_check_saves_no_baseline(tmp_path: Path) -> None:
    s = settings(tmp_path, save_baseline=True)
    results = [entry("test_benchmark_call", "passed", benchmark={"call_p50_ms": 1.0}), entry("test_parity", "failed")]
    verdict = decide(s, results, export(tmp_path, "k1"), None, None, None)
    assert verdict.baseline == {"saved": None, "reason": "baseline not saved: 1 check(s) failed"}
    assert load_baseline(s.baseline_dir, "wf") is None


SECRET = "jwt-secret-for-the-redaction-test-42"


def test_redact_replaces_every_secret_value_and_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_mulm.session_end import redact

    monkeypatch.setenv("MULM_JWT_SECRET", SECRET)
    monkeypatch.setenv("MULM_API_KEYS", "short,api-key-number-two-xyz")
    report = {"formats": {"f": {"checks": [{"message": f"token {SECRET} rejected"}]}},
              "list": ["api-key-number-two-xyz", 3], SECRET: None}
    cleaned, found = redact(report)
    assert found == ["MULM_API_KEYS[1]", "MULM_JWT_SECRET"]
    assert cleaned == {"formats": {"f": {"checks": [{"message": "token [redacted MULM_JWT_SECRET] rejected"}]}},
                       "list": ["[redacted MULM_API_KEYS[1]]", 3], "[redacted MULM_JWT_SECRET]": None}


def test_secret_value_found_at_the_end_of_the_run_fails_the_security_gate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULM_JWT_SECRET", SECRET)
    s = settings(tmp_path)
    formats = export(tmp_path, "k1")
    logs = tmp_path / "run" / "logs"
    logs.mkdir(parents=True)
    (logs / "service.log").write_text(f"started\nsecret is {SECRET}\n")
    verdict = decide(s, [entry("test_bandit", "passed", module="security")], formats, None, tmp_path / "run", None)
    gate = verdict.gates["security"]
    assert gate["outcome"] == "failed"
    assert gate["message"] == ("secret values written by this run: logs: service.log, line 2: the value of "
                               f"MULM_JWT_SECRET ({len(SECRET)} characters, masked); rotate them")
    assert SECRET not in json.dumps(verdict.gates)
    assert verdict.last_known_good["python-package"]["recorded"] is False


def test_a_result_quoting_a_secret_is_redacted_and_fails_the_run(pytester: pytest.Pytester,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULM_JWT_SECRET", SECRET)
    (pytester.path / "wf.json").write_text(json.dumps({
        "id": "tiny", "name": "Tiny", "version": "1.0.0",
        "nodes": [{"id": "in", "type": "aiBlock", "data": {"label": "In", "type": "input",
                                                           "config": {"inputType": "number", "examples": [1]}}},
                  {"id": "out", "type": "aiBlock", "data": {"label": "Out", "type": "output", "config": {}}}],
        "edges": [{"id": "e", "source": "in", "target": "out"}]}))
    # a passing check that puts the secret where the report shows it
    pytester.makepyfile(test_leaky="""
        import os

        def test_leaky(request, mulm_format):
            request.node.user_properties.append(("mulm_attachments", {"note": os.environ["MULM_JWT_SECRET"]}))
    """)
    result = pytester.runpytest_subprocess("--mulm-workflow=wf.json", "--mulm-format=python-package", "-k", "leaky",
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, deselected=16)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = pytester.path / "mulm-out"
    for name in ("mulm-report.json", "mulm-report.md", "mulm-report.html"):
        text = (out / name).read_text()
        assert SECRET not in text and "redacted MULM_JWT_SECRET" in text, name
    report = json.loads((out / "mulm-report.json").read_text())
    assert report["gates"]["security"]["outcome"] == "failed" and report["exit_status"] == 1
    assert "the value of MULM_JWT_SECRET appeared in this run's results" in report["gates"]["security"]["message"]
    result.stdout.fnmatch_lines(["gate security: FAILED: *the value of MULM_JWT_SECRET appeared*"])
