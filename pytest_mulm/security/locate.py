"""Where a finding in an artifact file comes from: a workflow block's own code, or code
pytest-mulm generated.

The generated library copies each Python block into ``<pkg>/blocks/b_<name>.py``: a header
comment ``# Block node '<id>' (<label>) ...``, optional import lines, then the block's
source verbatim. A finding on a line of that verbatim copy is reported against the block
("node 'clean' (Clean Text), line 3 of its sourceCode"); anything else is generated code.
Notebooks keep their code in cells; :func:`notebook_code` turns them into a scannable
Python text with a map back to (cell, line).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_mulm.workflow import Node, Workflow

__all__ = ["BlockRegion", "block_regions", "notebook_code", "relative"]


@dataclass(frozen=True)
class BlockRegion:
    """The lines of a file that hold one block's source, verbatim."""

    node_id: str
    title: str  # "node 'clean' (Clean Text)"
    first: int  # file line of the source's first (stripped) line, 1-based; 0 = not found
    last: int
    leading: int  # blank lines the exporter stripped from the top of the source

    def source_line(self, file_line: int) -> int | None:
        """The line within the block's ``sourceCode`` (1-based), or None outside it."""
        if not self.first or not self.first <= file_line <= self.last:
            return None
        return file_line - self.first + 1 + self.leading

    def where(self, file_line: int) -> str:
        line = self.source_line(file_line)
        if line is None:
            return f"{self.title}, generated line {file_line} of its block module"
        return f"{self.title}, line {line} of its sourceCode"


def relative(path: Path | str, root: Path) -> str:
    """``path`` relative to ``root`` in POSIX form (as given when outside it)."""
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _region(node: Node, text: str) -> BlockRegion:
    source = node.source or ""
    body = source.strip("\n")
    leading = len(source) - len(source.lstrip("\n"))
    index = text.find(body) if body else -1
    if index < 0:
        return BlockRegion(node.id, node.title, 0, 0, leading)
    first = text.count("\n", 0, index) + 1
    return BlockRegion(node.id, node.title, first, first + body.count("\n"), leading)


def block_regions(root: Path, workflow: Workflow) -> dict[str, BlockRegion]:
    """Block modules under ``root`` (relative POSIX path -> region), matched by their header."""
    from pytest_mulm.naming import one_line

    headers = {f"# Block {one_line(n.title)} ": n for n in workflow.nodes if n.source}
    found: dict[str, BlockRegion] = {}
    for path in sorted(root.rglob("b_*.py")):
        if path.parent.name != "blocks":
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        first_line = text.split("\n", 1)[0]
        # the longest matching header wins: node 'a' must not claim node 'a' (A)'s module
        match = max((h for h in headers if first_line.startswith(h)), key=len, default=None)
        if match is not None:
            found[relative(path, root)] = _region(headers[match], text)
    return found


def notebook_code(path: Path) -> tuple[str, list[tuple[int, int]]]:
    """The code cells of a notebook as one Python text, and for each of its lines the
    (cell number as ruff counts it: 1-based over all cells, line in that cell).

    IPython magics and shell escapes become ``pass  # ...`` so the text parses; line
    numbers stay aligned.
    """
    doc: Any = json.loads(path.read_text(encoding="utf-8"))
    lines: list[str] = []
    where: list[tuple[int, int]] = []
    for number, cell in enumerate(doc.get("cells", []), start=1):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else str(source)
        for i, line in enumerate(text.split("\n"), start=1):
            stripped = line.lstrip()
            if stripped.startswith(("%", "!")):  # keeps indentation, so a magic may be a block's only line
                line = f"{line[: len(line) - len(stripped)]}pass  # {stripped}"
            lines.append(line)
            where.append((number, i))
    return "\n".join(lines) + "\n", where
