"""The mulm hook system: every hook is called, third-party plugins plug in like built-ins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_mulm import hookspecs, plugins
from pytest_mulm.errors import PluginError
from pytest_mulm.exporting import export_workflow
from pytest_mulm.loader import parse_workflow

PLUGIN_SOURCE = '''
from pytest_mulm import hookimpl
from pytest_mulm.blocks import BlockType
from pytest_mulm.exporter import Exporter


class ShoutExporter(Exporter):
    name = "shout"
    description = "Writes the workflow name in capitals"

    def export(self, ctx):
        ctx.write_text("NAME.txt", ctx.workflow.name.upper() + "\\n")


@hookimpl
def register_exporters(register):
    register(ShoutExporter())


@hookimpl
def register_block_types(register):
    register(BlockType("double", accepts=("tensor", "number"), produces="tensor",
                       compute=lambda node, inputs: [2 * v for v in next(iter(inputs.values()))]))


@hookimpl
def register_suites(register):
    register("shout", "mulm_shout.suite")


@hookimpl
def report_sections(report):
    return [{"title": "shout", "lines": [f"{report['tests_total']} checks seen"]}]
'''

SUITE_SOURCE = '''
MULM_FORMAT = "shout"


def test_shouted(mulm_export, mulm_workflow):
    assert (mulm_export.path / "NAME.txt").read_text() == mulm_workflow.name.upper() + "\\n"
'''


def make_distribution(root: Path) -> Path:
    """A real installed-looking distribution with a `mulm` entry point, on a sys.path dir."""
    pkg = root / "mulm_shout"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(PLUGIN_SOURCE, encoding="utf-8")
    (pkg / "suite.py").write_text(SUITE_SOURCE, encoding="utf-8")
    info = root / "mulm_shout-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mulm-shout\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[mulm]\nshout = mulm_shout\n", encoding="utf-8")
    return root


def workflow_doc(block_type: str = "dense") -> dict:
    config = {"units": 2, "weights": {"kernel": [[1, 0], [0, 1]], "bias": [0, 0]}} if block_type == "dense" else {}
    return {
        "id": "hooks", "name": "Hook test",
        "nodes": [
            {"id": "in", "data": {"type": "input", "config": {"inputType": "tensor", "shape": [2], "examples": [[1, 2]]}}},
            {"id": "b", "data": {"type": block_type, "config": config}},
            {"id": "out", "data": {"type": "output"}},
        ],
        "edges": [{"id": "e1", "source": "in", "target": "b"}, {"id": "e2", "source": "b", "target": "out"}],
    }


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(make_distribution(tmp_path / "site")))
    monkeypatch.delenv("MULM_LOAD_PLUGINS", raising=False)
    plugins.reset()
    try:
        yield plugins.get_registry()
    finally:
        plugins.reset()
        import sys

        for name in [m for m in sys.modules if m.startswith("mulm_shout")]:
            del sys.modules[name]


def test_builtins_are_registered_through_the_hooks() -> None:
    plugins.reset()
    pm = plugins.get_plugin_manager()
    for name in plugins.DEFAULT_PLUGINS:
        assert pm.has_plugin(name)
    registry = plugins.get_registry()
    assert "python-package" in registry.formats()
    assert registry.owners["exporter:python-package"] == "pytest_mulm.exporters.python_package"
    assert registry.suites["python-package"] == ["pytest_mulm.suites.python_package"]
    assert {"input", "output", "python", "llm", "dense", "router", "mixture"} <= set(registry.block_types)


def test_third_party_exporter_from_entry_point_exports(third_party, tmp_path: Path) -> None:
    assert "shout" in third_party.formats()
    assert third_party.owners["exporter:shout"] == "shout"
    wf = parse_workflow(workflow_doc())
    result = export_workflow(wf, "shout", out_dir=tmp_path / "out")
    assert (result.path / "NAME.txt").read_text() == "HOOK TEST\n"
    assert result.manifest["format"] == "shout"


def test_third_party_block_type_runs_in_reference(third_party) -> None:
    from pytest_mulm.runtime import run_workflow

    wf = parse_workflow(workflow_doc("double"), block_types=third_party.block_types)
    assert wf.node("b").kind == "double"
    assert run_workflow(wf, [1.5, 2.0]) == [3.0, 4.0]


def test_exporter_refuses_blocks_it_cannot_render(third_party, tmp_path: Path) -> None:
    from pytest_mulm.errors import WorkflowError

    wf = parse_workflow(workflow_doc("double"), block_types=third_party.block_types)
    with pytest.raises(WorkflowError) as info:
        export_workflow(wf, "python-package", out_dir=tmp_path)
    assert info.value.lines == ["node 'b': block type 'double' cannot be exported to python-package"]


def test_load_plugins_env_restricts_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(make_distribution(tmp_path / "site")))
    monkeypatch.setenv("MULM_LOAD_PLUGINS", "")
    plugins.reset()
    try:
        assert "shout" not in plugins.get_registry().formats()
    finally:
        plugins.reset()


def test_duplicate_format_names_both_plugins() -> None:
    from pytest_mulm.exporters.python_package import PythonPackageExporter

    class Clash:
        @hookspecs.hookimpl
        def register_exporters(self, register):
            register(PythonPackageExporter())

    plugins.reset()
    clash = Clash()
    plugins.register_plugin(clash, "clash-plugin")
    try:
        with pytest.raises(PluginError, match="'python-package' is registered twice: by plugin "
                           "'pytest_mulm.exporters.python_package' and by plugin 'clash-plugin'"):
            plugins.get_registry()
    finally:
        plugins.unregister_plugin(clash)
        plugins.reset()


def test_unknown_hook_fails_loudly() -> None:
    class Typo:
        @hookspecs.hookimpl
        def register_exporter(self, register):  # missing "s"
            pass

    plugins.reset()
    with pytest.raises(PluginError, match="typo-plugin.*register_exporter"):
        plugins.register_plugin(Typo(), "typo-plugin")
    plugins.reset()


def test_third_party_suite_is_collected_and_report_section_added(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_distribution(tmp_path / "site")
    monkeypatch.setenv("PYTHONPATH", str(site))  # the subprocess sees the plugin's entry point
    (pytester.path / "wf.json").write_text(json.dumps(workflow_doc()), encoding="utf-8")
    result = pytester.runpytest_subprocess("--mulm-workflow=wf.json", "--mulm-format=shout", "-v", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*mulm/suite::test_shouted[[]shout[]] PASSED*"])
    report = json.loads((pytester.path / "mulm-out" / "mulm-report.json").read_text())
    # its own check plus the 7 security checks every format gets (pytest_mulm.suites.security)
    result.stdout.fnmatch_lines(["*mulm/security::test_bandit[[]shout[]] PASSED*"])
    assert report["sections"] == [{"title": "shout", "lines": ["8 checks seen"]}]


def test_every_hook_has_a_test_and_documentation() -> None:
    specs = [name for name in hookspecs.__all__ if name not in ("hookimpl", "hookspec")]
    this_file = Path(__file__).read_text(encoding="utf-8")
    docs = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text(encoding="utf-8")
    for name in specs:
        assert f"def {name}(" in this_file, f"hook {name} has no implementation in the hook tests"
        assert f"`{name}" in docs, f"hook {name} is not documented in docs/plugins.md"
