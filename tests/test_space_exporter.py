"""The huggingface-space exporter: app config from the ports, valid cards, hostile strings stay data."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from pytest_mulm.errors import WorkflowError
from pytest_mulm.exporting import export_workflow
from pytest_mulm.loader import load_workflow, parse_workflow

pytest.importorskip("huggingface_hub", reason="needs pytest-mulm[space]")
from pytest_mulm.exporters.huggingface_space import GRADIO_VERSION, card_problems  # noqa: E402

ROOT = Path(__file__).resolve().parent
EXAMPLES = ROOT.parent / "examples"


def test_form_for_numeric_workflow(tmp_path: Path) -> None:
    result = export_workflow(load_workflow(EXAMPLES / "iris-mlp.json"), "huggingface-space", out_dir=tmp_path)
    config = json.loads((result.path / "space_config.json").read_text())
    assert config["interface"] == "form" and config["api_name"] == "predict"
    (port,) = config["inputs"]
    # "Sepal length, sepal width, petal length, petal width (cm)" names the four numbers
    assert port["widget"] == "numbers" and port["size"] == 4 and port["names"][0] == "Sepal length"
    assert config["outputs"][0]["labels"] == ["setosa", "versicolor", "virginica"]
    samples = [json.loads(line)["input"] for line in (result.path / "sample_data.jsonl").read_text().splitlines()]
    assert samples[0] == [5.1, 3.5, 1.4, 0.2]
    ast.parse((result.path / "app.py").read_text())
    assert f"gradio=={GRADIO_VERSION}" in (result.path / "requirements.txt").read_text()


def test_chat_for_text_to_text_llm_workflow(tmp_path: Path) -> None:
    wf = load_workflow(ROOT / "workflows" / "own" / "summary-chat.json")
    result = export_workflow(wf, "huggingface-space", out_dir=tmp_path)
    config = json.loads((result.path / "space_config.json").read_text())
    assert config["interface"] == "chat" and config["api_name"] == "chat" and config["theme"] == "soft"
    readme = (result.path / "README.md").read_text()
    assert card_problems(readme, space=True) == []
    assert "license: apache-2.0" in readme and f"sdk_version: {GRADIO_VERSION}" in readme
    card = (result.path / "MODEL_CARD.md").read_text()
    assert card_problems(card, space=False) == []
    assert "pipeline_tag: text-generation" in card and "Demonstrating a chat Space" in card


def test_sentiment_has_a_text_form_not_chat(tmp_path: Path) -> None:
    # text in, but the output is a dict built by a Python block: a form
    result = export_workflow(load_workflow(EXAMPLES / "sentiment-pipeline.json"), "huggingface-space", out_dir=tmp_path)
    config = json.loads((result.path / "space_config.json").read_text())
    assert config["interface"] == "form" and config["inputs"][0]["widget"] == "text"


@pytest.mark.parametrize("patch, message", [
    ({"theme": "neon"}, "gradioInterface.theme: 'neon' is not a built-in Gradio theme"),
    ({"interface": "chat"}, "'chat' needs one text input"),
    ({"colorFrom": "mauve"}, "gradioInterface.colorFrom: 'mauve'"),
])
def test_bad_gradio_interface_config_is_refused_with_one_line(tmp_path: Path, patch: dict, message: str) -> None:
    doc = json.loads((EXAMPLES / "iris-mlp.json").read_text())
    doc["deploymentConfig"] = {"gradioInterface": patch}
    with pytest.raises(WorkflowError) as caught:
        export_workflow(parse_workflow(doc, base_dir=EXAMPLES), "huggingface-space", out_dir=tmp_path)
    assert "cannot export to huggingface-space: 1 problem(s)" in str(caught.value)
    (line,) = caught.value.lines
    assert message in line


def test_card_problems_catch_bad_front_matter() -> None:
    bad = "---\nsdk: streamlit\nsdk_version: latest\napp_file: main.py\nlicense: wtfpl\ncolorFrom: mauve\n---\n# x\n"
    problems = "\n".join(card_problems(bad, space=True))
    for needle in ("sdk: 'streamlit'", "app_file: 'main.py'", "sdk_version: 'latest'", "license: 'wtfpl'", "colorFrom"):
        assert needle in problems
    assert card_problems("---\nlicense: [unclosed\n---\n", space=False)[0].startswith("the card does not parse")


def test_hostile_strings_stay_data(tmp_path: Path) -> None:
    doc = json.loads((EXAMPLES / "iris-mlp.json").read_text())
    doc["name"] = "x'''\"\"\"; __import__('os').system('touch PWNED') #"
    doc["description"] = "---\nsdk: docker\n---\n<script>alert(1)</script>"
    doc["nodes"][0]["data"]["label"] = "\"); import os; os.system('touch PWNED'); (\""
    result = export_workflow(parse_workflow(doc, base_dir=EXAMPLES), "huggingface-space", out_dir=tmp_path)
    app = (result.path / "app.py").read_text()
    assert "PWNED" not in app and "alert(1)" not in app  # strings reach the app only through space_config.json
    readme = (result.path / "README.md").read_text()
    assert card_problems(readme, space=True) == []
    from huggingface_hub import SpaceCard

    assert SpaceCard(readme).data.sdk == "gradio"  # the description did not inject front matter
    assert "<script>" not in readme and "<script>" not in (result.path / "MODEL_CARD.md").read_text()
    assert not (tmp_path / "PWNED").exists()
