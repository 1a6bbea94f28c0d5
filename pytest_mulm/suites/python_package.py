"""Verification suite of the ``python-package`` format (design.md §6).

Builds the wheel, installs it into a fresh venv, imports every module, runs the CLI on
every example, runs the package's own generated tests inside that venv, and compares the
installed package's answers with the reference runtime.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
import zipfile
from pathlib import Path

import pytest

from pytest_mulm.checks import error_line, run_artifact_tests
from pytest_mulm.exporting import MANIFEST
from pytest_mulm.ops import differences

MULM_FORMAT = "python-package"
RTOL = 1e-5


def names_for_manifest(export) -> dict[str, str]:
    """Distribution, package and command names, read back from the artifact itself."""
    pkg_dirs = [p for p in (export.path / "src").iterdir() if p.is_dir() and (p / "__init__.py").is_file()]
    assert len(pkg_dirs) == 1, f"expected one package under src/, found {[p.name for p in pkg_dirs]}"
    text = (export.path / "pyproject.toml").read_text(encoding="utf-8")
    meta = tomllib.loads(text)
    return {"dist": meta["project"]["name"], "package": pkg_dirs[0].name, "command": next(iter(meta["project"]["scripts"]))}


def test_export_manifest(mulm_export, mulm_workflow):
    manifest = json.loads((mulm_export.path / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["format"] == MULM_FORMAT
    assert manifest["workflow"]["content_hash"] == mulm_workflow.content_hash
    files = {str(p.relative_to(mulm_export.path)) for p in mulm_export.path.rglob("*") if p.is_file()}
    assert files - {MANIFEST} == set(manifest["files"]), "the manifest must list exactly the files written"
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((mulm_export.path / rel).read_bytes()).hexdigest() == digest, f"{rel} changed after export"


def test_build_wheel(mulm_wheel, mulm_export):
    assert mulm_wheel["wheel"], f"the wheel did not build:\n{mulm_wheel['log']}"
    names = names_for_manifest(mulm_export)
    with zipfile.ZipFile(mulm_wheel["wheel"]) as zf:
        members = zf.namelist()
    top = {m.split("/")[0] for m in members if not m.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {names["package"]}, f"the wheel must install one top-level package, found {sorted(top)}"
    for required in ("pipeline.py", "cli.py", "_ops.py", "examples.json"):
        assert f"{names['package']}/{required}" in members


def test_install(mulm_install, mulm_export, mulm_workflow):
    assert mulm_install["ok"], f"install into a fresh venv failed:\n{mulm_install['log']}"
    from pytest_mulm.venv import Venv

    venv = Venv(Path(mulm_install["venv"]))
    dist = names_for_manifest(mulm_export)["dist"]
    out = venv.python_run(f"import importlib.metadata as m; print(m.version({dist!r}))")
    assert out.ok, out.tail()
    assert out.stdout.strip() == mulm_workflow.version


def test_import(mulm_venv, mulm_export):
    package = names_for_manifest(mulm_export)["package"]
    code = (
        "import importlib, pkgutil, json\n"
        f"pkg = importlib.import_module({package!r})\n"
        "names = [pkg.__name__]\n"
        "for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "    if info.name.endswith('.__main__'):\n"
        "        continue\n"
        "    importlib.import_module(info.name)\n"
        "    names.append(info.name)\n"
        "print(json.dumps(names))\n"
    )
    out = mulm_venv.python_run(code)
    assert out.ok, f"importing the installed package failed:\n{out.tail()}"
    imported = set(json.loads(out.stdout))
    expected = {
        f"{package}." + str(p.relative_to(mulm_export.path / "src" / package).with_suffix("")).replace("/", ".")
        for p in (mulm_export.path / "src" / package).rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }
    assert expected <= imported, f"modules not imported: {sorted(expected - imported)}"


def _cli(mulm_venv, mulm_export, *args, input=None):
    command = str(mulm_venv.script(names_for_manifest(mulm_export)["command"]))
    return mulm_venv.run([command, *args], input=input, timeout=600)


def test_cli_version(mulm_venv, mulm_export, mulm_workflow):
    out = _cli(mulm_venv, mulm_export, "--version")
    assert out.ok, out.tail()
    assert out.stdout.strip().endswith(mulm_workflow.version)


def test_cli_examples(mulm_venv, mulm_export, mulm_workflow, tmp_path):
    failures = []
    for i, value in enumerate(mulm_workflow.examples):
        text = json.dumps(value)
        out = _cli(mulm_venv, mulm_export, "run", text)
        if not out.ok:
            failures.append(f"example {i}: exit {out.returncode}: {error_line(out.stderr)}")
            continue
        json.loads(out.stdout)  # stdout holds exactly one JSON document
        if i:
            continue
        # the same input through a file and through stdin gives the same answer
        path = tmp_path / f"input{i}.json"
        path.write_text(text, encoding="utf-8")
        via_file = _cli(mulm_venv, mulm_export, "run", "--file", str(path))
        via_stdin = _cli(mulm_venv, mulm_export, "run", input=text)
        assert via_file.stdout == out.stdout, f"example {i}: --file gave a different answer"
        assert via_stdin.stdout == out.stdout, f"example {i}: stdin gave a different answer"
    assert not failures, "the CLI failed on examples:\n" + "\n".join(failures)


def test_generated_tests(mulm_venv, mulm_export, mulm_run_dir):
    out, summary = run_artifact_tests(mulm_venv, mulm_export, mulm_run_dir)
    assert out.returncode == 0, "the generated tests failed inside the venv:\n" + "\n".join(summary + ["", out.tail(40)])
    assert " passed" in out.stdout, out.tail()


def test_parity(mulm_venv, mulm_export, mulm_reference):
    missing = sorted({r.missing_module for r in mulm_reference if r.missing_module})
    if missing:
        pytest.skip(
            f"the reference runtime cannot run here: block dependency {', '.join(missing)} is not installed "
            "in the verifying environment (install it next to pytest-mulm to compare)"
        )
    broken = [r.error for r in mulm_reference if not r.ok]
    assert not broken, "the reference runtime fails on the workflow's own examples:\n" + "\n".join(broken)
    inputs = [r.input for r in mulm_reference]
    out = _cli(mulm_venv, mulm_export, "run", "--batch", input=json.dumps(inputs))
    assert out.ok, f"the installed CLI failed: {error_line(out.stderr)}"
    actual = json.loads(out.stdout)
    assert len(actual) == len(mulm_reference), "the batch answer has a different number of results"
    problems = []
    for i, (got, ref) in enumerate(zip(actual, mulm_reference, strict=True)):
        problems += [f"example {i}: {d}" for d in differences(got, ref.output, rtol=RTOL)]
    assert not problems, "the installed package disagrees with the reference runtime:\n" + "\n".join(problems[:20])


def test_benchmark_call(request, mulm_venv, mulm_export):
    """Latency of ``run`` on every example, called in-process inside the artifact's venv.

    The figures go to the report and to the benchmark gate (``--mulm-regression``
    against the saved baseline); this item only checks that they were produced: timing
    is judged by the gate, never by an assert here.
    """
    from pytest_mulm.benchmarking import CallLatencyError, measure_call_latency

    package = names_for_manifest(mulm_export)["package"]
    try:
        figures = measure_call_latency(mulm_venv, package)
    except CallLatencyError as exc:
        pytest.fail(str(exc), pytrace=False)
    assert figures["calls"] > 0 and figures["call_p50_ms"] >= 0, figures
    request.node.user_properties.append(("mulm_benchmark", figures))
    print(json.dumps(figures))
