"""mulm-report.md: the run as GitHub-flavoured Markdown (design.md §8).

The same text goes to ``$GITHUB_STEP_SUMMARY`` when that variable names a file, so a CI
run shows the verdict, the check matrix and what to do next on its summary page.

Every string that comes from the workflow, a check or a plugin is data: :func:`md`
turns it into one line of inert text (no raw HTML, no table breaks, no code spans, no
links, no math). The shared views of a report (:func:`verdict`, :func:`check_matrix`,
:func:`failed_checks`, :func:`latency_figures`) are used by ``report_html`` too, so both
documents say the same thing.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from .atomic import write_atomic
from .naming import one_line

__all__ = [
    "GATE_EXPLANATIONS",
    "advisory",
    "check_matrix",
    "comparisons",
    "describe_finding",
    "failed_checks",
    "findings",
    "formats",
    "latency_figures",
    "llm_line",
    "lower_is_better",
    "md",
    "security_outcome",
    "render_markdown",
    "usd",
    "verdict",
    "write_markdown",
]

# what each gate decides, for readers who did not configure it
GATE_EXPLANATIONS = {
    "benchmark": "each latency figure is compared with the stored baseline; the gate fails when one "
                 "is slower than the threshold allows",
    "budget": "the LLM spend of the run must stay within --mulm-budget",
    "security": "no unaccepted finding from the security checks (code scan, secrets, dependency "
                "advisories, API hardening)",
}

CELL = {"passed": "ok", "failed": "FAIL", "error": "ERROR", "skipped": "skip"}
WORST_FIRST = ("error", "failed", "skipped", "passed")

# CommonMark lets a backslash escape any ASCII punctuation. Escaped everywhere: what
# opens code, emphasis, links, tables, strikethrough or GitHub math. An underscore only
# opens emphasis at a word boundary, so test_install stays readable in the raw file.
_MD_SPECIAL = re.compile(r"([\\`*\[\]|~$])|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
# only at the start of a line do these open a list, a heading or a numbered list
_LINE_START = re.compile(r"^([-+#])|^(\d{1,9})([.)])(?=\s|$)")


def md(value: Any, limit: int = 0) -> str:
    """``value`` as one line of Markdown that renders as exactly that text.

    ``&``, ``<`` and ``>`` become entities (no raw HTML can start), Markdown punctuation
    is backslash-escaped, line breaks become spaces, and a leading ``-``, ``#`` or ``1.``
    cannot open a list or heading. ``limit`` cuts long messages (with an ellipsis)
    before escaping.
    """
    text = one_line("" if value is None else value)
    if limit and len(text) > limit:
        text = text[: limit - 1] + "…"
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), text)
    return _LINE_START.sub(lambda m: "\\" + m.group(1) if m.group(1) else f"{m.group(2)}\\{m.group(3)}", text)


def usd(value: Any) -> str:
    """Dollars: cents for ordinary amounts, micro-dollars for the tiny ones replays cost."""
    amount = _num(value) or 0.0
    return f"${amount:.6f}" if 0 < abs(amount) < 0.01 else f"${amount:,.2f}"


def _num(value: Any) -> float | None:
    """A finite number or None: report values are data and may be anything."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def formats(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-format entries, each guaranteed to be a dict."""
    return {str(k): _dict(v) for k, v in _dict(report.get("formats")).items()}


def verdict(report: dict[str, Any]) -> bool:
    """True when the run passed: exit status 0, no failed test and no failed gate."""
    gates = _dict(report.get("gates"))
    gate_failed = any(_dict(g).get("outcome") == "failed" for g in gates.values())
    return report.get("exit_status") == 0 and not report.get("tests_failed") and not gate_failed


def check_matrix(report: dict[str, Any]) -> tuple[list[str], list[str], dict[tuple[str, str], tuple[str, int]]]:
    """Checks (rows, in first-seen order), formats (columns) and the worst outcome per cell.

    A check parametrized several times in one format (edge backends) shows its worst
    outcome and how many items it had.
    """
    fmts = formats(report)
    outcomes: dict[tuple[str, str], list[str]] = {}
    for fmt, entry in fmts.items():
        for check in _list(entry.get("checks")):
            check = _dict(check)
            outcomes.setdefault((str(check.get("check", "?")), fmt), []).append(str(check.get("outcome")))
    rows = list(dict.fromkeys(check for check, _ in outcomes))
    cells = {
        key: (next((o for o in WORST_FIRST if o in outs), outs[0]), len(outs)) for key, outs in outcomes.items()
    }
    return rows, list(fmts), cells


def failed_checks(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(format, check) for every check that failed or errored."""
    return [
        (fmt, _dict(c)) for fmt, entry in formats(report).items() for c in _list(entry.get("checks"))
        if _dict(c).get("outcome") in ("failed", "error")
    ]


def latency_figures(report: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(format, figure, milliseconds) for every median-like latency: ``*_ms`` with p50/median."""
    figures = []
    for fmt, entry in formats(report).items():
        for key, value in _dict(entry.get("benchmark")).items():
            key = str(key)
            number = _num(value)
            if number is not None and key.endswith("_ms") and ("p50" in key or "median" in key):
                figures.append((fmt, key, number))
    return figures


def comparisons(gate: Any) -> list[dict[str, Any]]:
    """The benchmark gate's rows: ``comparisons``, or ``details`` as ``GateResult`` names them."""
    gate = _dict(gate)
    rows = gate.get("comparisons") if "comparisons" in gate else gate.get("details")
    return [r for r in _list(rows) if isinstance(r, dict) and "figure" in r]


def lower_is_better(row: dict[str, Any]) -> bool:
    """Whether a figure regresses upwards: the row's ``direction`` if given, else its name."""
    if row.get("direction") in ("lower", "higher"):
        return row["direction"] == "lower"
    figure = str(row.get("figure", ""))
    return not ("throughput" in figure or figure.endswith(("_rps", "_per_s", "_ops")))


def findings(check: dict[str, Any]) -> list[dict[str, Any]]:
    """Every unaccepted finding of a security check, each as a dict.

    Scanners record ``findings``; the offline audit records ``vulnerable`` and
    ``unchecked``; online auditors record plain lines, which become ``{"message": line}``.
    """
    items = _list(check.get("findings")) + _list(check.get("vulnerable")) + _list(check.get("unchecked"))
    return [item if isinstance(item, dict) else {"message": str(item)} for item in items]


def security_outcome(check: dict[str, Any]) -> str:
    """A security check's outcome; scanners' own records carry none, so it is read off them."""
    if check.get("outcome"):
        return str(check["outcome"])
    if check.get("skipped"):
        return "skipped"
    return "failed" if findings(check) or _list(check.get("errors")) else "passed"


def _cell(outcome: str, count: int) -> str:
    text = CELL.get(outcome, md(outcome))
    if outcome in ("failed", "error"):
        text = f"**{text}**"
    return text + (f" ×{count}" if count > 1 else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A GFM table; cells must already be escaped."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def _fence(lines: list[str]) -> list[str]:
    """A fenced code block no line can close: the fence is longer than any backtick run."""
    lines = [one_line(line) for line in lines]
    longest = max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + "sh", *lines, fence]


def _title(report: dict[str, Any]) -> list[str]:
    wf = _dict(report.get("workflow"))
    ok = verdict(report)
    name = md(wf.get("name") or wf.get("id") or "workflow", 120)
    passed, total = report.get("tests_passed", 0), report.get("tests_total", 0)
    lines = [f"## {'✅' if ok else '❌'} µLM verification: {name}", ""]
    lines.append(
        f"**{'PASSED' if ok else 'FAILED'}**: {md(passed)}/{md(total)} tests passed, "
        f"{md(report.get('tests_failed', 0))} failed, {md(report.get('tests_skipped', 0))} skipped; "
        f"exit status {md(report.get('exit_status'))}")
    facts = [f"workflow {md(wf.get('id'))}" if wf.get("id") else "",
             f"{md(wf.get('examples'))} example(s)" if wf.get("examples") is not None else "",
             f"pytest-mulm {md(report.get('plugin_version'))}" if report.get("plugin_version") else "",
             md(report.get("created")) if report.get("created") else ""]
    lines += ["", " · ".join(f for f in facts if f)]
    return lines


def _checks(report: dict[str, Any]) -> list[str]:
    rows, fmts, cells = check_matrix(report)
    if not rows:
        return ["### Checks", "", "No check ran."]
    body = [[md(check, 80), *(_cell(*cells[(check, f)]) if (check, f) in cells else "–" for f in fmts)]
            for check in rows]
    lines = ["### Checks", "", *_table(["check", *(md(f) for f in fmts)], body)]
    failed = failed_checks(report)
    if failed:
        lines += ["", "#### Failed checks", ""]
        for fmt, check in failed:
            message = md(check.get("message"), 400) or "(no message)"
            lines.append(f"- **{md(fmt)}** {md(check.get('check'))} ({md(check.get('outcome'))}): {message}")
    return lines


def _exports(report: dict[str, Any]) -> list[str]:
    rows, warnings = [], []
    for fmt, entry in formats(report).items():
        docs = _dict(entry.get("docs")).get("origin") or ""
        built = "reused" if entry.get("from_cache") else f"built {md(entry.get('builds', 0))}x"
        rows.append([md(fmt), md(entry.get("export_dir") or "–"), md(entry.get("cache_key") or "–"),
                     built, md(docs) or "–"])
        warnings += [f"- ⚠️ **{md(fmt)}**: {md(w, 400)}" for w in _list(entry.get("warnings"))]
    if not rows:
        return []
    return ["### Exports", "", *_table(["format", "export dir", "key", "build", "docs"], rows),
            *([""] + warnings if warnings else [])]


def _gates(report: dict[str, Any]) -> list[str]:
    gates = _dict(report.get("gates"))
    if not gates:
        return []
    mark = {"passed": "✅ passed", "failed": "❌ failed", "skipped": "⏭️ skipped"}
    rows = []
    for name, gate in gates.items():
        gate = _dict(gate)
        outcome = str(gate.get("outcome", "?"))
        rows.append([md(name), mark.get(outcome, md(outcome)), md(gate.get("message"), 300) or "–",
                     md(GATE_EXPLANATIONS.get(str(name), ""))])
    lines = ["### Gates", "", *_table(["gate", "outcome", "result", "what it checks"], rows)]
    compared = comparisons(gates.get("benchmark"))
    if compared:
        lines += ["", *_table(
            ["format", "figure", "baseline", "current", "change", "threshold", "outcome"],
            [[md(c.get("format")), md(c.get("figure")), md(c.get("baseline")) or "–", md(c.get("current")) or "–",
              _percent(c.get("change_percent")), _percent(c.get("threshold_percent")),
              mark.get(str(c.get("outcome")), md(c.get("outcome")))
              + (f" ({md(c['reason'], 120)})" if c.get("reason") and c.get("outcome") != "failed" else "")]
             for c in compared])]
    return lines


def _percent(value: Any) -> str:
    number = _num(value)
    return "–" if number is None else f"{number:+.1f}%"


def _security(report: dict[str, Any]) -> list[str]:
    security = _dict(report.get("security"))
    if not security:
        return []
    rows, details = [], []
    for fmt, entry in security.items():
        entry = _dict(entry)
        for check in _list(entry.get("checks")) + _list(entry.get("api")):
            check = _dict(check)
            found, accepted = findings(check), _list(check.get("accepted"))
            rows.append([md(fmt), md(check.get("check")), _cell(security_outcome(check), 1),
                         str(len(found)), str(len(accepted)), md(check.get("message"), 200) or "–"])
            for finding in found[:20]:  # the JSON has all of them; the summary stays readable
                details.append(f"- **{md(fmt)}** {md(check.get('check'))}: {md(describe_finding(_dict(finding)), 300)}")
    if not rows:
        return []
    lines = ["### Security", "", *_table(["format", "check", "outcome", "findings", "accepted", "note"], rows)]
    return lines + (["", *details] if details else [])


def advisory(finding: dict[str, Any]) -> tuple[str, str, list[str], list[str]] | None:
    """(package, version, advisory ids, fixed versions) of a dependency finding, else None.

    Two shapes are read: ``{"package", "version", "ids", "fixed"}`` and the audit's own
    ``{"name", "version", "advisories": [{"id", "aliases", "fixed"}], "fix"}``.
    """
    if finding.get("package"):
        fixed = finding.get("fixed")
        return (str(finding["package"]), str(finding.get("version") or ""),
                [str(i) for i in _list(finding.get("ids"))] or [str(finding.get("id") or "an advisory")],
                [str(v) for v in (fixed if isinstance(fixed, list) else [fixed]) if v not in (None, "")])
    if finding.get("name") and isinstance(finding.get("advisories"), list):
        ids = []
        for adv in finding["advisories"]:
            adv = _dict(adv)
            aliases = [str(a) for a in _list(adv.get("aliases"))]
            ids.append(str(adv.get("id", "?")) + (f" ({', '.join(aliases)})" if aliases else ""))
        fix = finding.get("fix")
        return str(finding["name"]), str(finding.get("version") or ""), ids, [str(fix)] if fix else []
    return None


def describe_finding(finding: dict[str, Any]) -> str:
    """One plain-text line for a security finding of any kind (advisory, code, secret)."""
    dependency = advisory(finding)
    if dependency:
        package, version, ids, fixed = dependency
        fix = f"; fixed in {', '.join(fixed)}" if fixed else "; no fixed release"
        return f"{package} {version}: {', '.join(ids)}{fix}".replace("  ", " ")
    if finding.get("requirement") and finding.get("reason"):  # a requirement the audit could not check
        return f"{finding['requirement']}: not audited: {finding['reason']}"
    where = ":".join(str(p) for p in (finding.get("file"), finding.get("line")) if p not in (None, ""))
    node = f"node {finding['node']!r} " if finding.get("node") else ""
    if finding.get("where"):  # the scanner's own words: block and line of its sourceCode, or file and line
        where, node = str(finding["where"]), ""
    rule = f"{finding['rule']} " if finding.get("rule") else ""
    text = finding.get("message") or finding.get("text") or finding.get("type") or ""
    accepted = f" (accepted: {finding['accepted']})" if isinstance(finding.get("accepted"), str) else ""
    reason = f" (accepted: {finding['reason']})" if finding.get("reason") and not accepted else ""
    return f"{node}{where} {rule}{text}{accepted}{reason}".strip()


def llm_line(llm: dict[str, Any]) -> str:
    """The LLM usage as one plain-text sentence."""
    return (
        f"{llm.get('calls', 0)} call(s) ({llm.get('mode', '?')}, model {llm.get('model') or '?'}): "
        f"{llm.get('exact_hits', 0)} exact and {llm.get('similar_hits', 0)} similar cache hit(s), "
        f"{llm.get('paid_calls', 0)} paid, {llm.get('fallbacks', 0)} template fallback(s); "
        f"{llm.get('tokens_in', 0)} tokens in, {llm.get('tokens_out', 0)} out; "
        f"{usd(llm.get('spent_usd', llm.get('cost_usd')))} spent of {usd(llm.get('budget_usd'))}, "
        f"{usd(llm.get('remaining_usd'))} left")


def _llm(report: dict[str, Any]) -> list[str]:
    llm = _dict(report.get("llm"))
    if not llm:
        return ["### LLM usage", "", "No LLM call in this run."]
    lines = ["### LLM usage", "", md(llm_line(llm))]
    lines += [f"- {md(e, 300)}" for e in _list(llm.get("events"))]
    if _list(llm.get("generated_blocks")):
        lines.append(f"- generated block(s): {md(', '.join(map(str, llm['generated_blocks'])))}")
    return lines


def _benchmarks(report: dict[str, Any]) -> list[str]:
    rows = [[md(fmt), md(key), md(value)] for fmt, entry in formats(report).items()
            for key, value in _dict(entry.get("benchmark")).items()]
    return ["### Benchmarks", "", *_table(["format", "figure", "value"], rows)] if rows else []


def _recommendations(report: dict[str, Any]) -> list[str]:
    recs = _list(report.get("recommendations"))
    if not recs:
        return ["### Recommendations", "", "None: nothing to fix."]
    return ["### Recommendations", "", *(f"- {md(r, 500)}" for r in recs)]


def _last_known_good(report: dict[str, Any]) -> list[str]:
    lkg = _dict(report.get("last_known_good"))
    if not lkg:
        return []
    lines = ["### Last known good"]
    for fmt, entry in lkg.items():
        entry = _dict(entry)
        if entry.get("key"):
            lines += ["", f"- **{md(fmt)}**: key {md(entry['key'])}, {md(entry.get('export_dir') or '–')}"
                          f" ({md(entry.get('created') or 'date unknown')})"]
        else:
            lines += ["", f"- **{md(fmt)}**: none yet"]
        if entry.get("reason"):
            verb = "updated" if entry.get("recorded") else "not updated"
            lines[-1] += f"; {verb}: {md(entry['reason'], 300)}"
        commands = [str(c) for c in _list(entry.get("rollback"))]
        if commands:
            lines += ["", *_fence(commands)]
    return lines


def _attachments(report: dict[str, Any]) -> list[str]:
    items = [f"- **{md(fmt)}** {md(name)}: {md(path)}" for fmt, entry in formats(report).items()
             for name, path in _dict(entry.get("attachments")).items()]
    return ["### Attachments", "", *items] if items else []


def _sections(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for section in _list(report.get("sections")):
        section = _dict(section)
        lines += [f"### {md(section.get('title') or 'plugin section', 120)}", "",
                  *(f"- {md(line, 500)}" for line in _list(section.get("lines")))]
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """The whole report as GitHub-flavoured Markdown, ending with one newline."""
    parts = [_title(report), _checks(report), _gates(report), _security(report), _recommendations(report),
             _llm(report), _benchmarks(report), _exports(report), _last_known_good(report),
             _attachments(report), _sections(report)]
    return "\n\n".join("\n".join(p) for p in parts if p) + "\n"


def write_markdown(report: dict[str, Any], out_dir: Path) -> Path:
    """Write ``<out_dir>/mulm-report.md`` atomically; append it to ``$GITHUB_STEP_SUMMARY`` if set.

    The step summary is appended to, never replaced: other steps of the same CI job
    write their own parts into that file.
    """
    text = render_markdown(report)
    target = Path(out_dir) / "mulm-report.md"
    write_atomic(target, text)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write("\n" + text)
    return target
