"""End to end: `pytest --mulm-workflow=<wf> --mulm-format=jupyter-notebook`, a real kernel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("nbformat", reason="needs pytest-mulm[notebook]")

ROOT = Path(__file__).resolve().parent
WORKFLOWS = [ROOT.parent / "examples" / f"{n}.json" for n in ("iris-mlp", "moe-router", "sentiment-pipeline")]
WORKFLOWS += [ROOT / "workflows" / "own" / f"{n}.json" for n in ("text-stats", "sensor-fusion")]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.stem)
def test_notebook_verifies(pytester: pytest.Pytester, workflow: Path, mulm_security) -> None:
    result = pytester.runpytest_subprocess(
        f"--mulm-workflow={workflow}", "--mulm-format=jupyter-notebook", "-p", "no:cacheprovider", "-rs",
        *mulm_security.args,
    )
    report = json.loads((pytester.path / "mulm-out" / "mulm-report.json").read_text())
    mulm_security.check(report, "jupyter-notebook")
    checks = {c["nodeid"].split("::")[-1]: c for c in report["formats"]["jupyter-notebook"]["checks"]
              if not mulm_security.is_security(c)}
    for name, check in checks.items():
        if name == "test_pdf[jupyter-notebook]":
            assert check["outcome"] in ("passed", "skipped")
            if check["outcome"] == "skipped":
                assert "no LaTeX toolchain" in check["message"]
        else:
            assert check["outcome"] == "passed", check
    executed = next((pytester.path / "mulm-out" / "notebook-runs").glob("*/executed.ipynb"))
    nb = json.loads(executed.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["execution_count"] and cell["outputs"]
            assert not [o for o in cell["outputs"] if o["output_type"] == "error"]
    assert result.ret == pytest.ExitCode.OK
