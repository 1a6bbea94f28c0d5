"""ruff over an artifact's Python code and notebooks.

The rule set is explicit (pyflakes, pycodestyle errors and warnings, bugbear, pyupgrade;
line length left out) and ruff runs ``--isolated``, so an artifact's own configuration or
a ruff upgrade's new defaults cannot change what "lint-clean" means. FastAPI's dependency
markers (``Depends``, ``Security``, ...) are declared immutable calls, as ruff's
documentation advises for FastAPI, so its idiomatic defaults are not B008 findings.
The target version is the artifact's ``requires-python`` (3.10 when it declares none).

Decision: code pytest-mulm generated must be lint-clean (findings fail the item); a
block's own ``sourceCode``, copied verbatim, is the workflow author's code, and its
findings are reported as warnings naming the block and the line inside its source. The
lines pytest-mulm adds to a block module (the header, the explicit imports) are
generated code.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import run_json_tool, tool_command
from .locate import block_regions, relative

if TYPE_CHECKING:
    from pytest_mulm.workflow import Workflow

__all__ = ["LintFinding", "LintReport", "RULES", "run_ruff"]

RULES = ("E", "F", "W", "B", "UP")
IGNORE = ("E501",)
IMMUTABLE_CALLS = ("fastapi.Depends", "fastapi.Security", "fastapi.Query", "fastapi.Header", "fastapi.Body",
                   "fastapi.Path", "fastapi.Cookie", "fastapi.File", "fastapi.Form")
DEFAULT_TARGET = "py310"
TIMEOUT = 300


@dataclass
class LintFinding:
    file: str
    line: int
    column: int
    rule: str
    message: str
    node: str | None = None
    where: str = ""  # "node 'x' (X), line 3 of its sourceCode" or "src/pkg/cli.py, line 12"
    cell: int | None = None  # notebook cell (1-based over all cells, as ruff counts)
    block_code: bool = False  # in a block's own source: a warning, not a failure

    def line_text(self) -> str:
        place = self.where if self.file in self.where else f"{self.where} [{self.file}:{self.line}]"
        return f"{self.rule} at {place}, column {self.column}: {self.message}"


@dataclass
class LintReport:
    findings: list[LintFinding] = field(default_factory=list)
    target: str = DEFAULT_TARGET

    @property
    def failing(self) -> list[LintFinding]:
        return [f for f in self.findings if not f.block_code]

    @property
    def warnings(self) -> list[LintFinding]:
        return [f for f in self.findings if f.block_code]

    def summary(self) -> dict[str, Any]:
        return {"check": "lint", "tool": "ruff", "rules": list(RULES), "ignored": list(IGNORE), "target": self.target,
                "findings": [asdict(f) for f in self.failing], "block_warnings": [asdict(f) for f in self.warnings]}


def target_version(root: Path) -> str:
    """``py3N`` from the lowest ``requires-python = ">=3.N"`` of the artifact's pyproject files."""
    found = []
    for path in root.rglob("pyproject.toml"):
        match = re.search(r'requires-python\s*=\s*["\']\s*>=\s*3\.(\d+)', path.read_text(encoding="utf-8", errors="replace"))
        if match:
            found.append(int(match.group(1)))
    return f"py3{min(found)}" if found else DEFAULT_TARGET


def run_ruff(root: Path, workflow: Workflow | None = None) -> LintReport:
    """Lint every ``.py`` and ``.ipynb`` file under ``root``."""
    ruff = tool_command("ruff", "ruff is not installed: pip install 'pytest-mulm[security]'")
    report = LintReport(target=target_version(root))
    immutable = ", ".join(f"'{c}'" for c in IMMUTABLE_CALLS)
    cmd = [*ruff, "check", "--output-format", "json", "--no-cache", "--isolated",
           "--select", ",".join(RULES), "--ignore", ",".join(IGNORE), "--target-version", report.target,
           "--config", f"lint.flake8-bugbear.extend-immutable-calls = [{immutable}]", str(root)]
    items = run_json_tool("ruff", cmd, TIMEOUT)
    regions = block_regions(root, workflow) if workflow is not None else {}
    for item in items:
        loc = item.get("location") or {}
        finding = LintFinding(
            file=relative(item.get("filename", ""), root), line=int(loc.get("row") or 0),
            column=int(loc.get("column") or 0), rule=str(item.get("code") or "syntax-error"),
            message=" ".join(str(item.get("message", "")).split()),
        )
        region = regions.get(finding.file)
        if item.get("cell") is not None:
            finding.cell = int(item["cell"])
            finding.where = f"{finding.file}, cell {item['cell']}, line {finding.line}"
        elif region is not None:
            finding.node = region.node_id
            finding.where = region.where(finding.line)
            finding.block_code = region.source_line(finding.line) is not None
        else:
            finding.where = f"{finding.file}, line {finding.line}"
        report.findings.append(finding)
    report.findings.sort(key=lambda f: (f.block_code, f.file, f.cell or 0, f.line, f.column, f.rule))
    return report
