"""Generated blocks (design.md §4): patterns first, then model code that must pass the
AST allow-list, bandit and every example in a separate process."""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_mulm.errors import MulmError, WorkflowError
from pytest_mulm.llm import blockgen
from pytest_mulm.llm.blockgen import (
    ALLOWED_MODULES,
    PATTERNS,
    Example,
    GenerationRefused,
    check_code,
    extract_code,
    function_name,
    generate_block,
    parse_examples,
    reproduces,
    resolve_generated_blocks,
    try_patterns,
)
from pytest_mulm.loader import parse_workflow
from pytest_mulm.runtime import Runtime


@dataclass
class FakeCompletion:
    text: str
    fallback: bool = False
    cache: str | None = None
    cost_usd: float = 0.0
    reason: str = ""


class StubClient:
    """Answers with scripted texts (the last one repeats) and records every call."""

    def __init__(self, *answers: str, fallback: bool = False, cost: float = 0.002):
        self.answers = list(answers)
        self.fallback = fallback
        self.cost = cost
        self.calls: list[dict[str, Any]] = []

    def generate(self, messages: list[dict], *, model: str | None = None, fallback: Any = None,
                 compress: bool = False, **params: Any) -> FakeCompletion:
        self.calls.append({"messages": copy.deepcopy(messages), "model": model, **params})
        if self.fallback:
            return FakeCompletion("[template fallback: no model was called]", fallback=True,
                                  reason="replay mode and no cassette for this request")
        answer = self.answers[min(len(self.calls), len(self.answers)) - 1]
        return FakeCompletion(answer, cost_usd=self.cost)


def fenced(code: str) -> str:
    return f"Here you go:\n```python\n{code}```\n"


VOWELS_GOOD = "def count_vowels(text):\n    return sum(1 for c in text.lower() if c in 'aeiou')\n"
VOWELS_WRONG = "def count_vowels(text):\n    return sum(1 for c in text if c in 'aeiou')\n"  # misses capitals
VOWEL_EXAMPLES = [{"input": "Apple", "output": 2}, {"input": "sky", "output": 0}, {"input": "queue", "output": 4}]


# -- examples ----------------------------------------------------------------------------


def test_examples_accept_objects_and_pairs():
    got = parse_examples([{"input": "a", "output": "A"}, ["b", "B"], ("c", "C")], "n1")
    assert got == [Example("a", "A"), Example("b", "B"), Example("c", "C")]


@pytest.mark.parametrize("raw, field", [
    (None, "data.config.examples"),
    ([], "data.config.examples"),
    ("a -> A", "data.config.examples"),
    ([{"input": "a"}], "data.config.examples[0]"),
    ([["a", "A"], ["b", "B", "extra"]], "data.config.examples[1]"),
    ([["a", "A"], 7], "data.config.examples[1]"),
])
def test_malformed_examples_name_node_field_and_valid_format(raw, field):
    with pytest.raises(WorkflowError) as info:
        parse_examples(raw, "gen-1")
    msg = str(info.value)
    assert isinstance(info.value, MulmError)
    assert "node 'gen-1'" in msg and field in msg
    assert '{"input": ..., "output": ...}' in msg and "[input, output]" in msg


# -- patterns ----------------------------------------------------------------------------


def test_pattern_hit_costs_nothing_and_never_calls_the_client():
    client = StubClient(fenced(VOWELS_GOOD))
    block = generate_block("shout", "Shout It", "upper-case the text",
                           [["hello", "HELLO"], ["Mixed Case", "MIXED CASE"]], client)
    assert block.origin == "pattern:upper"
    assert (block.cost_usd, block.attempts) == (0.0, 0)
    assert client.calls == []
    assert block.entrypoint == "shout_it" and "def shout_it(" in block.source
    assert check_code(block.source) == []  # what goes into the workflow passes the same gate


def test_spec_picks_among_patterns_that_fit_few_examples():
    examples = [["already lower", "already lower"]]
    assert try_patterns(examples).name == "identity"
    assert try_patterns(examples, spec="Lower-case the text").name == "lower"


@pytest.mark.parametrize("examples, name", [
    ([[[3, 1, 2], [1, 2, 3]], [["b", "a"], ["a", "b"]]], "sort"),
    ([[[1.234, -2.5], [1.23, -2.5]]], "round_2"),
    ([["a 1 b 2.5 c -3", [1, 2.5, -3]]], "extract_numbers"),
    ([[[1, 2, 2, 1, 3], [1, 2, 3]]], "unique"),
    ([["a b a", {"a": 2, "b": 1}]], "word_frequencies"),
    ([[[1.0, 2.0], [0.2689414213699951, 0.7310585786300049]]], "softmax"),
    ([[[-1.0, 2.0], [0.0, 2.0]]], "relu"),
    ([["  lots   of  space ", "lots of space"]], "collapse_whitespace"),
])
def test_try_patterns_finds_the_template(examples, name):
    found = try_patterns(examples)
    assert found is not None and found.name == name


def test_float_tolerance_is_relative_and_tight():
    assert try_patterns([[[0.0], [0.5 + 1e-12]]], spec="sigmoid").name == "sigmoid"
    assert try_patterns([[[0.0], [0.5 + 1e-6]]]) is None


def test_bools_are_not_numbers_when_comparing():
    # len("a") == 1 == True in Python, but a block that should say true must not return 1
    assert try_patterns([["a", True]]) is None


def test_no_pattern_returns_none():
    assert try_patterns(VOWEL_EXAMPLES) is None


def test_every_pattern_is_safe_by_our_own_rules():
    assert len(PATTERNS) >= 20
    assert len({p.name for p in PATTERNS}) == len(PATTERNS)
    for p in PATTERNS:
        assert check_code(p.source, bandit=False) == [], p.name
        assert check_code(p.render(function_name(p.name)), bandit=False) == [], p.name
    # one bandit run over all templates keeps the test quick
    assert blockgen._bandit_problems("\n\n".join(p.source for p in PATTERNS)) == []


def test_function_name_is_an_identifier_that_shadows_nothing():
    assert function_name("Clean Text!") == "clean_text"
    assert function_name("Sum") == "sum_block"  # def sum(values): return sum(values) would recurse
    assert function_name("json") == "json_block"
    assert function_name("3 steps").isidentifier()
    assert function_name("", "node-7").isidentifier()


# -- safety ------------------------------------------------------------------------------


@pytest.mark.parametrize("source, expected", [
    ("def f(x):\n    return eval(x)\n", ["line 2: forbidden name 'eval'", "B307"]),
    ("def f(x):\n    return open(x).read()\n", ["line 2: forbidden name 'open'"]),
    ("def f(x):\n    return __import__('os').getpid()\n", ["forbidden name '__import__'"]),
    ("import os\n\n\ndef f(x):\n    return os.getpid()\n", ["line 1: import of 'os' is not allowed"]),
    ("from os import path\n\n\ndef f(x):\n    return path.sep\n", ["import from 'os' is not allowed"]),
    ("def f(x):\n    return x.__class__.__mro__\n", ["dunder attribute access '.__class__'"]),
    ("def f(x):\n    return '{0.__class__}'.format(x)\n", ["a string naming a dunder attribute"]),
    ("def f(x):\n    return (i for i in x).gi_frame.f_back\n", ["introspection attribute '.gi_frame'"]),
    ("import subprocess\n\n\ndef f(cmd):\n    return subprocess.call(cmd, shell=True)\n",
     ["import of 'subprocess' is not allowed", "bandit B602"]),
    ("import yaml\n\n\ndef f(text):\n    return yaml.load(text)\n", ["import of 'yaml' is not allowed"]),
    ("def f(x):\n    global y\n    y = x\n    return x\n", ["'global' is not allowed"]),
    ("async def f(x):\n    return x\n", ["async code is not allowed"]),
    ("x = compute()\n\n\ndef f(v):\n    return v\n", ["line 1: top-level Assign statement is not allowed"]),
    ("def f(x):\n    return x\n\n\ndef g(x):\n    return x\n", ["exactly one public top-level function", "f, g"]),
    ("def f(x:\n    return x\n", ["line 1: does not parse"]),
    ("def f(x):\n    return getattr(x, 'upper')()\n", ["forbidden name 'getattr'"]),
])
def test_check_code_refuses_with_the_rule_in_the_message(source, expected):
    problems = check_code(source)
    text = "\n".join(problems)
    for fragment in expected:
        assert fragment in text, text


def test_bandit_finding_alone_refuses_with_rule_line_and_text():
    # passes the AST allow-list; bandit B104 (medium/medium) still refuses it
    problems = check_code("def bind_address(x):\n    return '0.0.0.0'\n")
    assert len(problems) == 1
    assert "line 2: bandit B104" in problems[0] and "binding to all interfaces" in problems[0]


def test_low_severity_bandit_findings_do_not_refuse():
    # B101 (assert) is low severity: allowed
    assert check_code("def f(x):\n    assert x\n    return x\n") == []


def test_helpers_constants_and_docstrings_are_allowed():
    source = ('"""Vowels."""\nimport re\n\nVOWELS = "aeiou"\n\n\ndef _is_vowel(c):\n    return c in VOWELS\n\n\n'
              "def count(text):\n    return sum(1 for c in re.sub(r'\\W', '', text.lower()) if _is_vowel(c))\n")
    assert check_code(source) == []
    assert "datetime" in ALLOWED_MODULES and "os" not in ALLOWED_MODULES


def test_entrypoint_must_be_the_public_function():
    assert "must define a public function named 'wanted'" in check_code(VOWELS_GOOD, entrypoint="wanted")[0]


# -- reproduction in another process --------------------------------------------------------


def test_reproduces_reports_mismatches_and_exceptions_per_example():
    problems = reproduces("def f(x):\n    return x.upper()\n", "f", [["a", "A"], ["b", "c"], [1, "x"]])
    assert problems[0].startswith('example 2: expected "c", got "B"')
    assert problems[1].startswith('example 3: expected "x", raised AttributeError')
    assert len(problems) == 2
    assert reproduces("def f(x):\n    return x.upper()\n", "f", [["a", "A"]]) == []


def test_candidate_runs_in_another_process():
    # reproduces() is the low-level runner: it is called only after check_code, which
    # refuses `import os`; here it shows the code cannot touch the test process
    problems = reproduces("import os\n\n\ndef f(x):\n    return os.getpid()\n", "f", [[0, os.getpid()]])
    assert len(problems) == 1 and problems[0].startswith(f"example 1: expected {os.getpid()}, got ")
    assert "import of 'os' is not allowed" in check_code("import os\n\n\ndef f(x):\n    return os.getpid()\n")[0]


def test_candidate_does_not_see_the_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-for-test")
    source = "import os\n\n\ndef f(x):\n    return os.environ.get('OPENAI_API_KEY')\n"
    assert reproduces(source, "f", [[0, None]]) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="resource limits are set on Linux")
def test_candidate_cannot_write_files(tmp_path: Path):
    target = tmp_path / "written.txt"
    source = f"def f(x):\n    with open({str(target)!r}, 'w') as fh:\n        fh.write('data' * 1000)\n    return x\n"
    assert "forbidden name 'open'" in check_code(source)[0]
    problems = reproduces(source, "f", [[1, 1]])
    assert problems and problems[0].startswith("example 1:")
    assert not target.exists() or target.read_text() == ""


def test_endless_loop_hits_the_timeout_and_is_refused():
    problems = reproduces("def f(x):\n    while True:\n        pass\n", "f", [[1, 1], [2, 2]], timeout=2)
    assert problems == ["example 1: did not finish within 2 s (endless loop?); the process was stopped"]


def test_results_that_are_not_json_are_refused():
    problems = reproduces("def f(x):\n    return {x}\n", "f", [[1, [1]]])
    assert problems and "returned a set, which is not JSON data" in problems[0]


def test_prints_do_not_corrupt_results():
    assert reproduces("def f(x):\n    print('noise', x)\n    return x * 2\n", "f", [[2, 4]]) == []


def test_code_that_fails_to_load_is_reported():
    problems = reproduces("def f(x):\n    return x\n", "missing", [[1, 1]])
    assert problems and "the code failed when loaded: KeyError" in problems[0]


# -- asking the model -----------------------------------------------------------------------


def test_model_code_that_gets_an_example_wrong_is_refused():
    client = StubClient(fenced(VOWELS_WRONG))
    with pytest.raises(GenerationRefused) as info:
        generate_block("vowels", "Count Vowels", "count the vowels, ignoring case", VOWEL_EXAMPLES, client)
    msg = str(info.value)
    assert len(client.calls) == blockgen.MAX_ATTEMPTS == 2
    assert "node 'vowels' (Count Vowels)" in msg
    assert "count the vowels, ignoring case" in msg
    assert "example 1: expected 2, got 1" in msg
    assert "      def count_vowels(text):" in msg  # the code, indented
    assert "give the block data.sourceCode" in msg and "fix config.examples" in msg


def test_second_attempt_succeeds_and_is_told_why_the_first_failed():
    client = StubClient(fenced(VOWELS_WRONG), fenced(VOWELS_GOOD), cost=0.002)
    block = generate_block("vowels", "Count Vowels", "count the vowels, ignoring case", VOWEL_EXAMPLES, client,
                           model="gpt-test")
    assert block.origin == "model" and block.attempts == 2
    assert block.source == VOWELS_GOOD and block.entrypoint == "count_vowels"
    assert block.cost_usd == pytest.approx(0.004)
    first, second = client.calls
    assert first["model"] == "gpt-test" and first["temperature"] == 0 and first["max_tokens"] <= 600
    assert "Function name: count_vowels" in first["messages"][1]["content"]
    assert '{"input":"Apple","output":2}' in first["messages"][1]["content"]
    assert "example 1: expected 2, got 1" in second["messages"][-1]["content"]


def test_fallback_completion_means_the_model_could_not_be_asked():
    client = StubClient(fallback=True)
    with pytest.raises(GenerationRefused) as info:
        generate_block("vowels", "Count Vowels", "count the vowels", VOWEL_EXAMPLES, client)
    msg = str(info.value)
    assert len(client.calls) == 1
    assert "the model could not be asked" in msg and "no cassette" in msg
    assert "--mulm-ai=record" in msg


def test_unsafe_model_code_is_refused_without_running_it(tmp_path: Path):
    marker = tmp_path / "ran.txt"
    evil = (f"import pathlib\n\n\ndef count_vowels(text):\n    pathlib.Path({str(marker)!r}).write_text('x')\n"
            "    return sum(1 for c in text.lower() if c in 'aeiou')\n")
    client = StubClient(fenced(evil), fenced("def count_vowels(text):\n    return eval('0')\n"))
    with pytest.raises(GenerationRefused) as info:
        generate_block("vowels", "Count Vowels", "count vowels", VOWEL_EXAMPLES, client)
    msg = str(info.value)
    assert "attempt 1" in msg and "import of 'pathlib' is not allowed" in msg
    assert "attempt 2" in msg and "forbidden name 'eval'" in msg and "B307" in msg
    assert not marker.exists()


def test_endless_loop_from_the_model_is_refused(monkeypatch):
    monkeypatch.setattr(blockgen, "REPRODUCE_TIMEOUT", 2.0)
    client = StubClient(fenced("def count_vowels(text):\n    while True:\n        pass\n"))
    with pytest.raises(GenerationRefused, match="did not finish within 2 s"):
        generate_block("vowels", "Count Vowels", "count vowels", VOWEL_EXAMPLES, client)


def test_long_model_code_is_truncated_in_the_message():
    body = "".join(f"    v{i} = {i}\n" for i in range(60))
    client = StubClient(fenced(f"import os\n\n\ndef count_vowels(text):\n{body}    return 0\n"))
    with pytest.raises(GenerationRefused) as info:
        generate_block("vowels", "Count Vowels", "count vowels", VOWEL_EXAMPLES, client)
    msg = str(info.value)
    assert "v30 = 30" in msg and "v59 = 59" not in msg
    assert "more lines)" in msg


def test_keyword_parameters_for_blocks_with_several_inputs():
    code = "def combine(a, b):\n    return f'{a}-{b}'\n"
    client = StubClient(fenced(code))
    block = generate_block("j", "Combine", "join a and b with a dash",
                           [[{"a": "x", "b": "y"}, "x-y"], [{"a": 1, "b": 2}, "1-2"]], client, params=["a", "b"])
    assert block.origin == "model" and "keyword parameters a, b" in client.calls[0]["messages"][1]["content"]
    with pytest.raises(WorkflowError, match=r"data.config.examples\[0\].input"):
        generate_block("j", "Combine", "join", [["x", "x-y"]], client, params=["a", "b"])


def test_extract_code():
    assert extract_code("```python\ndef f():\n    return 1\n```") == "def f():\n    return 1\n"
    assert extract_code("text\n```\ndef g():\n    pass\n```\nmore") == "def g():\n    pass\n"
    assert extract_code("def h():\n    return 2") == "def h():\n    return 2\n"


# -- workflows ----------------------------------------------------------------------------


def _workflow(generated: dict) -> dict:
    return {
        "id": "gen", "name": "Generated",
        "nodes": [
            {"id": "in", "type": "aiBlock", "data": {"label": "Text", "type": "input", "category": "input",
                                                     "config": {"inputType": "text", "examples": ["Banana", "sky"]}}},
            {"id": "gen", "type": "aiBlock", "data": {"label": "Count Vowels", "type": "preprocessing",
                                                      "category": "utility", "config": generated}},
            {"id": "out", "type": "aiBlock", "data": {"label": "Out", "type": "output", "category": "output"}},
        ],
        "edges": [{"id": "e1", "source": "in", "target": "gen"}, {"id": "e2", "source": "gen", "target": "out"}],
    }


def test_loader_points_generated_blocks_to_the_llm_layer():
    wf = parse_workflow(_workflow({"generate": "count vowels", "examples": VOWEL_EXAMPLES}))
    assert wf.problems == ("node 'gen' (Count Vowels): generated block (config.generate) has no code yet: "
                           "pytest-mulm writes it through the LLM layer when it exports (pytest --mulm-workflow, "
                           "mulm export); or give it sourceCode",)


def test_resolve_generated_blocks_with_the_model():
    doc = _workflow({"generate": "count the vowels, ignoring case", "examples": VOWEL_EXAMPLES})
    wf = parse_workflow(doc)
    client = StubClient(fenced(VOWELS_GOOD))
    resolved, infos = resolve_generated_blocks(wf, client)
    assert resolved.problems == ()
    node = resolved.node("gen")
    assert node.source == VOWELS_GOOD and node.entrypoint == "count_vowels"
    assert node.config["generate"] == "count the vowels, ignoring case"
    assert Runtime(resolved).run("Banana") == 3
    assert infos == [{"node": "gen", "label": "Count Vowels", "origin": "model", "entrypoint": "count_vowels",
                      "attempts": 1, "cost_usd": 0.002}]
    assert "sourceCode" not in wf.raw["nodes"][1]["data"]  # the input workflow is untouched


def test_resolve_generated_blocks_with_a_pattern_is_free(tmp_path: Path):
    doc = _workflow({"generate": "upper-case it", "examples": [["Banana", "BANANA"], ["sky", "SKY"]]})
    wf = parse_workflow(doc, base_dir=tmp_path, path=tmp_path / "gen.json")
    client = StubClient(fenced(VOWELS_GOOD))
    resolved, infos = resolve_generated_blocks(wf, client)
    assert client.calls == []
    assert infos[0]["origin"] == "pattern:upper" and infos[0]["cost_usd"] == 0.0
    assert resolved.path == tmp_path / "gen.json"
    assert [Runtime(resolved).run(x) for x in resolved.examples] == ["BANANA", "SKY"]


def test_resolve_without_generated_blocks_returns_the_workflow():
    doc = _workflow({})
    doc["nodes"][1]["data"]["sourceCode"] = "def f(x):\n    return x\n"
    wf = parse_workflow(doc)
    assert resolve_generated_blocks(wf, StubClient()) == (wf, [])


def test_resolve_refuses_malformed_examples_with_the_node():
    wf = parse_workflow(_workflow({"generate": "count vowels", "examples": "Apple -> 2"}))
    with pytest.raises(WorkflowError, match=r"node 'gen': data.config.examples: is a str"):
        resolve_generated_blocks(wf, StubClient())


def test_candidate_sees_only_the_standard_library():
    # -I -S: no site-packages, so even a module the test environment has cannot be imported
    problems = reproduces("import numpy\n\n\ndef f(x):\n    return x\n", "f", [[1, 1]])
    assert problems == ["the code failed when loaded: ModuleNotFoundError: No module named 'numpy'"]
