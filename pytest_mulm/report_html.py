"""mulm-report.html: one self-contained page for people (design.md §8).

The page must open from a CI artifact on a machine with no network, and a hostile
workflow must not be able to script it. So: inline CSS, charts drawn here as inline SVG,
screenshots embedded as ``data:`` URIs, no JavaScript, a Content-Security-Policy that
forbids every fetch, and every report string escaped (Jinja autoescape in a sandbox for
the page, :func:`markupsafe.escape` for the SVG built in Python).
"""

from __future__ import annotations

import base64
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, Template
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape

# the report's tolerant readers (_dict, _list, _num) are shared with the Markdown view
from .atomic import write_atomic
from .report_md import (
    GATE_EXPLANATIONS,
    _dict,
    _list,
    _num,
    check_matrix,
    comparisons,
    describe_finding,
    failed_checks,
    findings,
    formats,
    latency_figures,
    llm_line,
    lower_is_better,
    security_outcome,
    usd,
    verdict,
)

__all__ = ["MAX_EMBED_BYTES", "budget_chart", "comparison_chart", "latency_chart", "render_html", "write_html"]

MAX_EMBED_BYTES = 2 * 1024 * 1024  # larger screenshots are linked, so the page stays light
IMAGE_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}

GREEN, RED, AMBER, GREY, BLUE = "#1a7f37", "#cf222e", "#9a6700", "#8c959f", "#0969da"
PALETTE = ("#0969da", "#8250df", "#bf3989", "#1a7f37", "#bc4c00", "#0a7ea4")
CELL = {"passed": ("ok", "c-passed"), "failed": ("FAIL", "c-failed"), "error": ("ERROR", "c-error"),
        "skipped": ("skip", "c-skipped")}
CHART_WIDTH = 560


def _e(value: Any) -> str:
    """Escaped text for the SVG strings built here (the template escapes on its own)."""
    return str(escape(str(value)))


def _fmt(value: float) -> str:
    """A figure for a chart label: two decimals, three significant digits below one."""
    return f"{value:,.2f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"


def _svg(height: float, body: list[str], label: str) -> Markup:
    # no xmlns: inline SVG in HTML needs none, and the page carries no URL at all
    return Markup(
        f'<svg class="chart" viewBox="0 0 {CHART_WIDTH} {height:.0f}" role="img" '
        f'aria-label="{_e(label)}">' + "".join(body) + "</svg>")


def _text(x: float, y: float, text: str, *, size: int = 12, anchor: str = "start", weight: str = "normal",
          fill: str = "#24292f") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}">{_e(text)}</text>')


def _rect(x: float, y: float, w: float, h: float, fill: str, tip: str = "") -> str:
    title = f"<title>{_e(tip)}</title>" if tip else ""
    return f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0.0):.1f}" height="{h:.1f}" rx="2" fill="{fill}">{title}</rect>'


def _empty(message: str, label: str, detail: str = "") -> Markup:
    body = [f'<rect x="0.5" y="0.5" width="{CHART_WIDTH - 1}" height="109" rx="6" fill="#f6f8fa" stroke="#d0d7de"/>',
            _text(CHART_WIDTH / 2, 52, message, size=15, anchor="middle", fill="#57606a")]
    if detail:
        body.append(_text(CHART_WIDTH / 2, 76, detail[:90], size=11, anchor="middle", fill="#57606a"))
    return _svg(110, body, label)


def latency_chart(figures: list[tuple[str, str, float]]) -> Markup:
    """Horizontal bars: one per (format, median-like figure), coloured by format."""
    label = "median latency per format (ms)"
    if not figures:
        return _empty("no latency figures in this run", label, "benchmarks report *_p50_ms / *_median_ms figures")
    top = max(v for _, _, v in figures) or 1.0
    colours = {fmt: PALETTE[i % len(PALETTE)] for i, fmt in enumerate(dict.fromkeys(f for f, _, _ in figures))}
    span, row = CHART_WIDTH - 90, 38
    body = []
    for i, (fmt, key, value) in enumerate(figures):
        y = 8 + i * row
        body.append(_text(0, y + 11, f"{fmt} · {key}"[:80]))
        width = span * max(value, 0) / top
        body.append(_rect(0, y + 16, width, 14, colours[fmt], f"{fmt} {key} = {value} ms"))
        body.append(_text(width + 6, y + 27, f"{_fmt(value)} ms", size=11, fill="#57606a"))
    return _svg(12 + len(figures) * row, body, label)


def comparison_chart(gate: dict[str, Any]) -> Markup:
    """Baseline (grey) against current (green/red) per figure, with the threshold as a dashed tick.

    Each figure gets its own scale: milliseconds and requests per second share no axis,
    and what matters is the change against the baseline, not the size of the figure.
    """
    label = "benchmark against the baseline"
    rows = []
    for c in comparisons(gate):
        base, current = _num(c.get("baseline")), _num(c.get("current"))
        # "not compared" figures (no direction, such as a call count) stay in the tables only
        if base is not None and current is not None and c.get("outcome") in ("passed", "failed"):
            rows.append((c, base, current, _num(c.get("threshold_percent"))))
    if not rows:
        return _empty("no baseline yet", label, str(gate.get("message") or "the next run is compared with this one"))
    span, row = CHART_WIDTH - 80, 54
    body = [_rect(0, 4, 10, 10, GREY), _text(14, 13, "baseline", size=11),
            _rect(80, 4, 10, 10, GREEN), _text(94, 13, "current", size=11),
            f'<line x1="160" y1="2" x2="160" y2="16" stroke="{RED}" stroke-width="2" stroke-dasharray="3 2"/>',
            _text(166, 13, "threshold", size=11)]
    for i, (c, base, current, threshold) in enumerate(rows):
        y = 26 + i * row
        figure = str(c.get("figure", "?"))
        sign = 1 if lower_is_better(c) else -1  # throughput regresses downwards
        limit = None if threshold is None else base * (1 + sign * threshold / 100)
        top = max(base, current, limit or 0.0) or 1.0
        change = _num(c.get("change_percent"))
        note = "" if change is None else f" ({change:+.1f}%" + (
            "" if threshold is None else f", limit {'-' if sign < 0 else '+'}{threshold:g}%") + ")"
        body.append(_text(0, y + 11, f"{c.get('format', '?')} · {figure}"[:70] + note))
        colour = RED if c.get("outcome") == "failed" else GREEN
        for offset, value, fill, what in ((16, base, GREY, "baseline"), (30, current, colour, "current")):
            body.append(_rect(0, y + offset, span * max(value, 0) / top, 11, fill, f"{what} {value}"))
            body.append(_text(span + 12, y + offset + 10, _fmt(value), size=11, fill="#57606a"))
        if limit is not None:
            x = span * max(limit, 0) / top
            body.append(f'<line x1="{x:.1f}" y1="{y + 13}" x2="{x:.1f}" y2="{y + 44}" stroke="{RED}" '
                        f'stroke-width="2" stroke-dasharray="3 2"><title>{_e(f"threshold {_fmt(limit)}")}</title></line>')
    return _svg(30 + len(rows) * row, body, label)


def budget_chart(llm: dict[str, Any] | None) -> Markup:
    """A donut of the budget (spent against remaining) and a stacked bar of how calls were answered."""
    label = "LLM budget and cache use"
    if not llm:
        return _empty("no LLM calls in this run", label)
    budget = _num(llm.get("budget_usd")) or 0.0
    spent = next((v for v in (_num(llm.get("spent_usd")), _num(llm.get("cost_usd"))) if v is not None), 0.0)
    cx, cy, r = 78.0, 86.0, 52.0
    circumference = 2 * math.pi * r
    share = min(spent / budget, 1.0) if budget > 0 else 0.0
    arc = RED if budget > 0 and spent >= budget else AMBER if share > 0.8 else BLUE
    body = [_text(0, 14, "spent of the budget", size=12, weight="bold"),
            f'<circle cx="{cx}" cy="{cy}" r="{r}" fill="none" stroke="#d0d7de" stroke-width="18"/>']
    if share > 0:
        body.append(f'<circle cx="{cx}" cy="{cy}" r="{r}" fill="none" stroke="{arc}" stroke-width="18" '
                    f'stroke-dasharray="{circumference * share:.2f} {circumference:.2f}" '
                    f'transform="rotate(-90 {cx} {cy})"><title>{_e(f"spent {usd(spent)}")}</title></circle>')
    centre = f"{share * 100:.0f}%" if budget > 0 else "no budget"
    body += [_text(cx, cy + 2, centre, size=16, anchor="middle", weight="bold"),
             _text(cx, cy + 18, "spent", size=10, anchor="middle", fill="#57606a"),
             _text(0, 162, f"{usd(spent)} spent of {usd(budget)}", size=11),
             _text(0, 178, f"{usd(llm.get('remaining_usd'))} remaining", size=11, fill="#57606a")]
    parts = [("exact cache hits", llm.get("exact_hits"), GREEN), ("similar cache hits", llm.get("similar_hits"), "#0a7ea4"),
             ("paid calls", llm.get("paid_calls"), AMBER), ("template fallbacks", llm.get("fallbacks"), GREY)]
    counts = [(name, int(_num(n) or 0), colour) for name, n, colour in parts]
    total = sum(n for _, n, _ in counts)
    x0, width = 190.0, CHART_WIDTH - 200.0
    body.append(_text(x0, 14, f"{total} call(s), how they were answered", size=12, weight="bold"))
    x = x0
    for name, n, colour in counts:
        if total and n:
            w = width * n / total
            body.append(_rect(x, 34, w, 22, colour, f"{name}: {n}"))
            x += w
    if not total:
        body.append(_rect(x0, 34, width, 22, "#eaeef2", "no calls"))
    for i, (name, n, colour) in enumerate(counts):
        y = 82 + i * 22
        body += [_rect(x0, y - 10, 12, 12, colour), _text(x0 + 18, y, f"{name}: {n}", size=12)]
    return _svg(186, body, label)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _file_uri(path: Any) -> str:
    """A file: link to a local path; never another scheme, whatever the string holds."""
    try:
        return Path(str(path)).absolute().as_uri()
    except ValueError:
        return ""


def _attachment(fmt: str, name: str, path: Any) -> dict[str, str]:
    item = {"format": fmt, "name": name, "path": str(path), "href": _file_uri(path), "src": ""}
    file = Path(str(path))
    try:
        if file.is_file() and file.stat().st_size < MAX_EMBED_BYTES:
            data = file.read_bytes()
            mime = next((m for sig, m in IMAGE_SIGNATURES.items() if data.startswith(sig)), None)
            if mime:
                item["src"] = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    except (OSError, ValueError):  # unreadable or an impossible path: keep the link
        pass
    return item


def _matrix_cell(cell: tuple[str, int] | None, message: str) -> dict[str, str]:
    """Text, CSS class and hover text of one check-table cell (None: the format has no such check)."""
    if cell is None:
        return {"text": "–", "cls": "c-none", "title": ""}
    outcome, count = cell
    text, cls = CELL.get(outcome, (outcome, "c-none"))
    return {"text": text + (f" ×{count}" if count > 1 else ""), "cls": cls, "title": message}


def _view(report: dict[str, Any]) -> dict[str, Any]:
    """Everything the template shows, computed here so the template only lays it out."""
    wf = _dict(report.get("workflow"))
    rows, fmts, cells = check_matrix(report)
    # the hover text of a cell: the message of its (last) item, e.g. why it failed or skipped
    messages = {(str(_dict(c).get("check")), fmt): str(_dict(c).get("message") or "")
                for fmt, e in formats(report).items() for c in _list(e.get("checks"))}
    matrix = [{"check": check, "cells": [_matrix_cell(cells.get((check, f)), messages.get((check, f), ""))
                                         for f in fmts]} for check in rows]
    gates = _dict(report.get("gates"))
    security = []
    for fmt, entry in _dict(report.get("security")).items():
        for c in _list(_dict(entry).get("checks")) + _list(_dict(entry).get("api")):
            c = _dict(c)
            outcome = security_outcome(c)
            security.append({
                "format": fmt, "check": _clip(str(c.get("check", "?")), 40), "outcome": outcome,
                "cls": CELL.get(outcome, ("", "c-none"))[1], "message": str(c.get("message") or c.get("skipped") or ""),
                "findings": [describe_finding(f) for f in findings(c)[:50]],
                "more": max(len(findings(c)) - 50, 0),
                "accepted": [describe_finding(_dict(f)) for f in _list(c.get("accepted"))[:50]],
            })
    llm = _dict(report.get("llm")) or None
    meta = [f"workflow {wf['id']}" if wf.get("id") else "", str(wf.get("path") or ""),
            f"hash {str(wf['content_hash'])[:12]}" if wf.get("content_hash") else "",
            f"{wf['examples']} example(s)" if wf.get("examples") is not None else "",
            f"pytest-mulm {report['plugin_version']}" if report.get("plugin_version") else "",
            str(report.get("created") or "")]
    counts = {"passed": report.get("tests_passed", 0), "total": report.get("tests_total", 0),
              "failed": report.get("tests_failed", 0), "skipped": report.get("tests_skipped", 0),
              "exit": report.get("exit_status", "?"), "version": report.get("plugin_version", "?"),
              "schema": report.get("schema", "?")}
    usage = llm or {}
    tiles = [(usage.get("calls", 0), f"calls ({usage.get('mode', '?')})"),
             (f"{usage.get('exact_hits', 0)} / {usage.get('similar_hits', 0)}", "exact / similar hits"),
             (usage.get("paid_calls", 0), "paid calls"), (usage.get("fallbacks", 0), "template fallbacks"),
             (f"{usage.get('tokens_in', 0)} / {usage.get('tokens_out', 0)}", "tokens in / out"),
             (usd(usage.get("spent_usd", usage.get("cost_usd"))), f"spent of {usd(usage.get('budget_usd'))}")]
    return {
        "ok": verdict(report),
        "name": _clip(str(wf.get("name") or wf.get("id") or "workflow"), 200),
        "meta": [m for m in meta if m], "counts": counts,
        "llm_tiles": tiles, "llm_events": [str(e) for e in _list(usage.get("events"))],
        "formats": fmts, "matrix": matrix,
        "failed": [{"format": f, "check": str(c.get("check", "?")), "outcome": str(c.get("outcome")),
                    "message": str(c.get("message") or "(no message)")} for f, c in failed_checks(report)],
        "charts": [("Latency per format", latency_chart(latency_figures(report))),
                   ("Benchmark against the baseline", comparison_chart(_dict(gates.get("benchmark")))),
                   ("LLM budget", budget_chart(llm))],
        "gates": [{"name": str(n), "outcome": str(_dict(g).get("outcome", "?")),
                   "cls": CELL.get(str(_dict(g).get("outcome")), ("", "c-none"))[1],
                   "message": str(_dict(g).get("message") or ""), "why": GATE_EXPLANATIONS.get(str(n), "")}
                  for n, g in gates.items()],
        "security": security,
        "recommendations": [str(r) for r in _list(report.get("recommendations"))],
        "llm": llm, "llm_line": llm_line(llm) if llm else "",
        "exports": [{"format": f, "dir": str(e.get("export_dir") or ""), "href": _file_uri(e["export_dir"])
                     if e.get("export_dir") else "", "key": str(e.get("cache_key") or "–"),
                     "build": "reused from cache" if e.get("from_cache") else f"built {e.get('builds', 0)}x",
                     "docs": str(_dict(e.get("docs")).get("origin") or "–"),
                     "warnings": [str(w) for w in _list(e.get("warnings"))]}
                    for f, e in formats(report).items()],
        "benchmarks": [(f, str(k), v) for f, e in formats(report).items() for k, v in _dict(e.get("benchmark")).items()],
        "lkg": [{"format": str(f), "key": str(_dict(e).get("key") or "–"), "dir": str(_dict(e).get("export_dir") or "–"),
                 "created": str(_dict(e).get("created") or "date unknown"),
                 "rollback": [str(c) for c in _list(_dict(e).get("rollback"))],
                 "has": bool(_dict(e).get("key")), "recorded": bool(_dict(e).get("recorded")),
                 "reason": str(_dict(e).get("reason") or "")}
                for f, e in _dict(report.get("last_known_good")).items()],
        "attachments": [_attachment(f, str(n), p) for f, e in formats(report).items()
                        for n, p in _dict(e.get("attachments")).items()],
        "sections": [{"title": str(_dict(s).get("title") or "plugin section"),
                      "lines": [str(x) for x in _list(_dict(s).get("lines"))]} for s in _list(report.get("sections"))],
    }


@lru_cache(maxsize=1)
def _template() -> Template:
    # autoescape on: every {{ }} is HTML-escaped unless it is Markup built (and escaped) above
    env = SandboxedEnvironment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(TEMPLATE)


def render_html(report: dict[str, Any]) -> str:
    """The report as one HTML document that needs nothing but itself to display."""
    return _template().render(**_view(report))


def write_html(report: dict[str, Any], out_dir: Path) -> Path:
    """Write ``<out_dir>/mulm-report.html`` atomically (readers never see half a page)."""
    target = Path(out_dir) / "mulm-report.html"
    write_atomic(target, render_html(report))
    return target


TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{{ 'PASSED' if ok else 'FAILED' }} · µLM verification: {{ name }}</title>
<style>
:root { --fg:#24292f; --muted:#57606a; --line:#d0d7de; --soft:#f6f8fa; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.5 -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; color:var(--fg); background:#eef1f4; }
main { max-width:1200px; margin:0 auto; padding:20px; }
header.verdict { display:flex; gap:18px; align-items:center; padding:18px 22px; border-radius:10px; color:#fff; }
header.ok { background:linear-gradient(90deg,#1a7f37,#2da44e); } header.bad { background:linear-gradient(90deg,#a40e26,#cf222e); }
.mark { font-size:44px; line-height:1; width:64px; height:64px; border-radius:50%; background:rgba(255,255,255,.2); display:flex; align-items:center; justify-content:center; flex:none; }
header h1 { margin:0; font-size:24px; overflow-wrap:anywhere; } header p { margin:4px 0 0; }
.big { font-size:17px; font-weight:600; } .meta { opacity:.9; font-size:12.5px; overflow-wrap:anywhere; }
section { background:#fff; border:1px solid var(--line); border-radius:10px; padding:14px 18px; margin-top:16px; }
h2 { font-size:17px; margin:0 0 10px; } h3 { font-size:14px; margin:12px 0 6px; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { border:1px solid var(--line); padding:5px 8px; text-align:left; vertical-align:top; overflow-wrap:break-word; }
th { background:var(--soft); font-weight:600; white-space:nowrap; }
td.cell { text-align:center; font-weight:600; white-space:nowrap; width:1%; }
.c-passed { background:#dafbe1; color:#116329; } .c-failed { background:#ffebe9; color:#a40e26; }
.c-error { background:#cf222e; color:#fff; } .c-skipped { background:#fff8c5; color:#7d4e00; } .c-none { color:var(--muted); }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; }
.charts { display:grid; grid-template-columns:repeat(auto-fit, minmax(540px, 1fr)); gap:20px 28px; }
.charts figure { margin:0; } .charts figcaption { font-weight:600; margin-bottom:6px; }
svg.chart { display:block; width:560px; max-width:100%; height:auto; font-family:inherit; }
ul { margin:4px 0; padding-left:22px; } li { margin:2px 0; overflow-wrap:anywhere; }
.muted { color:var(--muted); } .nowrap { white-space:nowrap; }
td.mono, td.msg, td.wrap { overflow-wrap:anywhere; } td.nowrap { overflow-wrap:normal; }  /* long names must not widen the table */
table.figures { width:auto; min-width:50%; } td.num { text-align:right; } .warn { color:#7d4e00; font:13px/1.4 -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; margin-top:4px; }
pre { background:#161b22; color:#e6edf3; padding:10px 12px; border-radius:6px; overflow-x:auto; font-size:12.5px; margin:6px 0; white-space:pre-wrap; overflow-wrap:anywhere; }
code, .mono { font-family:"DejaVu Sans Mono", SFMono-Regular, Menlo, Consolas, monospace; font-size:12.5px; }
.msg { font-family:"DejaVu Sans Mono", monospace; font-size:12px; white-space:pre-wrap; overflow-wrap:anywhere; }
.tiles { display:flex; flex-wrap:wrap; gap:10px; margin-bottom:8px; }
.tile { background:var(--soft); border:1px solid var(--line); border-radius:8px; padding:6px 12px; min-width:110px; }
.tile b { display:block; font-size:18px; } .tile span { color:var(--muted); font-size:12px; }
.shots { display:flex; flex-wrap:wrap; gap:16px; }
.shots figure { margin:0; max-width:560px; } .shots img { max-width:100%; border:1px solid var(--line); border-radius:6px; }
footer { color:var(--muted); font-size:12px; text-align:center; margin:18px 0 6px; }
</style>
</head>
<body>
<main>
<header class="verdict {{ 'ok' if ok else 'bad' }}">
  <div class="mark">{{ '✓' if ok else '✗' }}</div>
  <div>
    <h1>µLM verification: {{ name }}</h1>
    <p class="big">{{ 'PASSED' if ok else 'FAILED' }}: {{ counts.passed }}/{{ counts.total }} tests passed, {{ counts.failed }} failed, {{ counts.skipped }} skipped · exit status {{ counts.exit }}</p>
    <p class="meta">{{ meta | join(' · ') }}</p>
  </div>
</header>

<section id="checks">
  <h2>Checks</h2>
  {% if matrix %}
  <table>
    <thead><tr><th>check</th>{% for f in formats %}<th>{{ f }}</th>{% endfor %}</tr></thead>
    <tbody>
    {% for row in matrix %}
      <tr><td class="mono">{{ row.check }}</td>{% for c in row.cells %}<td class="cell {{ c.cls }}"{% if c.title %} title="{{ c.title }}"{% endif %}>{{ c.text }}</td>{% endfor %}</tr>
    {% endfor %}
    </tbody>
  </table>
  {% else %}<p class="muted">No check ran.</p>{% endif %}
  {% if failed %}
  <h3>Failed checks</h3>
  <table>
    <thead><tr><th>format</th><th>check</th><th>outcome</th><th>message</th></tr></thead>
    <tbody>{% for f in failed %}<tr><td class="nowrap">{{ f.format }}</td><td class="mono">{{ f.check }}</td><td class="cell c-{{ 'error' if f.outcome == 'error' else 'failed' }}">{{ f.outcome }}</td><td class="msg">{{ f.message }}</td></tr>{% endfor %}</tbody>
  </table>
  {% endif %}
</section>

<section id="charts">
  <h2>Charts</h2>
  <div class="charts">
  {% for title, chart in charts %}<figure><figcaption>{{ title }}</figcaption>{{ chart }}</figure>{% endfor %}
  </div>
</section>

{% if gates %}
<section id="gates">
  <h2>Gates</h2>
  <table>
    <thead><tr><th>gate</th><th>outcome</th><th>result</th><th>what it checks</th></tr></thead>
    <tbody>{% for g in gates %}<tr><td class="nowrap"><b>{{ g.name }}</b></td><td class="cell {{ g.cls }}">{{ g.outcome }}</td><td class="wrap">{{ g.message or '–' }}</td><td class="muted">{{ g.why or '–' }}</td></tr>{% endfor %}</tbody>
  </table>
</section>
{% endif %}

{% if security %}
<section id="security">
  <h2>Security</h2>
  <table>
    <thead><tr><th>format</th><th>check</th><th>outcome</th><th>findings</th><th>accepted</th></tr></thead>
    <tbody>
    {% for s in security %}
      <tr><td class="nowrap">{{ s.format }}</td><td class="mono nowrap">{{ s.check }}</td><td class="cell {{ s.cls }}">{{ s.outcome }}</td>
        <td class="wrap">{% if s.findings %}<ul>{% for f in s.findings %}<li class="msg">{{ f }}</li>{% endfor %}</ul>{% if s.more %}<span class="muted">and {{ s.more }} more in mulm-report.json</span>{% endif %}{% else %}<span class="muted">{{ s.message or 'none' }}</span>{% endif %}</td>
        <td>{% if s.accepted %}<details><summary>{{ s.accepted | length }} accepted</summary><ul>{% for f in s.accepted %}<li class="msg">{{ f }}</li>{% endfor %}</ul></details>{% else %}<span class="muted">0</span>{% endif %}</td></tr>
    {% endfor %}
    </tbody>
  </table>
</section>
{% endif %}

<section id="recommendations">
  <h2>Recommendations</h2>
  {% if recommendations %}<ul>{% for r in recommendations %}<li>{{ r }}</li>{% endfor %}</ul>{% else %}<p class="muted">None: nothing to fix.</p>{% endif %}
</section>

<section id="llm">
  <h2>LLM usage</h2>
  {% if llm %}
  <div class="tiles">
    {% for value, what in llm_tiles %}<div class="tile"><b>{{ value }}</b><span>{{ what }}</span></div>{% endfor %}
  </div>
  <p>{{ llm_line }}</p>
  {% if llm_events %}<ul>{% for e in llm_events %}<li>{{ e }}</li>{% endfor %}</ul>{% endif %}
  {% else %}<p class="muted">No LLM call in this run.</p>{% endif %}
</section>

<section id="exports">
  <h2>Exports</h2>
  <table>
    <thead><tr><th>format</th><th>export</th><th>key</th><th>build</th><th>docs</th></tr></thead>
    <tbody>
    {% for e in exports %}
      <tr><td class="nowrap"><b>{{ e.format }}</b></td>
        <td class="mono">{% if e.href %}<a href="{{ e.href }}">{{ e.dir }}</a>{% else %}–{% endif %}{% for w in e.warnings %}<div class="warn">⚠ {{ w }}</div>{% endfor %}</td>
        <td class="mono nowrap">{{ e.key }}</td><td class="nowrap">{{ e.build }}</td><td>{{ e.docs }}</td></tr>
    {% endfor %}
    </tbody>
  </table>
  {% if benchmarks %}
  <h3>Benchmark figures</h3>
  <table class="figures">
    <thead><tr><th>format</th><th>figure</th><th>value</th></tr></thead>
    <tbody>{% for fmt, key, value in benchmarks %}<tr><td class="nowrap">{{ fmt }}</td><td class="mono">{{ key }}</td><td class="mono num">{{ value }}</td></tr>{% endfor %}</tbody>
  </table>
  {% endif %}
</section>

{% if lkg %}
<section id="last-known-good">
  <h2>Last known good</h2>
  {% for l in lkg %}
  {% if l.has %}
  <h3>{{ l.format }}: <span class="mono">{{ l.key }}</span> <span class="muted">({{ l.created }})</span></h3>
  <div class="mono muted">{{ l.dir }}</div>
  {% else %}
  <h3>{{ l.format }}: <span class="muted">none yet</span></h3>
  {% endif %}
  {% if l.reason %}<p>{{ "updated: " if l.recorded else "not updated: " }}{{ l.reason }}</p>{% endif %}
  {% if l.rollback %}<pre><code>{{ l.rollback | join('\n') }}</code></pre>{% endif %}
  {% endfor %}
</section>
{% endif %}

{% if attachments %}
<section id="attachments">
  <h2>Attachments</h2>
  <div class="shots">
  {% for a in attachments %}
    {% if a.src %}<figure><img src="{{ a.src }}" alt="{{ a.format }} {{ a.name }}"><figcaption><b>{{ a.format }}</b> {{ a.name }}</figcaption></figure>{% endif %}
  {% endfor %}
  </div>
  <ul>{% for a in attachments %}{% if not a.src %}<li><b>{{ a.format }}</b> {{ a.name }}: {% if a.href %}<a href="{{ a.href }}">{{ a.path }}</a>{% else %}{{ a.path }}{% endif %}</li>{% endif %}{% endfor %}</ul>
</section>
{% endif %}

{% for s in sections %}
<section><h2>{{ s.title }}</h2><ul>{% for line in s.lines %}<li>{{ line }}</li>{% endfor %}</ul></section>
{% endfor %}

<footer>pytest-mulm {{ counts.version }} · report schema {{ counts.schema }} · this page is self-contained: it loads nothing from any network</footer>
</main>
</body>
</html>
"""
