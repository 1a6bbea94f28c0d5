"""Gates (benchmark, budget, security), baseline storage and the last known good."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_mulm.exporting import export_workflow
from pytest_mulm.gates import (
    LKG_DIRNAME,
    Baseline,
    LastKnownGood,
    benchmark_gate,
    budget_gate,
    compare,
    direction,
    flatten_figures,
    is_security_check,
    load_baseline,
    machine_id,
    save_baseline,
    security_gate,
)
from pytest_mulm.loader import load_workflow, parse_workflow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BENCH_CLI = Path(sys.executable).parent / "pytest-benchmark"
FIGURES = {
    "python-package": {"call_p50_ms": 20.0, "call_p95_ms": 24.0, "calls": 300},
    "fastapi-service": {"p50_ms": 1.5, "throughput_rps": 800.0, "concurrent_clients": 8},
    "edge-deployment": {"runner": {"p50_ms": 3.0, "peak_mb": 80.5},
                        "onnxruntime_int8": {"agreement": 1.0, "weights_dominate": True}},
}


# -- figures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name, expected", [
    ("p50_ms", "lower"), ("call_p95_ms", "lower"), ("runner.peak_mb", "lower"), ("int8_bytes", "lower"),
    ("p50_ms_batch256.onnxruntime", "lower"), ("startup_s", "lower"), ("export_seconds", "lower"),
    ("wheel_kb", "lower"), ("throughput_rps", "higher"), ("requests_per_s", "higher"),
    ("onnxruntime_int8.agreement", "higher"), ("accuracy_ratio", "higher"),
    ("calls", None), ("concurrent_clients", None), ("size_ratio", None), ("out.max_abs", None),
])
def test_direction_from_the_name(name: str, expected: str | None) -> None:
    assert direction(name) == expected


def test_nested_figures_flatten_and_non_numbers_drop() -> None:
    assert flatten_figures(FIGURES["edge-deployment"]) == {
        "runner.p50_ms": 3.0, "runner.peak_mb": 80.5, "onnxruntime_int8.agreement": 1.0}
    assert flatten_figures({"a_ms": float("nan"), "b_ms": "fast", "c_ms": 2}) == {"c_ms": 2.0}


# -- baseline storage ------------------------------------------------------------------------


def test_save_load_round_trip_in_pytest_benchmark_layout(tmp_path: Path) -> None:
    from pytest_benchmark.utils import get_machine_id

    assert machine_id() == get_machine_id()
    path = save_baseline(tmp_path, "iris-mlp", FIGURES, workflow_name="Iris", content_hash="abc",
                         commit_info={"id": "deadbeef", "dirty": False, "project": "x", "branch": "main"})
    assert path == tmp_path / get_machine_id() / "0001_mulm-iris-mlp.json"
    doc = json.loads(path.read_text())
    assert {"machine_info", "commit_info", "benchmarks", "datetime", "version"} <= set(doc)
    p50 = next(b for b in doc["benchmarks"] if b["fullname"] == "python-package::call_p50_ms")
    assert p50["group"] == "python-package" and p50["name"] == "call_p50_ms"
    assert p50["stats"]["median"] == pytest.approx(0.020)  # seconds, pytest-benchmark's unit
    assert p50["stats"]["rounds"] == 1
    # pytest-benchmark would show a throughput as a time: only time figures are in its list
    assert {b["fullname"] for b in doc["benchmarks"]} == {
        "python-package::call_p50_ms", "python-package::call_p95_ms", "fastapi-service::p50_ms",
        "edge-deployment::runner.p50_ms"}
    loaded = load_baseline(tmp_path, "iris-mlp")
    assert loaded == Baseline(path, {fmt: flatten_figures(f) for fmt, f in FIGURES.items()})
    # a later save is the new baseline
    newer = save_baseline(tmp_path, "iris-mlp", {"python-package": {"call_p50_ms": 21.0}})
    assert newer.name == "0002_mulm-iris-mlp.json"
    assert load_baseline(tmp_path, "iris-mlp") == (newer, {"python-package": {"call_p50_ms": 21.0}})


def test_pytest_benchmark_cli_lists_and_compares_saved_baseline(tmp_path: Path) -> None:
    if not BENCH_CLI.is_file():
        pytest.skip("the pytest-benchmark command is not installed beside this interpreter")
    store = tmp_path / "store"
    first = save_baseline(store, "iris-mlp", FIGURES)
    second = save_baseline(store, "iris-mlp", {"python-package": {"call_p50_ms": 26.0, "call_p95_ms": 30.0}})
    run = tmp_path / "cwd"  # the CLI imports ./conftest.py: run it away from ours
    run.mkdir()
    listed = subprocess.run([str(BENCH_CLI), "--storage", f"file://{store}", "list"],
                            capture_output=True, text=True, cwd=run, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert str(first) in listed.stdout and str(second) in listed.stdout
    compared = subprocess.run([str(BENCH_CLI), "--storage", f"file://{store}", "compare", "--columns=median"],
                              capture_output=True, text=True, cwd=run, timeout=120)
    assert compared.returncode == 0, compared.stderr
    assert "Failed to load" not in compared.stdout + compared.stderr
    text = compared.stdout
    assert "benchmark 'python-package'" in text and "benchmark 'fastapi-service'" in text
    assert "call_p50_ms (0001_mulm-ir)" in text and "call_p50_ms (0002_mulm-ir)" in text
    # the medians in ms, the second run 1.30 times the first
    assert "Name (time in ms)" in text and "26.0000 (1.30)" in text


def test_numbering_continues_after_pytest_benchmark_own_files(tmp_path: Path) -> None:
    folder = tmp_path / machine_id()
    folder.mkdir()
    (folder / "0007_1234abcd_20261204_120000.json").write_text("{}")
    assert save_baseline(tmp_path, "wf", FIGURES).name == "0008_mulm-wf.json"


def test_load_takes_this_workflow_only_and_passes_over_unreadable_files(tmp_path: Path) -> None:
    mine = save_baseline(tmp_path, "wf", {"python-package": {"call_p50_ms": 1.0}})
    save_baseline(tmp_path, "wf-other", {"python-package": {"call_p50_ms": 9.0}})
    # an id that reduces to the same file name is not the same workflow
    save_baseline(tmp_path, "wf!", {"python-package": {"call_p50_ms": 7.0}})
    assert load_baseline(tmp_path, "wf") == (mine, {"python-package": {"call_p50_ms": 1.0}})
    broken = mine.parent / "0009_mulm-wf.json"
    broken.write_text('{"benchmarks": [')  # cut short
    assert load_baseline(tmp_path, "wf") == (mine, {"python-package": {"call_p50_ms": 1.0}})
    assert load_baseline(tmp_path, "never-saved") is None
    assert load_baseline(tmp_path / "nowhere", "wf") is None


def test_an_empty_baseline_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no benchmark figures to save for workflow 'wf'"):
        save_baseline(tmp_path, "wf", {"python-package": {"calls": True}, "edge-deployment": {}})
    assert not list(tmp_path.rglob("*.json"))


# -- the benchmark gate ------------------------------------------------------------------------


BASE = {"python-package": {"call_p50_ms": 20.0, "calls": 300}}


@pytest.mark.parametrize("threshold", [25, 20])
def test_a_30_percent_slowdown_fails(threshold: float) -> None:
    result = compare({"python-package": {"call_p50_ms": 26.0, "calls": 250}}, Baseline(Path("b.json"), BASE), threshold)
    assert result.outcome == "failed" and result.failed
    assert result.message == (f"1 benchmark figure(s) regressed beyond {threshold} %: python-package call_p50_ms "
                              "20 -> 26 (+30.0 %); baseline (b.json)")
    row = next(r for r in result.details if r["figure"] == "call_p50_ms")
    assert row == {"format": "python-package", "figure": "call_p50_ms", "baseline": 20.0, "current": 26.0,
                   "change_percent": 30.0, "threshold_percent": threshold, "direction": "lower",
                   "outcome": "failed", "reason": "slower or bigger by 30.0 %"}
    calls = next(r for r in result.details if r["figure"] == "calls")
    assert calls["outcome"] == "not compared" and "direction unknown" in calls["reason"]


@pytest.mark.parametrize("now", [22.0, 15.0, 20.0, 25.0])  # +10 %, an improvement, equal, exactly +25 %
def test_within_threshold_or_faster_passes(now: float) -> None:
    result = compare({"python-package": {"call_p50_ms": now}}, BASE, 25)
    assert result.outcome == "passed", result.message
    assert result.message == "1 benchmark figure(s) within 25 % of the baseline; 1 not compared"


def test_higher_is_better_figures_fail_when_they_drop() -> None:
    base = {"fastapi-service": {"throughput_rps": 800.0}, "edge-deployment": {"onnxruntime_int8": {"agreement": 1.0}}}
    dropped = compare({"fastapi-service": {"throughput_rps": 560.0},
                       "edge-deployment": {"onnxruntime_int8": {"agreement": 0.7}}}, base, 25)
    assert dropped.outcome == "failed"
    assert "fastapi-service throughput_rps 800 -> 560 (-30.0 %)" in dropped.message
    assert "edge-deployment onnxruntime_int8.agreement 1 -> 0.7 (-30.0 %)" in dropped.message
    assert compare({"fastapi-service": {"throughput_rps": 1200.0}}, base, 25).outcome == "passed"


def test_figures_missing_on_one_side_or_without_percentage_are_not_compared() -> None:
    result = compare({"python-package": {"call_p50_ms": 21.0, "call_p95_ms": 99.0}},
                     {"python-package": {"call_p50_ms": 20.0, "overhead_p50_ms": -0.2},
                      "fastapi-service": {"p50_ms": 1.0}}, 25)
    assert result.outcome == "passed"
    reasons = {(r["format"], r["figure"]): r["reason"] for r in result.details if r["outcome"] == "not compared"}
    assert reasons == {
        ("python-package", "call_p95_ms"): "missing in the baseline",
        ("python-package", "overhead_p50_ms"): "missing in this run",
        ("fastapi-service", "p50_ms"): "missing in this run",
    }
    negative = compare({"python-package": {"overhead_p50_ms": 5.0}}, {"python-package": {"overhead_p50_ms": -0.2}}, 25)
    assert negative.outcome == "skipped"
    assert negative.message == "no figure could be compared with the baseline: baseline is 0 or negative: no percentage"


def test_time_changes_under_the_noise_floor_do_not_fail() -> None:
    base = {"fastapi-service": {"bare_p50_ms": 0.02}}
    result = compare({"fastapi-service": {"bare_p50_ms": 0.05}}, base, 25)  # +150 %, but 30 µs
    assert result.outcome == "passed"
    assert result.details[0]["reason"] == "within the 0.1 ms noise floor"
    assert compare({"fastapi-service": {"bare_p50_ms": 0.05}}, base, 25, noise_floor_ms=0).outcome == "failed"


def test_no_baseline_is_a_skip_with_the_reason(tmp_path: Path) -> None:
    result = benchmark_gate(tmp_path / ".benchmarks", "iris-mlp", {"python-package": {"call_p50_ms": 20.0}}, 25)
    assert result.outcome == "skipped" and not result.failed
    assert result.message == (f"no baseline yet for workflow 'iris-mlp' on machine {machine_id()} in "
                              f"{tmp_path / '.benchmarks'}: run with --mulm-save-baseline to save one")
    direct = compare({"python-package": {"call_p50_ms": 20.0}}, None, 25, workflow_id="w", baseline_dir="d", machine="M")
    assert direct.message == "no baseline yet for workflow 'w' on machine M in d: run with --mulm-save-baseline to save one"


def test_a_run_without_figures_is_a_skip(tmp_path: Path) -> None:
    save_baseline(tmp_path, "wf", BASE)
    result = benchmark_gate(tmp_path, "wf", {"python-package": {}}, 25)
    assert result.outcome == "skipped"
    assert result.message.startswith("this run recorded no benchmark figures to compare with the baseline (")


def test_gate_through_saved_files(tmp_path: Path) -> None:
    path = save_baseline(tmp_path, "wf", BASE)
    result = benchmark_gate(tmp_path, "wf", {"python-package": {"call_p50_ms": 26.0}}, 25)
    assert result.outcome == "failed" and str(path) in result.message
    assert result.as_dict()["details"][0]["figure"] == "call_p50_ms"


# -- the budget gate ---------------------------------------------------------------------------


def test_budget_skipped_without_llm_calls() -> None:
    result = budget_gate(None, 25.0)
    assert (result.outcome, result.message) == ("skipped", "no LLM call in this run: nothing to hold against the $25.00 budget")
    assert budget_gate({"calls": 0, "spent_usd": 0.0}, 25.0).outcome == "skipped"


def test_budget_passes_with_spend_in_the_message() -> None:
    result = budget_gate({"calls": 4, "paid_calls": 2, "spent_usd": 0.0125, "cost_usd": 0.0125}, 25.0, refused=0)
    assert result.outcome == "passed"
    assert result.message == "LLM spend $0.0125 of $25.00 (0.1%) over 4 call(s), 2 paid"


def test_budget_fails_when_the_ledger_refused_a_call(tmp_path: Path) -> None:
    from pytest_mulm.llm.ledger import Ledger

    ledger_path = tmp_path / "llm-ledger.jsonl"
    ledger = Ledger(ledger_path, 0.01)
    ledger.settle(ledger.reserve(8_000, "first"), 8_000)
    assert ledger.reserve(5_000, "second") is None  # does not fit: refused, nothing sent
    usage = {"calls": 2, "paid_calls": 1, "spent_usd": 0.008, "cost_usd": 0.008}
    result = budget_gate(usage, 0.01, ledger_path=ledger_path)
    assert result.outcome == "failed"
    assert result.message == ("LLM budget exhausted: 1 call(s) refused by the $0.01 budget ($0.008 spent) and answered "
                              "by the template fallback instead; raise --mulm-budget or replay from the recorded cassettes")
    assert result.details[0]["refused"] == 1
    assert budget_gate(usage, 0.01, refused=3).message.startswith("LLM budget exhausted: 3 call(s) refused")


def test_budget_fails_when_spend_is_over_the_budget() -> None:
    result = budget_gate({"calls": 1, "paid_calls": 1, "spent_usd": 0.5}, 0.25, refused=0)
    assert (result.outcome, result.message) == ("failed", "LLM spend $0.50 is over the $0.25 budget")


# -- the security gate -------------------------------------------------------------------------


def entry(nodeid: str, outcome: str, message: str = "") -> dict:
    name = nodeid.split("::")[-1]
    return {"nodeid": nodeid, "format": name.split("[")[1].rstrip("]"), "check": name.split("[")[0],
            "outcome": outcome, "message": message}


def test_security_checks_are_the_suite_and_the_service_attacks() -> None:
    assert is_security_check(entry("mulm/security::test_bandit[python-package]", "passed"))
    for check in ("test_auth_rejects_missing_credentials", "test_auth_rejects_wrong_key", "test_jwt_rejects_expired",
                  "test_rate_limit_429_with_retry_after", "test_body_too_large_413",
                  "test_no_traceback_or_path_in_errors", "test_no_secret_in_artifact"):
        assert is_security_check(entry(f"mulm/fastapi_service::{check}[fastapi-service]", "passed")), check
    assert not is_security_check(entry("mulm/fastapi_service::test_health[fastapi-service]", "passed"))
    assert not is_security_check(entry("mulm/python_package::test_parity[python-package]", "failed"))


def test_security_gate_fails_on_a_failed_or_errored_check() -> None:
    results = [
        entry("mulm/security::test_bandit[python-package]", "passed"),
        entry("mulm/security::test_secrets[fastapi-service]", "failed", "API key in app.py"),
        entry("mulm/fastapi_service::test_auth_rejects_wrong_key[fastapi-service]", "error", "server did not start"),
        entry("mulm/python_package::test_parity[python-package]", "failed", "not a security check"),
    ]
    result = security_gate(results)
    assert result.outcome == "failed"
    assert result.message == ("2 security check(s) failed: test_secrets[fastapi-service] failed: API key in app.py; "
                              "test_auth_rejects_wrong_key[fastapi-service] error: server did not start")
    assert len(result.details) == 3


def test_security_gate_passes_and_skips() -> None:
    passed = security_gate([entry("mulm/security::test_bandit[python-package]", "passed"),
                            entry("mulm/security::test_audit[python-package]", "skipped", "no advisory database")])
    assert (passed.outcome, passed.message) == ("passed", "1 security check(s) passed; 1 skipped")
    skipped = security_gate([entry("mulm/security::test_audit[python-package]", "skipped", "no advisory database")])
    assert (skipped.outcome, skipped.message) == ("skipped", "no security check ran: test_audit[python-package]: no advisory database")
    none = security_gate([entry("mulm/python_package::test_parity[python-package]", "passed")])
    assert none.outcome == "skipped"
    assert none.message == ("no security check ran: the security suite was not selected and no fastapi-service "
                            "API check ran")


# -- last known good ---------------------------------------------------------------------------


def fake_export(root: Path, key: str, files: dict[str, str] | None = None) -> Path:
    path = root / key
    for rel, text in {"mulm-manifest.json": json.dumps({"cache_key": key}), "README.md": f"# {key}\n",
                      **(files or {})}.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    return path


WF = {"id": "iris-mlp", "name": "Iris", "version": "1.0.0", "content_hash": "h1"}
PASSED = [entry("mulm/python_package::test_install[python-package]", "passed")]


def test_lkg_recorded_when_every_gate_and_check_passed(tmp_path: Path) -> None:
    lkg = LastKnownGood(tmp_path / "out")
    assert lkg.get("python-package") is None
    export = fake_export(tmp_path / "cache", "k1")
    outcome = lkg.record("python-package", export, "k1", WF, True, results=PASSED)
    assert outcome["recorded"] and outcome["reason"] == "export k1 is now the last known good"
    entry_ = lkg.get("python-package")
    folder = tmp_path / "out" / LKG_DIRNAME / "python-package"
    assert entry_["path"] == str(folder) and entry_["key"] == "k1"
    assert entry_["workflow"] == WF and entry_["source_export"] == str(export.resolve())
    assert (folder / "README.md").read_text() == "# k1\n"
    # a newer good export replaces it; nothing temporary is left beside it
    lkg.record("python-package", fake_export(tmp_path / "cache", "k2"), "k2", {**WF, "content_hash": "h2"}, True)
    assert lkg.get("python-package")["key"] == "k2" and (folder / "README.md").read_text() == "# k2\n"
    assert sorted(p.name for p in (tmp_path / "out" / LKG_DIRNAME).iterdir() if not p.name.endswith(".lock")) == ["python-package"]


def test_lkg_untouched_when_a_gate_or_check_failed(tmp_path: Path) -> None:
    lkg = LastKnownGood(tmp_path / "out")
    lkg.record("python-package", fake_export(tmp_path / "cache", "good"), "good", WF, True, results=PASSED)
    bad = fake_export(tmp_path / "cache", "bad")
    gate = lkg.record("python-package", bad, "bad", WF, False, results=PASSED)
    assert gate == {"recorded": False, "reason": "a gate failed; the last known good stays good", "entry": lkg.get("python-package")}
    failing = [*PASSED, entry("mulm/python_package::test_parity[python-package]", "failed")]
    check = lkg.record("python-package", bad, "bad", WF, True, results=failing)
    assert check["reason"] == "1 check(s) of python-package failed (test_parity[python-package]); the last known good stays good"
    skipped_only = [entry("mulm/python_package::test_parity[python-package]", "skipped")]
    assert lkg.record("python-package", bad, "bad", WF, True, results=skipped_only)["reason"].startswith(
        "no check of python-package passed")
    unfinished = tmp_path / "cache" / "half"
    unfinished.mkdir()
    assert "is not a finished export" in lkg.record("python-package", unfinished, "half", WF, True)["reason"]
    assert lkg.get("python-package")["key"] == "good"
    assert (tmp_path / "out" / LKG_DIRNAME / "python-package" / "README.md").read_text() == "# good\n"


def test_lkg_same_export_again_is_verified_again(tmp_path: Path) -> None:
    lkg = LastKnownGood(tmp_path / "out")
    export = fake_export(tmp_path / "cache", "k1")
    lkg.record("python-package", export, "k1", WF, True)
    again = lkg.record("python-package", export, "k1", WF, True)
    assert again["recorded"] and again["reason"] == "export k1 already is the last known good; verified again"


def test_lkg_repairs_an_interrupted_swap(tmp_path: Path) -> None:
    lkg = LastKnownGood(tmp_path / "out")
    lkg.record("python-package", fake_export(tmp_path / "cache", "k1"), "k1", WF, True)
    folder = tmp_path / "out" / LKG_DIRNAME / "python-package"
    os.replace(folder, folder.parent / ".old-python-package-1234abcd")  # the crash: moved aside, not replaced
    assert lkg.get("python-package")["key"] == "k1" and folder.is_dir()


def test_lkg_keeps_artifacts_and_rolls_the_package_back_to_the_wheel(tmp_path: Path) -> None:
    wheel = tmp_path / "iris_mlp_classifier-1.0.0-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    lkg = LastKnownGood(tmp_path / "out")
    lkg.record("python-package", fake_export(tmp_path / "cache", "k1"), "k1", WF, True, artifacts=[wheel])
    folder = tmp_path / "out" / LKG_DIRNAME / "python-package"
    assert (folder / "dist" / wheel.name).read_bytes() == b"PK"
    commands = lkg.rollback_commands("python-package")
    assert commands[-1] == f"pip install --force-reinstall {folder / 'dist' / wheel.name}"
    assert commands[0].startswith("# python-package: roll back to the last known good export k1")


@pytest.fixture(scope="module")
def iris_exports(tmp_path_factory: pytest.TempPathFactory) -> dict:
    workflow = load_workflow(EXAMPLES / "iris-mlp.json")
    out = tmp_path_factory.mktemp("exports")
    return {"workflow": workflow, "out": out, **{fmt: export_workflow(workflow, fmt, out_dir=out)
            for fmt in ("python-package", "fastapi-service", "huggingface-space")}}


def test_rollback_commands_for_the_service_use_its_manifest(tmp_path: Path, iris_exports: dict) -> None:
    export = iris_exports["fastapi-service"]
    lkg = LastKnownGood(tmp_path / "out")
    lkg.record("fastapi-service", export.path, export.key, iris_exports["workflow"], True)
    folder = tmp_path / "out" / LKG_DIRNAME / "fastapi-service"
    commands = lkg.rollback_commands("fastapi-service")
    name = "iris-mlp-classifier"  # metadata.name of k8s/deployment.yaml (the workflow's slug)
    image = f"iris-mlp-classifier-service:{export.key}"  # its image, tagged with the export key
    assert f"kubectl rollout undo deployment/{name}" in commands
    assert f"docker build -t {image} {folder}" in commands
    assert f"docker push {image}" in commands
    assert f"kubectl set image deployment/{name} service={image}" in commands
    # undo first: pasting every line still ends on the pinned last known good image
    assert commands.index(f"kubectl rollout undo deployment/{name}") < commands.index(f"kubectl set image deployment/{name} service={image}")


def test_rollback_commands_for_a_registry_image_and_namespace(tmp_path: Path) -> None:
    manifest = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: \"scorer\"\n  namespace: \"ml\"\n"
        "spec:\n  template:\n    spec:\n      containers:\n        - name: \"api\"\n"
        "          image: \"registry.example.com:5000/team/scorer:1.2.0\"\n"
    )
    export = fake_export(tmp_path / "cache", "k9", {"k8s/deployment.yaml": manifest})
    lkg = LastKnownGood(tmp_path / "out")
    lkg.record("fastapi-service", export, "k9", WF, True)
    commands = lkg.rollback_commands("fastapi-service")
    assert "kubectl rollout undo deployment/scorer -n ml" in commands
    assert "kubectl set image deployment/scorer api=registry.example.com:5000/team/scorer:k9 -n ml" in commands


def test_rollback_commands_for_every_format(tmp_path: Path, iris_exports: dict) -> None:
    lkg = LastKnownGood(tmp_path / "out")
    root = tmp_path / "out" / LKG_DIRNAME
    space = iris_exports["huggingface-space"]
    lkg.record("huggingface-space", space.path, space.key, iris_exports["workflow"], True)
    assert lkg.rollback_commands("huggingface-space")[-1] == (
        f'hf upload "$HF_SPACE" {root / "huggingface-space"} . --repo-type space --exclude lkg.json '
        f"--commit-message 'Roll back to last known good export {space.key}'")
    package = iris_exports["python-package"]
    lkg.record("python-package", package.path, package.key, iris_exports["workflow"], True)
    assert lkg.rollback_commands("python-package")[-1] == f"pip install --force-reinstall {root / 'python-package'}"
    notebook = fake_export(tmp_path / "cache", "nb", {"iris.ipynb": "{}", "requirements.txt": "", "src/x.py": ""})
    lkg.record("jupyter-notebook", notebook, "nb", WF, True)
    nb = lkg.rollback_commands("jupyter-notebook")
    assert f'cp {root / "jupyter-notebook" / "iris.ipynb"} "$NOTEBOOK_DIR"/' in nb
    edge = fake_export(tmp_path / "cache", "edge", {"models/model.onnx": "x", "runner/pyproject.toml": ""})
    lkg.record("edge-deployment", edge, "edge", WF, True)
    assert lkg.rollback_commands("edge-deployment")[2:] == [
        f'cp {root / "edge-deployment" / "models"}/* "$EDGE_MODELS_DIR"/',
        "# and the runner that goes with those models, on the device",
        f"pip install --force-reinstall {root / 'edge-deployment' / 'runner'}"]
    assert lkg.rollback_commands("fastapi-service") == [
        "# no last known good export of fastapi-service yet: nothing to roll back to"]
    with pytest.raises(ValueError, match="not a format name"):
        lkg.get("../etc")


# -- CI files in the artifacts ---------------------------------------------------------------


def _ci_files(export) -> tuple[dict, dict]:
    yaml = pytest.importorskip("yaml")
    github = yaml.safe_load((export.path / ".github" / "workflows" / "test.yml").read_text())
    gitlab = yaml.safe_load((export.path / ".gitlab-ci.yml").read_text())
    return github, gitlab


@pytest.mark.parametrize("fmt", ["python-package", "fastapi-service"])
def test_exports_carry_ci_that_runs_their_tests(fmt: str, iris_exports: dict) -> None:
    github, gitlab = _ci_files(iris_exports[fmt])
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert set(github.get("on", github.get(True))) == {"push", "pull_request", "workflow_dispatch"}  # YAML 1.1: on is True
    steps = github["jobs"]["test"]["steps"]
    assert steps[0] == {"uses": "actions/checkout@v4"}
    assert steps[1]["uses"] == "actions/setup-python@v5" and steps[1]["with"]["python-version"] == version
    runs = "\n".join(s.get("run", "") for s in steps)
    assert 'python -m pip install ".[test]"' in runs and "python -m pytest" in runs
    assert gitlab["test"]["image"] == f"python:{version}-slim"
    assert 'python -m pip install ".[test]"' in gitlab["test"]["script"]
    assert any(line.startswith("python -m pytest") for line in gitlab["test"]["script"])
    manifest = json.loads((iris_exports[fmt].path / "mulm-manifest.json").read_text())
    assert {".github/workflows/test.yml", ".gitlab-ci.yml"} <= set(manifest["files"])
    if fmt == "fastapi-service":
        assert "hadolint Dockerfile" in "\n".join(s.get("run", "") for s in github["jobs"]["dockerfile"]["steps"])
        assert "hadolint Dockerfile" in gitlab["dockerfile"]["script"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["python-package", "fastapi-service"])
def test_ci_test_job_passes_as_written(fmt: str, iris_exports: dict, tmp_path: Path) -> None:
    """The GitHub test job's run steps, executed in a copy of the export with a fresh venv's
    python first on PATH (as setup-python leaves it): the package's tests pass."""
    github, _ = _ci_files(iris_exports[fmt])
    work = tmp_path / "checkout"
    shutil.copytree(iris_exports[fmt].path, work)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTEST_ADDOPTS")
           and not k.startswith(("PYTEST_XDIST", "OPENAI_"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    for step in github["jobs"]["test"]["steps"]:
        if "run" not in step:
            continue
        out = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=work, env=env, capture_output=True, text=True,
                             timeout=900)
        assert out.returncode == 0, f"{step.get('name')}: exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    assert " passed" in out.stdout and "failed" not in out.stdout, out.stdout[-2000:]


# -- the done-when: a deliberate 30 % slowdown against a saved baseline --------------------------


def sleepy_workflow(seconds: float):
    """One Python block that sleeps ``seconds`` per call; the same id for every variant."""
    source = f"import time\n\n\ndef wait(x):\n    time.sleep({seconds!r})\n    return x\n"
    return parse_workflow({
        "id": "sleepy", "name": "Sleepy", "version": "1.0.0",
        "nodes": [
            {"id": "in", "type": "aiBlock", "data": {"label": "In", "type": "input",
             "config": {"inputType": "number", "examples": [1, 2]}}},
            {"id": "wait", "type": "aiBlock", "data": {"label": "Wait", "type": "preprocessing", "sourceCode": source}},
            {"id": "out", "type": "aiBlock", "data": {"label": "Out", "type": "output", "config": {}}},
        ],
        "edges": [{"id": "e1", "source": "in", "target": "wait"}, {"id": "e2", "source": "wait", "target": "out"}],
    })


def installed(workflow, tmp_path: Path, label: str) -> Callable[[], dict]:
    """Export to python-package and install into a fresh venv; return the measurement
    test_benchmark_call makes (the same function), ready to run."""
    from pytest_mulm.benchmarking import measure_call_latency
    from pytest_mulm.checks import library_package
    from pytest_mulm.venv import Venv

    export = export_workflow(workflow, "python-package", out_dir=tmp_path / "out")
    venv, created = Venv.create(tmp_path / f"venv-{label}")
    assert created.ok, created.tail()
    done = venv.install(str(export.project_dir))
    assert done.ok, done.tail()
    package = library_package(export.project_dir)
    return lambda: measure_call_latency(venv, package, warmup=1, min_calls=20, max_calls=20)


@pytest.mark.slow
def test_done_when_a_30_percent_slowdown_fails_the_gate_and_no_baseline_skips(tmp_path: Path) -> None:
    base_wf, slow_wf = sleepy_workflow(0.200), sleepy_workflow(0.260)
    assert base_wf.id == slow_wf.id and base_wf.content_hash != slow_wf.content_hash
    store = tmp_path / ".benchmarks"

    measure_base, measure_slow = installed(base_wf, tmp_path, "base"), installed(slow_wf, tmp_path, "slow")
    first = measure_base()
    no_baseline = benchmark_gate(store, "sleepy", {"python-package": first}, 25)
    assert no_baseline.outcome == "skipped"
    assert no_baseline.message == (f"no baseline yet for workflow 'sleepy' on machine {machine_id()} in {store}: "
                                   "run with --mulm-save-baseline to save one")

    saved = save_baseline(store, "sleepy", {"python-package": first}, content_hash=base_wf.content_hash)
    second = measure_slow()
    result = benchmark_gate(store, "sleepy", {"python-package": second}, 25)
    row = next(r for r in result.details if r["figure"] == "call_p50_ms")
    print(f"baseline p50 {first['call_p50_ms']} ms, slowed p50 {second['call_p50_ms']} ms, "
          f"change {row['change_percent']:+.1f} %")
    assert result.outcome == "failed", result.message
    assert row["outcome"] == "failed" and 25 < row["change_percent"] < 35
    assert f"python-package call_p50_ms {first['call_p50_ms']:.4g} -> {second['call_p50_ms']:.4g} (+" in result.message
    assert str(saved) in result.message
    # the unchanged workflow, measured again, stays within the threshold of its baseline
    again = benchmark_gate(store, "sleepy", {"python-package": measure_base()}, 25)
    assert again.outcome == "passed", again.message
