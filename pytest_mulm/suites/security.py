"""Security suite, run for every selected format (issue 7; design.md §10).

Registered for ``"*"`` by :mod:`pytest_mulm.security`, so it sets no ``MULM_FORMAT`` and
each item runs once per format: ``test_bandit[python-package]`` and so on.

- ``test_bandit``: bandit on all generated code and all block code; fails at MEDIUM
  severity and confidence or above unless the baseline accepts the finding with a reason.
- ``test_secrets``: detect-secrets over every artifact file (not only git-tracked ones).
- ``test_no_secret_values_leak``: the run's secret values appear in no artifact file,
  cassette, service log or report.
- ``test_dependency_audit_offline``: the artifact's pinned requirements against an OSV
  snapshot (``--mulm-advisories``); fails on known advisories, on pins it cannot check and
  on a snapshot older than ``--mulm-advisories-max-age`` days.
- ``test_dependency_audit_online``: pip-audit ``--strict`` when PyPI's JSON API answers.
- ``test_safety``: safety, only with ``--mulm-safety=on``.
- ``test_lint``: ruff; generated code must be lint-clean, block code gets warnings.

Every item records a machine-readable summary in its ``user_properties`` under
``mulm_security``; failures are one readable block naming block or file, line, rule and
advisory ids. Tools that are not installed skip the item with the reason (never pass).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")
SECRET_HINT = "OPENAI_API_KEY, MULM_API_KEYS, MULM_JWT_SECRET (and the variables named in MULM_SECRET_ENV)"


class BlockLintWarning(UserWarning):
    """A lint finding in a workflow block's own code (reported, not failed)."""


def _record(request: pytest.FixtureRequest, summary: dict[str, Any]) -> None:
    request.node.user_properties.append(("mulm_security", summary))


def _run(tool: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a scanner: a missing tool skips the item, any other MulmError fails it."""
    from pytest_mulm.errors import MulmError
    from pytest_mulm.security import ToolMissing

    try:
        return tool(*args, **kwargs)
    except ToolMissing as exc:
        pytest.skip(str(exc))
    except MulmError as exc:
        pytest.fail(str(exc), pytrace=False)


def _fail(title: str, lines: list[str], hint: str = "") -> None:
    text = title + "\n" + "\n".join(f"  {line}" for line in lines)
    pytest.fail(text + (f"\n{hint}" if hint else ""), pytrace=False)


def artifact_requirements(export: Any) -> list[str]:
    """The artifact's pinned runtime requirements: the manifest's list plus every
    ``requirements*.txt`` of the export (normally the same lines), in order, once each."""
    found = [str(r) for r in export.manifest.get("dependencies") or []]
    for path in sorted(export.path.rglob("requirements*.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            text = line.split(" #", 1)[0].strip()
            if text and not text.startswith(("#", "-")):
                found.append(text)
    return list(dict.fromkeys(found))


@pytest.fixture
def security_baseline(mulm_settings: Any) -> Any:
    """The accepted findings of ``--mulm-security-baseline`` (empty without one)."""
    from pytest_mulm.security.baseline import BaselineError, load_baseline

    try:
        return load_baseline(mulm_settings.security_baseline)
    except BaselineError as exc:
        pytest.fail(str(exc), pytrace=False)


def test_bandit(request, mulm_export, mulm_workflow, mulm_format, security_baseline):
    from pytest_mulm.security.bandit_scan import FAIL_AT, run_bandit

    report = _run(run_bandit, mulm_export.path, mulm_workflow, security_baseline)
    _record(request, {**report.summary(), "format": mulm_format})
    problems = [f.line_text() for f in report.failing] + [f"could not be scanned: {e}" for e in report.errors]
    if problems:
        _fail(f"bandit: {len(report.failing)} finding(s) at {FAIL_AT} severity and confidence or above in the "
              f"{mulm_format} artifact ({mulm_export.path}):", problems,
              "Fix the code, or accept a finding with a written reason in --mulm-security-baseline.")


def test_secrets(request, mulm_export, mulm_workflow, mulm_format, security_baseline):
    from pytest_mulm.security.secrets_scan import known_digests, scan_secrets

    digests = known_digests(mulm_export.path, [mulm_export.key, mulm_workflow.content_hash])
    report = _run(scan_secrets, mulm_export.path, digests=digests, baseline=security_baseline)
    _record(request, {**report.summary(), "format": mulm_format})
    if report.failing:
        _fail(f"detect-secrets: {len(report.failing)} possible secret(s) in the {mulm_format} artifact "
              f"({mulm_export.path}); values are not shown:", [f.line_text() for f in report.failing],
              "Remove the secret (and rotate it), or accept a false positive with a reason in --mulm-security-baseline.")


def test_no_secret_values_leak(request, mulm_export, mulm_settings, mulm_run_dir, mulm_format):
    from pytest_mulm.security.secrets_scan import find_leaks, secret_needles

    needles, notes = secret_needles()
    places = {"artifact": mulm_export.path, "cassettes": Path(mulm_settings.cassette_dir), "logs": mulm_run_dir / "logs"}
    for name in ("mulm-report.json", "mulm-report.md", "mulm-report.html"):
        places[name] = Path(mulm_settings.out_dir) / name
    if not needles:
        _record(request, {"check": "secret-values", "format": mulm_format, "secrets": [], "notes": notes})
        pytest.skip(f"no secret value to look for: {SECRET_HINT} are unset" + (f" ({'; '.join(notes)})" if notes else ""))
    leaks, searched = find_leaks(places, needles)
    _record(request, {
        "check": "secret-values", "format": mulm_format, "secrets": sorted(needles), "notes": notes,
        "places": {k: str(v) for k, v in places.items()}, "files_searched": searched,
        "findings": [{"file": leak.file, "line": leak.line, "secret": leak.secret} for leak in leaks],
    })
    if leaks:
        _fail(f"secret values found in {len({leak.file for leak in leaks})} file(s) of the {mulm_format} run:",
              [leak.line_text() for leak in leaks], "Rotate these secrets; they must never be written anywhere.")


def test_dependency_audit_offline(request, mulm_export, mulm_settings, mulm_format):
    from pytest_mulm.security.advisories import load_advisories, snapshot_date

    if mulm_settings.advisories is None:
        pytest.skip("no advisory snapshot: give --mulm-advisories=PATH (a folder or zip of OSV records, "
                    "e.g. OSV's PyPI export) for the offline dependency audit")
    db = _run(load_advisories, mulm_settings.advisories)
    requirements = artifact_requirements(mulm_export)
    report = db.audit(requirements)
    date = snapshot_date(db)
    age = (datetime.now(UTC) - date).total_seconds() / 86400 if date else None
    limit = mulm_settings.advisories_max_age_days
    _record(request, {
        "check": "dependency-audit-offline", "format": mulm_format, "snapshot": str(mulm_settings.advisories),
        "snapshot_date": date.isoformat() if date else None, "snapshot_date_is": "the newest 'modified' among its records",
        "snapshot_age_days": round(age, 1) if age is not None else None, "max_age_days": limit,
        "records": db.records, "withdrawn_skipped": db.withdrawn, "load_seconds": round(db.load_seconds, 3),
        **report.as_dict(),
        "recommendations": [f"raise {f.name} to {f.fix} or later: {', '.join(a['id'] for a in f.advisories)}"
                            for f in report.vulnerable if f.fix],
    })
    problems = []
    if date is None:
        problems.append("the snapshot's records carry no 'modified' date, so its age is unknown")
    elif age is not None and age > limit:
        problems.append(f"the advisory snapshot is {age:.0f} days old (newest record modified {date:%Y-%m-%d}); "
                        f"the limit is {limit:g} days (--mulm-advisories-max-age): fetch a current one")
    problems += [f.line() for f in report.vulnerable] + [u.line() for u in report.unchecked]
    if problems:
        dated = f"snapshot of {date:%Y-%m-%d}" if date else "undated snapshot"
        _fail(f"offline dependency audit of the {mulm_format} artifact's {len(requirements)} pinned requirement(s) "
              f"against {mulm_settings.advisories} ({dated}, {db.records} records):", problems)


def test_dependency_audit_online(request, mulm_export, mulm_settings, mulm_format):
    from pytest_mulm.security.audit_online import probe_pypi, run_pip_audit

    mode = mulm_settings.pip_audit
    if mode == "off":
        pytest.skip("pip-audit is off (--mulm-pip-audit=off)")
    requirements = artifact_requirements(mulm_export)
    if not requirements:
        _record(request, {"check": "pip-audit", "format": mulm_format, "checked": 0, "findings": []})
        return  # nothing pinned, nothing that could be vulnerable
    if mode == "auto":
        reason = probe_pypi(requirements)
        if reason is not None:
            _record(request, {"check": "pip-audit", "format": mulm_format, "skipped": reason})
            pytest.skip(f"pip-audit not run: {reason}; pip-audit could check none of the pins there (and without "
                        "--strict would still say 'No known vulnerabilities found'). The offline audit "
                        "(--mulm-advisories) covers them; --mulm-pip-audit=on makes this a failure")
        audit = _run(run_pip_audit, requirements)
    else:
        from pytest_mulm.security import ToolMissing

        try:
            audit = run_pip_audit(requirements)
        except ToolMissing as exc:
            pytest.fail(f"{exc} (--mulm-pip-audit=on)", pytrace=False)
    _record(request, {**audit.summary(), "format": mulm_format})
    if not audit.ok:
        _fail(f"pip-audit --strict on the {mulm_format} artifact's {len(requirements)} pinned requirement(s):",
              audit.vulnerable + audit.unchecked + audit.errors)


def test_safety(request, mulm_export, mulm_settings, mulm_format):
    from pytest_mulm.security import ToolMissing
    from pytest_mulm.security.audit_online import run_safety

    if not mulm_settings.safety:
        pytest.skip("safety is off (--mulm-safety=on runs it; it needs its online service)")
    requirements = artifact_requirements(mulm_export)
    try:
        audit = run_safety(requirements)
    except ToolMissing as exc:  # asked for explicitly: not running it is a failure
        pytest.fail(str(exc), pytrace=False)
    _record(request, {**audit.summary(), "format": mulm_format})
    if not audit.ok:
        _fail(f"safety on the {mulm_format} artifact's {len(requirements)} pinned requirement(s):",
              audit.vulnerable + audit.unchecked + audit.errors)


def test_lint(request, mulm_export, mulm_workflow, mulm_format):
    from pytest_mulm.security.lint import run_ruff

    report = _run(run_ruff, mulm_export.path, mulm_workflow)
    _record(request, {**report.summary(), "format": mulm_format})
    for finding in report.warnings:
        warnings.warn(BlockLintWarning(f"{mulm_format}: {finding.line_text()}"), stacklevel=1)
    if report.failing:
        _fail(f"ruff: {len(report.failing)} finding(s) in code pytest-mulm generated for the {mulm_format} artifact "
              f"({mulm_export.path}):", [f.line_text() for f in report.failing])
