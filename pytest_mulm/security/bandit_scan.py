"""bandit over an artifact's Python code (generated code and every block's code).

Scanned: every ``.py`` file of the export; the code cells of its notebooks; and the source
of any Python block that the export does not carry as a block module (so block code is
always scanned, whatever the format does with it). Each finding names the block and the
line inside its ``sourceCode`` when it sits in a copied block, else the file and line; and
the rule, severity, confidence and bandit's text.

A finding fails when its severity and its confidence are both MEDIUM or higher, unless the
security baseline accepts it (with a reason). ``# nosec`` is honoured only in code
pytest-mulm generated (its templates are reviewed and say why); in a block it is not: a
workflow author accepts a finding through the baseline, where the reason is required.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mulm.errors import MulmError

from . import run_json_tool, tool_command
from .baseline import Baseline
from .locate import BlockRegion, block_regions, notebook_code, relative

if TYPE_CHECKING:
    from pytest_mulm.workflow import Workflow

__all__ = ["BanditFinding", "BanditReport", "run_bandit"]

LEVELS = {"UNDEFINED": 0, "LOW": 1, "MEDIUM": 2, "HIGH": 3}
FAIL_AT = "MEDIUM"
TIMEOUT = 600


@dataclass
class BanditFinding:
    rule: str  # B602
    name: str  # subprocess_popen_with_shell_equals_true
    severity: str
    confidence: str
    text: str
    file: str  # path inside the artifact, or "<sourceCode of node 'x'>"
    line: int  # line in that file
    node: str | None = None  # the block's node id, when the finding is in a block's code
    where: str = ""  # "node 'clean' (Clean Text), line 4 of its sourceCode" or "src/x/app.py, line 12"
    accepted: str | None = None  # the baseline's (or nosec comment's) reason

    @property
    def serious(self) -> bool:
        return LEVELS.get(self.severity, 0) >= LEVELS[FAIL_AT] and LEVELS.get(self.confidence, 0) >= LEVELS[FAIL_AT]

    @property
    def fails(self) -> bool:
        return self.serious and self.accepted is None

    def line_text(self) -> str:
        place = self.where if self.file in self.where else f"{self.where} [{self.file}:{self.line}]"
        return f"{self.rule} {self.name} ({self.severity} severity, {self.confidence} confidence) at {place}: {self.text}"


@dataclass
class BanditReport:
    findings: list[BanditFinding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # files bandit could not scan
    files: int = 0
    unused_baseline: list[str] = field(default_factory=list)

    @property
    def failing(self) -> list[BanditFinding]:
        return [f for f in self.findings if f.fails]

    @property
    def accepted(self) -> list[BanditFinding]:
        return [f for f in self.findings if f.serious and f.accepted is not None]

    def summary(self) -> dict[str, Any]:
        """The machine-readable record for the report."""
        below: dict[str, int] = {}
        for f in self.findings:
            if not f.serious:
                below[f.rule] = below.get(f.rule, 0) + 1
        return {
            "check": "bandit", "threshold": f"severity and confidence >= {FAIL_AT}", "files": self.files,
            "findings": [asdict(f) for f in self.failing], "accepted": [asdict(f) for f in self.accepted],
            "below_threshold": below, "errors": self.errors, "unused_baseline": self.unused_baseline,
        }


def run_bandit(root: Path, workflow: Workflow | None = None, baseline: Baseline | None = None) -> BanditReport:
    """Scan the artifact at ``root``; ``workflow`` maps findings to blocks."""
    baseline = baseline or Baseline()
    regions = block_regions(root, workflow) if workflow is not None else {}
    with tempfile.TemporaryDirectory(prefix="mulm-bandit-") as tmp:
        extra = _extra_sources(root, workflow, regions, Path(tmp))
        targets = [str(root)] + ([tmp] if extra else [])
        # bandit adopts any ".bandit" file it finds under its targets (skips, excludes): an
        # artifact must not configure its own audit, so name an empty one explicitly
        ini = Path(tmp) / "isolated.ini"
        ini.write_text("[bandit]\n", encoding="utf-8")
        data = _bandit_json(targets, ini)
    report = BanditReport(files=len(data.get("metrics", {})) - 1 if "metrics" in data else 0)
    for item in data.get("results", []):
        report.findings.append(_finding(item, root, regions, extra, baseline))
    for err in data.get("errors", []):
        name = str(err.get("filename", "?"))
        label = extra[name][0] if name in extra else relative(name, root)
        report.errors.append(f"{label}: {' '.join(str(err.get('reason', 'could not be scanned')).split())}")
    report.findings.sort(key=lambda f: (not f.fails, f.file, f.line, f.rule))
    report.unused_baseline = baseline.unused("bandit")
    return report


def _extra_sources(root: Path, workflow: Workflow | None, regions: dict[str, BlockRegion],
                   tmp: Path) -> dict[str, tuple[str, Any]]:
    """Write what bandit cannot find as ``.py`` files in ``tmp``; return
    ``{tmp file: (label, node or notebook line map)}``."""
    extra: dict[str, tuple[str, Any]] = {}
    for i, nb in enumerate(sorted(root.rglob("*.ipynb"))):
        text, cells = notebook_code(nb)
        target = tmp / f"notebook_{i}.py"
        target.write_text(text, encoding="utf-8")
        extra[str(target)] = (relative(nb, root), cells)
    if workflow is not None:
        copied = {r.node_id for r in regions.values() if r.first}
        for i, node in enumerate(n for n in workflow.nodes if n.source and n.id not in copied):
            target = tmp / f"block_{i}.py"
            target.write_text(node.source or "", encoding="utf-8")
            extra[str(target)] = (f"<sourceCode of {node.title}>", node)
    return extra


def _bandit_json(targets: list[str], ini: Path) -> dict[str, Any]:
    cmd = [*tool_command("bandit", "bandit is not installed: pip install 'pytest-mulm[security]'"),
           "-f", "json", "-q", "--ignore-nosec", "--ini", str(ini), "-r", *targets]
    data = run_json_tool("bandit", cmd, TIMEOUT)
    if not isinstance(data, dict):
        raise MulmError("bandit's JSON report is not an object")
    return data


def _finding(item: dict[str, Any], root: Path, regions: dict[str, BlockRegion],
             extra: dict[str, tuple[str, Any]], baseline: Baseline) -> BanditFinding:
    filename = str(item.get("filename", ""))
    line = int(item.get("line_number") or 0)
    finding = BanditFinding(
        rule=str(item.get("test_id", "?")), name=str(item.get("test_name", "")),
        severity=str(item.get("issue_severity", "UNDEFINED")).upper(),
        confidence=str(item.get("issue_confidence", "UNDEFINED")).upper(),
        text=" ".join(str(item.get("issue_text", "")).split()), file=relative(filename, root), line=line,
    )
    generated = True
    if filename in extra:
        label, where = extra[filename]
        finding.file = label
        if isinstance(where, list):  # a notebook: (cell, line) per line of the scanned text
            cell, cell_line = where[line - 1] if 0 < line <= len(where) else (0, line)
            finding.where = f"{label}, cell {cell}, line {cell_line}"
        else:  # a block's source scanned on its own: lines are the source's lines
            finding.node, generated = where.id, False
            finding.where = f"{where.title}, line {line} of its sourceCode"
    elif finding.file in regions:
        region = regions[finding.file]
        finding.node = region.node_id
        finding.where = region.where(line)
        generated = region.source_line(line) is None
    else:
        finding.where = f"{finding.file}, line {line}"
    if finding.serious:
        entry = baseline.accept("bandit", finding.rule, node=finding.node, file=finding.file)
        if entry is not None:
            finding.accepted = entry.reason
        elif generated and filename not in extra:
            finding.accepted = _nosec(Path(filename), item.get("line_range") or [line])
    return finding


def _nosec(path: Path, lines: list[int]) -> str | None:
    """The ``# nosec`` comment on the flagged lines of a generated file, as the reason."""
    try:
        text = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for n in lines:
        if 0 < n <= len(text) and "# nosec" in text[n - 1]:
            return "generated code: " + text[n - 1][text[n - 1].index("# nosec") + 2:].strip()
    return None
