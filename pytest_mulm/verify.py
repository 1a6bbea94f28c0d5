"""Was this export verified? Reading ``mulm-report.json`` after a run (design.md §8).

``verify_deployment(export_result)`` answers a deploy script's question, "may I ship
this artifact?", from the report the pytest run left next to the exports, and
``recommendations(report)`` turns what the run found into concrete next steps (the same
list fills the report's ``recommendations`` key)::

    result = export_workflow(workflow, "fastapi-service", out_dir)
    # ... pytest --mulm-workflow=wf.json --mulm-format=fastapi-service --mulm-out=out_dir
    verification = verify_deployment(result)
    if not verification.passed:
        raise SystemExit("\\n".join(verification.failures + verification.recommendations))
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MulmError

# the report readers are shared with the Markdown and HTML views, so all three agree
from .report_md import (
    _dict,
    _list,
    advisory,
    comparisons,
    findings,
    lower_is_better,
    security_outcome,
    usd,
)

if TYPE_CHECKING:
    from .exporting import ExportResult

__all__ = ["Verification", "recommendations", "verify_deployment"]

REPORT_NAME = "mulm-report.json"


@dataclass(frozen=True)
class Verification:
    """The verdict on one export, read from a report.

    ``passed`` is true only when the report covers this very export (same cache key),
    at least one check ran and none failed, and no benchmark comparison or security
    check of the format failed. ``failures`` holds one ``check: message`` line each.
    """

    format: str
    passed: bool
    tests_passed: int
    tests_total: int
    failures: list[str] = field(default_factory=list)
    recommendations: list[str] = field(default_factory=list)
    report_path: Path | None = None


def _number(value: Any) -> str:
    """A percentage or amount without noise: 42.0 -> '42', 12.345 -> '12.3'."""
    try:
        return f"{float(value):.1f}".removesuffix(".0")
    except (TypeError, ValueError):
        return str(value)


def _version_key(version: str) -> tuple[Any, ...]:
    """Order release numbers; PEP 440 through ``packaging`` (pytest's own dependency)."""
    try:
        from packaging.version import Version

        return (0, Version(version))
    except Exception:  # not PEP 440: compare the digit groups
        return (1, tuple(int(p) for p in re.findall(r"\d+", version)))


def _lowest_fix(version: str, fixed: list[str]) -> str | None:
    """The lowest fixed release above the installed one (advisories list one per branch)."""
    if not fixed:
        return None
    try:
        above = [v for v in fixed if not version or _version_key(v) > _version_key(version)]
        return min(above or fixed, key=_version_key)
    except TypeError:  # a PEP 440 version against a digit tuple: keep the advisory's order
        return fixed[0]


def _advisory(finding: dict[str, Any]) -> str | None:
    dependency = advisory(finding)
    if dependency is None:
        return None
    package, version, ids, fixed = dependency
    # the brief's shape lists one advisory's ids: the first names it, the rest are aliases
    named = ", ".join(ids) if "advisories" in finding else ids[0] + (f" ({', '.join(ids[1:])})" if len(ids) > 1 else "")
    fix = _lowest_fix(version, fixed)
    if fix:
        return f"raise {package} to {fix} or later: {named}"
    return f"replace or remove {package} {version}: no release fixes {named}".replace("  ", " ")


def _code_finding(fmt: str, check: str, finding: dict[str, Any]) -> str:
    line = finding.get("line")
    text = " ".join(str(p) for p in (finding.get("rule"), finding.get("message") or finding.get("text")) if p)
    if finding.get("requirement") and finding.get("reason"):
        return f"{fmt}: {finding['requirement']} could not be audited: {finding['reason']}"
    if not any(finding.get(k) for k in ("file", "line", "node")):  # an auditor's plain line
        return f"{fmt}: {check}: {finding.get('message') or finding.get('text') or 'a finding without details'}"
    if "secret" in check.lower() or finding.get("kind") == "secret":
        return f"remove the secret from {finding.get('file', '?')}:{line if line is not None else '?'}"
    at = f" line {line}" if line not in (None, "") else ""
    if finding.get("where"):  # the scanner already said where: block and line of its sourceCode
        where = str(finding["where"]) if finding.get("node") else f"{fmt}: {finding['where']}"
    elif finding.get("node"):  # in a block's own code: the workflow's author fixes it there
        where = f"node {finding['node']!r}{at}"
    else:
        where = f"{fmt}: {finding.get('file', '?')}{at}"
    return f"{where}: {text} — fix or accept in the security baseline with a reason"


def _wanted(fmt: Any, only: str | None) -> bool:
    return only is None or fmt == only


def _security(report: dict[str, Any], only: str | None) -> list[str]:
    recs = []
    for fmt, entry in _dict(report.get("security")).items():
        if not _wanted(fmt, only):
            continue
        entry = _dict(entry)
        for check in _list(entry.get("checks")):
            check = _dict(check)
            name = str(check.get("check", "security"))
            found = findings(check)
            for finding in found:
                recs.append(_advisory(finding) or _code_finding(fmt, name, finding))
            outcome = security_outcome(check)
            if outcome in ("failed", "error") and not found:
                detail = check.get("message") or "; ".join(map(str, _list(check.get("errors")))) or "see the log"
                recs.append(f"{fmt}: security check {name} {outcome}: {detail}")
        for check in _list(entry.get("api")):
            check = _dict(check)
            if check.get("outcome") in ("failed", "error"):
                message = check.get("message") or "see the log"
                recs.append(f"{fmt}: API check {check.get('check', '?')} failed: {message}")
    return recs


def _skip_hint(check: dict[str, Any]) -> list[str]:
    """What to give or install so a skipped check runs next time."""
    if check.get("outcome") != "skipped":
        return []
    message = str(check.get("message") or "")
    lowered = message.lower()
    if "no advisory snapshot" in lowered or "advisory database" in lowered:
        return ["give --mulm-advisories=PATH to audit dependencies offline"]
    install = re.search(r"pip install '[^']+'", message)
    if install:
        return [f"{install.group(0)} so {check.get('check', 'the check')} runs instead of being skipped"]
    if "chromium is not installed" in lowered:
        return ["install Chromium (Debian: apt-get install chromium) so the screenshot check runs"]
    return []


def _skip_hints(report: dict[str, Any], only: str | None) -> list[str]:
    checks = [c for fmt, e in _dict(report.get("formats")).items() if _wanted(fmt, only)
              for c in _list(_dict(e).get("checks"))]
    checks += [c for fmt, e in _dict(report.get("security")).items() if _wanted(fmt, only)
               for c in _list(_dict(e).get("checks"))]
    return [hint for c in checks for hint in _skip_hint(_dict(c))]


def _gates(report: dict[str, Any], only: str | None) -> list[str]:
    gates = _dict(report.get("gates"))
    recs = []
    for c in comparisons(gates.get("benchmark")):
        if c.get("outcome") != "failed" or not _wanted(c.get("format"), only):
            continue
        figure = str(c.get("figure", "?"))
        # throughput gets worse by going down; latency by going up, sizes by growing
        if not lower_is_better(c):
            worse = "lower"
        elif re.search(r"(_ms|_s|_seconds|latency)$", figure):
            worse = "slower"
        else:
            worse = "larger"
        try:
            change = _number(abs(float(c.get("change_percent"))))
        except (TypeError, ValueError):
            change = "?"
        recs.append(f"{c.get('format', '?')} {figure} is {change}% {worse} than the baseline "
                    f"(threshold {_number(c.get('threshold_percent'))}%)")
    budget = _dict(gates.get("budget"))
    # GateResult keeps the amounts in its first detail row
    budget = {**next((d for d in _list(budget.get("details")) if isinstance(d, dict)), {}), **budget}
    llm = _dict(report.get("llm"))
    spent = budget.get("spent_usd", llm.get("spent_usd"))
    total = budget.get("budget_usd", llm.get("budget_usd"))
    # a spent budget stops every paid call, whichever format asked
    exhausted = bool(llm) and bool(total) and (llm.get("remaining_usd") or 0) <= 0
    if budget.get("outcome") == "failed" or exhausted:
        recs.append(f"raise --mulm-budget (spent {usd(spent)} of {usd(total)})")
    return recs


def _failed_checks(report: dict[str, Any], only: str | None) -> list[str]:
    recs = []
    for fmt, entry in _dict(report.get("formats")).items():
        if not _wanted(fmt, only):
            continue
        for check in _list(_dict(entry).get("checks")):
            check = _dict(check)
            outcome = check.get("outcome")
            if str(check.get("nodeid", "")).startswith("mulm/security::") and _dict(report.get("security")):
                continue  # the security section's findings say precisely what to do
            if outcome in ("failed", "error"):
                verb = "failed" if outcome == "failed" else "errored"
                message = f": {check['message']}" if check.get("message") else ""
                recs.append(f"{fmt}: {check.get('check', '?')} {verb}{message}")
    return recs


def _auth(report: dict[str, Any], only: str | None) -> list[str]:
    recs = []
    for fmt, entry in _dict(report.get("formats")).items():
        for warning in _list(_dict(entry).get("warnings")):
            text = str(warning).lower()
            if _wanted(fmt, only) and "authentication" in text and "disabled" in text:
                recs.append(f"{fmt}: enable auth (deploymentConfig.authentication.type is 'none')")
    return recs


def _recommend(report: dict[str, Any], only: str | None = None) -> list[str]:
    recs = [*_failed_checks(report, only), *_gates(report, only), *_auth(report, only),
            *_security(report, only), *_skip_hints(report, only)]
    if _dict(report.get("workflow")).get("examples_synthesized"):
        recs.append("add examples to the workflow's input node: this run used one synthesized from the input type")
    return list(dict.fromkeys(recs))


def recommendations(report: dict[str, Any]) -> list[str]:
    """Concrete next steps from a report, most urgent first, each stated once.

    Failed checks, then gates (benchmark regressions, budget), then security (disabled
    auth, vulnerable dependencies, code findings, secrets, API hardening), then what
    would let skipped checks run.
    """
    return _recommend(report)


def _load(report: dict[str, Any] | str | Path | None, export_result: ExportResult) -> tuple[dict[str, Any], Path | None]:
    fmt = export_result.format
    hint = f"run pytest --mulm-workflow=... --mulm-format={fmt} first"
    if isinstance(report, dict):
        return report, None
    if report is None:
        # exports live at <out>/<format>/<key>/, the report at <out>/mulm-report.json
        path = Path(export_result.path).parent.parent / REPORT_NAME
    else:
        path = Path(report)
        if path.is_dir():
            path = path / REPORT_NAME
    if not path.is_file():
        raise MulmError(f"no verification report at {path}: {hint}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MulmError(f"the verification report {path} cannot be read ({exc}): {hint}") from exc
    if not isinstance(data, dict):
        raise MulmError(f"the verification report {path} is not a JSON object: {hint}")
    return data, path


def verify_deployment(export_result: ExportResult, *,
                      report: dict[str, Any] | str | Path | None = None) -> Verification:
    """The verification of one export, from ``report`` or the report next to the export.

    Raises :class:`MulmError` when there is no report, or the report does not cover the
    export's format: the export has then not been verified at all.
    """
    data, path = _load(report, export_result)
    fmt = export_result.format
    entry = _dict(data.get("formats")).get(fmt)
    if not isinstance(entry, dict):
        where = path or "the given report"
        raise MulmError(f"{where} has no {fmt} results (formats: {', '.join(_dict(data.get('formats'))) or 'none'}): "
                        f"run pytest --mulm-workflow=... --mulm-format={fmt} first")
    checks = [_dict(c) for c in _list(entry.get("checks"))]
    failures = [f"{c.get('check', '?')}: {c.get('message') or c.get('outcome')}"
                for c in checks if c.get("outcome") in ("failed", "error")]
    reported_key = entry.get("cache_key")
    if reported_key and export_result.key and reported_key != export_result.key:
        # the report verified another build of this format: this artifact is unverified
        failures.insert(0, f"report: it verified {fmt} export {reported_key}, not {export_result.key}; "
                           f"run pytest --mulm-format={fmt} on this export")
    for c in comparisons(_dict(data.get("gates")).get("benchmark")):
        if c.get("format") == fmt and c.get("outcome") == "failed":
            failures.append(f"benchmark gate: {c.get('figure')} changed {_number(c.get('change_percent'))}% "
                            f"(threshold {_number(c.get('threshold_percent'))}%)")
    security = _dict(_dict(data.get("security")).get(fmt))
    for c in _list(security.get("checks")) + _list(security.get("api")):
        c = _dict(c)
        if security_outcome(c) in ("failed", "error"):
            count = len(findings(c))
            failures.append(f"security {c.get('check', '?')}: {c.get('message') or f'{count} finding(s)'}")
    passed_count = sum(1 for c in checks if c.get("outcome") == "passed")
    return Verification(
        format=fmt, passed=bool(checks) and not failures, tests_passed=passed_count, tests_total=len(checks),
        failures=failures, recommendations=_recommend(data, fmt), report_path=path,
    )
