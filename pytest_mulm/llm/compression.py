"""Lossless prompt compression (design.md §7).

"Lossless" means meaning-preserving: no word, number or code semantics change. Exactly
these rules are applied, and nothing else:

Whole text
    ``\\r\\n`` becomes ``\\n``; empty lines at the start and the end are dropped. A message
    that is a JSON object or array as a whole is minified (see JSON below) and returned.
    Indentation shared by every non-blank line is removed, as ``textwrap.dedent`` does:
    it comes from the source code the prompt was written in, not from the prompt.

Prose (everything outside fenced code blocks)
    - trailing whitespace is stripped from every line;
    - inside a line, runs of two or more spaces become one space. Indentation is kept
      (Markdown lists and indented code depend on it), tabs are kept (they can be field
      separators), text inside inline code spans (`` `a  b` ``) is kept, and lines
      indented by 4 or more columns (possibly indented code) are left as they are apart
      from trailing whitespace;
    - two or more consecutive blank lines become one blank line;
    - a line identical to the line just before it is dropped, unless it is indented or a
      Markdown table row (``|``), where repetition can carry meaning (code, data rows).

Fenced code blocks (`````` ``` `````` or ``~~~``)
    - ``json`` blocks, and unlabelled blocks whose content is a JSON object or array, are
      minified;
    - ``python``/``py`` blocks that parse are compacted with ``tokenize``: comments are
      removed (a ``#`` inside a string is not a comment), lines that held only a comment
      are dropped, runs of spaces between tokens on a line become one space, trailing
      whitespace outside strings is stripped and runs of blank lines outside strings
      become one. Docstrings and all other strings stay. The result is kept only if its
      ``ast.dump`` equals the original's; otherwise the block is left as it was;
    - every other block (and Python that does not parse) is kept byte for byte, apart
      from the whole-text rules.

JSON minification removes only the whitespace between tokens, after checking that the
text parses: unlike ``json.dumps`` it keeps numbers as written (``1.10``, ``1e5``, big
decimals), string escapes and duplicate keys, so the minified text parses to the same
value and reads the same. Key order is kept.

Compressing twice gives the same text as compressing once.
"""

from __future__ import annotations

import ast
import io
import json
import re
import tokenize
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["compress", "compress_messages", "minify_json", "savings"]

_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}(?=[^`]*$)|~{3,})(?P<info>.*)$")
_SPACE_RUN = re.compile(r" {2,}")
_INLINE_CODE = re.compile(r"(`+).*?(?<!`)\1(?!`)")
_JSON_TOKEN = re.compile(r'("(?:[^"\\]|\\.)*")|[ \t\n\r]+')
_PYTHON_INFO = {"python", "py", "python3", "py3"}
_JSON_INFO = {"json"}
_CODE_INDENT = 4  # CommonMark: 4 columns of indentation start an indented code block


@dataclass
class _Fence:
    opening: str
    indent: str
    marker: str
    info: str
    body: list[str] = field(default_factory=list)
    closing: str | None = None


# -- JSON ------------------------------------------------------------------------------------


def minify_json(text: str) -> str | None:
    """``text`` without whitespace between JSON tokens, or None if it is not JSON."""
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return None
    # valid JSON has whitespace outside strings only between tokens, so dropping every
    # run that is not inside a string literal changes nothing but the layout
    return _JSON_TOKEN.sub(lambda m: m.group(1) or "", text)


def _json_container(text: str) -> str | None:
    stripped = text.strip()
    if not stripped.startswith(("{", "[")):
        return None
    return minify_json(stripped)


# -- prose -----------------------------------------------------------------------------------


def _indent_width(line: str) -> int:
    width = 0
    for ch in line:
        if ch == " ":
            width += 1
        elif ch == "\t":
            width += 4 - width % 4
        else:
            break
    return width


def _collapse_spaces(line: str) -> str:
    indent = line[: len(line) - len(line.lstrip(" \t"))]
    body = line[len(indent):]
    parts: list[str] = []
    last = 0
    for match in _INLINE_CODE.finditer(body):
        parts.append(_SPACE_RUN.sub(" ", body[last:match.start()]))
        parts.append(match.group(0))
        last = match.end()
    parts.append(_SPACE_RUN.sub(" ", body[last:]))
    return indent + "".join(parts)


def _dedent(lines: list[str]) -> list[str]:
    margins = [line[: len(line) - len(line.lstrip(" \t"))] for line in lines if line.strip()]
    if not margins:
        return lines
    margin = margins[0]
    for other in margins[1:]:
        while not other.startswith(margin):
            margin = margin[:-1]
    if not margin:
        return lines
    # like textwrap.dedent, whitespace-only lines lose their whitespace
    return [line[len(margin):] if line.strip() else "" for line in lines]


def _prose(lines: list[str]) -> list[str]:
    out: list[str] = []
    for raw in lines:
        line = raw.rstrip()
        indented = line[:1] in (" ", "\t")
        if _indent_width(line) < _CODE_INDENT:
            line = _collapse_spaces(line)
        if not line:
            if out and not out[-1]:
                continue
        elif out and line == out[-1] and not indented and not line.startswith("|"):
            continue
        out.append(line)
    return out


# -- python ----------------------------------------------------------------------------------

_STRUCTURAL = {tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT,
               tokenize.ENDMARKER, tokenize.COMMENT}
_FSTRING_START = getattr(tokenize, "FSTRING_START", None)  # Python 3.12+
_FSTRING_END = getattr(tokenize, "FSTRING_END", None)


def _ast_dump(code: str) -> str | None:
    try:
        # top-level await is allowed: notebook-style snippets use it
        tree = compile(code, "<context>", "exec", dont_inherit=True,
                       flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return ast.dump(tree)


def _string_rows(tokens: list[tokenize.TokenInfo]) -> set[int]:
    """Rows whose line end lies inside a string literal (their whitespace is content)."""
    rows: set[int] = set()
    fstring_starts: list[int] = []
    for tok in tokens:
        if tok.type == tokenize.STRING and tok.start[0] < tok.end[0]:
            rows.update(range(tok.start[0], tok.end[0]))
        elif _FSTRING_START is not None and tok.type == _FSTRING_START:
            fstring_starts.append(tok.start[0])
        elif _FSTRING_END is not None and tok.type == _FSTRING_END and fstring_starts:
            rows.update(range(fstring_starts.pop(), tok.end[0]))
    return rows


def _compact_python(code: str) -> str:
    """Python without comments and surplus blanks, or ``code`` itself if unsure."""
    before = _ast_dump(code)
    if before is None:
        return code
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError):
        return code
    lines = code.split("\n")
    in_string = _string_rows(tokens)
    edits: dict[int, list[tuple[int, int, str]]] = {}  # row -> (start col, end col, new text)
    commented: set[int] = set()
    prev: tokenize.TokenInfo | None = None
    for tok in tokens:
        row, col = tok.start
        if tok.type == tokenize.COMMENT and row <= len(lines):
            line = lines[row - 1]
            start = len(line[:col].rstrip(" \t"))
            edits.setdefault(row, []).append((start, len(line), ""))
            commented.add(row)
        elif (prev is not None and prev.type not in _STRUCTURAL and tok.type not in _STRUCTURAL
              and prev.end[0] == row and row <= len(lines)):
            gap = lines[row - 1][prev.end[1]:col]
            if len(gap) > 1 and not gap.strip(" \t"):
                edits.setdefault(row, []).append((prev.end[1], col, " "))
        prev = tok
    out: list[str] = []
    for row, line in enumerate(lines, start=1):
        for start, end, new in sorted(edits.get(row, ()), reverse=True):
            line = line[:start] + new + line[end:]
        if row not in in_string:
            line = line.rstrip(" \t\f")
            if not line and (row in commented or (out and not out[-1] and row - 1 not in in_string)):
                continue
        out.append(line)
    while out and not out[-1]:
        out.pop()  # parseable code cannot end inside a string
    compacted = "\n".join(out)
    return compacted if _ast_dump(compacted) == before else code


# -- fences ----------------------------------------------------------------------------------


def _split(lines: list[str]) -> list[list[str] | _Fence]:
    segments: list[list[str] | _Fence] = []
    prose: list[str] = []
    fence: _Fence | None = None
    for line in lines:
        if fence is not None:
            stripped = line.strip()
            if (stripped and set(stripped) == {fence.marker[0]}
                    and len(stripped) >= len(fence.marker)):
                fence.closing = line
                fence = None
            else:
                fence.body.append(line)
            continue
        match = _FENCE_OPEN.match(line)
        if match is None:
            prose.append(line)
            continue
        segments.append(prose)
        prose = []
        fence = _Fence(line, match["indent"], match["fence"], match["info"].strip())
        segments.append(fence)
    segments.append(prose)
    return segments


def _fence(block: _Fence) -> list[str]:
    opening = block.opening.rstrip()
    closing = [block.closing.rstrip()] if block.closing is not None else []
    language = block.info.split()[0].lower() if block.info else ""
    indent = block.indent
    if any(line.strip() and not line.startswith(indent) for line in block.body):
        return [opening, *block.body, *closing]
    # CommonMark: the fence's own indentation is removed from its content lines
    body = "\n".join(line[len(indent):] if line.strip() else "" for line in block.body)
    new: str | None = None
    if language in _JSON_INFO:
        new = minify_json(body)
    elif language == "":
        new = _json_container(body)
    elif language in _PYTHON_INFO:
        new = _compact_python(body)
    if new is None:
        return [opening, *block.body, *closing]
    return [opening, *(indent + line if line else "" for line in new.split("\n")), *closing]


# -- API -------------------------------------------------------------------------------------


def compress(text: str) -> str:
    """``text`` with the meaning-preserving rules of the module docstring applied."""
    text = text.replace("\r\n", "\n")
    whole = _json_container(text)
    if whole is not None:
        return whole
    out: list[str] = []
    for segment in _split(_dedent(text.split("\n"))):
        out.extend(_fence(segment) if isinstance(segment, _Fence) else _prose(segment))
    while out and not out[-1]:
        out.pop()
    start = 0
    while start < len(out) and not out[start]:
        start += 1
    return "\n".join(out[start:])


def compress_messages(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of chat ``messages`` with only their text content compressed."""
    result: list[dict[str, Any]] = []
    for message in messages:
        copy = dict(message)
        content = copy.get("content")
        if isinstance(content, str):
            copy["content"] = compress(content)
        elif isinstance(content, list):
            copy["content"] = [
                {**part, "text": compress(part["text"])}
                if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)
                else part
                for part in content
            ]
        result.append(copy)
    return result


def savings(before_messages: Iterable[Mapping[str, Any]], after_messages: Iterable[Mapping[str, Any]],
            model: str) -> dict[str, float | int]:
    """Prompt tokens before and after compression, counted with tiktoken.

    ``ratio`` is the fraction saved: ``saved / tokens_before`` (0.0 for an empty prompt).
    """
    from .tokens import count_chat_tokens

    before = count_chat_tokens(list(before_messages), model)
    after = count_chat_tokens(list(after_messages), model)
    saved = before - after
    return {"tokens_before": before, "tokens_after": after, "saved": saved,
            "ratio": saved / before if before else 0.0}
