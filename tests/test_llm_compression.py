"""Lossless prompt compression: each rule, what it must never touch, and the saving."""

from __future__ import annotations

import ast
import copy
import json
import textwrap

import pytest

from pytest_mulm.llm.compression import compress, compress_messages, minify_json, savings

FENCE = "```"

PYTHON = textwrap.dedent(
    '''\
    #!/usr/bin/env python
    # -*- coding: utf-8 -*-
    """Serve the iris classifier.   # not a comment: docstring text"""

    import json  # stdlib only


    URL = "http://example.com/#anchor"   # the '#' in the string stays
    TABLE  =  {"a":   1,    "b": "two  spaces"}
    TEMPLATE = """row one\x20\x20\x20
    # row two is string content, not a comment
    row three"""


    def predict(features,   scale=1.0):\x20\x20\x20
        """Return the class.

        Keeps its docstring.\x20\x20\x20
        """
        # scale first
        total = sum(f * scale for f in features)  # weighted
        return "setosa" if total < 5 else "virginica"  # threshold
    '''
)


def fenced(lang: str, body: str) -> str:
    return f"{FENCE}{lang}\n{body}\n{FENCE}"


# -- prose -----------------------------------------------------------------------------------


def test_trailing_whitespace_is_stripped() -> None:
    assert compress("first line   \nsecond\t\nthird") == "first line\nsecond\nthird"


def test_space_runs_collapse_but_indentation_tabs_and_inline_code_stay() -> None:
    text = "Write  the    docs.\n  - nested   item\ncol1\tcol2\t\tcol4\nUse `a  b` and  `c   d`  here."
    assert compress(text) == (
        "Write the docs.\n  - nested item\ncol1\tcol2\t\tcol4\nUse `a  b` and `c   d` here."
    )


def test_lines_indented_four_columns_are_left_alone() -> None:
    text = "Example:\n\n    x  =  'a  b'\n\tkeep   this"
    assert compress(text) == text


def test_blank_line_runs_become_one() -> None:
    assert compress("a\n\n\n\nb\n \n\t\nc") == "a\n\nb\n\nc"
    assert compress("a\n\nb") == "a\n\nb"
    assert compress("\n\n  \nstart\nend\n\n\n") == "start\nend"


def test_duplicate_consecutive_lines_are_dropped() -> None:
    text = "Log:\nretrying  request\nretrying request\nretrying request\ndone\nretrying request"
    assert compress(text) == "Log:\nretrying request\ndone\nretrying request"


def test_duplicates_that_can_carry_meaning_are_kept() -> None:
    table = "| n | label |\n|---|---|\n| 1 | cat |\n| 1 | cat |"
    assert compress(table) == table
    indented = "Steps:\n  - retry\n  - retry"
    assert compress(indented) == indented


def test_common_indentation_from_source_code_is_removed() -> None:
    text = "\n        You write docs.\n\n        Be  brief:\n          - one\n"
    assert compress(text) == "You write docs.\n\nBe brief:\n  - one"


def test_prose_words_and_numbers_are_unchanged() -> None:
    text = ("The  model  scored 0.9731 on   1,024 samples.  \n\n\n"
            "Latency p50: 1.8 ms;  p99: 12.40 ms.\t\nDo NOT   round.")
    assert compress(text).split() == text.split()


def test_crlf_becomes_lf() -> None:
    assert compress("a  \r\nb\r\n") == "a\nb"


# -- JSON ------------------------------------------------------------------------------------


WORKFLOW = {
    "id": "iris",
    "name": "Iris classifier",
    "nodes": [
        {"id": "in", "type": "aiBlock", "data": {"label": "Input", "config": {"shape": [4]}}},
        {"id": "mlp", "type": "aiBlock",
         "data": {"label": "MLP", "config": {"hidden": [16, 8], "activation": "relu"}}},
    ],
    "edges": [{"id": "e1", "source": "in", "target": "mlp"}],
    "note": "two  spaces and a # hash",
}


def test_fenced_json_is_minified_and_parses_equal() -> None:
    pretty = json.dumps(WORKFLOW, indent=2, ensure_ascii=False)
    out = compress("Workflow:\n" + fenced("json", pretty))
    body = out.split("\n")[2]
    assert json.loads(body) == WORKFLOW
    assert list(json.loads(body)) == list(WORKFLOW)  # key order kept
    # for ordinary JSON this is exactly json.dumps' compact form
    assert body == json.dumps(WORKFLOW, separators=(",", ":"), ensure_ascii=False)
    assert out == f"Workflow:\n{FENCE}json\n{body}\n{FENCE}"


def test_json_numbers_and_escapes_are_kept_as_written() -> None:
    text = '{\n  "price": 1.10,\n  "big": 1e5,\n  "id": 123456789012345678901234567890,\n  "s": "caf\\u00e9  \\"q\\""\n}'
    out = minify_json(text)
    assert out == '{"price":1.10,"big":1e5,"id":123456789012345678901234567890,"s":"caf\\u00e9  \\"q\\""}'
    assert json.loads(out) == json.loads(text)


def test_whole_message_json_is_minified() -> None:
    message = json.dumps(WORKFLOW, indent=4)
    assert compress(message) == json.dumps(WORKFLOW, separators=(",", ":"))
    assert compress("  [1,  2,\n 3]  ") == "[1,2,3]"


def test_text_that_is_not_json_is_not_treated_as_json() -> None:
    broken = fenced("json", '{\n  "a": 1,\n  // comment\n}')
    assert compress(broken) == broken
    assert compress("{braces}  in prose") == "{braces} in prose"
    assert minify_json("{'a': 1}") is None


def test_unlabelled_fence_holding_json_is_minified_other_languages_are_not() -> None:
    assert compress(fenced("", '{\n  "a": [1,  2]\n}')) == fenced("", '{"a":[1,2]}')
    for lang in ("sh", "yaml", "javascript", "diff", ""):
        block = fenced(lang, "echo   'hi'   # comment stays   \n\n\n\nkey:  value")
        assert compress(block) == block, lang


# -- python ----------------------------------------------------------------------------------


def _python_out(text: str) -> str:
    out = compress(fenced("python", text)).split("\n")
    assert out[0] == f"{FENCE}python" and out[-1] == FENCE
    return "\n".join(out[1:-1])


def test_python_comments_are_stripped_with_the_same_ast() -> None:
    out = _python_out(PYTHON)
    assert ast.dump(ast.parse(out)) == ast.dump(ast.parse(PYTHON))
    compile(out, "<context>", "exec")
    assert "# scale first" not in out and "# weighted" not in out and "#!/usr" not in out
    assert "coding" not in out
    # '#' inside strings and docstrings is not a comment
    assert 'URL = "http://example.com/#anchor"' in out
    assert "# row two is string content, not a comment" in out
    assert "# not a comment: docstring text" in out
    assert '"""Return the class.' in out and "Keeps its docstring." in out
    # whitespace inside strings is content: kept, even at a line end
    assert 'TEMPLATE = """row one   \n' in out
    assert "Keeps its docstring.   \n" in out
    assert '"b": "two  spaces"' in out
    # whitespace between tokens is not
    assert 'TABLE = {"a": 1, "b": "two  spaces"}' in out
    assert "def predict(features, scale=1.0):\n" in out
    assert "\n\n\n" not in out
    assert len(out) < len(PYTHON)


def test_python_in_an_indented_fence() -> None:
    body = textwrap.indent("def f(x):  # doc\n    return x  +  1", "   ")
    text = f"1. Code:\n\n   {FENCE}py\n{body}\n   {FENCE}"
    assert compress(text) == f"1. Code:\n\n   {FENCE}py\n   def f(x):\n       return x + 1\n   {FENCE}"


def test_python_that_does_not_parse_is_kept() -> None:
    snippet = ">>> x  =  1   # set x\n>>> print(x)\n1"
    assert _python_out(snippet) == snippet
    partial = "def f(:\n    pass  # broken"
    assert _python_out(partial) == partial


def test_top_level_await_snippets_are_compacted() -> None:
    assert _python_out("result = await client.chat()  # call") == "result = await client.chat()"


# -- idempotence and messages ----------------------------------------------------------------


SAMPLES = [
    "Write  the docs.  \n\n\n\nThen  stop.",
    "a\na\na\n\n\na",
    fenced("json", json.dumps(WORKFLOW, indent=2)),
    fenced("python", PYTHON),
    json.dumps(WORKFLOW, indent=2),
    "    indented  block\n    indented  block",
    "| a |  b |\n| a |  b |",
    "Use `x  y`  and\t tabs.\n\n" + fenced("sh", "ls   -la  "),
    "\n        Indented  prompt\n\n\n        " + fenced("python", "x = 1  # c"),
    "unclosed fence:\n" + FENCE + "python\nx  =  1  # c\n\n\n",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_compress_is_idempotent(text: str) -> None:
    once = compress(text)
    assert compress(once) == once


def test_compress_messages_changes_only_content() -> None:
    messages = [
        {"role": "system", "content": "You  write   docs.  "},
        {"role": "user", "name": "ci", "content": [
            {"type": "text", "text": "Explain:\n\n\n" + fenced("json", '{\n "a": 1\n}')},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA  "}},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "t1", "function": {"arguments": "{ }"}}]},
    ]
    original = copy.deepcopy(messages)
    out = compress_messages(messages)
    assert messages == original  # input untouched
    assert out[0] == {"role": "system", "content": "You write docs."}
    assert out[1]["name"] == "ci" and out[1]["role"] == "user"
    assert out[1]["content"][0] == {"type": "text", "text": f'Explain:\n\n{FENCE}json\n{{"a":1}}\n{FENCE}'}
    assert out[1]["content"][1] == original[1]["content"][1]
    assert out[2] == original[2]


# -- the measured saving ---------------------------------------------------------------------


def doc_prompt() -> list[dict]:
    """A documentation request as the exporter builds it: an instruction written in an
    indented triple-quoted string, the workflow as pretty JSON, the generated code."""
    system = """
        You are a technical writer for   machine-learning services.
        Write clear,  accurate Markdown documentation.\x20\x20

        Rules:
          - Describe every endpoint,  its input and its output.
          - Use the   exact field names from the workflow.
          - Do not invent  numbers.


        Output only the README.
    """
    user = (
        "Document this workflow and its generated FastAPI service.  \n\n\n"
        "Workflow (µLM JSON):\n\n"
        + fenced("json", json.dumps(WORKFLOW, indent=2, ensure_ascii=False))
        + "\n\nGenerated service:\n\n"
        + fenced("python", PYTHON)
        + "\n\n\nThe README must start with the service name.   \n"
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def test_saving_on_a_doc_writing_prompt() -> None:
    before = doc_prompt()
    after = compress_messages(before)
    result = savings(before, after, "gpt-4o-mini")
    print(f"\ndoc prompt: {result}")
    assert result["saved"] > 0
    assert result["tokens_after"] == result["tokens_before"] - result["saved"]
    assert 0 < result["ratio"] < 1
    # the saving is not bought with lost content
    text = after[1]["content"]
    assert json.loads(text.split(f"{FENCE}json\n")[1].split(f"\n{FENCE}")[0]) == WORKFLOW
    code = text.split(f"{FENCE}python\n")[1].split(f"\n{FENCE}")[0]
    assert ast.dump(ast.parse(code)) == ast.dump(ast.parse(PYTHON))
    assert after[0]["content"].split() == before[0]["content"].split()


def test_savings_of_unchanged_messages_is_zero() -> None:
    messages = [{"role": "user", "content": "Hi"}]
    assert savings(messages, messages, "gpt-4o-mini") == {
        "tokens_before": 8, "tokens_after": 8, "saved": 0, "ratio": 0.0}
