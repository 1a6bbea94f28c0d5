"""Secrets in an artifact: detect-secrets over every file, and the run's own secret values.

detect-secrets' command line scans only git-tracked files unless given ``--all-files``; its
Python API scans exactly the files it is handed, here every text file of the export.
Findings name the file, line and secret type, never the value. A "Hex High Entropy
String" that is a content digest pytest-mulm wrote itself (the sha256 of a file of the
artifact, the workflow's content hash, the export's cache key) is not a secret and is
counted as ignored; a real key placed in the manifest is still reported.

The leak check looks for the *values* of the secrets this run knows (``OPENAI_API_KEY``,
``MULM_API_KEYS`` (comma list), ``MULM_JWT_SECRET``, and the variables named in
``MULM_SECRET_ENV``) in the artifact, the cassettes, the service logs and the reports.
Values shorter than 8 characters are not searched: they would match by chance.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import ToolMissing
from .baseline import Baseline
from .locate import relative

__all__ = ["Leak", "SecretFinding", "SecretsReport", "find_leaks", "known_digests", "scan_secrets", "secret_needles"]

SECRET_ENV = ("OPENAI_API_KEY", "MULM_API_KEYS", "MULM_JWT_SECRET")
MIN_LENGTH = 8
HEX_TYPE = "Hex High Entropy String"


@dataclass
class SecretFinding:
    file: str
    line: int
    type: str
    accepted: str | None = None

    def line_text(self) -> str:
        return f"{self.file}, line {self.line}: {self.type}"


@dataclass
class SecretsReport:
    findings: list[SecretFinding] = field(default_factory=list)
    files: int = 0
    binary: list[str] = field(default_factory=list)  # not scanned by detect-secrets (no text)
    ignored_digests: int = 0
    unused_baseline: list[str] = field(default_factory=list)

    @property
    def failing(self) -> list[SecretFinding]:
        return [f for f in self.findings if f.accepted is None]

    def summary(self) -> dict[str, Any]:
        return {
            "check": "secrets", "tool": "detect-secrets", "files": self.files,
            "findings": [asdict(f) for f in self.failing],
            "accepted": [asdict(f) for f in self.findings if f.accepted is not None],
            "ignored_content_digests": self.ignored_digests, "binary_files": self.binary,
            "unused_baseline": self.unused_baseline,
        }


def known_digests(root: Path, extra: Iterable[str] = ()) -> set[str]:
    """sha256 of every file under ``root`` plus ``extra`` (hash, cache key): not secrets."""
    digests = {d.lower() for d in extra if d}
    for path in root.rglob("*"):
        if path.is_file():
            digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    return digests


def _is_binary(path: Path) -> bool:
    with path.open("rb") as fh:
        return b"\0" in fh.read(8192)


def scan_secrets(root: Path, *, digests: Iterable[str] = (), baseline: Baseline | None = None) -> SecretsReport:
    """detect-secrets (default plugins and filters) over every text file under ``root``."""
    try:
        from detect_secrets import SecretsCollection
        from detect_secrets.settings import default_settings
    except ImportError:
        raise ToolMissing("detect-secrets is not installed: pip install 'pytest-mulm[security]'") from None
    baseline = baseline or Baseline()
    known = {d.lower() for d in digests}
    report = SecretsReport()
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if _is_binary(path):
            report.binary.append(relative(path, root))
        else:
            files.append(relative(path, root))
    report.files = len(files)
    collection = SecretsCollection(root=str(root))
    with default_settings():
        for rel in files:
            collection.scan_file(rel)
    for filename, secret in collection:
        value = str(secret.secret_value or "")
        if secret.type == HEX_TYPE and value.lower() in known:
            report.ignored_digests += 1
            continue
        finding = SecretFinding(Path(filename).as_posix(), int(secret.line_number or 0), str(secret.type))
        entry = baseline.accept("secrets", finding.type, file=finding.file)
        if entry is not None:
            finding.accepted = entry.reason
        report.findings.append(finding)
    report.findings.sort(key=lambda f: (f.accepted is not None, f.file, f.line, f.type))
    report.unused_baseline = baseline.unused("secrets")
    return report


# -- the run's own secret values -----------------------------------------------------------------


@dataclass
class Leak:
    file: str
    line: int
    secret: str  # the variable's name, never the value
    length: int

    def line_text(self) -> str:
        return f"{self.file}, line {self.line}: the value of {self.secret} ({self.length} characters, masked)"


def secret_needles(env: Mapping[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    """``({variable name: value}, [notes])`` of the secrets to look for, from ``env``.

    ``MULM_API_KEYS`` holds several keys: each becomes ``MULM_API_KEYS[i]``. Values
    shorter than 8 characters are skipped (with a note saying so).
    """
    env = os.environ if env is None else env
    names = list(SECRET_ENV) + [n.strip() for n in env.get("MULM_SECRET_ENV", "").split(",") if n.strip()]
    needles: dict[str, str] = {}
    notes: list[str] = []
    for name in dict.fromkeys(names):
        raw = env.get(name, "")
        values = [v.strip() for v in raw.split(",")] if name == "MULM_API_KEYS" else [raw.strip()]
        for i, value in enumerate(v for v in values if v):
            label = f"{name}[{i}]" if name == "MULM_API_KEYS" else name
            if len(value) < MIN_LENGTH:
                notes.append(f"{label} is shorter than {MIN_LENGTH} characters: not searched")
            else:
                needles[label] = value
    return needles, notes


def find_leaks(places: Mapping[str, Path], needles: Mapping[str, str]) -> tuple[list[Leak], int]:
    """Every occurrence of a needle's value in ``places`` (``{label: file or folder}``, e.g.
    ``{"artifact": export_dir, "logs": run_dir / "logs"}``); returns the leaks and the number
    of files searched. Missing places are skipped (a run without logs has none to leak)."""
    encoded = {name: value.encode("utf-8") for name, value in needles.items()}
    leaks: list[Leak] = []
    searched = 0
    for label, place in places.items():
        if not place.exists():
            continue
        paths = [place] if place.is_file() else sorted(p for p in place.rglob("*") if p.is_file())
        for path in paths:
            try:
                data = path.read_bytes()
            except OSError:
                continue
            searched += 1
            shown = f"{label}: {relative(path, place) if place.is_dir() else path.name}"
            for name, value in encoded.items():
                start = data.find(value)
                while start >= 0:
                    leaks.append(Leak(shown, data.count(b"\n", 0, start) + 1, name, len(needles[name])))
                    start = data.find(value, start + 1)
    return leaks, searched
