"""What the controller decides when a verification run ends: gates, last known good, baseline.

The checks have run; this module only reads their result entries (and the LLM usage) and
applies :mod:`pytest_mulm.gates` to them:

- the benchmark gate compares the run's figures with the newest saved baseline,
- the budget gate holds the run's LLM spend against ``--mulm-budget``,
- the security gate fails on any failed security check (the security suite, and the
  fastapi-service API attacks: auth, rate limit, body limit, leaks), and on any value of
  the run's secrets found in an artifact, cassette or log once every item is done (the
  reports are redacted before they are written),
- per format, an export that passed every check and every gate becomes the format's last
  known good; otherwise the previous one stays, and the report says why and how to roll
  back to it,
- with ``--mulm-save-baseline``, a run where everything passed saves its figures as the
  new baseline (merged over the previous one, so a CI job that ran one format keeps the
  other formats' figures).

A partial run (``-k``, ``-m``, ``--deselect``, or selected node ids) never becomes a
last known good or a baseline: it did not run every check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .gates import (
    GateResult,
    LastKnownGood,
    benchmark_gate,
    budget_gate,
    is_security_check,
    load_baseline,
    save_baseline,
    security_gate,
)

if TYPE_CHECKING:
    import pytest

    from .plugin import MulmSettings

__all__ = ["RunVerdict", "decide", "final_leaks", "partial_run", "redact", "security_section"]


@dataclass
class RunVerdict:
    """Everything the report needs from the end of the run."""

    gates: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_known_good: dict[str, dict[str, Any]] = field(default_factory=dict)
    baseline: dict[str, Any] | None = None

    @property
    def gate_failed(self) -> bool:
        return any(g["outcome"] == "failed" for g in self.gates.values())


def partial_run(config: pytest.Config) -> str | None:
    """Why this run did not select every item (``-k``, ``-m``, ...), or None."""
    option = config.option
    if getattr(option, "keyword", ""):
        return f"-k {option.keyword!r} selected part of the checks"
    if getattr(option, "markexpr", ""):
        return f"-m {option.markexpr!r} selected part of the checks"
    if getattr(option, "deselect", None):
        return "--deselect left checks out"
    if getattr(option, "lf", False) or getattr(option, "last_failed", False):
        return "--lf ran only the last failures"
    if any("::" in str(arg) for arg in config.args):
        return "node ids on the command line selected part of the checks"
    return None


def _figures(results: list[dict[str, Any]], formats: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for entry in results:
        if entry["format"] in formats and entry.get("benchmark"):
            merged.setdefault(entry["format"], {}).update(entry["benchmark"])
    return merged


def security_section(results: list[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per format: the security suite's items (with what each scanner recorded) under
    ``checks`` and the fastapi-service API's security checks under ``api``."""
    section: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for entry in results:
        if not is_security_check(entry):
            continue
        place = section.setdefault(entry["format"], {"checks": [], "api": []})
        base = {"item": entry["check"], "nodeid": entry["nodeid"], "outcome": entry["outcome"],
                "message": entry["message"]}
        if entry["nodeid"].startswith("mulm/security::"):
            # the scanner's own record ("check": "bandit", findings, ...) when it got that far
            place["checks"].append({"check": entry["check"].removeprefix("test_"), **(entry.get("security") or {}), **base})
        else:
            place["api"].append({"check": entry["check"], **base})
    return section


def final_leaks(settings: MulmSettings, formats: dict[str, Any], run_dir: Path | None) -> list[str]:
    """The run's secret values found anywhere it wrote, once every item is done.

    The security suite's leak item runs while other items may still be writing (a
    service's log under xdist); this pass sees the final files. The reports are not
    written yet: :func:`redact` keeps the values out of them.
    """
    from .security.secrets_scan import find_leaks, secret_needles

    needles, _ = secret_needles()
    if not needles:
        return []
    places = {f"{fmt} artifact": Path(e["export_dir"]) for fmt, e in formats.items() if e.get("export_dir")}
    places["cassettes"] = Path(settings.cassette_dir)
    if run_dir is not None:
        places["logs"] = run_dir / "logs"
    leaks, _ = find_leaks(places, needles)
    return [leak.line_text() for leak in leaks]


def _with_leaks(gate: GateResult, leaks: list[str]) -> GateResult:
    if not leaks:
        return gate
    shown = "; ".join(leaks[:5]) + (f"; and {len(leaks) - 5} more" if len(leaks) > 5 else "")
    message = f"secret values written by this run: {shown}; rotate them"
    if gate.outcome == "failed":
        message = f"{gate.message}; {message}"
    details = [*gate.details, *({"check": "secret-values (end of run)", "outcome": "failed", "message": leak}
                                for leak in leaks)]
    return GateResult(gate.name, "failed", message, details)


def redact(report: Any) -> tuple[Any, list[str]]:
    """``report`` with every value of the run's secrets replaced by ``[redacted NAME]``,
    and the names that were found: a failure message that quotes a key must not put the
    key into the report files or the CI step summary."""
    from .security.secrets_scan import secret_needles

    needles, _ = secret_needles()
    found: set[str] = set()

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            for name, secret in needles.items():
                if secret in value:
                    found.add(name)
                    value = value.replace(secret, f"[redacted {name}]")
            return value
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return (clean(report) if needles else report), sorted(found)


def _lkg(settings: MulmSettings, results: list[dict[str, Any]], formats: dict[str, Any],
         gates_passed: bool, partial: str | None) -> dict[str, dict[str, Any]]:
    store = LastKnownGood(settings.out_dir)
    out: dict[str, dict[str, Any]] = {}
    for fmt in settings.formats:
        entry = formats.get(fmt) or {}
        export_dir, key = entry.get("export_dir"), entry.get("cache_key")
        if partial:
            kept = store.get(fmt)
            outcome = {"recorded": False, "entry": kept,
                       "reason": f"partial run ({partial})" + (f"; the last known good stays {kept['key']}" if kept
                                                               else "; there is no last known good yet")}
        elif not export_dir or not key:
            kept = store.get(fmt)
            outcome = {"recorded": False, "entry": kept, "reason": f"no {fmt} export was made in this run"}
        else:
            outcome = store.record(fmt, export_dir, key, settings.workflow, gates_passed, results=results)
        kept = outcome["entry"]
        out[fmt] = {
            "recorded": outcome["recorded"], "reason": outcome["reason"],
            "key": kept.get("key") if kept else None, "export_dir": kept.get("path") if kept else None,
            "created": kept.get("created") if kept else None,
            "rollback": store.rollback_commands(fmt, kept) if kept else [],
        }
    return out


def decide(settings: MulmSettings, results: list[dict[str, Any]], formats: dict[str, Any],
           llm: dict[str, Any] | None, run_dir: Path | None, partial: str | None) -> RunVerdict:
    """Apply the gates to a finished run; keep its exports as last known good when they earned it."""
    wf = settings.workflow
    workflow_id = wf.id if wf is not None else "workflow"
    current = _figures(results, settings.formats)
    gates: list[GateResult] = [
        benchmark_gate(settings.baseline_dir, workflow_id, current, settings.regression_percent),
        budget_gate(llm, settings.budget_usd, ledger_path=run_dir / "llm-ledger.jsonl" if run_dir else None),
        _with_leaks(security_gate(results), final_leaks(settings, formats, run_dir)),
    ]
    verdict = RunVerdict(gates={g.name: g.as_dict() for g in gates})
    failed_checks = sum(1 for r in results if r["outcome"] in ("failed", "error"))
    verdict.last_known_good = _lkg(settings, results, formats, not verdict.gate_failed, partial)
    if settings.save_baseline:
        verdict.baseline = _save(settings, workflow_id, current, verdict, failed_checks, partial)
    return verdict


def _save(settings: MulmSettings, workflow_id: str, current: dict[str, dict[str, Any]], verdict: RunVerdict,
          failed_checks: int, partial: str | None) -> dict[str, Any]:
    why_not = None
    if partial:
        why_not = f"partial run ({partial})"
    elif failed_checks:
        why_not = f"{failed_checks} check(s) failed"
    elif verdict.gate_failed:
        why_not = "a gate failed: " + ", ".join(n for n, g in verdict.gates.items() if g["outcome"] == "failed")
    elif not current:
        why_not = "the run recorded no benchmark figures"
    if why_not:
        return {"saved": None, "reason": f"baseline not saved: {why_not}"}
    previous = load_baseline(settings.baseline_dir, workflow_id)
    figures = {**(dict(previous.figures) if previous else {}), **current}
    wf = settings.workflow
    path = save_baseline(settings.baseline_dir, workflow_id, figures, workflow_name=wf.name if wf else None,
                         content_hash=wf.content_hash if wf else None)
    kept = sorted(set(figures) - set(current))
    return {"saved": str(path), "reason": f"saved {', '.join(sorted(current))}"
            + (f" (kept the previous figures of {', '.join(kept)})" if kept else "")}
