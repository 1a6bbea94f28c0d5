"""Tests of the similarity tier (pytest_mulm/llm/similarity.py, design.md §7)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_mulm.llm.similarity import (
    DEFAULT_THRESHOLD,
    Match,
    SimilarityIndex,
    free_text,
    guards,
    similarity,
    structured_key,
)

DATA = Path(__file__).parent / "data" / "similarity_pairs.jsonl"

#: Recall reached on the evaluation set at DEFAULT_THRESHOLD when this test was written
#: (169/180 = 0.939); the test allows 0.02 of slack for vocabulary changes.
ACHIEVED_RECALL = 169 / 180


def body(*texts: str, **fields: Any) -> dict[str, Any]:
    """A chat-completion body: a system prompt (if two texts) and a user message."""
    roles = ["system", "user"] if len(texts) == 2 else ["user"] * len(texts)
    base: dict[str, Any] = {"model": "gpt-4.1-nano", "temperature": 0, "max_tokens": 200,
                            "seed": 7,
                            "messages": [{"role": r, "content": t} for r, t in zip(roles, texts,
                                                                                 strict=True)]}
    base.update(fields)
    return base


def served(a: str, b: str, threshold: float = DEFAULT_THRESHOLD) -> bool:
    return similarity(a, b) >= threshold and not guards(a, b)


# -- structured fields ---------------------------------------------------------------

def test_structured_key_ignores_only_free_text() -> None:
    assert structured_key(body("Summarize this.")) == structured_key(body("Explain that."))
    assert free_text(body("sys", "Summarize this.")) == ["sys", "Summarize this."]


@pytest.mark.parametrize("change", [
    {"temperature": 0.7},
    {"model": "gpt-4.1-mini"},
    {"response_format": {"type": "json_object"}},
    {"seed": 8},
    {"max_tokens": 201},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
])
def test_structured_fields_must_match_exactly(change: dict[str, Any]) -> None:
    text = "Write a README for the exported package."
    index = SimilarityIndex()
    index.add("k1", body(text))
    assert index.find(body(text)) == Match("k1", 1.0)
    assert index.find(body(text, **change)) is None
    assert structured_key(body(text)) != structured_key(body(text, **change))


def test_roles_and_message_count_are_structured() -> None:
    text = "Write a README for the exported package."
    index = SimilarityIndex()
    index.add("user", body(text))
    as_system = {**body(text), "messages": [{"role": "system", "content": text}]}
    two = {**body(text), "messages": [{"role": "user", "content": text}] * 2}
    assert index.find(as_system) is None
    assert index.find(two) is None


def test_multimodal_parts_keep_non_text_parts_structured() -> None:
    def image(url: str) -> dict[str, Any]:
        return {"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Describe the image."},
            {"type": "image_url", "image_url": {"url": url}}]}]}
    assert structured_key(image("https://x/a.png")) != structured_key(image("https://x/b.png"))
    assert free_text(image("https://x/a.png")) == ["Describe the image."]


# -- similarity --------------------------------------------------------------------------

def test_similarity_range_and_paraphrases() -> None:
    a = "Summarize the limitations of this model for the model card."
    assert similarity(a, a) == 1.0
    assert served(a, "Summarise this model's limitations for the model card.")
    assert served("Please explain, in simple terms, what a softmax does.",
                  "Explain in simple terms what a softmax does.")
    unrelated = similarity("Write a README for the exported package.",
                           "Write a function that reverses a string.")
    assert 0.0 <= unrelated < DEFAULT_THRESHOLD


def test_substituted_word_sinks_the_score_even_in_a_long_template() -> None:
    template = ("You are writing documentation for a workflow exported by pytest-mulm. "
                "Blocks: input, normalize, dense, softmax, output. Write the {} section of the "
                "README: how to load the model and run one prediction.")
    assert similarity(template.format("Quickstart"), template.format("Installation")) <= 0.5
    assert similarity("Write a function that computes the mean of a list.",
                      "Write a function that computes the median of a list.") <= 0.5


def test_added_qualifiers_are_limited() -> None:
    # one added word in a short prompt, two added words anywhere: not served
    assert not served("Write a function that sorts a list.",
                      "Write a function that sorts a list of strings.")
    assert not served("Write a README for the package.",
                      "Write a README for the package and mention the license.")


# -- guards: one example per category ------------------------------------------------------

@pytest.mark.parametrize(("a", "b", "reason"), [
    ("Write release notes for version 1.2.0.", "Write release notes for version 1.3.0.",
     "numbers"),
    ("Write installation instructions for Python 3.11.",
     "Write installation instructions for Python 3.12.", "numbers"),
    ("Check that the image is 28x28.", "Check that the image is 32x32.", "numbers"),
    ("Reshape the input to (1, 28, 28).", "Reshape the input to (28, 28, 1).", "numbers"),
    ("Document the shape [224,224,3].", "Document the shape [3,224,224].", "numbers"),
    ("List three risks.", "List four risks.", "numbers"),
    ("Summarize the review. Don't mention the price.", "Summarize the review. Mention the price.",
     "negation"),
    ("Tokenize the text without regular expressions.", "Tokenize the text with regular expressions.",
     "negation"),
    ("Return all words except stop words.", "Return all words including stop words.",
     "negation"),
    ("Return the result as JSON.", "Return the result as YAML.", "format"),
    ("Export the model to ONNX.", "Export the model to TFLite.", "format"),
    ("Write a training loop in PyTorch.", "Write a training loop in TensorFlow.", "framework"),
    ("Serve the model with FastAPI.", "Serve the model with Flask.", "framework"),
    ("Run the model with ONNX Runtime on CPU.", "Run the model with ONNX Runtime on GPU.",
     "runtime"),
    ("Deploy the bundle on a Raspberry Pi.", "Deploy the bundle on Android.", "runtime"),
    ("Write the client in TypeScript.", "Write the client in Rust.", "language"),
    ("Translate the text to French.", "Translate the text to German.", "language"),
    ("Write a client in TypeScript.", "Write a client in Go.", "language"),
    ("Replace 'foo' with 'bar'.", "Replace 'foo' with 'baz'.", "identifiers"),
    ("Write a test for the /predict endpoint.", "Write a test for the /healthz endpoint.",
     "identifiers"),
    ("Fix the bug: total = sum(x) / len(x)", "Fix the bug: total = sum(x) / len(y)",
     "identifiers"),
    ("Name this: def f(x): return x * 2", "Name this: def f(x): return x ** 2", "identifiers"),
    ("Link to https://github.com/acme/a in the README.",
     "Link to https://github.com/acme/b in the README.", "identifiers"),
    ("Summarize requirements.txt for the README.", "Summarize pyproject.toml for the README.",
     "identifiers"),
    ("Write a short bio of Ada Lovelace.", "Write a short bio of Alan Turing.", "entities"),
    ("Sort the predictions in ascending order.", "Sort the predictions in descending order.",
     "antonyms"),
    ("Explain how to enable authentication.", "Explain how to disable authentication.",
     "antonyms"),
    ("Return the first n items.", "Return the last n items.", "antonyms"),
    ("Return the maximum of each column.", "Return the minimum of each column.", "antonyms"),
    ("Normalize the inputs before the softmax.", "Normalize the inputs after the softmax.",
     "antonyms"),
    ("Ana will fix the export; Ben reviews the docs.",
     "Ana will fix the docs; Ben reviews the export.", "swapped"),
    ("Convert the image from HWC to CHW layout.", "Convert the image from CHW to HWC layout.",
     "direction"),
])
def test_guard_categories(a: str, b: str, reason: str) -> None:
    found = guards(a, b)
    assert any(reason in r for r in found), found
    assert not served(a, b)
    assert guards(a, a) == []


@pytest.mark.parametrize(("a", "b"), [
    ("List three risks of deploying this model.", "List 3 risks of deploying this model."),
    ("Answer using only the context. If unsure, say you don't know.",
     "Answer using only the context. If unsure, say that you do not know."),
    ("Explain the output of the router block.", "Explain the output of the Router block."),
    ("Write the 'Quickstart' section in Markdown.", "write the 'quickstart' section in markdown."),
    ("Truncate text to at most 512 tokens.", "Truncate text to no more than 512 tokens."),
    ("Describe the request and response of /predict.",
     "Describe the response and request of /predict."),
])
def test_guards_do_not_object_to_harmless_rewording(a: str, b: str) -> None:
    assert guards(a, b) == []
    assert served(a, b)


# -- index -------------------------------------------------------------------------------

def test_index_finds_paraphrase_and_misses_near_miss() -> None:
    index = SimilarityIndex()
    system = "You are a helpful assistant for pytest-mulm."
    index.add("readme", body(system, "Write a README for the exported sentiment-pipeline package."))
    index.add("card", body(system, "Write a model card for the iris-mlp workflow."))
    assert len(index) == 2
    hit = index.find(body(system, "Please write a README for the exported sentiment-pipeline "
                                  "package."))
    assert hit is not None and hit.key == "readme" and DEFAULT_THRESHOLD <= hit.score <= 1.0
    # a near miss in the user text, and a changed system prompt, are both misses
    assert index.find(body(system, "Write a README for the exported moe-router package.")) is None
    assert index.find(body("You are a terse assistant.",
                           "Write a README for the exported sentiment-pipeline package.")) is None
    # threshold is honoured: 1.0 accepts only texts equal after normalisation
    assert index.find(body(system, "Please write a README for the exported sentiment-pipeline "
                                   "package."), threshold=1.01) is None


def test_index_picks_best_candidate() -> None:
    index = SimilarityIndex()
    index.add("near", body("Write a function that counts the lines in a file."))
    index.add("exact", body("Write a function that counts the number of lines in a file."))
    hit = index.find(body("Write a function that counts the number of lines in a file."))
    assert hit == Match("exact", 1.0)


# -- the whole evaluation set --------------------------------------------------------------

def test_evaluation_set_precision_and_recall() -> None:
    rows = [json.loads(line) for line in DATA.read_text("utf-8").splitlines() if line.strip()]
    assert len(rows) == 385
    tp = fp = fn = 0
    false_hits = []
    for r in rows:
        hit = served(r["a"], r["b"])
        if hit and r["same"]:
            tp += 1
        elif hit:
            fp += 1
            false_hits.append((r["kind"], r["a"], r["b"]))
        elif r["same"]:
            fn += 1
    precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    assert precision >= 0.995, false_hits
    assert recall >= ACHIEVED_RECALL - 0.02, (tp, fn)
