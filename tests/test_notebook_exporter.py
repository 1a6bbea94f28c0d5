"""The jupyter-notebook exporter: a valid, narrated notebook; workflow strings stay text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_mulm.exporting import export_workflow
from pytest_mulm.loader import load_workflow, parse_workflow

nbformat = pytest.importorskip("nbformat", reason="needs pytest-mulm[notebook]")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_notebook_narrates_every_block(tmp_path: Path) -> None:
    wf = load_workflow(EXAMPLES / "iris-mlp.json")
    result = export_workflow(wf, "jupyter-notebook", out_dir=tmp_path)
    (path,) = result.path.glob("*.ipynb")
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert markdown[0].startswith(f"# {wf.name}")
    for node in wf.nodes:
        assert any(text.startswith(f"### {node.label}") for text in markdown), node.id
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "import iris_mlp_classifier as workflow" in code and "%matplotlib inline" in code
    assert "mulm-notebook-results.json" in code
    requirements = (result.path / "requirements.txt").read_text()
    assert "ipykernel==" in requirements and "matplotlib==" in requirements and "numpy==" in requirements


def test_hostile_strings_are_markdown_text_not_html_or_code(tmp_path: Path) -> None:
    doc = json.loads((EXAMPLES / "iris-mlp.json").read_text())
    doc["name"] = "<script>alert(1)</script> {{ 7*7 }}"
    doc["nodes"][1]["data"]["label"] = "x\n```python\n__import__('os').system('touch PWNED')\n```"
    doc["nodes"][1]["data"]["description"] = "<img src=x onerror=alert(1)>"
    result = export_workflow(parse_workflow(doc, base_dir=EXAMPLES), "jupyter-notebook", out_dir=tmp_path)
    (path,) = result.path.glob("*.ipynb")
    nb = nbformat.read(path, as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    assert "<script>" not in text and "<img" not in text and "&lt;script&gt;" in text
    assert "49" not in text.split("alert(1)")[1][:10]
    for cell in nb.cells:
        if cell.cell_type == "markdown":  # labels are folded onto one line: no fence can open
            assert not any(line.lstrip().startswith(("```", "~~~")) for line in cell.source.splitlines())
    assert not (tmp_path / "PWNED").exists()
