"""mulm-report.json, .md and .html, and the terminal summary: they only read results
and the run's verdict (design.md §8)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .atomic import write_atomic

if TYPE_CHECKING:
    import pytest

    from .plugin import MulmSettings
    from .session_end import RunVerdict

__all__ = ["REPORT_SCHEMA", "build_report", "result_entry", "summary_lines", "write_report"]

REPORT_SCHEMA = 1


def result_entry(report: pytest.TestReport, props: dict[str, Any]) -> dict[str, Any]:
    name = report.nodeid.split("::")[-1]
    check = name.split("[")[0]
    message = ""
    if report.failed or report.skipped:
        crash = getattr(report.longrepr, "reprcrash", None)
        if crash is not None:
            message = crash.message
        elif isinstance(report.longrepr, tuple):  # skips: (file, line, reason)
            message = str(report.longrepr[2])
        else:
            message = str(report.longrepr).strip().splitlines()[-1] if report.longrepr else ""
    outcome = report.outcome if report.when == "call" else ("error" if report.failed else report.outcome)
    return {
        "nodeid": report.nodeid,
        "format": props["mulm_format"],
        "check": check,
        "outcome": outcome,
        "duration": round(report.duration, 4),
        "message": _one_line(message),
        "export": props.get("mulm_export"),
        "benchmark": props.get("mulm_benchmark"),
        "attachments": props.get("mulm_attachments"),
        "security": props.get("mulm_security"),  # what a security scanner found (its own record)
    }


def _warnings(settings: MulmSettings, fmt: str) -> list[str]:
    from .plugins import get_registry

    if settings.workflow is None:
        return []
    return get_registry().exporter(fmt).warnings(settings.workflow)


def _merged_benchmarks(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    merged: dict[str, Any] = {}
    for r in results:
        merged.update(r.get("benchmark") or {})
    return merged or None


def _one_line(message: str, limit: int = 600) -> str:
    # the first lines carry the check's own explanation; pytest's assert rewriting follows
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    kept = [line for line in lines[:4] if not line.startswith("assert ")]
    return " | ".join(kept)[:limit]


def build_report(settings: MulmSettings, results: list[dict[str, Any]], exitstatus: int) -> dict[str, Any]:
    wf = settings.workflow
    formats: dict[str, Any] = {}
    for fmt in settings.formats:
        mine = [r for r in results if r["format"] == fmt]
        exports = [r["export"] for r in mine if r.get("export")]
        first = exports[0] if exports else {}
        formats[fmt] = {
            "warnings": _warnings(settings, fmt),
            "export_dir": first.get("path"),
            "content_hash": first.get("content_hash"),
            "cache_key": first.get("key"),
            "docs": first.get("docs"),  # who wrote the artifact's prose: "ai" or "template"
            # one entry per process that asked for the export: built once means one False
            "builds": sum(1 for e in exports if not e.get("from_cache")),
            "benchmark": _merged_benchmarks(mine),
            "from_cache": bool(exports) and all(e.get("from_cache") for e in exports),
            # files a check produced for people to look at (screenshots, verified cards)
            "attachments": {k: v for r in mine for k, v in (r.get("attachments") or {}).items()},
            "checks": [
                {k: r[k] for k in ("check", "nodeid", "outcome", "duration", "message")} for r in mine
            ],
        }
    passed = sum(1 for r in results if r["outcome"] == "passed")
    return {
        "schema": REPORT_SCHEMA,
        "plugin_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "workflow": {
            "path": str(settings.workflow_path), "id": wf.id if wf else None, "name": wf.name if wf else None,
            "content_hash": wf.content_hash if wf else None,
            "examples": len(wf.examples) if wf else 0,
            "examples_synthesized": wf.examples_synthesized if wf else False,
            "llm_blocks": [n.id for n in wf.nodes if n.kind == "llm"] if wf else [],
        },
        "formats": formats,
        "tests_passed": passed,
        "tests_failed": sum(1 for r in results if r["outcome"] in ("failed", "error")),
        "tests_skipped": sum(1 for r in results if r["outcome"] == "skipped"),
        "tests_total": len(results),
        "exit_status": exitstatus,
        "recommendations": [],
    }


USAGE_SUMS = ("calls", "paid_calls", "exact_hits", "similar_hits", "fallbacks", "retries", "tokens_in", "tokens_out")


def llm_usage(run_dir: Path, settings: MulmSettings) -> dict[str, Any] | None:
    """The LLM usage of every process of the run (each wrote one file), budget from the ledger."""
    files = sorted((run_dir / "llm-usage").glob("*.json")) if run_dir.is_dir() else []
    if not files:
        return None
    parts = [json.loads(f.read_text(encoding="utf-8")) for f in files]
    usage: dict[str, Any] = {"mode": settings.ai_mode, "model": parts[0].get("model"), "processes": len(parts)}
    for key in USAGE_SUMS:
        usage[key] = sum(int(p.get(key, 0)) for p in parts)
    usage["cost_usd"] = round(sum(float(p.get("cost_usd", 0)) for p in parts), 6)
    usage["budget_usd"] = settings.budget_usd
    ledger = run_dir / "llm-ledger.jsonl"
    if ledger.is_file():
        from .llm.ledger import Ledger

        totals = Ledger(ledger, settings.budget_usd).totals()
        usage["spent_usd"] = totals.spent_micro / 1e6
        usage["remaining_usd"] = totals.remaining_micro / 1e6
    else:
        usage["spent_usd"], usage["remaining_usd"] = 0.0, settings.budget_usd
    per_call = usage["cost_usd"] / usage["paid_calls"] if usage["paid_calls"] else 0
    usage["projected_exports_left"] = int(usage["remaining_usd"] // usage["cost_usd"]) if usage["cost_usd"] else None
    usage["cost_per_paid_call_usd"] = round(per_call, 6)
    usage["events"] = sorted({e for p in parts for e in p.get("events", [])})
    return usage


def write_report(settings: MulmSettings, report: dict[str, Any], results: list[dict[str, Any]], exitstatus: int,
                 llm: dict[str, Any] | None = None, verdict: RunVerdict | None = None) -> dict[str, Any]:
    """Complete ``report`` (:func:`build_report`'s) with the run's verdict and write
    mulm-report.json, mulm-report.md (and the CI step summary) and mulm-report.html."""
    from .plugins import get_plugin_manager
    from .report_html import write_html
    from .report_md import write_markdown
    from .session_end import redact, security_section
    from .verify import recommendations

    report["exit_status"] = exitstatus  # after the gates: they can fail a run whose items passed
    report["llm"] = llm
    report["security"] = security_section(results)
    if verdict is not None:
        report["gates"] = verdict.gates
        report["last_known_good"] = verdict.last_known_good
        report["baseline"] = verdict.baseline
    sections = []
    for contributed in get_plugin_manager().hook.report_sections(report=report):
        sections.extend(contributed or [])
    report["sections"] = sections
    report, leaked = redact(report)
    if leaked:  # a check's message quoted a secret: the gate fails, the files never hold it
        gate = report.setdefault("gates", {}).setdefault("security", {"name": "security", "details": []})
        gate["outcome"] = "failed"
        gate["message"] = (f"{gate.get('message', '')}; " if gate.get("message") else "") + (
            f"the value of {', '.join(leaked)} appeared in this run's results (redacted in the reports); rotate it")
        report["exit_status"] = report["exit_status"] or 1
    report["recommendations"] = recommendations(report)
    write_atomic(settings.out_dir / "mulm-report.json", json.dumps(report, indent=2, sort_keys=True) + "\n")
    write_markdown(report, settings.out_dir)
    write_html(report, settings.out_dir)
    return report


def summary_lines(results: list[dict[str, Any]], settings: MulmSettings, llm: dict[str, Any] | None = None,
                  verdict: RunVerdict | None = None) -> list[str]:
    checks = list(dict.fromkeys(r["check"] for r in results))
    symbol = {"passed": "ok", "failed": "FAIL", "error": "ERROR", "skipped": "skip"}
    width = max([len(c) for c in checks] + [5])
    lines = [f"{'check':<{width}}  " + "  ".join(f"{f:<16}" for f in settings.formats)]
    for check in checks:
        cells = []
        for fmt in settings.formats:
            outs = [r["outcome"] for r in results if r["check"] == check and r["format"] == fmt]
            worst = next((o for o in ("error", "failed", "skipped", "passed") if o in outs), None)
            cell = "-" if worst is None else symbol[worst] + (f" x{len(outs)}" if len(outs) > 1 else "")
            cells.append(f"{cell:<16}")
        lines.append(f"{check:<{width}}  " + "  ".join(cells))
    for fmt in settings.formats:
        exports = [r["export"] for r in results if r["format"] == fmt and r.get("export")]
        if exports:
            built = sum(1 for e in exports if not e.get("from_cache"))
            lines.append(f"{fmt}: {exports[0]['path']} (built {built}x, reused {len(exports) - built}x)")
    for fmt in settings.formats:
        bench = _merged_benchmarks([r for r in results if r["format"] == fmt])
        if bench:
            lines.append(f"{fmt} benchmark: " + ", ".join(f"{k}={v}" for k, v in bench.items()))
        for warning in _warnings(settings, fmt):
            lines.append(f"WARNING {fmt}: {warning}")
    if llm:
        lines.append(
            f"LLM ({llm['mode']}): {llm['calls']} call(s), {llm['exact_hits']} exact and {llm['similar_hits']} similar "
            f"cache hit(s), {llm['paid_calls']} paid, {llm['fallbacks']} template fallback(s); "
            f"{llm['tokens_in']} tokens in, {llm['tokens_out']} out; ${llm['cost_usd']:.6f} spent of ${llm['budget_usd']:.2f}, "
            f"${llm['remaining_usd']:.6f} left")
        lines.extend(f"LLM: {e}" for e in llm["events"])
    if settings.workflow is not None and settings.workflow.examples_synthesized:
        lines.append("the workflow has no examples; one was synthesized from the input type")
    if verdict is not None:
        lines.extend(_verdict_lines(verdict))
    out = settings.out_dir
    lines.append(f"report: {out / 'mulm-report.json'} (also .md and .html)")
    return lines


def _verdict_lines(verdict: RunVerdict) -> list[str]:
    from .report_md import GATE_EXPLANATIONS

    lines = []
    for name, gate in verdict.gates.items():
        mark = {"passed": "ok", "failed": "FAILED", "skipped": "skipped"}.get(gate["outcome"], gate["outcome"])
        lines.append(f"gate {name}: {mark}: {gate['message']}")
        if gate["outcome"] == "failed":
            lines.append(f"  ({name} gate: {GATE_EXPLANATIONS.get(name, '')}; it makes the exit code non-zero)")
    for fmt, lkg in verdict.last_known_good.items():
        if lkg["recorded"]:
            lines.append(f"last known good {fmt}: {lkg['key']} ({lkg['reason']})")
        else:
            lines.append(f"last known good {fmt}: not updated: {lkg['reason']}")
            if lkg["key"]:
                lines.append(f"  roll back: {'; '.join(c for c in lkg['rollback'] if not c.startswith('#'))}")
    if verdict.baseline:
        lines.append(f"benchmark baseline: {verdict.baseline['saved'] or ''} {verdict.baseline['reason']}".replace("  ", " "))
    return lines
