"""Generated blocks: code for a node that has a spec and examples but no source (design.md §4).

A generated block is a Python-kind node with ``config.generate`` (a plain-language spec)
and ``config.examples`` (input → expected output) but no ``sourceCode``. Before anything
costs money, a small library of safe pattern templates (:data:`PATTERNS`, including the
element-wise built-in blocks written in pure Python) is tried against the examples; the
model is asked only when none reproduces them. Code the model writes is accepted only if

1. it parses and passes an AST allow-list check (:func:`check_code`),
2. bandit finds nothing of medium-or-higher severity *and* confidence, and
3. it reproduces every example when run in a separate, resource-limited process
   (:func:`reproduces`). Model code is never executed in the calling process.

Otherwise :class:`GenerationRefused` says what the model wrote and why it was refused.
:func:`resolve_generated_blocks` turns a loaded workflow with generated blocks into one
whose blocks all have ``sourceCode``.

The LLM client is used only through its ``generate(messages, *, model=None, ...)``
method returning an object with ``.text``, ``.fallback`` and ``.cost_usd``.
"""

from __future__ import annotations

import ast
import builtins
import copy
import json
import keyword
import math
import os
import re
import subprocess  # nosec B404
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import MulmError, WorkflowError
from ..naming import identifier, printable
from ..workflow import Workflow

__all__ = [
    "ALLOWED_MODULES",
    "FORBIDDEN_NAMES",
    "PATTERNS",
    "Example",
    "GeneratedBlock",
    "GenerationRefused",
    "Pattern",
    "check_code",
    "function_name",
    "generate_block",
    "parse_examples",
    "reproduces",
    "resolve_generated_blocks",
    "try_patterns",
]

# -- limits ------------------------------------------------------------------------------

ALLOWED_MODULES = frozenset({
    "math", "re", "json", "statistics", "collections", "itertools", "functools", "string",
    "unicodedata", "datetime", "decimal", "fractions", "operator", "heapq", "bisect", "textwrap",
})
FORBIDDEN_NAMES = frozenset({
    "eval", "exec", "compile", "open", "__import__", "input", "globals", "locals", "vars",
    "getattr", "setattr", "delattr", "breakpoint", "exit", "quit", "help", "memoryview",
})
MAX_ATTEMPTS = 2  # model attempts per block; the second one is told why the first was refused
MAX_TOKENS = 600  # one small function; also caps what a runaway answer can cost
MAX_SOURCE_CHARS = 20_000
SHOWN_CODE_LINES = 40  # lines of the model's code quoted in a refusal
REPRODUCE_TIMEOUT = 10.0  # seconds of wall clock for all examples of one candidate
MEMORY_LIMIT = 1 << 30  # address space of the candidate process (bytes)
MAX_RESULT_CHARS = 1_000_000  # one example's JSON result; more is refused, not buffered
FLOAT_REL_TOL = 1e-9
FLOAT_ABS_TOL = 1e-12  # results that should be 0.0 come out as 1e-17 after float arithmetic
_DUNDER_IN_TEXT = re.compile(r"__\w+__")
# CPython introspection attributes that lead from any generator, frame or traceback to the
# module globals and builtins (the classic sandbox escapes that need no dunder)
INTROSPECTION_ATTRIBUTES = frozenset({
    "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "ag_frame", "ag_code",
    "f_globals", "f_locals", "f_builtins", "f_back", "f_code", "tb_frame", "tb_next",
    "co_code", "co_consts", "func_globals", "func_code",
})


# -- examples ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """One input → expected output pair of a generated block."""

    input: Any
    output: Any


def parse_examples(raw: Any, node_id: str = "?") -> list[Example]:
    """Normalise ``config.examples``: ``{"input": ..., "output": ...}`` objects or
    ``[input, output]`` pairs. Raises :class:`WorkflowError` naming the node and entry."""
    where = f"node '{node_id}'"
    valid = 'give a list of {"input": ..., "output": ...} objects (or [input, output] pairs)'
    if not isinstance(raw, (list, tuple)) or not raw:
        shown = "empty" if isinstance(raw, (list, tuple)) else f"a {type(raw).__name__}"
        raise WorkflowError(f"is {shown}; a generated block needs examples to be checked against: {valid}",
                            where=where, field="data.config.examples")
    examples: list[Example] = []
    for i, item in enumerate(raw):
        fld = f"data.config.examples[{i}]"
        if isinstance(item, Mapping):
            missing = [k for k in ("input", "output") if k not in item]
            if missing:
                raise WorkflowError(f"has no {' or '.join(repr(m) for m in missing)} key; {valid}", where=where, field=fld)
            pair = (item["input"], item["output"])
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            pair = (item[0], item[1])
        else:
            shown = f"a list of {len(item)}" if isinstance(item, (list, tuple)) else f"a {type(item).__name__}"
            raise WorkflowError(f"is {shown}; {valid}", where=where, field=fld)
        try:
            json.dumps(pair, allow_nan=True)
        except (TypeError, ValueError) as exc:
            raise WorkflowError(f"is not JSON data ({exc}); inputs and outputs must be JSON values", where=where, field=fld) from None
        examples.append(Example(pair[0], pair[1]))
    return examples


def _coerce(examples: Sequence[Example] | Any, node_id: str = "?") -> list[Example]:
    if isinstance(examples, (list, tuple)) and examples and all(isinstance(e, Example) for e in examples):
        return list(examples)
    return parse_examples(examples, node_id)


def _round_trip(value: Any) -> Any:
    # what a JSON export would see: tuples become lists, dict keys become strings
    return json.loads(json.dumps(value, allow_nan=True))


def _same(expected: Any, got: Any) -> bool:
    """Equality of JSON values; floats within a 1e-9 relative tolerance; bools are not numbers."""
    if isinstance(expected, bool) or isinstance(got, bool):
        return type(expected) is type(got) and expected == got
    if isinstance(expected, (int, float)) and isinstance(got, (int, float)):
        if isinstance(expected, int) and isinstance(got, int):
            return expected == got
        try:
            if math.isnan(expected) or math.isnan(got):
                return math.isnan(expected) and math.isnan(got)
            return math.isclose(expected, got, rel_tol=FLOAT_REL_TOL, abs_tol=FLOAT_ABS_TOL)
        except OverflowError:  # an integer too large for a float
            return False
    if isinstance(expected, list) and isinstance(got, list):
        return len(expected) == len(got) and all(_same(e, g) for e, g in zip(expected, got, strict=True))
    if isinstance(expected, dict) and isinstance(got, dict):
        return expected.keys() == got.keys() and all(_same(v, got[k]) for k, v in expected.items())
    return type(expected) is type(got) and expected == got


def _show(value: Any, limit: int = 200) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- pattern library ---------------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    """A small, safe template: ``source`` defines one public function named ``func``."""

    name: str
    description: str
    source: str
    func: str
    keywords: tuple[str, ...] = ()  # words in a spec that make this the preferred match

    def render(self, name: str) -> str:
        """The source with its function (and recursive calls to it) renamed to ``name``."""
        return re.sub(rf"\b{re.escape(self.func)}\b", name, self.source)

    def function(self) -> Callable[..., Any]:
        """The template's function, compiled once. Only our own templates run in-process."""
        fn = _PATTERN_FUNCTIONS.get(self.name)
        if fn is None:
            fn = _PATTERN_FUNCTIONS[self.name] = _compile_trusted(self.source, self.func)
        return fn


_PATTERN_FUNCTIONS: dict[str, Callable[..., Any]] = {}


def _compile_trusted(source: str, func: str) -> Callable[..., Any]:
    namespace: dict[str, Any] = {"__name__": "mulm_pattern"}
    # our own pattern templates (reviewed, and checked by check_code in the tests), never model code
    exec(compile(source, f"<pattern {func}>", "exec"), namespace)  # nosec B102
    return namespace[func]


def _elementwise(func: str, param: str, expr: str, imports: str = "") -> str:
    # numbers, or (nested) lists of numbers, like the numeric built-in blocks
    head = f"{imports}\n\n\n" if imports else ""
    return (f"{head}def {func}({param}):\n"
            f"    if isinstance({param}, list):\n"
            f"        return [{func}(v) for v in {param}]\n"
            f"    return {expr}\n")


def _simple(func: str, param: str, expr: str, imports: str = "") -> str:
    head = f"{imports}\n\n\n" if imports else ""
    return f"{head}def {func}({param}):\n    return {expr}\n"


def _build_patterns() -> tuple[Pattern, ...]:
    p: list[Pattern] = [
        Pattern("identity", "returns its input unchanged", _simple("identity", "value", "value"), "identity",
                ("identity", "unchanged", "pass through", "passthrough", "as is", "as-is", "echo")),
        Pattern("lower", "lower-cases text", _simple("lower_text", "text", "text.lower()"), "lower_text",
                ("lower",)),
        Pattern("upper", "upper-cases text", _simple("upper_text", "text", "text.upper()"), "upper_text",
                ("upper", "capital letters", "all caps", "shout")),
        Pattern("strip", "removes leading and trailing whitespace", _simple("strip_text", "text", "text.strip()"),
                "strip_text", ("strip", "trim", "leading", "trailing")),
        Pattern("title", "capitalises every word", _simple("title_text", "text", "text.title()"), "title_text",
                ("title", "each word", "every word")),
        Pattern("capitalize", "upper-cases the first character and lower-cases the rest",
                _simple("capitalize_text", "text", "text.capitalize()"), "capitalize_text",
                ("capitaliz", "capitalis", "sentence case", "first letter")),
        Pattern("collapse_whitespace", "collapses runs of whitespace to one space and trims",
                _simple("collapse_whitespace", "text", '" ".join(text.split())'), "collapse_whitespace",
                ("collapse", "whitespace", "spaces")),
        Pattern("normalize_text", "lower-cases and collapses whitespace",
                _simple("normalize_text", "text", '" ".join(text.lower().split())'), "normalize_text",
                ("normaliz", "normalis", "clean")),
        Pattern("word_count", "counts whitespace-separated words", _simple("word_count", "text", "len(text.split())"),
                "word_count", ("word count", "count words", "count the words", "number of words")),
        Pattern("length", "number of characters (text) or items (list)", _simple("length", "value", "len(value)"),
                "length", ("length", "character", "how many", "number of", "size")),
        Pattern("line_count", "counts lines", _simple("line_count", "text", "len(text.splitlines())"), "line_count",
                ("line",)),
        Pattern("split_words", "splits text into words on whitespace", _simple("split_words", "text", "text.split()"),
                "split_words", ("split", "tokeni", "words")),
        Pattern("split_lines", "splits text into lines", _simple("split_lines", "text", "text.splitlines()"),
                "split_lines", ("lines",)),
        Pattern("reverse", "reverses a string or a list", _simple("reverse_value", "value", "value[::-1]"),
                "reverse_value", ("revers", "backward")),
        Pattern("sort", "sorts ascending", _simple("sort_values", "values", "sorted(values)"), "sort_values",
                ("sort", "order", "ascending")),
        Pattern("sort_desc", "sorts descending", _simple("sort_desc", "values", "sorted(values, reverse=True)"),
                "sort_desc", ("descending", "largest first", "highest first")),
        Pattern("sum", "adds the numbers up", _simple("sum_values", "values", "sum(values)"), "sum_values",
                ("sum", "total", "add")),
        Pattern("mean", "arithmetic mean", _simple("mean_value", "values", "statistics.fmean(values)", "import statistics"),
                "mean_value", ("mean", "average", "avg")),
        Pattern("median", "median", _simple("median_value", "values", "statistics.median(values)", "import statistics"),
                "median_value", ("median", "middle")),
        Pattern("min", "smallest item", _simple("min_value", "values", "min(values)"), "min_value",
                ("min", "smallest", "lowest", "least")),
        Pattern("max", "largest item", _simple("max_value", "values", "max(values)"), "max_value",
                ("max", "largest", "highest", "biggest", "greatest")),
    ]
    for n in range(4):
        expr = "round(x)" if n == 0 else f"round(x, {n})"
        p.append(Pattern(f"round_{n}", f"rounds numbers to {n} decimal places",
                         _elementwise(f"round_{n}", "x", expr), f"round_{n}", ("round",)))
    p += [
        Pattern("abs", "absolute value", _elementwise("abs_value", "x", "abs(x)"), "abs_value",
                ("abs", "magnitude")),
        Pattern("negate", "changes the sign", _elementwise("negate_value", "x", "-x"), "negate_value",
                ("negat", "minus", "opposite", "sign")),
        Pattern("unique", "drops duplicates, keeping the first occurrence in order",
                _simple("unique_values", "values", "list(dict.fromkeys(values))"), "unique_values",
                ("unique", "dedup", "de-dup", "distinct", "duplicate")),
        Pattern("word_frequencies", "counts how often each word occurs",
                _simple("word_frequencies", "text", "dict(collections.Counter(text.split()))", "import collections"),
                "word_frequencies", ("frequenc", "each word", "occurrence", "histogram", "how often")),
        Pattern("extract_numbers", "the numbers in a text, as int or float",
                "import re\n\n\ndef extract_numbers(text):\n"
                '    found = re.findall(r"-?\\d+(?:\\.\\d+)?", text)\n'
                '    return [float(n) if "." in n else int(n) for n in found]\n',
                "extract_numbers", ("number", "digit", "extract", "numeric")),
        Pattern("to_int", "converts to an integer", _simple("to_int", "value", "int(value)"), "to_int",
                ("int", "whole")),
        Pattern("to_float", "converts to a float", _simple("to_float", "value", "float(value)"), "to_float",
                ("float", "decimal")),
        Pattern("to_string", "converts to text", _simple("to_string", "value", "str(value)"), "to_string",
                ("string", "str", "text")),
        Pattern("json_dumps", "serialises to JSON text", _simple("to_json", "value", "json.dumps(value)", "import json"),
                "to_json", ("json", "serial", "dump", "encode")),
        Pattern("json_loads", "parses JSON text", _simple("from_json", "text", "json.loads(text)", "import json"),
                "from_json", ("json", "parse", "load", "decode")),
        Pattern("join_space", "joins items with a space",
                _simple("join_space", "values", '" ".join(str(v) for v in values)'), "join_space",
                ("join", "concatenat", "combine", "space")),
        Pattern("join_comma", "joins items with a comma and a space",
                _simple("join_comma", "values", '", ".join(str(v) for v in values)'), "join_comma",
                ("comma", "join")),
        Pattern("join_lines", "joins items one per line",
                _simple("join_lines", "values", '"\\n".join(str(v) for v in values)'), "join_lines",
                ("newline", "line", "join")),
        Pattern("first", "the first item", _simple("first_item", "values", "values[0]"), "first_item",
                ("first", "head")),
        Pattern("last", "the last item", _simple("last_item", "values", "values[-1]"), "last_item",
                ("last", "tail", "final")),
        # the element-wise built-in numeric blocks, so a generated block that is one of them is free
        Pattern("relu", "max(0, x) element-wise (the built-in activation)",
                _elementwise("relu", "x", "max(0.0, x)"), "relu", ("relu", "rectif")),
        Pattern("sigmoid", "1 / (1 + e^-x) element-wise (the built-in activation)",
                _elementwise("sigmoid", "x", "1.0 / (1.0 + math.exp(-x))", "import math"), "sigmoid",
                ("sigmoid", "logistic")),
        Pattern("tanh", "tanh element-wise (the built-in activation)",
                _elementwise("tanh_value", "x", "math.tanh(x)", "import math"), "tanh_value",
                ("tanh", "hyperbolic")),
        Pattern("gelu", "exact gelu element-wise (the built-in activation)",
                _elementwise("gelu", "x", "x * 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))", "import math"), "gelu",
                ("gelu",)),
        Pattern("softmax", "softmax over a list of numbers (the built-in block)",
                "import math\n\n\ndef softmax(values):\n"
                "    top = max(values)\n"
                "    exps = [math.exp(v - top) for v in values]\n"
                "    total = sum(exps)\n"
                "    return [e / total for e in exps]\n",
                "softmax", ("softmax", "probabilit")),
    ]
    return tuple(p)


PATTERNS: tuple[Pattern, ...] = _build_patterns()


def _pattern_matches(pattern: Pattern, examples: Sequence[Example], fn: Callable[..., Any] | None = None) -> bool:
    fn = fn or pattern.function()
    for ex in examples:
        try:
            # a fresh copy per call: a template must not see another example's mutations
            got = _round_trip(fn(copy.deepcopy(ex.input)))
        except Exception:  # a template that does not apply to this input (wrong type, empty list...)
            return False
        if not _same(_round_trip(ex.output), got):
            return False
    return True


def _matching_patterns(examples: Sequence[Example], spec: str = "") -> list[Pattern]:
    matches = [p for p in PATTERNS if _pattern_matches(p, examples)]
    text = spec.lower()
    # several templates can fit few examples ("abc" -> "abc" fits identity and lower): prefer
    # the one the spec names; library order (simplest first) breaks the remaining ties
    preferred = [p for p in matches if any(k in text for k in p.keywords)]
    return preferred + [p for p in matches if p not in preferred]


def try_patterns(examples: Sequence[Example] | Any, *, spec: str = "") -> Pattern | None:
    """The first pattern whose function reproduces every example (a pattern the ``spec``
    names is preferred among several that fit), or None. Costs nothing; runs only our
    own templates, in-process."""
    found = _matching_patterns(_coerce(examples), spec)
    return found[0] if found else None


# -- safety ------------------------------------------------------------------------------


def _is_constant(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _ast_problems(tree: ast.Module, entrypoint: str | None) -> list[str]:
    problems: list[str] = []
    allowed = ", ".join(sorted(ALLOWED_MODULES))
    functions: list[ast.FunctionDef] = []
    for i, stmt in enumerate(tree.body):
        if isinstance(stmt, ast.FunctionDef):
            functions.append(stmt)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            pass  # checked with every other import below
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str) and i == 0:
            pass  # module docstring
        elif (isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets) and _is_constant(stmt.value)) or (
            isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None and _is_constant(stmt.value)
        ):
            pass  # NAME = <literal>
        elif isinstance(stmt, ast.AsyncFunctionDef):
            pass  # reported by the walk below
        else:
            problems.append(
                f"line {stmt.lineno}: top-level {type(stmt).__name__} statement is not allowed; only imports, "
                "function definitions, constant assignments and a docstring (module code would run on import)"
            )
    public = [f.name for f in functions if not f.name.startswith("_")]
    if entrypoint and entrypoint not in public:
        problems.append(f"must define a public function named {entrypoint!r} (defines: {', '.join(public) or 'none'})")
    elif not entrypoint and len(public) != 1:
        problems.append(
            f"must define exactly one public top-level function (helpers start with _); it defines "
            f"{len(public)}: {', '.join(public) or 'none'}"
        )
    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root not in ALLOWED_MODULES:
                    problems.append(f"line {line}: import of {alias.name!r} is not allowed; allowed modules: {allowed}")
        elif isinstance(node, ast.ImportFrom):
            root = (node.module or "").split(".")[0]
            if node.level:
                problems.append(f"line {line}: relative import is not allowed; allowed modules: {allowed}")
            elif root not in ALLOWED_MODULES:
                problems.append(f"line {line}: import from {node.module!r} is not allowed; allowed modules: {allowed}")
            elif any(a.name == "*" for a in node.names):
                problems.append(f"line {line}: 'from {node.module} import *' is not allowed; import the names you use")
        elif isinstance(node, ast.Name):
            if node.id in FORBIDDEN_NAMES:
                problems.append(f"line {line}: forbidden name {node.id!r} (no eval/exec/open/getattr/... in generated code)")
            elif node.id.startswith("__") and node.id.endswith("__"):
                problems.append(f"line {line}: dunder name {node.id!r} is not allowed")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("__"):
            problems.append(f"line {line}: dunder attribute access '.{node.attr}' is not allowed")
        elif isinstance(node, ast.Attribute) and node.attr in INTROSPECTION_ATTRIBUTES:
            problems.append(f"line {line}: introspection attribute '.{node.attr}' is not allowed")
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            problems.append(f"line {line}: '{type(node).__name__.lower()}' is not allowed; keep the function pure")
        elif isinstance(node, (ast.AsyncFunctionDef, ast.Await, ast.AsyncFor, ast.AsyncWith)):
            problems.append(f"line {line}: async code is not allowed; write a plain function")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _DUNDER_IN_TEXT.search(node.value):
            # "{0.__class__}".format(x) and attrgetter("__globals__") reach attributes by string
            problems.append(f"line {line}: a string naming a dunder attribute ({_DUNDER_IN_TEXT.search(node.value).group()!r}) is not allowed")  # type: ignore[union-attr]
    return problems


def _bandit_problems(source: str) -> list[str]:
    """bandit's findings of at least medium severity and medium confidence, one line each.

    bandit runs as ``python -m bandit`` in a subprocess (our interpreter, fixed arguments,
    no shell): its CLI and JSON report are stable where its Python API is not."""
    with tempfile.TemporaryDirectory(prefix="mulm-bandit-") as tmp:
        path = Path(tmp) / "generated_block.py"
        path.write_text(source, encoding="utf-8")
        try:
            proc = subprocess.run(  # nosec B603
                [sys.executable, "-m", "bandit", "-f", "json", "-q", str(path)],
                capture_output=True, text=True, timeout=60, cwd=tmp, check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return [f"bandit could not run ({exc}); generated code is not accepted without it"]
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [f"bandit could not check the code ({tail}); install bandit (pip install bandit) "
                "— generated code is not accepted without it"]
    rank = {"LOW": 1, "MEDIUM": 2, "HIGH": 3}
    problems = [
        f"line {r.get('line_number', '?')}: bandit {r.get('test_id', '?')} "
        f"(severity {r.get('issue_severity')}, confidence {r.get('issue_confidence')}): {r.get('issue_text', '')}"
        for r in report.get("results", [])
        if rank.get(str(r.get("issue_severity")).upper(), 0) >= 2 and rank.get(str(r.get("issue_confidence")).upper(), 0) >= 2
    ]
    problems += [f"bandit could not check the code: {e.get('reason', e)}" for e in report.get("errors", [])]
    return problems


def check_code(source: str, *, entrypoint: str | None = None, bandit: bool = True) -> list[str]:
    """Why ``source`` may not be accepted as a generated block; empty when it may.

    Checks: it parses; it defines exactly one public top-level function (``entrypoint``
    if given; ``_helpers`` allowed); top level holds only imports, function definitions,
    constant assignments and a docstring; imports only from :data:`ALLOWED_MODULES`;
    none of :data:`FORBIDDEN_NAMES`; no dunder names or attributes; no global/nonlocal;
    no async. Then bandit: any finding with severity and confidence >= MEDIUM refuses.
    """
    if not isinstance(source, str) or not source.strip():
        return ["the code is empty"]
    if len(source) > MAX_SOURCE_CHARS:
        return [f"the code is {len(source)} characters; the limit for one block is {MAX_SOURCE_CHARS}"]
    try:
        tree = ast.parse(source, filename="<generated>")
    except SyntaxError as exc:
        text = (exc.text or "").strip()
        return [f"line {exc.lineno}: does not parse: {exc.msg}" + (f": {text[:80]!r}" if text else "")]
    except (ValueError, RecursionError, MemoryError) as exc:  # NUL bytes, absurd nesting
        return [f"does not parse: {exc}"]
    problems = _ast_problems(tree, entrypoint)
    if bandit:
        # also when the AST check already refused: the user sees every reason at once
        problems += _bandit_problems(source)
    return problems


def _public_function(source: str) -> str | None:
    tree = ast.parse(source)
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
    return names[0] if len(names) == 1 else None


# -- reproduction in a separate process ----------------------------------------------------

# Runs in a fresh interpreter (-I: isolated, -S: no site-packages, so only the standard
# library is importable). Limits first, then the candidate; one JSON line per example, so
# that when the process is stopped we know which example was running.
_RUNNER = r'''
import io, json, sys


def _limit(cpu, memory):
    try:
        import resource
    except ImportError:  # not on this platform: the parent's wall-clock timeout still holds
        return
    for name, value in (("RLIMIT_CPU", cpu), ("RLIMIT_AS", memory), ("RLIMIT_FSIZE", 0),
                        ("RLIMIT_NPROC", 0), ("RLIMIT_CORE", 0)):
        which = getattr(resource, name, None)
        if which is None:
            continue
        try:
            _soft, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value))  # hard too: the candidate cannot raise it
        except (ValueError, OSError):
            pass


payload = json.loads(sys.stdin.read())
_limit(payload["cpu"], payload["memory"])
out = sys.stdout
sys.stdout = io.StringIO()  # prints of the candidate must not corrupt the result lines
sys.stdin = io.StringIO()


def emit(record):
    out.write(json.dumps(record) + "\n")
    out.flush()


def describe(exc):
    text = str(exc)
    return (type(exc).__name__ + (": " + text if text else ""))[:300]


try:
    namespace = {"__name__": "mulm_candidate"}
    exec(compile(payload["source"], "<generated>", "exec"), namespace)
    fn = namespace[payload["entrypoint"]]
except BaseException as exc:
    emit({"load_error": describe(exc)})
    raise SystemExit(0)

for i, value in enumerate(payload["inputs"]):
    try:
        mode = payload["mode"]
        result = fn(**value) if mode == "kwargs" else fn() if mode == "none" else fn(value)
    except BaseException as exc:
        emit({"i": i, "raised": describe(exc)})
        continue
    try:
        text = json.dumps(result, allow_nan=True)
    except BaseException as exc:
        emit({"i": i, "unjson": type(result).__name__, "why": str(exc)[:200]})
        continue
    if len(text) > payload["max_chars"]:
        emit({"i": i, "too_large": len(text)})
    else:
        emit({"i": i, "result": text})
'''


def _call_mode(params: Sequence[str] | None) -> str:
    if params is None:
        return "single"
    return "kwargs" if params else "none"


def reproduces(
    source: str,
    entrypoint: str,
    examples: Sequence[Example] | Any,
    *,
    params: Sequence[str] | None = None,
    timeout: float | None = None,
) -> list[str]:
    """Run ``source`` on every example in a separate, resource-limited process.

    Returns one line per mismatch (``example N: expected X, got Y``), empty when every
    example is reproduced. ``params`` None: the function takes the input as its one
    argument; a list of names: each input is an object of keyword arguments; an empty
    list: the function takes no argument. The child is a fresh ``python -I -S`` with a
    minimal environment (no API keys), an empty working directory, limits on CPU time,
    address space, file size (0: it cannot write files) and processes, and a wall-clock
    ``timeout`` (default :data:`REPRODUCE_TIMEOUT`) after which it is killed.
    """
    timeout = REPRODUCE_TIMEOUT if timeout is None else timeout
    exs = _coerce(examples)
    mode = _call_mode(params)
    payload = json.dumps({
        "source": source, "entrypoint": entrypoint, "mode": mode,
        "inputs": [ex.input for ex in exs], "cpu": int(math.ceil(timeout)) + 1,
        "memory": MEMORY_LIMIT, "max_chars": MAX_RESULT_CHARS,
    }, allow_nan=True)
    env = {"PATH": os.defpath, "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
    timed_out = False
    with tempfile.TemporaryDirectory(prefix="mulm-candidate-") as tmp:
        try:
            proc = subprocess.run(  # nosec B603
                [sys.executable, "-I", "-S", "-c", _RUNNER], input=payload.encode("utf-8"),
                capture_output=True, timeout=timeout, cwd=tmp, env=env, check=False,
            )
            stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:  # run() has killed the child already
            timed_out = True
            stdout, stderr, code = exc.stdout or b"", exc.stderr or b"", None
        except OSError as exc:
            return [f"the candidate could not be started: {exc}"]
    records: dict[int, dict] = {}
    for line in (stdout.decode("utf-8", "replace") if isinstance(stdout, bytes) else stdout).splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "load_error" in rec:
            return [f"the code failed when loaded: {rec['load_error']}"]
        if isinstance(rec.get("i"), int):
            records[rec["i"]] = rec
    problems: list[str] = []
    for i, ex in enumerate(exs):
        n = i + 1
        rec = records.get(i)
        if rec is None:
            problems.append(_stopped(n, timed_out, timeout, code, stderr))
            break  # the process ended here; later examples never ran
        if "raised" in rec:
            problems.append(f"example {n}: expected {_show(ex.output)}, raised {rec['raised']} (input {_show(ex.input, 80)})")
        elif "unjson" in rec:
            problems.append(f"example {n}: returned a {rec['unjson']}, which is not JSON data "
                            "(return str, int, float, bool, None, list or dict)")
        elif "too_large" in rec:
            problems.append(f"example {n}: the result is {rec['too_large']} characters of JSON; the limit is {MAX_RESULT_CHARS}")
        else:
            got = json.loads(rec["result"])
            if not _same(_round_trip(ex.output), got):
                problems.append(f"example {n}: expected {_show(ex.output)}, got {_show(got)} (input {_show(ex.input, 80)})")
    return problems


def _stopped(n: int, timed_out: bool, timeout: float, code: int | None, stderr: bytes | str) -> str:
    if timed_out:
        return f"example {n}: did not finish within {timeout:g} s (endless loop?); the process was stopped"
    err = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    tail = (err.strip().splitlines() or [""])[-1][:200]
    if code is not None and code < 0:
        how = {24: "CPU time limit", 25: "file size limit (it tried to write a file)", 9: "kill signal"}.get(-code, f"signal {-code}")
        return f"example {n}: the process was stopped by the {how}" + (f": {tail}" if tail else "")
    return f"example {n}: the process ended (status {code}) without a result" + (f": {tail}" if tail else "")


# -- generation ---------------------------------------------------------------------------


class CompletionLike(Protocol):
    text: str
    fallback: bool
    cost_usd: float


class ClientLike(Protocol):
    def generate(self, messages: list[dict], *, model: str | None = None, **params: Any) -> CompletionLike: ...


@dataclass(frozen=True)
class GeneratedBlock:
    """Accepted code for a generated block and where it came from."""

    source: str
    entrypoint: str
    origin: str  # "pattern:<name>" or "model"
    cost_usd: float = 0.0
    attempts: int = 0  # model calls made (0 for a pattern)
    node_id: str = ""
    label: str = ""

    def info(self) -> dict[str, Any]:
        """A JSON-friendly summary for reports."""
        return {"node": self.node_id, "label": self.label, "origin": self.origin, "entrypoint": self.entrypoint,
                "attempts": self.attempts, "cost_usd": self.cost_usd}


@dataclass
class Attempt:
    """One model answer and why it was refused."""

    code: str
    reasons: list[str] = field(default_factory=list)


class GenerationRefused(MulmError):
    """No acceptable code for a generated block. The multi-line message says which block,
    what the model wrote, each reason it was refused and what the user can do."""

    def __init__(self, node_id: str, label: str, spec: str, attempts: Sequence[Attempt], *, could_not_ask: str = ""):
        self.node_id = node_id
        self.label = label
        self.spec = spec
        self.attempts = list(attempts)
        self.could_not_ask = could_not_ask
        super().__init__(self._message())

    def _message(self) -> str:
        title = f"node '{self.node_id}' ({self.label})" if self.label and self.label != self.node_id else f"node '{self.node_id}'"
        if self.could_not_ask:
            head = (f"{title}: generated block has no code: no pattern template reproduces its examples "
                    f"and the model could not be asked ({self.could_not_ask})")
            if self.attempts:
                head += f" after {len(self.attempts)} refused attempt(s)"
        else:
            head = f"{title}: generated block refused: no pattern template reproduces its examples and the model's code was refused {len(self.attempts)} time(s)"
        lines = [head, f"  spec (config.generate): {' '.join(self.spec.split())[:300]}"]
        for i, att in enumerate(self.attempts, 1):
            code = att.code.splitlines() or ["<empty answer>"]
            shown = code[:SHOWN_CODE_LINES]
            lines.append(f"  attempt {i}: the model wrote:")
            lines += [f"      {c}" for c in shown]
            if len(code) > len(shown):
                lines.append(f"      ... ({len(code) - len(shown)} more lines)")
            lines.append("    refused because:")
            lines += [f"    - {r}" for r in att.reasons]
        lines.append("  what you can do:")
        if self.could_not_ask:
            lines.append("    - run with --mulm-ai=record and an API key (OPENAI_API_KEY) so the model is asked and the answer recorded")
        lines += [
            "    - give the block data.sourceCode defining one function (then config.generate is only documentation)",
            "    - fix config.examples if an expected output is wrong, or add examples that make the spec unambiguous",
            "    - reword config.generate so it says exactly what the function returns",
        ]
        if not self.could_not_ask:
            # the refused answer is cached; a changed spec or example is a new request
            lines.append("    - after changing the spec or the examples, run with --mulm-ai=record and a key to ask the model again")
        return "\n".join(printable(line) for line in lines)


_SYSTEM = (
    "You write one pure Python 3.11 function for a data pipeline block. "
    "Use only the standard library, and only these modules: " + ", ".join(sorted(ALLOWED_MODULES)) + ". "
    "No I/O of any kind: no files, network, processes, environment variables, input() or print(). "
    "Never use eval, exec, compile, open, getattr, setattr, delattr, globals, locals, vars, "
    "dunder attributes (like __class__), global or nonlocal. "
    "Define exactly one public function with the given name; helpers must start with an underscore; "
    "imports go at the top; no other top-level code. "
    "Return only JSON data (str, int, float, bool, None, list, dict). "
    "Reply with the code only, in one ```python fenced block."
)
_PROMPT_EXAMPLES = 20  # the prompt shows this many; reproduction checks all
_PROMPT_EXAMPLE_CHARS = 400

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(text: str) -> str:
    """The code in a model answer: the first ```python fence, else the first fence, else all."""
    fences = _FENCE.findall(text or "")
    for lang, body in fences:
        if lang.lower() in ("python", "py", "python3"):
            return body.strip("\n") + "\n"
    if fences:
        return fences[0][1].strip("\n") + "\n"
    return (text or "").strip() + "\n"


def function_name(label: str, node_id: str = "") -> str:
    """A valid identifier for the block's function, from its label (else its id). Names of
    builtins and allowed modules get ``_block`` so the function cannot shadow what it uses."""
    name = identifier(label or node_id or "block", prefix="block").lower()
    if name in ALLOWED_MODULES or name in dir(builtins) or keyword.iskeyword(name) or name.startswith("_"):
        name = f"{name.strip('_') or 'generated'}_block"
    return name


def _user_prompt(name: str, spec: str, examples: Sequence[Example], params: Sequence[str] | None) -> str:
    if params is None:
        takes = "one positional parameter: the block's input value"
    elif params:
        takes = "keyword parameters " + ", ".join(params) + " (each example input lists them)"
    else:
        takes = "no parameters"
    lines = [f"Function name: {name}", f"Parameters: {takes}", f"What it does: {' '.join(spec.split())}",
             "Examples (JSON, one per line; the function must return exactly the output for the input):"]
    for ex in examples[:_PROMPT_EXAMPLES]:
        line = json.dumps({"input": ex.input, "output": ex.output}, ensure_ascii=False, separators=(",", ":"), allow_nan=True)
        lines.append(line if len(line) <= _PROMPT_EXAMPLE_CHARS else line[:_PROMPT_EXAMPLE_CHARS] + "…")
    if len(examples) > _PROMPT_EXAMPLES:
        lines.append(f"({len(examples) - _PROMPT_EXAMPLES} more examples not shown; they are checked too)")
    return "\n".join(lines)


def _check_params(examples: Sequence[Example], params: Sequence[str] | None, node_id: str) -> None:
    if not params:
        return
    for i, ex in enumerate(examples):
        if not isinstance(ex.input, dict) or set(ex.input) != set(params):
            raise WorkflowError(
                f"input must be an object with the keys {', '.join(params)} (the block has several inputs, "
                "named by their edges' targetHandle or source id)",
                where=f"node '{node_id}'", field=f"data.config.examples[{i}].input",
            )


def generate_block(
    node_id: str,
    label: str,
    spec: str,
    examples: Sequence[Example] | Any,
    client: ClientLike | None,
    *,
    model: str | None = None,
    entrypoint: str | None = None,
    params: Sequence[str] | None = None,
) -> GeneratedBlock:
    """Code for one generated block: a pattern template if one reproduces the examples
    (no client call, $0), else the model's code once it passes :func:`check_code` and
    :func:`reproduces`. At most :data:`MAX_ATTEMPTS` model calls; raises
    :class:`GenerationRefused` when the model cannot be asked or every answer is refused.

    ``entrypoint`` forces the function name (``config.entrypoint``); ``params`` as in
    :func:`reproduces` (None: one input value).
    """
    exs = _coerce(examples, node_id)
    if not isinstance(spec, str) or not spec.strip():
        raise WorkflowError("must be a plain-language description of what the block computes",
                            where=f"node '{node_id}'", field="data.config.generate")
    if entrypoint is not None and (not isinstance(entrypoint, str) or not entrypoint.isidentifier() or keyword.iskeyword(entrypoint)):
        raise WorkflowError(f"is {entrypoint!r}; give a valid Python function name", where=f"node '{node_id}'", field="data.config.entrypoint")
    _check_params(exs, params, node_id)
    name = entrypoint or function_name(label, node_id)

    if params is None:
        for pattern in _matching_patterns(exs, spec):
            source = pattern.render(name)
            # renaming cannot break a template unless the name shadows something it uses
            if _pattern_matches(pattern, exs, _compile_trusted(source, name)):
                return GeneratedBlock(source, name, f"pattern:{pattern.name}", 0.0, 0, node_id, label)

    if client is None:
        raise GenerationRefused(node_id, label, spec, [], could_not_ask="no LLM client was given")
    messages: list[dict] = [{"role": "system", "content": _SYSTEM},
                            {"role": "user", "content": _user_prompt(name, spec, exs, params)}]
    attempts: list[Attempt] = []
    cost = 0.0
    for _ in range(MAX_ATTEMPTS):
        try:
            completion = client.generate(messages, model=model, temperature=0, max_tokens=MAX_TOKENS)
        except Exception as exc:  # the client's own failure: the model could not be asked
            raise GenerationRefused(node_id, label, spec, attempts,
                                    could_not_ask=f"{type(exc).__name__}: {exc}") from exc
        if getattr(completion, "fallback", False):
            why = getattr(completion, "reason", "") or "no model answered; a template fallback did"
            raise GenerationRefused(node_id, label, spec, attempts, could_not_ask=why)
        cost += float(getattr(completion, "cost_usd", 0.0) or 0.0)
        code = extract_code(completion.text)
        reasons = check_code(code, entrypoint=entrypoint)
        if not reasons:
            # unsafe code never runs: reproduction only after the checks pass
            found = entrypoint or _public_function(code) or name
            reasons = reproduces(code, found, exs, params=params)
            if not reasons:
                return GeneratedBlock(code, found, "model", cost, len(attempts) + 1, node_id, label)
        attempts.append(Attempt(code, reasons))
        messages += [
            {"role": "assistant", "content": completion.text},
            {"role": "user", "content": "That code was refused:\n" + "\n".join(f"- {r}" for r in reasons)
             + "\nFix it and reply with the corrected code only, in one ```python block."},
        ]
    raise GenerationRefused(node_id, label, spec, attempts)


# -- workflows ----------------------------------------------------------------------------


def _raw_node(doc: Mapping[str, Any], node_id: str) -> dict:
    for raw in doc.get("nodes") or []:
        if isinstance(raw, dict) and str(raw.get("id")) == node_id:
            return raw
    raise KeyError(node_id)  # parse_workflow produced this id from this document


def resolve_generated_blocks(
    workflow: Workflow, client: ClientLike | None, *, model: str | None = None
) -> tuple[Workflow, list[dict[str, Any]]]:
    """Give every generated block its code and return the re-parsed workflow.

    For each Python block with ``config.generate`` and no ``sourceCode``: generate the
    code (:func:`generate_block`), write it into a copy of ``workflow.raw`` as the node's
    ``data.sourceCode`` (``config.generate`` stays, as documentation) and parse the copy
    again. Returns the new workflow and one :meth:`GeneratedBlock.info` dict per block.
    The input workflow is not changed; without generated blocks it is returned as is.
    """
    from ..loader import parse_workflow  # the loader is the one place that validates

    todo = [n for n in workflow.nodes if n.kind == "python" and n.source is None and n.config.get("generate")]
    if not todo:
        return workflow, []
    doc = copy.deepcopy(dict(workflow.raw))
    infos: list[dict[str, Any]] = []
    for node in todo:
        spec = node.config.get("generate")
        if not isinstance(spec, str):
            raise WorkflowError(f"is a JSON {type(spec).__name__}; give a plain-language description (text)",
                                where=f"node '{node.id}'", field="data.config.generate")
        upstream = workflow.upstream(node.id)
        params = None if len(upstream) == 1 else [e.target_handle or e.source for e in upstream]
        wanted = node.config.get("entrypoint")
        block = generate_block(node.id, node.label, spec, node.config.get("examples"), client,
                               model=model, entrypoint=wanted if isinstance(wanted, str) else None, params=params)
        raw = _raw_node(doc, node.id)
        target = raw["data"] if isinstance(raw.get("data"), dict) else raw  # the loader reads both
        target["sourceCode"] = block.source
        infos.append(block.info())
    base_dir = workflow.path.parent if workflow.path else Path.cwd()
    return parse_workflow(doc, base_dir=base_dir, path=workflow.path), infos
