"""Core benchmarks of pytest-mulm: the design.md §9 targets, measured side by side.

    python benchmarks/bench_core.py [--repeat N] [--json OUT] [--e2e] [--no-wheel]

Sections (see benchmarks/README.md for what each figure means):

a. plugin import overhead on a pytest run that does not use it (A/B against -p no:mulm,
   interleaved), -X importtime of pytest_mulm.plugin, heavy modules loaded at import;
b. cold vs cached export per format and example;
c. peak memory of one cold export (child ru_maxrss over a baseline, tracemalloc peak);
d. artifact sizes (export folders, wheels built with uv);
e. (--e2e) end-to-end ``pytest --mulm-workflow=...`` cold vs warm and -n 2 vs -n 0.

Timings are medians of wall-clock and (for child processes) CPU time on whatever machine
runs this; the targets are judged from the printed figures and ratios, never asserted.
The only asserts are correctness checks (a second export must come from the cache, the
e2e runs must pass, an artifact is built at most once per run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ("iris-mlp", "moe-router", "sentiment-pipeline")
HEAVY = ("numpy", "jinja2", "markupsafe", "filelock")
PY = sys.executable

# design.md §9
TARGET_IMPORT_MS = 30.0
TARGET_CACHED_S = 0.2
TARGET_E2E_COLD_S = 180.0
TARGET_E2E_WARM_S = 60.0


# -- helpers -----------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """The environment for child pytest runs: no addopts or autoload switches leaking in."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")
           and not k.startswith("PYTEST_XDIST")}
    return env


@dataclass
class Run:
    """One child process: wall time, CPU time (user + sys, its reaped descendants included),
    ru_maxrss in KiB (floored at this process's RSS, see LAUNCHER), exit code and output."""

    wall: float
    cpu: float
    maxrss_kib: int
    returncode: int
    stdout: str
    stderr: str


def run(args: list[str], *, cwd: Path | None = None, timeout: float = 1800) -> Run:
    """Run a child and read its own ``struct rusage`` with ``os.wait4``.

    ``resource.getrusage(RUSAGE_CHILDREN)`` sums CPU over every child waited for so far and
    keeps the largest ``ru_maxrss`` of them all, so it cannot tell two measurements in one
    process apart; ``os.wait4`` returns the same figures for the one child it reaps (on
    Linux they include that child's own reaped children: xdist workers, uv, venv commands).
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(args, cwd=cwd, env=child_env(), stdout=out, stderr=err, text=True)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.002)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: tell Popen
        out.seek(0)
        err.seek(0)
        return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, proc.returncode, out.read(), err.read())


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def dir_stats(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 76 - len(title)), flush=True)


# -- a. import overhead ---------------------------------------------------------------------


TRIVIAL_TEST = "def test_trivial():\n    assert 1 + 1 == 2\n"


def bench_import(repeat: int, work: Path) -> dict[str, Any]:
    section("a. plugin import overhead (pytest --co on one trivial test)")
    proj = work / "trivial"
    proj.mkdir()
    (proj / "test_trivial.py").write_text(TRIVIAL_TEST, encoding="utf-8")
    base = [PY, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider", str(proj)]
    variants = {"with_mulm": base, "no_mulm": base + ["-p", "no:mulm"]}

    # Sanity: the plugin really is active in A and really is gone in B.
    probe = {name: run(args + ["--help"], cwd=proj).stdout for name, args in variants.items()}
    assert "--mulm-workflow" in probe["with_mulm"], "the mulm plugin is not loaded through its entry point"
    assert "--mulm-workflow" not in probe["no_mulm"], "-p no:mulm did not disable the plugin"

    for args in variants.values():  # warm the OS file cache and the .pyc files once, discard
        run(args, cwd=proj)
    wall: dict[str, list[float]] = {"with_mulm": [], "no_mulm": []}
    cpu: dict[str, list[float]] = {"with_mulm": [], "no_mulm": []}
    for i in range(repeat):
        order = ("with_mulm", "no_mulm") if i % 2 == 0 else ("no_mulm", "with_mulm")  # ABBA
        for name in order:
            r = run(variants[name], cwd=proj)
            assert r.returncode == 0, r.stdout + r.stderr
            wall[name].append(r.wall)
            cpu[name].append(r.cpu)
    a, b = med(wall["with_mulm"]), med(wall["no_mulm"])
    ca, cb = med(cpu["with_mulm"]), med(cpu["no_mulm"])
    paired = med([x - y for x, y in zip(wall["with_mulm"], wall["no_mulm"], strict=False)])
    paired_cpu = med([x - y for x, y in zip(cpu["with_mulm"], cpu["no_mulm"], strict=False)])
    result: dict[str, Any] = {
        "runs_each": repeat,
        "wall_median_with_mulm_s": a, "wall_median_no_mulm_s": b,
        "wall_overhead_ms": (a - b) * 1000, "wall_overhead_paired_ms": paired * 1000, "wall_ratio": a / b,
        "cpu_median_with_mulm_s": ca, "cpu_median_no_mulm_s": cb,
        "cpu_overhead_ms": (ca - cb) * 1000, "cpu_overhead_paired_ms": paired_cpu * 1000, "cpu_ratio": ca / cb,
        "samples_wall_s": wall, "samples_cpu_s": cpu,
        "command": "python -m pytest --co -q -p no:cacheprovider <tmp>/trivial [-p no:mulm]",
    }
    print(f"  {repeat} runs each, interleaved ABBA; medians     {'wall':>11} {'CPU (user+sys)':>15}")
    print(f"  pytest --co, plugin enabled                   {fmt_ms(a)} {fmt_ms(ca):>15}")
    print(f"  pytest --co, -p no:mulm                       {fmt_ms(b)} {fmt_ms(cb):>15}")
    print(f"  overhead (difference of medians)              {fmt_ms(a - b)} {fmt_ms(ca - cb):>15}")
    print(f"  overhead (median of paired differences)       {fmt_ms(paired)} {fmt_ms(paired_cpu):>15}")
    print(f"  ratio                                         {a / b:11.3f} {ca / cb:15.3f}"
          f"   [target < {TARGET_IMPORT_MS:.0f} ms]")

    result["importtime"] = importtime(max(5, repeat // 3))
    it = result["importtime"]
    print(f"  -X importtime, after `import pytest`: `import pytest_mulm.plugin` takes {it['total_cumulative_ms']:.1f} ms"
          f" (pytest_mulm.* self {it['mulm_self_ms']:.1f} ms; median of {it['runs']})")
    print(f"    modules other than pytest_mulm.* it imports: {', '.join(it['other_modules']) or 'none'}")

    result["heavy_modules"] = heavy_modules(proj)
    hm = result["heavy_modules"]
    print(f"  heavy modules ({', '.join(HEAVY)}) after `import pytest_mulm.plugin`: {hm['after_import'] or 'none'}")
    print(f"  ... after a whole `pytest --co` in one process, plugin enabled: {hm['after_pytest_run_with_mulm'] or 'none'}"
          f" (with -p no:mulm: {hm['after_pytest_run_no_mulm'] or 'none'})")
    return result


def importtime(runs: int) -> dict[str, Any]:
    """-X importtime of ``import pytest_mulm.plugin`` with pytest already imported (as in a run)."""
    code = "import pytest, sys; sys.stderr.write('--MARK--\\n'); sys.stderr.flush(); import pytest_mulm.plugin"
    self_ms, total_ms, per_module = [], [], {}
    others: set[str] = set()
    for _ in range(runs):
        proc = run([PY, "-X", "importtime", "-c", code])
        assert proc.returncode == 0, proc.stderr
        mulm_self = everything = 0
        for line in proc.stderr.split("--MARK--\n", 1)[1].splitlines():
            parsed = parse_importtime(line)
            if parsed is None:
                continue
            self_us, cum_us, depth, name = parsed
            if depth == 0:  # top-level entries: their cumulative times add up to the whole import
                everything += cum_us
            if name.split(".")[0] == "pytest_mulm":
                mulm_self += self_us
                per_module.setdefault(name, []).append(self_us / 1000)
            else:
                others.add(name)
        self_ms.append(mulm_self / 1000)
        total_ms.append(everything / 1000)
    return {
        "runs": runs, "mulm_self_ms": med(self_ms), "total_cumulative_ms": med(total_ms),
        "per_module_self_ms": {k: round(med(v), 3) for k, v in sorted(per_module.items())},
        "other_modules": sorted(others),
        "command": f'python -X importtime -c "{code}"',
    }


def parse_importtime(line: str) -> tuple[int, int, int, str] | None:
    """``import time:   123 |   456 |     pkg.mod`` -> (self us, cumulative us, depth, name)."""
    prefix = "import time:"
    if not line.startswith(prefix) or "self [us]" in line:
        return None
    self_us, cum_us, name = line[len(prefix):].split("|", 2)
    name = name[1:]  # the one space after the bar; two more per nesting level
    depth = (len(name) - len(name.lstrip(" "))) // 2
    return int(self_us), int(cum_us), depth, name.strip()


def heavy_modules(proj: Path) -> dict[str, Any]:
    heavy = repr(HEAVY)
    after_import = (f"import sys, json; import pytest_mulm.plugin; "
                    f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {heavy} and '.' not in m)))")
    after_run = (f"import sys, json, io, contextlib, pytest; buf = io.StringIO()\n"
                 f"with contextlib.redirect_stdout(buf): rc = pytest.main(sys.argv[1:])\n"
                 f"assert rc == 0, buf.getvalue()\n"
                 f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {heavy} and '.' not in m)))")
    out = {}
    proc = run([PY, "-c", after_import])
    assert proc.returncode == 0, proc.stderr
    out["after_import"] = json.loads(proc.stdout)
    for name, extra in (("after_pytest_run_with_mulm", []), ("after_pytest_run_no_mulm", ["-p", "no:mulm"])):
        proc = run([PY, "-c", after_run, "--co", "-q", "-p", "no:cacheprovider", *extra, str(proj)], cwd=proj)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# -- b. cold vs cached export --------------------------------------------------------------


def bench_exports(repeat: int, work: Path) -> dict[str, Any]:
    section("b. export: cold (fresh out dir) vs cached (same out dir), in-process, median")
    from pytest_mulm.exporting import export_workflow
    from pytest_mulm.loader import load_workflow
    from pytest_mulm.plugins import get_registry

    formats = get_registry().formats()
    results: dict[str, Any] = {"formats": formats, "repeat": repeat, "rows": []}
    # First export in this process pays the lazy imports (jinja2, templates): shown apart.
    first = work / "exports-first"
    t0 = time.perf_counter()
    export_workflow(load_workflow(ROOT / "examples" / f"{EXAMPLES[0]}.json"), formats[0], out_dir=first)
    results["first_in_process_s"] = time.perf_counter() - t0
    print(f"  first export in a fresh process (incl. lazy imports): {fmt_ms(results['first_in_process_s'])}"
          f"  [{formats[0]}, {EXAMPLES[0]}, incl. load]")
    print(f"  {'format':16} {'example':20} {'load':>11} {'cold':>11} {'cached':>11} {'cached+load':>12} {'cold/cached':>11}")
    keep = work / "exports-kept"
    for fmt in formats:
        for ex in EXAMPLES:
            path = ROOT / "examples" / f"{ex}.json"
            load, cold, cold_inner, cached, cached_inner = [], [], [], [], []
            for i in range(repeat):
                t0 = time.perf_counter()
                wf = load_workflow(path)
                load.append(time.perf_counter() - t0)
                out = (keep / fmt / ex) if i == 0 else Path(tempfile.mkdtemp(dir=work, prefix="exp-"))
                t0 = time.perf_counter()
                r1 = export_workflow(wf, fmt, out_dir=out)
                cold.append(time.perf_counter() - t0)
                cold_inner.append(r1.seconds)
                assert not r1.from_cache, f"{fmt}/{ex}: a fresh out_dir must not hit the cache"
                t0 = time.perf_counter()
                r2 = export_workflow(wf, fmt, out_dir=out)
                cached.append(time.perf_counter() - t0)
                cached_inner.append(r2.seconds)
                assert r2.from_cache, f"{fmt}/{ex}: second export into the same out_dir was rebuilt"
                assert r2.path == r1.path and r2.key == r1.key
                if i == 0:
                    path_kept = r1.path
                else:
                    shutil.rmtree(out, ignore_errors=True)
            row = {
                "format": fmt, "example": ex,
                "load_s": med(load), "cold_s": med(cold), "cached_s": med(cached),
                "cold_inner_s": med(cold_inner), "cached_inner_s": med(cached_inner),
                "cached_plus_load_s": med([a + b for a, b in zip(load, cached, strict=False)]),
                "cached_max_s": max(cached), "export_dir": str(path_kept),
                "samples": {"load": load, "cold": cold, "cached": cached},
            }
            row["ratio_cold_over_cached"] = row["cold_s"] / row["cached_s"]
            results["rows"].append(row)
            print(f"  {fmt:16} {ex:20} {fmt_ms(row['load_s'])} {fmt_ms(row['cold_s'])} {fmt_ms(row['cached_s'])}"
                  f" {fmt_ms(row['cached_plus_load_s']):>12} {row['ratio_cold_over_cached']:10.0f}x")
    worst = max(r["cached_plus_load_s"] for r in results["rows"])
    print(f"  slowest cached re-export incl. loading the workflow: {fmt_ms(worst)}  [target < {TARGET_CACHED_S * 1000:.0f} ms]")
    return results


# -- c. peak memory ---------------------------------------------------------------------------


MEM_EXPORT = """
import json, sys, tracemalloc
from pytest_mulm.loader import load_workflow
from pytest_mulm.exporting import export_workflow
tracemalloc.start()
wf = load_workflow(sys.argv[1])
r = export_workflow(wf, sys.argv[2], out_dir=sys.argv[3])
assert not r.from_cache
current, peak = tracemalloc.get_traced_memory()
print(json.dumps({"tracemalloc_peak": peak, "vmhwm_kib": VMHWM()}))
"""

MEM_BASELINE = """
import json
import pytest_mulm.loader
print(json.dumps({"vmhwm_kib": VMHWM()}))
"""

# Peak RSS of this process's own address space (reset by exec), Linux only.
VMHWM_DEF = """
def VMHWM():
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None
"""

# A small launcher with one child: its RUSAGE_CHILDREN is that child's alone. Needed
# because Linux carries the pre-exec high-water mark into the child's ru_maxrss, so a
# child spawned straight from this (numpy-laden) process would never read below it.
LAUNCHER = """
import json, resource, subprocess, sys
rc = subprocess.run(sys.argv[1:]).returncode
u = resource.getrusage(resource.RUSAGE_CHILDREN)
sys.stderr.write("\\nMULM-RUSAGE " + json.dumps({"rc": rc, "maxrss_kib": u.ru_maxrss}) + "\\n")
sys.exit(rc)
"""


def measured(code: str, *args: str) -> dict[str, Any]:
    r = run([PY, "-I", "-S", "-c", LAUNCHER, PY, "-c", VMHWM_DEF + code, *args])
    assert r.returncode == 0, r.stderr
    usage = json.loads(r.stderr.rsplit("MULM-RUSAGE ", 1)[1])
    return {"maxrss_kib": usage["maxrss_kib"], **json.loads(r.stdout.strip().splitlines()[-1])}


def bench_memory(formats: list[str], work: Path, runs: int = 3) -> dict[str, Any]:
    section(f"c. peak memory of one cold export (fresh subprocess each, median of {runs})")
    # The floor: a bare interpreter through the launcher (the launcher's RSS at spawn time
    # would show here if it were the larger); every figure below must sit well above it.
    launcher = measured("import json\nprint(json.dumps({}))")["maxrss_kib"]
    baseline = [measured(MEM_BASELINE) for _ in range(runs)]
    base_rss = med([b["maxrss_kib"] for b in baseline])
    base_hwm = med([b["vmhwm_kib"] or 0 for b in baseline])
    print(f"  baseline `import pytest_mulm.loader`: ru_maxrss {base_rss / 1024:6.1f} MiB, VmHWM {base_hwm / 1024:6.1f} MiB"
          f"  (floor: bare python via the launcher {launcher / 1024:.1f} MiB)")
    print(f"  {'format':16} {'example':20} {'ru_maxrss':>10} {'- baseline':>11} {'VmHWM - base':>13} {'tracemalloc peak':>17}")
    rows = []
    for fmt in formats:
        for ex in EXAMPLES:
            samples = []
            for _ in range(runs):
                out = Path(tempfile.mkdtemp(dir=work, prefix="mem-"))
                samples.append(measured(MEM_EXPORT, str(ROOT / "examples" / f"{ex}.json"), fmt, str(out)))
                shutil.rmtree(out, ignore_errors=True)
            rss = med([x["maxrss_kib"] for x in samples])
            hwm = med([x["vmhwm_kib"] or 0 for x in samples])
            row = {"format": fmt, "example": ex, "maxrss_kib": rss, "delta_kib": rss - base_rss,
                   "vmhwm_kib": hwm, "vmhwm_delta_kib": hwm - base_hwm,
                   "tracemalloc_peak_bytes": med([x["tracemalloc_peak"] for x in samples]), "samples": samples}
            rows.append(row)
            print(f"  {fmt:16} {ex:20} {rss / 1024:6.1f} MiB {row['delta_kib'] / 1024:+7.1f} MiB"
                  f" {row['vmhwm_delta_kib'] / 1024:+9.1f} MiB {row['tracemalloc_peak_bytes'] / 2**20:13.2f} MiB")
    return {"baseline_maxrss_kib": base_rss, "baseline_vmhwm_kib": base_hwm, "launcher_floor_kib": launcher,
            "baseline_samples": baseline, "rows": rows, "runs": runs}


# -- d. artifact sizes ---------------------------------------------------------------------------


def bench_sizes(export_rows: list[dict[str, Any]], work: Path, wheels: bool) -> dict[str, Any]:
    section("d. artifact sizes")
    uv = None
    if wheels:
        try:
            from uv import find_uv_bin

            uv = find_uv_bin()
        except (ImportError, FileNotFoundError):
            print("  (uv not installed: wheel sizes skipped)")
    rows = []
    print(f"  {'format':16} {'example':20} {'export bytes':>13} {'files':>6} {'wheel bytes':>12} {'wheel build':>12}")
    for er in export_rows:
        path = Path(er["export_dir"])
        size, count = dir_stats(path)
        row: dict[str, Any] = {"format": er["format"], "example": er["example"], "export_bytes": size, "export_files": count}
        if uv and (path / "pyproject.toml").is_file():
            src = work / "wheelsrc" / er["format"] / er["example"]
            dist = work / "wheels" / er["format"] / er["example"]
            shutil.copytree(path, src)  # build from a copy: the export folder stays as its manifest says
            proc = run([uv, "build", "--wheel", "--quiet", "--out-dir", str(dist), str(src)])
            seconds = proc.wall
            built = sorted(dist.glob("*.whl"))
            if proc.returncode == 0 and built:
                row.update(wheel=built[0].name, wheel_bytes=built[0].stat().st_size, wheel_build_s=seconds)
            else:
                row.update(wheel=None, wheel_error=(proc.stdout + proc.stderr)[-2000:])
        rows.append(row)
        wb = f"{row['wheel_bytes']:12d}" if row.get("wheel_bytes") else f"{'-':>12}"
        ws = fmt_ms(row["wheel_build_s"]) if row.get("wheel_build_s") else f"{'-':>11}"
        print(f"  {row['format']:16} {row['example']:20} {size:13d} {count:6d} {wb} {ws:>12}")
        if row.get("wheel_error"):
            print("    wheel build failed:\n    " + row["wheel_error"][-500:].replace("\n", "\n    "))
    return {"rows": rows, "uv": uv}


# -- e. end-to-end ----------------------------------------------------------------------------------


def bench_e2e(repeat: int, work: Path, example: str = "iris-mlp", fmt: str = "python-package") -> dict[str, Any]:
    section(f"e. end-to-end: pytest --mulm-workflow=examples/{example}.json --mulm-format={fmt}")
    wf = ROOT / "examples" / f"{example}.json"  # absolute: the run's cwd is a tmp folder

    def one(tag: str, out: Path, n: int) -> dict[str, Any]:
        cwd = work / "e2e" / f"{tag}"
        cwd.mkdir(parents=True, exist_ok=True)
        basetemp = Path(tempfile.mkdtemp(dir=work, prefix="bt-"))
        args = [PY, "-m", "pytest", f"--mulm-workflow={wf}", f"--mulm-format={fmt}", f"--mulm-out={out}",
                "-p", "no:cacheprovider", "-q", f"--basetemp={basetemp}", "-n", str(n)]
        proc = run(args, cwd=cwd, timeout=1800)
        report = json.loads((out / "mulm-report.json").read_text(encoding="utf-8")) if (out / "mulm-report.json").is_file() else {}
        fr = report.get("formats", {}).get(fmt, {})
        assert proc.returncode == 0, f"e2e run {tag} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
        # The once-per-run results the fixtures recorded: wheel build and venv+install times.
        phases = {}
        for name in ("wheel", "install"):
            found = sorted((basetemp / "mulm-run").glob(f"{name}-*.json"))
            if found:
                phases[f"{name}_s"] = json.loads(found[0].read_text(encoding="utf-8")).get("seconds")
            phases[f"{name}_records"] = len(found)  # one per artifact, however many workers
        checks = {c["check"]: c["duration"] for c in fr.get("checks", [])}
        shutil.rmtree(basetemp, ignore_errors=True)  # wheels and venvs of that run
        return {"seconds": proc.wall, "cpu_s": proc.cpu, "builds": fr.get("builds"), "from_cache": fr.get("from_cache"),
                "passed": report.get("tests_passed"), "total": report.get("tests_total"), **phases,
                "check_call_s": checks}

    configs = ("cold_n0", "cold_n2", "warm_n0", "warm_n2")
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    for i in range(repeat):
        out0 = Path(tempfile.mkdtemp(dir=work, prefix="out-n0-"))
        out2 = Path(tempfile.mkdtemp(dir=work, prefix="out-n2-"))
        out0.rmdir(), out2.rmdir()  # fresh: the run creates it
        pairs = [("cold_n0", out0, 0), ("cold_n2", out2, 2)]
        if i % 2:
            pairs.reverse()  # alternate which of -n 0 / -n 2 goes first
        for tag, out, n in pairs + [(t.replace("cold", "warm"), o, n) for t, o, n in pairs]:
            r = one(f"{tag}-{i}", out, n)
            if tag.startswith("cold"):
                assert r["from_cache"] is False, f"{tag}: a fresh --mulm-out came from the cache"
            else:
                assert r["from_cache"] is True, f"{tag}: the export was rebuilt although --mulm-out was reused"
            assert r["builds"] in (0, 1), f"{tag}: the artifact was built {r['builds']} times"
            runs[tag].append(r)
            print(f"  round {i + 1}: {tag:8} {r['seconds']:6.2f} s wall {r['cpu_s']:6.2f} s CPU  builds={r['builds']}"
                  f" from_cache={r['from_cache']!s:5} wheel {r.get('wheel_s') or 0:4.1f} s venv+install"
                  f" {r.get('install_s') or 0:4.1f} s  passed {r['passed']}/{r['total']}", flush=True)
        shutil.rmtree(out0, ignore_errors=True)
        shutil.rmtree(out2, ignore_errors=True)
    summary = {c: med([r["seconds"] for r in runs[c]]) for c in configs}
    cpu = {c: med([r["cpu_s"] for r in runs[c]]) for c in configs}
    print(f"  median of {repeat}, wall: " + ", ".join(f"{c} {summary[c]:.2f} s" for c in configs))
    print(f"  median of {repeat}, CPU:  " + ", ".join(f"{c} {cpu[c]:.2f} s" for c in configs))
    print(f"  -n 2 / -n 0 (cold): {summary['cold_n2'] / summary['cold_n0']:.3f}   warm / cold (-n 0):"
          f" {summary['warm_n0'] / summary['cold_n0']:.3f}   [targets: cold < {TARGET_E2E_COLD_S:.0f} s,"
          f" warm < {TARGET_E2E_WARM_S:.0f} s, -n 2 faster than -n 0]")
    return {
        "example": example, "format": fmt, "repeat": repeat, "median_s": summary, "median_cpu_s": cpu, "runs": runs,
        "ratio_n2_over_n0_cold": summary["cold_n2"] / summary["cold_n0"],
        "ratio_n2_over_n0_warm": summary["warm_n2"] / summary["warm_n0"],
        "ratio_warm_over_cold_n0": summary["warm_n0"] / summary["cold_n0"],
        "command": (f"cd <tmp> && python -m pytest --mulm-workflow={wf} --mulm-format={fmt} --mulm-out=<out> "
                    "-p no:cacheprovider -q --basetemp=<tmp> -n {0|2}"),
    }


# -- main ------------------------------------------------------------------------------------------


def git_describe() -> str | None:
    """The commit measured, with ``+dirty`` when the working tree has changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=False)
    except OSError:
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="A/B pytest runs per variant for the import overhead (default 20)")
    parser.add_argument("--export-repeat", type=int, default=7, help="cold/cached export pairs per format and example (default 7)")
    parser.add_argument("--e2e", action="store_true", help="also run the end-to-end pytest verification (about 2 to 3 minutes)")
    parser.add_argument("--e2e-repeat", type=int, default=3, help="rounds of the 4 e2e configurations (default 3)")
    parser.add_argument("--no-wheel", action="store_true", help="skip building wheels with uv for the size figures")
    parser.add_argument("--json", type=Path, default=None, help="write all figures and raw samples to this JSON file")
    args = parser.parse_args(argv)

    import pytest_mulm

    started = time.perf_counter()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
        "pytest_mulm": pytest_mulm.__version__, "git": git_describe(),
        "argv": ["python", "benchmarks/bench_core.py", *(argv if argv is not None else sys.argv[1:])],
        "loadavg_start": loadavg(),
    }
    print(f"pytest-mulm {results['pytest_mulm']} ({results['git']}) benchmarks, Python {results['python']}, {results['cpus']} CPUs,"
          f" load average {results['loadavg_start']}")
    with tempfile.TemporaryDirectory(prefix="mulm-bench-") as tmp:
        work = Path(tmp)
        results["import"] = bench_import(args.repeat, work)
        results["export"] = bench_exports(args.export_repeat, work)
        results["memory"] = bench_memory(results["export"]["formats"], work)
        results["sizes"] = bench_sizes(results["export"]["rows"], work, wheels=not args.no_wheel)
        if args.e2e:
            results["e2e"] = bench_e2e(args.e2e_repeat, work)
        else:
            section("e. end-to-end: skipped (pass --e2e)")
    results["loadavg_end"] = loadavg()
    results["total_s"] = time.perf_counter() - started

    section("summary against design.md §9")
    imp = results["import"]
    print(f"  plugin import overhead     {imp['cpu_overhead_ms']:7.1f} ms CPU, {imp['wall_overhead_ms']:.1f} ms wall"
          f" (medians of {imp['runs_each']} A/B runs)   target < {TARGET_IMPORT_MS:.0f} ms")
    print(f"  heavy modules at import    {imp['heavy_modules']['after_import'] or 'none'}   target: none")
    worst = max(results["export"]["rows"], key=lambda r: r["cached_plus_load_s"])
    print(f"  slowest cached re-export   {worst['cached_plus_load_s'] * 1000:7.1f} ms incl. load"
          f" ({worst['format']}/{worst['example']})   target < {TARGET_CACHED_S * 1000:.0f} ms")
    if "e2e" in results:
        e = results["e2e"]["median_s"]
        print(f"  e2e {results['e2e']['example']} cold / warm    {e['cold_n0']:.1f} s / {e['warm_n0']:.1f} s (-n 0),"
              f" {e['cold_n2']:.1f} s / {e['warm_n2']:.1f} s (-n 2)   targets < 180 s / < 60 s, -n 2 faster")
    print(f"  total bench time {results['total_s']:.0f} s, load average {results['loadavg_start']} -> {results['loadavg_end']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"  figures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
