"""Verification suite of the ``jupyter-notebook`` format (design.md §6).

Executes the notebook top to bottom with nbclient (through ``jupyter nbconvert
--execute``) in a real kernel inside a fresh venv holding only the export's
requirements, then checks the outputs, the values it recorded against the reference
runtime, and the HTML and reveal.js slides made from the executed notebook. The executed
notebook, HTML and slides are kept in ``<mulm-out>/notebook-runs/<key>/``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from pytest_mulm.ops import differences

MULM_FORMAT = "jupyter-notebook"
RESULTS = "mulm-notebook-results.json"


def _notebook(export) -> Path:
    found = list(export.path.glob("*.ipynb"))
    assert len(found) == 1, f"expected one notebook in the export, found {[p.name for p in found]}"
    return found[0]


@pytest.fixture
def executed(mulm_venv, mulm_export, mulm_settings, mulm_run_dir) -> dict:
    """Execute once per run: copy the export to <mulm-out>/notebook-runs/<key>/ and run there."""
    from pytest_mulm.fixtures import once

    run_dir = mulm_settings.out_dir / "notebook-runs" / mulm_export.key

    def execute() -> dict:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        shutil.copytree(mulm_export.path, run_dir)
        name = _notebook(mulm_export).name
        result = mulm_venv.run(
            [str(mulm_venv.python), "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", name,
             "--output", "executed.ipynb", "--ExecutePreprocessor.timeout=600",
             "--ExecutePreprocessor.startup_timeout=180", "--ExecutePreprocessor.kernel_name=python3"],
            cwd=run_dir, timeout=1200,
        )
        return {"ok": result.ok, "log": result.tail(40), "dir": str(run_dir)}

    return once(mulm_run_dir, f"notebook-{mulm_export.key}", execute)


def test_install(mulm_install):
    assert mulm_install["ok"], f"the notebook's requirements did not install into a fresh venv:\n{mulm_install['log']}"


def test_kernel_is_the_venv(mulm_venv):
    out = mulm_venv.run([str(mulm_venv.python), "-m", "jupyter", "kernelspec", "list", "--json"], timeout=120)
    assert out.ok, out.tail()
    specs = json.loads(out.stdout)["kernelspecs"]
    assert "python3" in specs, f"no python3 kernel in the venv: {sorted(specs)}"


def test_notebook_executes_without_errors(executed):
    assert executed["ok"], f"the notebook failed to execute:\n{executed['log']}"
    import nbformat

    nb = nbformat.read(Path(executed["dir"]) / "executed.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has code cells"
    for i, c in enumerate(code):
        assert c.execution_count is not None, f"code cell {i} was not executed"
        assert c.outputs, f"code cell {i} has no output"
        errors = [o for o in c.outputs if o.output_type == "error"]
        assert not errors, f"code cell {i} raised {errors[0].ename}: {errors[0].evalue}"
    assert any(o.get("data", {}).get("image/png") for c in code for o in c.outputs), "the plot cell shows an image"


def test_notebook_values_equal_reference(executed, mulm_reference):
    assert executed["ok"], "the notebook did not execute (see test_notebook_executes_without_errors)"
    recorded = json.loads((Path(executed["dir"]) / RESULTS).read_text(encoding="utf-8"))
    broken = [r.error for r in mulm_reference if not r.ok]
    if any(r.missing_module for r in mulm_reference):
        pytest.skip("the reference runtime cannot run here: a block dependency is not installed in the verifying environment")
    assert not broken, "the reference runtime fails on the workflow's own examples:\n" + "\n".join(broken)
    assert recorded["inputs"] == [r.input for r in mulm_reference]
    problems = [f"example {i}: {d}" for i, (got, ref) in enumerate(zip(recorded["outputs"], mulm_reference, strict=True))
                for d in differences(got, ref.output, rtol=1e-5)]
    assert not problems, "the notebook's values disagree with the reference runtime:\n" + "\n".join(problems[:20])


@pytest.mark.parametrize("target, suffix", [("html", ".html"), ("slides", ".slides.html")])
def test_html_and_slides_contain_every_cell(target, suffix, executed, mulm_venv):
    assert executed["ok"], "the notebook did not execute (see test_notebook_executes_without_errors)"
    import html

    import nbformat

    run_dir = Path(executed["dir"])
    out = mulm_venv.run([str(mulm_venv.python), "-m", "jupyter", "nbconvert", "--to", target, "executed.ipynb"],
                        cwd=run_dir, timeout=600)
    assert out.ok, out.tail()
    raw = (run_dir / f"executed{suffix}").read_text(encoding="utf-8")
    # code is syntax-highlighted into spans: compare the text without tags, spaces folded
    page = " ".join(html.unescape(re.sub(r"<[^>]+>", "", raw)).split())
    nb = nbformat.read(run_dir / "executed.ipynb", as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":  # the heading or first line, as rendered text
            line = next((ln.strip() for ln in cell.source.splitlines() if ln.strip()), "")
            line = html.unescape(line.lstrip("#> ")).replace("`", "").replace("*", "")
        else:  # the first line of code that is not a comment
            line = next((ln.strip() for ln in cell.source.splitlines() if ln.strip() and not ln.startswith("#")), "")
        probe = " ".join(line.split())[:30]
        assert not probe or probe in page, f"{target}: cell {i} ({probe!r}) is missing"


def test_pdf(executed, mulm_venv):
    if shutil.which("xelatex") is None:
        pytest.skip("no LaTeX toolchain (xelatex) on this machine, so no PDF")
    assert executed["ok"]
    out = mulm_venv.run([str(mulm_venv.python), "-m", "jupyter", "nbconvert", "--to", "pdf", "executed.ipynb"],
                        cwd=Path(executed["dir"]), timeout=600)
    assert out.ok, out.tail()
