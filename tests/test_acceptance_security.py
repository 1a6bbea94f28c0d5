"""End to end: the security suite on a workflow with unsafe block code and a vulnerable pin,
and on the same workflow without them (issue 7's "done when")."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_mulm import export_workflow, load_workflow, verify_deployment

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent
WORKFLOWS = ROOT / "workflows" / "security"
ADVISORIES = ROOT / "data" / "advisories"
SECRET = "jwt-secret-for-the-acceptance-run-0123"  # configured, so the leak check runs (and must pass)
SECURITY = ("test_bandit", "test_secrets", "test_no_secret_values_leak", "test_dependency_audit_offline",
            "test_dependency_audit_online", "test_safety", "test_lint")
# the only security items allowed to skip, and the reason each must give
ALLOWED_SKIPS = {
    "test_dependency_audit_online": "pip-audit not run: PyPI's JSON API",  # unreachable here (pitfalls.md)
    "test_safety": "safety is off",
}


def _line_of(source: str, needle: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), start=1) if needle in line)


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, name: str) -> tuple[int, dict[str, tuple[str, str]]]:
    """Run the suites on one workflow; ``{check: (outcome, message and text)}`` from junit XML."""
    monkeypatch.setenv("MULM_JWT_SECRET", SECRET)
    result = pytester.runpytest_subprocess(
        f"--mulm-workflow={WORKFLOWS / name}", "--mulm-format=python-package", f"--mulm-advisories={ADVISORIES}",
        "--mulm-advisories-max-age=100000", "-p", "no:cacheprovider", "-rs", "--junitxml=out.xml",
    )
    outcomes: dict[str, tuple[str, str]] = {}
    for case in ET.parse(pytester.path / "out.xml").getroot().iter("testcase"):
        name_ = case.get("name", "")
        assert name_.endswith("[python-package]"), name_
        outcome, text = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome, text = tag, f"{node.get('message', '')}\n{node.text or ''}"
        outcomes[name_.split("[")[0]] = (outcome, text)
    assert SECRET not in result.stdout.str()
    return result.ret, outcomes


def _check_allowed_skips(outcomes: dict[str, tuple[str, str]]) -> None:
    for check, (outcome, text) in outcomes.items():
        if outcome == "skipped":
            assert check in ALLOWED_SKIPS and ALLOWED_SKIPS[check] in text, (check, text)


def test_unsafe_workflow_fails_exactly_the_security_items_that_should_fail(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = load_workflow(WORKFLOWS / "unsafe.json").node("parse").source
    ret, outcomes = _run(pytester, monkeypatch, "unsafe.json")
    assert set(SECURITY) <= set(outcomes)
    online, online_text = outcomes.pop("test_dependency_audit_online")
    # where PyPI's JSON API answers, pip-audit runs and must fail on the same pin
    assert (online == "skipped" and ALLOWED_SKIPS["test_dependency_audit_online"] in online_text) or (
        online == "failure" and "PYSEC-2024-60" in online_text), online_text
    failed = sorted(c for c, (o, _) in outcomes.items() if o in ("failure", "error"))
    assert failed == ["test_bandit", "test_dependency_audit_offline"], outcomes
    _check_allowed_skips(outcomes)
    assert ret == pytest.ExitCode.TESTS_FAILED

    bandit = outcomes["test_bandit"][1]
    assert f"B602 subprocess_popen_with_shell_equals_true (HIGH severity, HIGH confidence) at node 'parse' " \
           f"(Parse Config), line {_line_of(source, 'shell=True')} of its sourceCode" in bandit
    assert f"B506 yaml_load (MEDIUM severity, HIGH confidence) at node 'parse' (Parse Config), " \
           f"line {_line_of(source, 'yaml.load(')} of its sourceCode" in bandit
    assert "blocks/b_parse.py:" in bandit

    audit = outcomes["test_dependency_audit_offline"][1]
    assert "idna==3.6: PYSEC-2024-60 (CVE-2024-3651) fixed in 3.7; raise idna to 3.7 or later" in audit
    assert "snapshot of 2024-07-11" in audit
    assert "PyYAML" not in audit  # checked against PYSEC-2021-142 and clean

    # the report, its gate and the Python API say the same
    report = json.loads((pytester.path / "mulm-out" / "mulm-report.json").read_text())
    assert report["gates"]["security"]["outcome"] == "failed"
    bandit = next(c for c in report["security"]["python-package"]["checks"] if c["check"] == "bandit")
    assert {(f["rule"], f["node"]) for f in bandit["findings"]} == {("B602", "parse"), ("B506", "parse")}
    export = export_workflow(load_workflow(WORKFLOWS / "unsafe.json"), "python-package", out_dir=pytester.path / "mulm-out")
    verification = verify_deployment(export)
    assert not verification.passed and verification.tests_total == len(outcomes) + 1
    assert "raise idna to 3.7 or later: PYSEC-2024-60 (CVE-2024-3651)" in verification.recommendations
    b602 = f"node 'parse' (Parse Config), line {_line_of(source, 'shell=True')} of its sourceCode: B602 "
    assert any(r.startswith(b602) for r in verification.recommendations), verification


def test_clean_workflow_passes_every_security_item(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    ret, outcomes = _run(pytester, monkeypatch, "clean.json")
    assert set(SECURITY) <= set(outcomes)
    failed = {c: t for c, (o, t) in outcomes.items() if o in ("failure", "error")}
    assert not failed, failed
    _check_allowed_skips(outcomes)
    assert outcomes["test_no_secret_values_leak"][0] == "passed"
    assert ret == pytest.ExitCode.OK
    report = json.loads((pytester.path / "mulm-out" / "mulm-report.json").read_text())
    assert report["gates"]["security"]["outcome"] == "passed"
    export = export_workflow(load_workflow(WORKFLOWS / "clean.json"), "python-package", out_dir=pytester.path / "mulm-out")
    assert verify_deployment(export).passed
