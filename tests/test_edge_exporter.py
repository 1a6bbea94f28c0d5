"""The edge-deployment exporter: configuration, refusals, the runner's code (no venvs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_mulm.errors import WorkflowError
from pytest_mulm.exporting import export_workflow
from pytest_mulm.loader import load_workflow, parse_workflow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
pytest.importorskip("onnxruntime", reason="needs pytest-mulm[edge]")


def without_edge_config(tmp_path: Path) -> Path:
    doc = json.loads((EXAMPLES / "sentiment-pipeline.json").read_text())
    doc["deploymentConfig"].pop("edgeConfig")
    path = tmp_path / "sentiment.json"
    path.write_text(json.dumps(doc))
    return path


def test_llm_block_stops_the_edge_export_with_a_clear_line(tmp_path: Path) -> None:
    wf = load_workflow(without_edge_config(tmp_path))
    with pytest.raises(WorkflowError) as info:
        export_workflow(wf, "edge-deployment", out_dir=tmp_path / "out")
    assert info.value.lines == [
        "node 'explain' (Explain): an llm block cannot run offline on the edge; "
        "set edgeConfig.allowDegradation to true to use the template fallback instead"
    ]


def test_allowed_degradation_is_reported(tmp_path: Path) -> None:
    from pytest_mulm.plugins import get_registry

    wf = load_workflow(EXAMPLES / "sentiment-pipeline.json")
    assert get_registry().exporter("edge-deployment").warnings(wf) == [
        "llm block(s) explain run degraded on the edge: the template fallback answers"]


@pytest.mark.parametrize("edge, expected", [
    ({"targetFramework": "coreml"}, "edgeConfig.targetFramework: 'coreml'; valid: onnx, tflite, both"),
    ({"quantization": "int4"}, "edgeConfig.quantization: 'int4'; valid: none, dynamic, int8"),
    ({"maxMemory": -5}, "edgeConfig.maxMemory: -5; give a positive number"),
    ({"platforms": ["amiga"]}, "edgeConfig.platforms: ['amiga']; valid: linux_x86_64, linux_aarch64, macos_arm64, windows_x86_64"),
])
def test_bad_edge_config_is_refused(tmp_path: Path, edge: dict, expected: str) -> None:
    doc = json.loads((EXAMPLES / "moe-router.json").read_text())
    doc["deploymentConfig"]["edgeConfig"] = edge
    with pytest.raises(WorkflowError) as info:
        export_workflow(parse_workflow(doc), "edge-deployment", out_dir=tmp_path)
    assert info.value.lines == [expected]


def test_workflow_without_numeric_blocks_exports_a_note(tmp_path: Path) -> None:
    wf = load_workflow(Path(__file__).parent / "workflows" / "own" / "text-stats.json")
    result = export_workflow(wf, "edge-deployment", out_dir=tmp_path)
    manifest = json.loads((result.path / "edge-manifest.json").read_text())
    assert manifest == {"schema": 1, "skipped_all": "the workflow has no numeric blocks, so there is no model to put on the edge"}


def test_runner_replaces_the_numeric_blocks_with_one_model_call(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow", reason="needs pytest-mulm[edge] (TensorFlow converts the TFLite models)")
    wf = load_workflow(EXAMPLES / "sentiment-pipeline.json")
    result = export_workflow(wf, "edge-deployment", out_dir=tmp_path)
    pipeline = next(result.path.glob("runner/src/*/pipeline.py")).read_text()
    assert "edge_model().run({'featurize': v_featurize})" in pipeline
    assert "ops.dense(" not in pipeline and "weights.npz" not in pipeline
    assert not list(result.path.glob("runner/src/*/weights.npz"))
    manifest = json.loads((result.path / "edge-manifest.json").read_text())
    assert manifest["inputs"] == [{"from": "featurize", "name": "featurize", "width": 7}]
    assert set(manifest["models"]) == {"onnxruntime-fp32", "onnxruntime-int8", "litert-fp32", "litert-int8"}
    for entry in manifest["models"].values():
        assert entry["bytes"] > 0 and entry["p50_ms"] > 0 and 0 < entry["peak_rss_mb"] < 512
    requirements = json.loads((result.path / "mulm-manifest.json").read_text())["dependencies"]
    assert not any(r.lower().startswith(("tensorflow", "tf-")) for r in requirements)
