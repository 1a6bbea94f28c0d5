"""The pytest surface: options, ini keys, usage errors, collection, fixtures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def tiny_workflow(path: Path, **overrides) -> Path:
    doc = {
        "id": "tiny", "name": "Tiny", "version": "1.0.0",
        "nodes": [
            {"id": "in", "type": "aiBlock", "data": {"label": "In", "type": "input",
             "config": {"inputType": "tensor", "shape": [2], "examples": [[1, 2], [0.5, -1]]}}},
            {"id": "d", "type": "aiBlock", "data": {"label": "Dense", "type": "dense",
             "config": {"units": 2, "weights": {"kernel": [[1, 0], [0, 1]], "bias": [0, 0]}}}},
            {"id": "out", "type": "aiBlock", "data": {"label": "Out", "type": "output", "config": {}}},
        ],
        "edges": [{"id": "e1", "source": "in", "target": "d"}, {"id": "e2", "source": "d", "target": "out"}],
    }
    doc.update(overrides)
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_help_lists_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines([
        "*µLM workflow export and verification*",
        "*--mulm-workflow=WORKFLOW*",
        "*--mulm-format=FORMAT*",
        "*--mulm-out=OUT*",
        "*--mulm-templates=TEMPLATES*",
    ])
    result.stdout.fnmatch_lines(["*mulm_workflow (string)*", "*mulm_format (string)*"])


def test_without_workflow_nothing_changes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_one():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*mulm verification*")
    result.stdout.no_fnmatch_line("*mulm/python_package*")
    assert not (pytester.path / "mulm-out").exists()


def test_unknown_format_is_a_usage_error(pytester: pytest.Pytester) -> None:
    wf = tiny_workflow(pytester.path / "wf.json")
    result = pytester.runpytest(f"--mulm-workflow={wf}", "--mulm-format=python-package,helm")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: unknown export format(s): helm. Available: *python-package* (or 'all')."])
    result.stdout.no_fnmatch_line("*INTERNALERROR*")


def test_bad_workflow_is_a_usage_error_naming_the_node(pytester: pytest.Pytester) -> None:
    doc = json.loads(tiny_workflow(pytester.path / "wf.json").read_text())
    doc["nodes"][1]["data"]["config"] = {"units": 3, "weights": {"kernel": [[1, 0, 0]], "bias": [0, 0, 0]}}  # [1, 3] after 2 features
    (pytester.path / "wf.json").write_text(json.dumps(doc))
    result = pytester.runpytest("--mulm-workflow=wf.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: node 'd': data.config.weights.kernel: *kernel shape must be [[]2, units[]]*"])
    result.stdout.no_fnmatch_line("*Traceback*")


def test_missing_workflow_file(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--mulm-workflow=nope.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: workflow '*nope.json': no such file*"])


def test_unusable_blocks_are_refused_one_line_each(pytester: pytest.Pytester) -> None:
    src = Path("/work/shared/mulm-original/image-classification.json")
    if not src.is_file():
        src = Path(__file__).resolve().parents[2] / "shared" / "mulm-original" / "image-classification.json"
    if not src.is_file():
        pytest.skip("shared/mulm-original is not beside this checkout")
    result = pytester.runpytest(f"--mulm-workflow={src}", "--mulm-format=python-package")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: workflow 'image-classification': cannot export to python-package: 2 block(s) unusable",
        "  node 'img-preprocess' (Image Preprocessing): sourceCode defines no function*",
        "  node 'cnn-model' (CNN Classifier): sourceCode defines no function*",
    ])


def test_ini_keys_are_read(pytester: pytest.Pytester) -> None:
    tiny_workflow(pytester.path / "wf.json")
    pytester.makeini("[pytest]\nmulm_workflow = wf.json\nmulm_format = python-package\nmulm_out = exports\n")
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["mulm/python_package::test_install[[]python-package[]]"])
    assert result.ret == pytest.ExitCode.OK


def test_command_line_beats_ini(pytester: pytest.Pytester) -> None:
    tiny_workflow(pytester.path / "wf.json")
    pytester.makeini("[pytest]\nmulm_workflow = wf.json\nmulm_format = nonexistent\n")
    result = pytester.runpytest("--collect-only", "-q", "--mulm-format=python-package")
    assert result.ret == pytest.ExitCode.OK
    result = pytester.runpytest("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def suite_items(pytester: pytest.Pytester, *args: str) -> int:
    """How many suite items (``mulm/...``) a run collects: the suites grow (the security
    suite adds 7 per format), so the -k tests count them instead of hard-coding a number."""
    result = pytester.runpytest("--collect-only", "-q", *args)
    count = sum(1 for line in result.stdout.lines if line.startswith("mulm/"))
    assert count > 1, result.stdout.str()
    return count


def test_suite_items_have_readable_ids_and_work_with_k(pytester: pytest.Pytester) -> None:
    tiny_workflow(pytester.path / "wf.json")
    result = pytester.runpytest("--mulm-workflow=wf.json", "--collect-only", "-q")
    result.stdout.fnmatch_lines([
        "mulm/python_package::test_export_manifest[[]python-package[]]",
        "mulm/python_package::test_build_wheel[[]python-package[]]",
        "mulm/python_package::test_install[[]python-package[]]",
        "mulm/python_package::test_import[[]python-package[]]",
        "mulm/python_package::test_cli_examples[[]python-package[]]",
        "mulm/python_package::test_generated_tests[[]python-package[]]",
        "mulm/python_package::test_parity[[]python-package[]]",
        "mulm/security::test_bandit[[]python-package[]]",
    ])
    result = pytester.runpytest("--mulm-workflow=wf.json", "--mulm-format=python-package", "-k", "manifest", "-q")
    result.assert_outcomes(passed=1, deselected=suite_items(pytester, "--mulm-workflow=wf.json",
                                                            "--mulm-format=python-package") - 1)


def test_all_collects_every_registered_format(pytester: pytest.Pytester) -> None:
    tiny_workflow(pytester.path / "wf.json")
    result = pytester.runpytest("--mulm-workflow=wf.json", "--mulm-format=all", "--collect-only", "-q")
    text = result.stdout.str()
    for nodeid in ("mulm/python_package::test_install[python-package]",
                   "mulm/fastapi_service::test_install[fastapi-service]",
                   "mulm/fastapi_service::test_schemathesis[fastapi-service]",
                   "mulm/fastapi_deploy::test_dockerfile_hadolint[fastapi-service]"):
        assert nodeid in text


def test_user_tests_get_public_fixtures(pytester: pytest.Pytester) -> None:
    tiny_workflow(pytester.path / "wf.json")
    pytester.makepyfile(
        """
        def test_mine(mulm_workflow, mulm_export, mulm_reference, mulm_format):
            assert mulm_format == "python-package"
            assert (mulm_export.path / "pyproject.toml").is_file()
            assert mulm_workflow.id == "tiny"
            assert mulm_reference[0].output == [1.0, 2.0]
        """
    )
    result = pytester.runpytest("--mulm-workflow=wf.json", "--mulm-format=python-package", "-k", "test_mine", "-v")
    result.stdout.fnmatch_lines(["*test_mine[[]python-package[]] PASSED*"])
    result.assert_outcomes(passed=1, deselected=suite_items(pytester, "--mulm-workflow=wf.json",
                                                            "--mulm-format=python-package"))


def test_fixtures_are_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--fixtures")
    for name in ("mulm_workflow", "mulm_export", "mulm_venv", "mulm_reference", "mulm_install", "mulm_wheel"):
        result.stdout.fnmatch_lines([f"{name}*", "*"])
    text = result.stdout.str()
    assert "The validated workflow given with ``--mulm-workflow``" in text
    assert "A fresh virtualenv with the current format's artifact installed" in text


def test_mulm_workflow_fixture_skips_without_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(mulm_workflow):\n    pass\n")
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no workflow given: run pytest with --mulm-workflow=WF.json*"])


def test_template_override_replaces_one_file(pytester: pytest.Pytester) -> None:
    tiny_workflow(pytester.path / "wf.json")
    override = pytester.path / "tpl" / "python-package"
    override.mkdir(parents=True)
    (override / "README.md.jinja").write_text(
        '{% extends "default:python-package/README.md.jinja" %}\n', encoding="utf-8"
    )
    (override / "gitignore.jinja").write_text("# team rules\n*.log\n", encoding="utf-8")
    pytester.makepyfile(
        """
        def test_files(mulm_export):
            assert (mulm_export.path / ".gitignore").read_text() == "# team rules\\n*.log\\n"
            assert (mulm_export.path / "README.md").read_text().startswith("# Tiny")
        """
    )
    result = pytester.runpytest("--mulm-workflow=wf.json", "--mulm-format=python-package", "--mulm-templates=tpl", "-k", "test_files")
    result.assert_outcomes(passed=1)


def test_report_json_written(pytester: pytest.Pytester) -> None:
    tiny_workflow(pytester.path / "wf.json")
    total = suite_items(pytester, "--mulm-workflow=wf.json", "--mulm-format=python-package")  # before: it writes a report
    result = pytester.runpytest("--mulm-workflow=wf.json", "--mulm-format=python-package", "-k", "manifest")
    result.assert_outcomes(passed=1, deselected=total - 1)
    report = json.loads((pytester.path / "mulm-out" / "mulm-report.json").read_text())
    assert report["schema"] == 1
    assert report["tests_passed"] == 1 and report["tests_total"] == 1
    fmt = report["formats"]["python-package"]
    assert fmt["content_hash"] == report["workflow"]["content_hash"]
    assert fmt["builds"] == 1
    assert fmt["checks"][0]["check"] == "test_export_manifest"
    assert fmt["checks"][0]["outcome"] == "passed"
    result.stdout.fnmatch_lines(["*mulm verification*", "test_export_manifest*ok*"])


def test_examples_copy_cleanly(tmp_path: Path) -> None:
    # the shipped examples are self-contained: workflow + weights file travel together
    for wf in EXAMPLES.glob("*.json"):
        shutil.copy(wf, tmp_path)
    for npz in EXAMPLES.glob("*.npz"):
        shutil.copy(npz, tmp_path)
    from pytest_mulm.loader import load_workflow

    for wf in sorted(tmp_path.glob("*.json")):
        assert load_workflow(wf).examples


def test_nothing_imports_the_bare_folders() -> None:
    """`exporters` and `templates` are installed only as pytest_mulm.exporters/.templates;
    an import of the bare names works from a checkout (cwd on sys.path) and nowhere else."""
    import re

    root = Path(__file__).resolve().parent.parent
    pattern = re.compile(r"^\s*(from|import)\s+(exporters|templates)\b", re.M)
    offenders = [
        str(p.relative_to(root)) for folder in ("pytest_mulm", "exporters", "templates", "tests", "benchmarks")
        for p in (root / folder).rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == []
