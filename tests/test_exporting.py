"""Export cache: content-addressed, built once, atomic, never trusting an interrupted build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_mulm.errors import ExportError, UnsafePathError
from pytest_mulm.exporter import ExportContext, Exporter
from pytest_mulm.exporting import MANIFEST, cache_key, export_workflow
from pytest_mulm.loader import load_workflow, parse_workflow
from pytest_mulm.plugins import get_registry
from pytest_mulm.templating import make_environment

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def doc(bias: float = 0.0) -> dict:
    return {
        "id": "cache", "name": "Cache test",
        "nodes": [
            {"id": "in", "data": {"type": "input", "config": {"inputType": "tensor", "shape": [2], "examples": [[1, 2]]}}},
            {"id": "d", "data": {"type": "dense", "config": {"weights": {"kernel": [[1, 0], [0, 1]], "bias": [bias, 0]}}}},
            {"id": "out", "data": {"type": "output"}},
        ],
        "edges": [{"id": "e1", "source": "in", "target": "d"}, {"id": "e2", "source": "d", "target": "out"}],
    }


def test_second_export_comes_from_cache(tmp_path: Path) -> None:
    wf = parse_workflow(doc())
    first = export_workflow(wf, "python-package", out_dir=tmp_path)
    second = export_workflow(wf, "python-package", out_dir=tmp_path)
    assert not first.from_cache and second.from_cache
    assert first.path == second.path == tmp_path / "python-package" / first.key


def test_key_changes_with_weights_and_templates(tmp_path: Path) -> None:
    exporter = get_registry().exporter("python-package")
    a, b = parse_workflow(doc(0.0)), parse_workflow(doc(0.5))
    assert cache_key(a, exporter, None) != cache_key(b, exporter, None)
    override = tmp_path / "tpl" / "python-package"
    override.mkdir(parents=True)
    (override / "gitignore.jinja").write_text("*\n")
    assert cache_key(a, exporter, tmp_path / "tpl") != cache_key(a, exporter, None)


def test_npz_weights_are_part_of_the_key(tmp_path: Path) -> None:
    import shutil

    import numpy as np

    shutil.copy(EXAMPLES / "iris-mlp.json", tmp_path)
    shutil.copy(EXAMPLES / "iris-mlp.npz", tmp_path)
    before = load_workflow(tmp_path / "iris-mlp.json").content_hash
    with np.load(tmp_path / "iris-mlp.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    first = sorted(arrays)[0]
    arrays[first] = arrays[first] + 1
    np.savez(tmp_path / "iris-mlp.npz", **arrays)
    assert load_workflow(tmp_path / "iris-mlp.json").content_hash != before


def test_interrupted_build_is_never_reused(tmp_path: Path) -> None:
    wf = parse_workflow(doc())
    exporter = get_registry().exporter("python-package")
    key = cache_key(wf, exporter, None)
    half = tmp_path / "python-package" / key
    half.mkdir(parents=True)
    (half / "pyproject.toml").write_text("garbage from a killed run")
    result = export_workflow(wf, "python-package", out_dir=tmp_path)
    assert not result.from_cache
    assert "garbage" not in (result.path / "pyproject.toml").read_text()
    assert (result.path / MANIFEST).is_file()


def test_failed_export_leaves_nothing(tmp_path: Path) -> None:
    class Broken(Exporter):
        name = "python-package"

        def export(self, ctx: ExportContext) -> None:
            ctx.write_text("half.txt", "x")
            raise RuntimeError("boom")

    wf = parse_workflow(doc())
    from pytest_mulm import exporting

    registry = get_registry()
    original = registry.exporters["python-package"]
    registry.exporters["python-package"] = Broken()
    try:
        with pytest.raises(RuntimeError):
            exporting.export_workflow(wf, "python-package", out_dir=tmp_path)
    finally:
        registry.exporters["python-package"] = original
    leftovers = [p for p in (tmp_path / "python-package").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_concurrent_exports_build_once(tmp_path: Path) -> None:
    # four real processes export the same workflow into one cache at the same moment
    import subprocess
    import sys

    wf_json = tmp_path / "wf.json"
    wf_json.write_text(json.dumps(doc()), encoding="utf-8")
    code = (
        "import sys\n"
        "from pytest_mulm.exporting import export_workflow\n"
        "from pytest_mulm.loader import load_workflow\n"
        "print(export_workflow(load_workflow(sys.argv[1]), 'python-package', out_dir=sys.argv[2]).from_cache)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(wf_json), str(tmp_path / "out")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    assert sorted(out.strip() for out, _ in outputs) == ["False", "True", "True", "True"]


def test_context_refuses_paths_outside(tmp_path: Path) -> None:
    wf = parse_workflow(doc())
    ctx = ExportContext(wf, tmp_path / "out", make_environment(), get_registry().exporter("python-package"))
    (tmp_path / "out").mkdir()
    for bad in ("../x", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(UnsafePathError):
            ctx.write_text(bad, "x")
    with pytest.raises(ExportError, match="generated broken.py does not parse"):
        ctx.write_text("broken.py", "def (:\n")
    assert not (tmp_path / "x").exists()


def test_export_to_target_refuses_foreign_folder(tmp_path: Path) -> None:
    wf = parse_workflow(doc())
    target = tmp_path / "mine"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an earlier export"):
        export_workflow(wf, "python-package", target=target)
    assert (target / "precious.txt").read_text() == "keep me"


def test_manifest_traces_the_artifact(tmp_path: Path) -> None:
    wf = load_workflow(EXAMPLES / "iris-mlp.json")
    result = export_workflow(wf, "python-package", out_dir=tmp_path)
    m = result.manifest
    assert m["workflow"]["content_hash"] == wf.content_hash
    assert m["format"] == "python-package" and m["plugin"]["name"] == "pytest-mulm"
    assert any(dep.startswith("numpy==") for dep in m["dependencies"])
    assert m["created"].endswith("+00:00")
    assert set(m["files"]) >= {"pyproject.toml", "README.md", "docs/API.md", ".gitignore", "requirements.txt"}
    assert (tmp_path / "conftest.py").read_text().strip().endswith("collect_ignore_glob = ['*']")
