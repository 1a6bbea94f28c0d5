"""Run gates: benchmark regression, LLM budget, security; and the last known good export.

Pure functions over what a run produced (result entries, benchmark figures, LLM usage);
the plugin calls them at session finish, turns a failed gate into a non-zero exit code and
puts every :class:`GateResult` in the report. Nothing here runs a check or reads pytest
state.

Benchmark gate
--------------
Baselines are stored in pytest-benchmark's file layout, so its CLI can list and compare
them::

    <baseline_dir>/<machine_id>/<NNNN>_mulm-<workflow>.json

``machine_id`` is pytest-benchmark's own (``Linux-CPython-3.11-64bit``): figures are only
compared with figures taken on the same kind of machine and interpreter. ``NNNN`` counts
up across every file in that folder (pytest-benchmark's numbering, shared with its own
``--benchmark-save`` files); the newest file for the workflow is the baseline. The
file's ``benchmarks`` hold the time figures (in seconds, so ``pytest-benchmark compare``
shows them right); ``mulm.figures`` holds every figure exactly as recorded, in its own
unit, and is what the gate compares.

A figure's direction comes from its name, split into words at ``_``, ``.`` and ``-``
(nested figures such as ``{"runner": {"p50_ms": 3}}`` are named ``runner.p50_ms``):

- higher is better when a word is ``rps``, ``qps``, ``ops``, ``throughput``,
  ``agreement`` or ``accuracy``, or the name says ``per_s``/``per_sec``/``per_second``
  (``throughput_rps``, ``onnxruntime_int8.agreement``, ``accuracy_ratio``);
- lower is better when a word is a unit of time or size: ``ms``, ``us``, ``ns``, ``s``,
  ``sec``, ``seconds``, ``kb``, ``mb``, ``gb``, ``kib``, ``mib``, ``bytes``
  (``p95_ms``, ``p50_ms_batch1.onnxruntime``, ``runner.peak_mb``, ``int8_bytes``);
- anything else (``calls``, ``concurrent_clients``, ``size_ratio``, parity errors) has no
  known direction and is listed as *not compared*, as is a figure present on one side
  only or with a baseline of 0 or less (no percentage exists). Not compared never fails.

The change is ``(current - baseline) / baseline`` in percent, on the medians exactly as
the items recorded them (no re-sampling: run benchmarks under the same conditions, e.g.
``-n 0``, for baseline and comparison). A figure fails when it is worse than the
threshold (``--mulm-regression``, default 25 %): slower or bigger by more than that for
lower-is-better figures, lower by more than that for higher-is-better ones. Time figures
that moved by less than ``noise_floor_ms`` (0.1 ms) in absolute terms never fail: at
tens of microseconds a scheduler hiccup is a large percentage.

No saved baseline gives a *skipped* gate with the reason (pytest-benchmark's own
``--benchmark-compare-fail`` exits 4 there instead, pytest-benchmark#276).

Last known good
---------------
:class:`LastKnownGood` keeps, per format, a copy of the last export that passed every
gate and every check in ``<out_dir>/last-known-good/<format>/`` (with ``lkg.json``), and
gives the commands to roll a deployment back to it.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import platform
import re
import shlex
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

from filelock import FileLock

from . import __version__
from .atomic import write_atomic

__all__ = [
    "LKG_DIRNAME",
    "SECURITY_SUITE_PREFIX",
    "SERVICE_SECURITY_CHECKS",
    "Baseline",
    "GateResult",
    "LastKnownGood",
    "baseline_file_stem",
    "benchmark_gate",
    "budget_gate",
    "compare",
    "direction",
    "flatten_figures",
    "is_security_check",
    "load_baseline",
    "machine_id",
    "save_baseline",
    "security_gate",
]

Outcome = Literal["passed", "failed", "skipped"]
Direction = Literal["lower", "higher"]

LKG_DIRNAME = "last-known-good"
LKG_FILE = "lkg.json"
SECURITY_SUITE_PREFIX = "mulm/security::"
# API attacks of the fastapi-service suite (pytest_mulm/suites/fastapi_service.py and
# fastapi_deploy.py) that are security checks: auth and JWT, rate limiting, the body
# limit (a denial-of-service guard), leaked tracebacks/paths, secrets in the artifact.
SERVICE_SECURITY_CHECKS = (
    "test_*auth*", "test_jwt_*", "test_*rate_limit*", "test_body_too_large*",
    "test_*leak*", "test_*traceback*", "test_*secret*",
)
_FAILED = ("failed", "error")


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict: ``outcome`` is ``passed``, ``failed`` or ``skipped``;
    ``message`` explains it in one line; ``details`` holds the rows behind it (one per
    compared figure, security check, ...)."""

    name: str
    outcome: Outcome
    message: str
    details: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "outcome": self.outcome, "message": self.message, "details": list(self.details)}


# -- figures -------------------------------------------------------------------------------

_HIGHER_WORDS = frozenset({"rps", "qps", "ops", "throughput", "agreement", "accuracy"})
_PER_SECOND = frozenset({"s", "sec", "second", "seconds"})
_TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0, "seconds": 1.0}
_SIZE_UNITS = frozenset({"bytes", "kb", "mb", "gb", "kib", "mib", "gib"})


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]


def direction(name: str) -> Direction | None:
    """``"lower"`` or ``"higher"`` (is better) from a figure's name, or None when the name
    does not say (see the module docstring for the rule)."""
    words = _words(name)
    if any(w in _HIGHER_WORDS for w in words):
        return "higher"
    if any(a == "per" and b in _PER_SECOND for a, b in zip(words, words[1:], strict=False)):
        return "higher"
    if any(w in _TIME_UNITS or w in _SIZE_UNITS for w in words):
        return "lower"
    return None


def _seconds_per_unit(name: str) -> float | None:
    """Seconds per unit of a time figure (0.001 for ``p50_ms``), None for other figures."""
    words = _words(name)
    if direction(name) != "lower":
        return None
    return next((_TIME_UNITS[w] for w in words if w in _TIME_UNITS), None)


def flatten_figures(figures: Mapping[str, Any] | None, prefix: str = "") -> dict[str, float]:
    """Numeric figures of one format, nested dicts flattened to dotted names.

    Booleans, strings, NaN and infinities are dropped: they are not measurements.
    """
    flat: dict[str, float] = {}
    for key, value in (figures or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_figures(value, prefix=f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = float(value)
    return flat


def _flatten_all(figures: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, float]]:
    out = {fmt: flatten_figures(figs) for fmt, figs in (figures or {}).items()}
    return {fmt: figs for fmt, figs in out.items() if figs}


def _show(value: float) -> str:
    return f"{value:.4g}"


# -- baseline storage (pytest-benchmark's layout) ----------------------------------------------


class Baseline(NamedTuple):
    """A saved baseline: the file and its figures, ``{format: {figure: value}}``."""

    path: Path
    figures: dict[str, dict[str, float]]


def machine_id() -> str:
    """pytest-benchmark's machine id (``Linux-CPython-3.11-64bit``): its own helper when
    it is installed, else the same formula (it is an optional dependency)."""
    try:
        from pytest_benchmark.utils import get_machine_id  # type: ignore[import-not-found]
    except ImportError:
        return "-".join((platform.system(), platform.python_implementation(),
                         ".".join(platform.python_version_tuple()[:2]), platform.architecture()[0]))
    return str(get_machine_id())


def baseline_file_stem(workflow_id: str) -> str:
    """``mulm-<workflow>``: the part of a baseline's file name after ``NNNN_``.

    The id is reduced to file-name-safe characters; the exact id is also stored inside
    the file and checked on load, so two ids that reduce alike never share a baseline.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", str(workflow_id)).strip("-.") or "workflow"
    return f"mulm-{safe[:80]}"


def _machine_info() -> dict[str, Any]:
    # the keys of pytest-benchmark's machine_info, without "cpu": its cpuinfo probe takes
    # about a second and the comparison never reads it
    return {
        "node": platform.node(), "processor": platform.processor(), "machine": platform.machine(),
        "python_compiler": platform.python_compiler(),
        "python_implementation": platform.python_implementation(),
        "python_implementation_version": platform.python_version(),
        "python_version": platform.python_version(), "python_build": list(platform.python_build()),
        "release": platform.release(), "system": platform.system(),
    }


def _commit_info() -> dict[str, Any]:
    try:
        from pytest_benchmark.utils import get_commit_info  # type: ignore[import-not-found]
    except ImportError:
        return {"id": "unknown", "time": None, "author_time": None, "dirty": False,
                "project": Path.cwd().name, "branch": "(unknown)"}
    return dict(get_commit_info())


def _benchmark_version() -> str:
    try:
        from pytest_benchmark import __version__ as version  # type: ignore[import-not-found]
    except ImportError:
        return "5.0.0"  # the format pytest-benchmark 5 reads; written without it installed
    return str(version)


def _time_unit(name: str) -> str | None:
    return next((w for w in _words(name) if w in _TIME_UNITS), None)


def _stats(value: float, name: str) -> dict[str, Any]:
    """pytest-benchmark's stats block for one recorded time figure (one round), in
    seconds, pytest-benchmark's unit, so its tables show it right. Figures that are not
    times (throughput, sizes, counts) are kept out of ``benchmarks``: its tables would
    label them as times. Every figure, exact and in its own unit, is in ``mulm.figures``.
    """
    scale = _seconds_per_unit(name) or 1.0
    v = value * scale
    return {
        "min": v, "max": v, "mean": v, "stddev": 0.0, "rounds": 1, "median": v, "iqr": 0.0,
        "q1": v, "q3": v, "iqr_outliers": 0, "stddev_outliers": 0, "outliers": "0;0",
        "ld15iqr": v, "hd15iqr": v, "ops": (1.0 / v) if v else 0.0, "total": v,
        "data": [v], "iterations": 1,
    }


def save_baseline(
    baseline_dir: str | Path,
    workflow_id: str,
    figures: Mapping[str, Mapping[str, Any]],
    *,
    workflow_name: str | None = None,
    content_hash: str | None = None,
    commit_info: Mapping[str, Any] | None = None,
    machine: str | None = None,
) -> Path:
    """Save ``figures`` (``{format: {figure: value}}``, nested values allowed) as the
    newest baseline of ``workflow_id`` on this machine; return the file.

    Raises ValueError when there is no numeric figure: an empty baseline would hide the
    previous real one.
    """
    flat = _flatten_all(figures)
    if not flat:
        raise ValueError(f"no benchmark figures to save for workflow {workflow_id!r}: "
                         "the run recorded none (benchmark items skipped, deselected or failed)")
    machine = machine or machine_id()
    folder = Path(baseline_dir) / machine
    folder.mkdir(parents=True, exist_ok=True)
    benchmarks = []
    for fmt in sorted(flat):
        for name, value in sorted(flat[fmt].items()):
            if _seconds_per_unit(name) is None:
                continue  # pytest-benchmark's tables label every value as a time
            benchmarks.append({
                "group": fmt, "name": name, "fullname": f"{fmt}::{name}",
                "params": None, "param": None, "options": {},
                "extra_info": {"mulm_value": value, "unit": _time_unit(name)},
                "stats": _stats(value, name),
            })
    document = {
        "machine_info": _machine_info(),
        "commit_info": dict(commit_info) if commit_info is not None else _commit_info(),
        "benchmarks": benchmarks,
        "datetime": datetime.now(UTC).isoformat(),
        "version": _benchmark_version(),
        # every figure, exactly as recorded and in its own unit: what the gate compares
        "mulm": {"schema": 1, "plugin_version": __version__, "workflow_id": workflow_id,
                 "workflow_name": workflow_name, "content_hash": content_hash, "figures": flat},
    }
    stem = baseline_file_stem(workflow_id)
    # the lock makes "next number + write" one step for concurrent savers (CI jobs sharing
    # a cache); the temp name does not match NNNN_*.json, so no reader sees a half file
    with FileLock(str(folder / ".mulm-save.lock")):
        numbers = [int(p.name[:4]) for p in folder.glob("[0-9][0-9][0-9][0-9]_*.json")]
        target = folder / f"{max(numbers, default=0) + 1:04d}_{stem}.json"
        write_atomic(target, json.dumps(document, indent=4, sort_keys=True, ensure_ascii=True) + "\n")
    return target


def _figures_of(document: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    saved = (document.get("mulm") or {}).get("figures")
    if isinstance(saved, Mapping):
        return _flatten_all(saved)
    # a file without our section (written by hand or by pytest-benchmark): its time figures
    figures: dict[str, dict[str, float]] = {}
    for bench in document["benchmarks"]:
        fmt, name = bench.get("group"), bench.get("name")
        extra = bench.get("extra_info") or {}
        if "mulm_value" in extra:
            value = float(extra["mulm_value"])
        else:  # a hand-made file: the median, back in the figure's own unit
            value = float(bench["stats"]["median"]) / (_seconds_per_unit(str(name)) or 1.0)
        figures.setdefault(str(fmt), {})[str(name)] = value
    return figures


def load_baseline(baseline_dir: str | Path, workflow_id: str, *, machine: str | None = None) -> Baseline | None:
    """The newest readable baseline of ``workflow_id`` for this machine, or None.

    An unreadable file (cut short, hand-edited) is passed over for the next older one.
    """
    folder = Path(baseline_dir) / (machine or machine_id())
    pattern = re.compile(r"^(\d{4})_" + re.escape(baseline_file_stem(workflow_id)) + r"\.json$")
    candidates = sorted(
        (int(m.group(1)), p) for p in (folder.glob("[0-9][0-9][0-9][0-9]_*.json") if folder.is_dir() else [])
        if (m := pattern.match(p.name))
    )
    for _, path in reversed(candidates):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            saved_for = (document.get("mulm") or {}).get("workflow_id", workflow_id)
            if saved_for != workflow_id:
                continue
            return Baseline(path, _figures_of(document))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


# -- the benchmark gate --------------------------------------------------------------------------


def _no_baseline_message(workflow_id: str | None, machine: str | None, baseline_dir: str | Path | None) -> str:
    return (f"no baseline yet for workflow '{workflow_id}' on machine {machine or machine_id()} in "
            f"{baseline_dir}: run with --mulm-save-baseline to save one")


def compare(
    current: Mapping[str, Mapping[str, Any]] | None,
    baseline: Baseline | Mapping[str, Mapping[str, Any]] | None,
    threshold_percent: float,
    *,
    workflow_id: str | None = None,
    baseline_dir: str | Path | None = None,
    machine: str | None = None,
    noise_floor_ms: float = 0.1,
) -> GateResult:
    """Compare this run's figures (``{format: {figure: value}}``) with a baseline.

    ``baseline`` is what :func:`load_baseline` returned (or a plain figures dict); None
    gives a skipped gate whose message names the workflow, machine and folder (pass them
    as keywords). Each compared figure is a row of ``details``: ``format``, ``figure``,
    ``baseline``, ``current``, ``change_percent``, ``threshold_percent``, ``direction``,
    ``outcome`` (``passed``, ``failed`` or ``not compared``) and ``reason``.
    """
    name = "benchmark"
    if baseline is None:
        return GateResult(name, "skipped", _no_baseline_message(workflow_id, machine, baseline_dir))
    source = ""
    if isinstance(baseline, tuple):  # a Baseline, or a plain (path, figures) pair
        source = f" ({baseline[0]})"
        base = _flatten_all(baseline[1])
    else:
        base = _flatten_all(baseline)
    now = _flatten_all(current)
    if not now:
        return GateResult(name, "skipped", "this run recorded no benchmark figures to compare with the baseline"
                          f"{source} (benchmark items skipped, deselected or failed)")
    rows: list[dict[str, Any]] = []
    for fmt in sorted(set(now) | set(base)):
        mine, theirs = now.get(fmt, {}), base.get(fmt, {})
        for figure in sorted(set(mine) | set(theirs)):
            rows.append(_compare_one(fmt, figure, theirs.get(figure), mine.get(figure), threshold_percent, noise_floor_ms))
    failed = [r for r in rows if r["outcome"] == "failed"]
    compared = [r for r in rows if r["outcome"] != "not compared"]
    skipped_n = len(rows) - len(compared)
    if failed:
        parts = [f"{r['format']} {r['figure']} {_show(r['baseline'])} -> {_show(r['current'])} "
                 f"({r['change_percent']:+.1f} %)" for r in failed]
        return GateResult(name, "failed", f"{len(failed)} benchmark figure(s) regressed beyond "
                          f"{threshold_percent:g} %: " + "; ".join(parts) + f"; baseline{source or ' given'}", rows)
    if not compared:
        reasons = sorted({r["reason"] for r in rows})
        return GateResult(name, "skipped", f"no figure could be compared with the baseline{source}: "
                          + "; ".join(reasons), rows)
    return GateResult(name, "passed", f"{len(compared)} benchmark figure(s) within {threshold_percent:g} % of the "
                      f"baseline{source}" + (f"; {skipped_n} not compared" if skipped_n else ""), rows)


def _compare_one(fmt: str, figure: str, base: float | None, now: float | None,
                 threshold: float, noise_floor_ms: float) -> dict[str, Any]:
    way = direction(figure)
    row: dict[str, Any] = {"format": fmt, "figure": figure, "baseline": base, "current": now,
                           "change_percent": None, "threshold_percent": threshold, "direction": way,
                           "outcome": "not compared", "reason": ""}
    if base is None or now is None:
        row["reason"] = "missing in the baseline" if base is None else "missing in this run"
        return row
    if way is None:
        row["reason"] = "direction unknown: the name does not say whether lower or higher is better"
        return row
    if base <= 0:
        row["reason"] = "baseline is 0 or negative: no percentage"
        return row
    change = (now - base) / base * 100
    worse = change if way == "lower" else -change
    row["change_percent"] = round(change, 2)
    scale = _seconds_per_unit(figure)
    if worse > threshold and scale is not None and abs(now - base) * scale * 1000 < noise_floor_ms:
        row.update(outcome="passed", reason=f"within the {noise_floor_ms:g} ms noise floor")
    elif worse > threshold:
        row.update(outcome="failed", reason=f"{'slower or bigger' if way == 'lower' else 'lower'} by {worse:.1f} %")
    else:
        row["outcome"] = "passed"
    return row


def benchmark_gate(
    baseline_dir: str | Path,
    workflow_id: str,
    current: Mapping[str, Mapping[str, Any]] | None,
    threshold_percent: float,
    *,
    machine: str | None = None,
    noise_floor_ms: float = 0.1,
) -> GateResult:
    """:func:`load_baseline` then :func:`compare`: the benchmark gate in one call."""
    machine = machine or machine_id()
    baseline = load_baseline(baseline_dir, workflow_id, machine=machine)
    return compare(current, baseline, threshold_percent, workflow_id=workflow_id, baseline_dir=baseline_dir,
                   machine=machine, noise_floor_ms=noise_floor_ms)


# -- the budget gate -----------------------------------------------------------------------------


def budget_gate(
    llm_usage: Mapping[str, Any] | None,
    budget_usd: float,
    *,
    refused: int | None = None,
    ledger_path: str | Path | None = None,
) -> GateResult:
    """Failed when the LLM budget ran out during the run (the ledger refused a call, whose
    answer then fell back to a template) or spend is over the budget; skipped when no
    LLM call happened; passed otherwise.

    ``llm_usage`` is :func:`pytest_mulm.report.llm_usage`'s dict. Refusals are counted by
    the ledger only: give ``refused`` or the run's ``llm-ledger.jsonl`` as ``ledger_path``.
    """
    from .llm.ledger import Ledger, format_usd, usd_to_micro

    spent_micro: int | None = None
    if ledger_path is not None and Path(ledger_path).is_file():
        totals = Ledger(ledger_path, budget_usd).totals()
        spent_micro = totals.spent_micro
        if refused is None:
            refused = totals.refused
    usage = dict(llm_usage or {})
    calls = int(usage.get("calls", 0))
    refused = int(refused or 0)
    if spent_micro is None:
        spent_micro = usd_to_micro(usage.get("spent_usd", usage.get("cost_usd", 0.0)) or 0.0)
    budget_micro = usd_to_micro(budget_usd)
    spent, budget = format_usd(spent_micro), format_usd(budget_micro)
    details = [{"calls": calls, "paid_calls": int(usage.get("paid_calls", 0)), "refused": refused,
                "spent_usd": spent_micro / 1e6, "budget_usd": budget_micro / 1e6}]
    if refused:
        return GateResult("budget", "failed", f"LLM budget exhausted: {refused} call(s) refused by the {budget} budget "
                          f"({spent} spent) and answered by the template fallback instead; raise --mulm-budget "
                          "or replay from the recorded cassettes", details)
    if spent_micro > budget_micro:
        return GateResult("budget", "failed", f"LLM spend {spent} is over the {budget} budget", details)
    if calls == 0:
        return GateResult("budget", "skipped", f"no LLM call in this run: nothing to hold against the {budget} budget",
                          details)
    share = f" ({spent_micro / budget_micro:.1%})" if budget_micro else ""
    return GateResult("budget", "passed", f"LLM spend {spent} of {budget}{share} over {calls} call(s), "
                      f"{details[0]['paid_calls']} paid", details)


# -- the security gate ---------------------------------------------------------------------------


def is_security_check(entry: Mapping[str, Any]) -> bool:
    """True for the security suite's items and the fastapi-service API attacks."""
    if str(entry.get("nodeid", "")).startswith(SECURITY_SUITE_PREFIX):
        return True
    check = str(entry.get("check", ""))
    return entry.get("format") == "fastapi-service" and any(fnmatch.fnmatchcase(check, p) for p in SERVICE_SECURITY_CHECKS)


def _label(entry: Mapping[str, Any]) -> str:
    return str(entry.get("nodeid", "")).split("::")[-1] or f"{entry.get('check')}[{entry.get('format')}]"


def _headline(message: str, limit: int = 200) -> str:
    """A failed item's first line without pytest's "Failed: " (the findings follow in the item)."""
    text = str(message).split(" | ", 1)[0].removeprefix("Failed: ").rstrip(":")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def security_gate(results: Iterable[Mapping[str, Any]]) -> GateResult:
    """Failed when a security check failed or errored; skipped when none ran (not
    selected, or every one skipped); passed otherwise."""
    checks = [dict(r) for r in results if is_security_check(r)]
    details = [{k: r.get(k) for k in ("format", "check", "nodeid", "outcome", "message")} for r in checks]
    bad = [r for r in checks if r.get("outcome") in _FAILED]
    ran = [r for r in checks if r.get("outcome") == "passed"]
    skipped = [r for r in checks if r.get("outcome") == "skipped"]
    if bad:
        listed = "; ".join(f"{_label(r)} {r['outcome']}" + (f": {_headline(r['message'])}" if r.get("message") else "")
                           for r in bad)
        return GateResult("security", "failed", f"{len(bad)} security check(s) failed: {listed}", details)
    if not ran:
        why = ("; ".join(f"{_label(r)}: {r.get('message') or 'skipped'}" for r in skipped[:5])
               if skipped else "the security suite was not selected and no fastapi-service API check ran")
        return GateResult("security", "skipped", f"no security check ran: {why}", details)
    extra = f"; {len(skipped)} skipped" if skipped else ""
    return GateResult("security", "passed", f"{len(ran)} security check(s) passed{extra}", details)


# -- last known good -------------------------------------------------------------------------------


def _workflow_fields(workflow: Any) -> dict[str, Any]:
    get = workflow.get if isinstance(workflow, Mapping) else (lambda k, d=None: getattr(workflow, k, d))
    return {k: get(k) for k in ("id", "name", "version", "content_hash")}


class LastKnownGood:
    """Per format, the last export that passed every gate and check, kept in
    ``<out_dir>/last-known-good/<format>/`` with an ``lkg.json`` describing it."""

    def __init__(self, out_dir: str | Path):
        self.root = Path(out_dir) / LKG_DIRNAME

    def path(self, format: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", format):
            raise ValueError(f"not a format name: {format!r}")
        return self.root / format

    def record(
        self,
        format: str,
        export_dir: str | Path,
        key: str,
        workflow: Any,
        gates_passed: bool,
        *,
        results: Sequence[Mapping[str, Any]] | None = None,
        artifacts: Sequence[str | Path] = (),
    ) -> dict[str, Any]:
        """Make ``export_dir`` the format's last known good when ``gates_passed`` and every
        check of the format passed (``results``: the run's entries; when given, at least
        one of the format's checks must have passed and none failed). Otherwise the
        existing one stays untouched.

        ``artifacts`` (a built wheel, say) are copied into the copy's ``dist/``. Returns
        ``{"recorded": bool, "reason": str, "entry": the last known good now in place or None}``.
        """
        final = self.path(format)
        source = Path(export_dir)
        refusal = self._refusal(format, source, gates_passed, results)
        if refusal:
            return {"recorded": False, "reason": refusal, "entry": self.get(format)}
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / f".{format}.lock")):
            self._recover(format)
            current = self._read(final)
            now = datetime.now(UTC).isoformat(timespec="seconds")
            if current is not None and current.get("key") == key:
                current["last_verified"] = now
                self._write_entry(final, current)
                return {"recorded": True, "reason": f"export {key} already is the last known good; verified again",
                        "entry": self.get(format)}
            entry = {
                "schema": 1, "format": format, "key": key, "workflow": _workflow_fields(workflow),
                "created": now, "last_verified": now, "source_export": str(source.resolve()),
                "artifacts": [Path(a).name for a in artifacts], "plugin_version": __version__,
            }
            tmp = self.root / f".tmp-{format}-{uuid.uuid4().hex[:8]}"
            try:
                # a copy, not links: the cache may be pruned or rebuilt, the rollback target must stay
                shutil.copytree(source, tmp, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                for artifact in artifacts:
                    (tmp / "dist").mkdir(exist_ok=True)
                    shutil.copy2(artifact, tmp / "dist" / Path(artifact).name)
                self._write_entry(tmp, entry)
                # POSIX cannot rename over a non-empty folder: move the old one aside first;
                # a crash between the two renames is repaired by _recover on the next call
                old = self.root / f".old-{format}-{uuid.uuid4().hex[:8]}"
                if final.exists():
                    os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        previous = f" (was {current['key']})" if current else ""
        return {"recorded": True, "reason": f"export {key} is now the last known good{previous}", "entry": self.get(format)}

    def get(self, format: str) -> dict[str, Any] | None:
        """The format's last known good (``lkg.json`` plus ``path``), or None."""
        final = self.path(format)
        if not final.exists() and self.root.is_dir():
            with FileLock(str(self.root / f".{format}.lock")):
                self._recover(format)
        entry = self._read(final)
        if entry is not None:
            entry["path"] = str(final)
        return entry

    def rollback_commands(self, format: str, entry: Mapping[str, Any] | None = None) -> list[str]:
        """Shell lines that put a deployment back on the last known good. Lines starting
        with ``#`` explain; ``$VARIABLES`` are for the user to set (where to deploy)."""
        entry = dict(entry) if entry is not None else self.get(format)
        if entry is None:
            return [f"# no last known good export of {format} yet: nothing to roll back to"]
        lkg = Path(entry.get("path") or self.path(format))
        key = str(entry["key"])
        q = shlex.quote
        head = f"# {format}: roll back to the last known good export {key} (saved {entry.get('created')})"
        if format == "python-package":
            wheels = sorted((lkg / "dist").glob("*.whl"))
            target = wheels[0] if wheels else lkg
            return [head, f"pip install --force-reinstall {q(str(target))}"]
        if format == "fastapi-service":
            return [head, *self._service_commands(lkg, key)]
        if format == "huggingface-space":
            return [head, "# HF_SPACE is your Space's id, e.g. HF_SPACE=<user>/<space>",
                    f"hf upload \"$HF_SPACE\" {q(str(lkg))} . --repo-type space --exclude {LKG_FILE} "
                    f"--commit-message {q(f'Roll back to last known good export {key}')}"]
        if format == "jupyter-notebook":
            notebooks = sorted(lkg.glob("*.ipynb"))
            return [head, "# NOTEBOOK_DIR is where the notebook is published (it needs src/ and requirements.txt beside it)",
                    *(f"cp {q(str(nb))} \"$NOTEBOOK_DIR\"/" for nb in notebooks),
                    f"cp -R {q(str(lkg / 'src'))} {q(str(lkg / 'requirements.txt'))} \"$NOTEBOOK_DIR\"/"]
        if format == "edge-deployment":
            lines = [head, "# EDGE_MODELS_DIR is the device's model folder",
                     f"cp {q(str(lkg / 'models'))}/* \"$EDGE_MODELS_DIR\"/"]
            if (lkg / "runner" / "pyproject.toml").is_file():
                lines += ["# and the runner that goes with those models, on the device",
                          f"pip install --force-reinstall {q(str(lkg / 'runner'))}"]
            return lines
        return [head, "# DEPLOY_DIR is where this format is deployed", f"cp -R {q(str(lkg))}/. \"$DEPLOY_DIR\"/"]

    # -- helpers ---------------------------------------------------------------------------

    def _refusal(self, format: str, source: Path, gates_passed: bool,
                 results: Sequence[Mapping[str, Any]] | None) -> str:
        kept = self._read(self.path(format))
        keeps = f"; the last known good stays {kept['key']}" if kept else "; there is no last known good yet"
        if not gates_passed:
            return "a gate failed" + keeps
        if results is not None:
            mine = [r for r in results if r.get("format") == format]
            bad = [r for r in mine if r.get("outcome") in _FAILED]
            if bad:
                return f"{len(bad)} check(s) of {format} failed ({', '.join(_label(r) for r in bad[:5])})" + keeps
            if not any(r.get("outcome") == "passed" for r in mine):
                return f"no check of {format} passed (none ran, or all were skipped)" + keeps
        if not (source / "mulm-manifest.json").is_file():
            return f"{source} is not a finished export (no mulm-manifest.json)" + keeps
        return ""

    def _recover(self, format: str) -> None:
        """Finish a swap a crash interrupted: the previous copy is put back in place."""
        final = self.path(format)
        if final.exists():
            return
        olds = [p for p in self.root.glob(f".old-{format}-*") if (p / LKG_FILE).is_file()]
        if olds:
            os.replace(max(olds, key=lambda p: p.stat().st_mtime), final)

    @staticmethod
    def _read(folder: Path) -> dict[str, Any] | None:
        try:
            return json.loads((folder / LKG_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    @staticmethod
    def _write_entry(folder: Path, entry: Mapping[str, Any]) -> None:
        write_atomic(folder / LKG_FILE, json.dumps({k: v for k, v in entry.items() if k != "path"}, indent=2,
                                                   sort_keys=True) + "\n")

    @staticmethod
    def _service_commands(lkg: Path, key: str) -> list[str]:
        name, container, image, namespace = _deployment_names(lkg / "k8s" / "deployment.yaml")
        repo = _image_repository(image)
        ns = f" -n {shlex.quote(namespace)}" if namespace else ""
        tagged = f"{repo}:{key}"
        q = shlex.quote
        return [
            "# quickest, when the bad version is the Deployment's latest rollout: its previous revision",
            f"kubectl rollout undo deployment/{q(name)}{ns}",
            "# or pin the last known good build itself; its image is tagged with its export key",
            f"docker build -t {q(tagged)} {q(str(lkg))}",
            f"docker push {q(tagged)}",
            f"kubectl set image deployment/{q(name)} {q(container)}={q(tagged)}{ns}",
            f"kubectl rollout status deployment/{q(name)}{ns}",
        ]


def _deployment_names(manifest: Path) -> tuple[str, str, str, str | None]:
    """(deployment name, container name, image, namespace) from the export's manifest."""
    text = manifest.read_text(encoding="utf-8")
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        yaml = None
    if yaml is not None:
        doc = next(d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d.get("kind") == "Deployment")
        container = doc["spec"]["template"]["spec"]["containers"][0]
        return (str(doc["metadata"]["name"]), str(container["name"]), str(container["image"]),
                doc["metadata"].get("namespace"))

    # without PyYAML: the generated manifest's shape (values are JSON scalars, see the template)
    def scalar(pattern: str) -> str | None:
        found = re.search(pattern, text, re.MULTILINE)
        if not found:
            return None
        raw = found.group(1).strip()
        return str(json.loads(raw)) if raw.startswith('"') else raw

    name, container = scalar(r"^metadata:\n(?:  .*\n)*?  name: (.+)$"), scalar(r"^\s+containers:\n\s+- name: (.+)$")
    image = scalar(r"^\s+image: (.+)$")
    if name is None or container is None or image is None:
        raise ValueError(f"{manifest}: no Deployment name, container or image found (install PyYAML to read any manifest)")
    return name, container, image, scalar(r"^metadata:\n(?:  .*\n)*?  namespace: (.+)$")


def _image_repository(image: str) -> str:
    """``registry:5000/team/app`` from ``registry:5000/team/app:1.0`` (or ``...@sha256:...``)."""
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    return image[: len(image) - len(last)] + last.split(":", 1)[0]
