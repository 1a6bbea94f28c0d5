"""End to end: `pytest --mulm-workflow=<wf> --mulm-format=huggingface-space`, a real Gradio process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("gradio_client", reason="needs pytest-mulm[space]")

ROOT = Path(__file__).resolve().parent
WORKFLOWS = [ROOT.parent / "examples" / f"{n}.json" for n in ("iris-mlp", "moe-router", "sentiment-pipeline")]
WORKFLOWS += [ROOT / "workflows" / "own" / f"{n}.json" for n in ("text-stats", "sensor-fusion", "summary-chat")]
# the only checks allowed to skip, and the reason each must give
ALLOWED_SKIPS = {
    "test_screenshot": "Chromium is not installed",
    "test_bad_input_gets_a_clear_error": "accepts any",
}


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.stem)
def test_space_verifies(pytester: pytest.Pytester, workflow: Path, mulm_security) -> None:
    result = pytester.runpytest_subprocess(
        f"--mulm-workflow={workflow}", "--mulm-format=huggingface-space", "-p", "no:cacheprovider", "-rs",
        *mulm_security.args,
    )
    report = json.loads((pytester.path / "mulm-out" / "mulm-report.json").read_text())
    mulm_security.check(report, "huggingface-space")
    space = report["formats"]["huggingface-space"]
    space["checks"] = [c for c in space["checks"] if not mulm_security.is_security(c)]
    for check in space["checks"]:
        if check["outcome"] == "skipped":
            reason = ALLOWED_SKIPS.get(check["check"])
            assert reason and reason in check["message"], check
        else:
            assert check["outcome"] == "passed", check
    assert len(space["checks"]) == 10
    assert "verified model card" in space["attachments"]
    if shutil.which("chromium"):
        shot = Path(space["attachments"]["screenshot"])
        assert shot.read_bytes()[:4] == b"\x89PNG"
    assert space["benchmark"]["gradio_client_calls"] >= 1
    assert result.ret == pytest.ExitCode.OK
