"""Accepted security findings (``--mulm-security-baseline=FILE``), each with a written reason.

The file is a JSON list::

    [
      {"rule": "B602", "node": "clean", "reason": "runs a fixed command, no user input"},
      {"rule": "B310", "file": "src/*/llm.py", "reason": "URL comes from OPENAI_BASE_URL"},
      {"check": "secrets", "rule": "Hex High Entropy String", "file": "data/ids.txt",
       "reason": "public record ids, not credentials"}
    ]

``rule`` is a bandit test id or a detect-secrets type; ``node`` a workflow node id or
``file`` a path inside the artifact (``fnmatch`` pattern, POSIX separators); ``check``
(optional) limits the entry to ``bandit`` or ``secrets``. An entry without a non-empty
``reason`` is an error: accepting a risk is a decision somebody has to explain. Accepted
findings are still listed (with the reason); they do not fail the item.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mulm.errors import MulmError

__all__ = ["Baseline", "BaselineEntry", "BaselineError", "load_baseline"]

CHECKS = ("bandit", "secrets")
KEYS = {"rule", "node", "file", "reason", "check"}


class BaselineError(MulmError):
    """The baseline file is unusable: names the file, the entry and what is wrong."""


@dataclass(frozen=True)
class BaselineEntry:
    rule: str
    reason: str
    node: str | None = None
    file: str | None = None
    check: str | None = None

    def matches(self, check: str, rule: str, node: str | None, file: str | None) -> bool:
        if self.check not in (None, check) or self.rule != rule:
            return False
        if self.node is not None:
            return node == self.node
        return file is not None and self.file is not None and fnmatch.fnmatchcase(file, self.file)

    def describe(self) -> str:
        target = f"node '{self.node}'" if self.node is not None else f"file {self.file}"
        return f"{self.rule} in {target}"


@dataclass
class Baseline:
    entries: list[BaselineEntry] = field(default_factory=list)
    source: Path | None = None
    used: set[int] = field(default_factory=set)

    def accept(self, check: str, rule: str, *, node: str | None = None, file: str | None = None) -> BaselineEntry | None:
        """The entry that accepts this finding, if any (and remember it was used)."""
        for i, entry in enumerate(self.entries):
            if entry.matches(check, rule, node, file):
                self.used.add(i)
                return entry
        return None

    def unused(self, check: str) -> list[str]:
        """Entries for ``check`` that matched nothing (stale: worth deleting)."""
        return [e.describe() for i, e in enumerate(self.entries) if i not in self.used and e.check in (None, check)]


def load_baseline(path: Path | str | None) -> Baseline:
    """Read and validate a baseline file; ``None`` gives an empty baseline."""
    if path is None:
        return Baseline()
    path = Path(path)
    try:
        doc: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaselineError(f"security baseline {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise BaselineError(f"security baseline {path}: not valid JSON ({exc})") from None
    if not isinstance(doc, list):
        raise BaselineError(f"security baseline {path}: must be a JSON list of "
                            '{"rule": ..., "node" or "file": ..., "reason": ...} entries')
    entries = []
    for i, item in enumerate(doc):
        where = f"security baseline {path}, entry {i + 1}"
        if not isinstance(item, dict):
            raise BaselineError(f"{where}: must be an object with rule, node or file, and reason")
        unknown = sorted(set(item) - KEYS)
        if unknown:
            raise BaselineError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(KEYS))}")
        reason = item.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise BaselineError(f"{where}: accepting a finding needs a written 'reason'")
        rule = item.get("rule")
        if not isinstance(rule, str) or not rule.strip():
            raise BaselineError(f"{where}: needs the 'rule' it accepts (a bandit id such as B602, or a detect-secrets type)")
        node, file = item.get("node"), item.get("file")
        if (node is None) == (file is None) or not isinstance(node or file, str):
            raise BaselineError(f"{where}: give exactly one of 'node' (a node id) or 'file' (a path in the artifact)")
        check = item.get("check")
        if check is not None and check not in CHECKS:
            raise BaselineError(f"{where}: check {check!r}; valid: {', '.join(CHECKS)}")
        entries.append(BaselineEntry(rule.strip(), reason.strip(), node, file, check))
    return Baseline(entries, path)
