"""Offline dependency audit: pinned requirements matched against a snapshot of OSV records.

pip-audit's PyPI service and OSV's API are not always reachable (and pip-audit reports
"No known vulnerabilities" when it silently skipped everything), so the audit that gates a
run reads a local snapshot: a folder (searched recursively) or a zip of OSV records in
YAML or JSON, such as the PyPA advisory database's ``vulns/`` folder or OSV's per-ecosystem
export for PyPI. Only the ``PyPI`` ecosystem is read.

Matching follows the OSV schema: a pinned version is affected when it is listed in
``affected[].versions`` or falls inside an ``ECOSYSTEM``/``SEMVER`` range (events
``introduced``, ``fixed``, ``last_affected``, ``limit``, evaluated in version order);
``GIT`` ranges name commits and are left to the ``versions`` list. A requirement that is
not an exact ``name==version`` pin, or a range this code cannot evaluate, is reported as
"could not be checked" (a failure), never as clean.

The snapshot's date is the newest ``modified`` among its records: the database has no
other date of its own, and a record changes whenever its advisory does.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pytest_mulm.errors import MulmError

__all__ = [
    "Advisory",
    "AdvisoryDB",
    "AdvisoryError",
    "AuditReport",
    "PackageFinding",
    "Unchecked",
    "load_advisories",
    "snapshot_date",
]

RECORD_SUFFIXES = (".yaml", ".yml", ".json")
RANGE_TYPES = ("ECOSYSTEM", "SEMVER")
# at equal versions an "introduced" is applied before the events that end a range
_EVENT_ORDER = {"introduced": 0, "fixed": 1, "last_affected": 2, "limit": 3}

_cache: dict[tuple[str, Any], AdvisoryDB] = {}


class AdvisoryError(MulmError):
    """The advisory snapshot cannot be read: names the folder, zip or record at fault."""


@dataclass(frozen=True)
class _Affected:
    """One ``affected[]`` entry of a record, for one PyPI package."""

    ranges: tuple[tuple[tuple[str, str], ...], ...]  # each range: (kind, version) events
    versions: tuple[str, ...]


@dataclass(frozen=True)
class Advisory:
    """One OSV record as far as matching needs it."""

    id: str
    aliases: tuple[str, ...]
    summary: str
    modified: str
    source: str  # the record's file (inside the zip, for a zip)
    affected: Mapping[str, tuple[_Affected, ...]]  # normalised package name -> entries


@dataclass
class PackageFinding:
    """A pinned requirement with known advisories."""

    requirement: str
    name: str
    version: str
    advisories: list[dict[str, Any]]  # {"id", "aliases", "fixed", "summary"}
    fix: str | None  # the lowest version that is affected by none of them, when known

    def line(self) -> str:
        """``idna==3.6: PYSEC-2024-60 (CVE-2024-3651) fixed in 3.7; raise idna to 3.7 or later``."""
        parts = []
        for adv in self.advisories:
            aliases = f" ({', '.join(adv['aliases'])})" if adv["aliases"] else ""
            fixed = f" fixed in {adv['fixed']}" if adv["fixed"] else " no fixed version known"
            parts.append(f"{adv['id']}{aliases}{fixed}")
        advice = (f"raise {self.name} to {self.fix} or later" if self.fix
                  else f"no release of {self.name} fixes all of them: replace or drop it")
        return f"{self.name}=={self.version}: {'; '.join(parts)}; {advice}"

    def as_dict(self) -> dict[str, Any]:
        return {"requirement": self.requirement, "name": self.name, "version": self.version,
                "advisories": self.advisories, "fix": self.fix}


@dataclass
class Unchecked:
    """A requirement the audit could not check, with the reason (this fails the audit)."""

    requirement: str
    reason: str

    def line(self) -> str:
        return f"{self.requirement}: could not be checked: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {"requirement": self.requirement, "reason": self.reason}


@dataclass
class AuditReport:
    """The outcome of auditing a list of requirements against one snapshot."""

    vulnerable: list[PackageFinding] = field(default_factory=list)
    unchecked: list[Unchecked] = field(default_factory=list)
    clean: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.vulnerable and not self.unchecked

    def as_dict(self) -> dict[str, Any]:
        return {"vulnerable": [f.as_dict() for f in self.vulnerable],
                "unchecked": [u.as_dict() for u in self.unchecked], "clean": list(self.clean)}


@dataclass
class AdvisoryDB:
    """The PyPI records of one snapshot, indexed by normalised (PEP 503) package name."""

    source: Path
    by_package: dict[str, list[Advisory]]
    records: int  # PyPI records read (withdrawn ones excluded)
    withdrawn: int
    newest_modified: datetime | None
    load_seconds: float = 0.0

    def advisories_for(self, name: str) -> list[Advisory]:
        from packaging.utils import canonicalize_name

        return self.by_package.get(canonicalize_name(name), [])

    def audit(self, requirements: Iterable[str]) -> AuditReport:
        """Match each requirement (``name==version``) against the snapshot."""
        report = AuditReport()
        for text in requirements:
            pin = _exact_pin(text)
            if isinstance(pin, Unchecked):
                report.unchecked.append(pin)
                continue
            name, version = pin
            finding, unknown = self._check(text, name, version)
            if finding is not None:
                report.vulnerable.append(finding)
            if unknown is not None:  # an advisory we could not evaluate: never report the pin clean
                report.unchecked.append(unknown)
            if finding is None and unknown is None:
                report.clean.append(text)
        return report

    def _check(self, text: str, name: str, version: str) -> tuple[PackageFinding | None, Unchecked | None]:
        from packaging.utils import canonicalize_name
        from packaging.version import Version

        key = canonicalize_name(name)
        pinned = Version(version)
        hits: list[tuple[Advisory, str | None]] = []
        unknown: list[str] = []
        for adv in self.by_package.get(key, []):
            verdict = _affects(adv.affected[key], pinned)
            if isinstance(verdict, str):
                unknown.append(f"advisory {adv.id}: {verdict}")
            elif verdict:
                hits.append((adv, _lowest_fix_above(adv.affected[key], pinned)))
        unchecked = Unchecked(text, "; ".join(unknown)) if unknown else None
        if not hits:
            return None, unchecked
        advisories = [{"id": adv.id, "aliases": list(adv.aliases), "fixed": fixed, "summary": adv.summary}
                      for adv, fixed in sorted(hits, key=lambda h: _natural(h[0].id))]
        return PackageFinding(text, name, version, advisories, self._fix(key, [a for a, _ in hits], pinned)), unchecked

    def _fix(self, key: str, hits: list[Advisory], pinned: Any) -> str | None:
        """The lowest version above the pin that none of the package's advisories affects.

        Starts from the highest of the advisories' own lowest fixes and moves up while
        another advisory (one that did not affect the pin too) covers the candidate.
        """
        from packaging.version import Version

        fixes = [_lowest_fix_above(adv.affected[key], pinned) for adv in hits]
        if not fixes or any(f is None for f in fixes):
            return None
        candidate = max(Version(f) for f in fixes if f is not None)
        for _ in range(50):  # each step moves strictly up; bounded against odd data
            blocker = next((adv for adv in self.by_package.get(key, []) if _affects(adv.affected[key], candidate) is True),
                           None)
            if blocker is None:
                return str(candidate)
            nxt = _lowest_fix_above(blocker.affected[key], candidate)
            if nxt is None:
                return None
            candidate = Version(nxt)
        return None


def snapshot_date(db: AdvisoryDB) -> datetime | None:
    """The snapshot's date: the newest ``modified`` among its records (UTC)."""
    return db.newest_modified


def load_advisories(path: Path | str) -> AdvisoryDB:
    """Read every OSV record under ``path`` (a folder, searched recursively, or a .zip).

    Cached per path within a process (invalidated when a file changes). Raises
    :class:`AdvisoryError` for a missing path, a broken zip, a record that is not valid
    YAML/JSON or not an OSV record, and a snapshot without a single PyPI record.
    """
    import time

    path = Path(path)
    if not path.exists():
        raise AdvisoryError(f"advisory snapshot {path} does not exist; give a folder or zip of OSV records")
    key = (str(path.resolve()), _signature(path))
    if key in _cache:
        return _cache[key]
    started = time.perf_counter()
    db = _build(path, _records(path))
    db.load_seconds = time.perf_counter() - started
    _cache.clear()  # one snapshot per run in practice: do not keep old ones alive
    _cache[key] = db
    return db


# -- reading ---------------------------------------------------------------------------------


def _signature(path: Path) -> Any:
    if path.is_file():
        st = path.stat()
        return (st.st_size, st.st_mtime_ns)
    stats = [p.stat() for p in path.rglob("*") if p.suffix.lower() in RECORD_SUFFIXES]
    return (len(stats), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0))


def _records(path: Path) -> Iterator[tuple[str, str, bytes]]:
    """(name for messages, suffix, raw bytes) of every record file."""
    if path.is_dir():
        for file in sorted(path.rglob("*")):
            if file.suffix.lower() in RECORD_SUFFIXES and file.is_file():
                yield str(file.relative_to(path)), file.suffix.lower(), file.read_bytes()
        return
    if not zipfile.is_zipfile(path):
        raise AdvisoryError(f"advisory snapshot {path} is neither a folder nor a zip file")
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                suffix = Path(info.filename).suffix.lower()
                if info.is_dir() or suffix not in RECORD_SUFFIXES:
                    continue
                yield info.filename, suffix, zf.read(info)
    except (zipfile.BadZipFile, OSError, RuntimeError) as exc:  # RuntimeError: encrypted member
        raise AdvisoryError(f"advisory snapshot {path}: unreadable zip ({exc})") from None


def _parse(name: str, suffix: str, raw: bytes) -> Any:
    if suffix == ".json":
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise AdvisoryError(f"advisory record {name}: not valid JSON ({exc})") from None
    import yaml

    # BaseLoader keeps every scalar a string: "1.10" must not become the float 1.1, nor a
    # date a datetime; the C variant is several times faster on a full snapshot.
    loader = getattr(yaml, "CBaseLoader", yaml.BaseLoader)
    try:
        return yaml.load(raw, Loader=loader)  # noqa: S506 - BaseLoader builds only str/list/dict
    except yaml.YAMLError as exc:
        raise AdvisoryError(f"advisory record {name}: not valid YAML ({' '.join(str(exc).split())})") from None


def _build(path: Path, records: Iterable[tuple[str, str, bytes]]) -> AdvisoryDB:
    from packaging.utils import canonicalize_name

    by_package: dict[str, list[Advisory]] = {}
    count = withdrawn = seen = 0
    newest: datetime | None = None
    for name, suffix, raw in records:
        seen += 1
        doc = _parse(name, suffix, raw)
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not isinstance(doc.get("affected", []), list):
            raise AdvisoryError(f"advisory record {name}: not an OSV record (needs an 'id' and an 'affected' list)")
        affected: dict[str, list[_Affected]] = {}
        for entry in doc.get("affected") or []:
            pkg = entry.get("package") if isinstance(entry, dict) else None
            if not isinstance(pkg, dict) or str(pkg.get("ecosystem", "")).split(":")[0] != "PyPI" or not pkg.get("name"):
                continue
            affected.setdefault(canonicalize_name(str(pkg["name"])), []).append(_affected(name, entry))
        if not affected:
            continue
        if doc.get("withdrawn"):  # retracted advisories must not fail anybody's build
            withdrawn += 1
            continue
        count += 1
        modified = _timestamp(doc.get("modified"))
        if modified is not None and (newest is None or modified > newest):
            newest = modified
        aliases = tuple(str(a) for a in doc.get("aliases") or [] if isinstance(a, str | int))
        summary = " ".join(str(doc.get("summary") or doc.get("details") or "").split())[:200]
        adv = Advisory(str(doc["id"]), aliases, summary, str(doc.get("modified", "")), name,
                       {k: tuple(v) for k, v in affected.items()})
        for key in affected:
            by_package.setdefault(key, []).append(adv)
    if not count and not withdrawn:
        found = f"{seen} record file(s), none for the PyPI ecosystem" if seen else "no .yaml, .yml or .json record files"
        raise AdvisoryError(f"advisory snapshot {path}: {found}")
    return AdvisoryDB(path, by_package, count, withdrawn, newest)


def _affected(name: str, entry: Mapping[str, Any]) -> _Affected:
    ranges = []
    for rng in entry.get("ranges") or []:
        if not isinstance(rng, dict) or rng.get("type") not in RANGE_TYPES:
            continue
        events = []
        for event in rng.get("events") or []:
            if not isinstance(event, dict):
                raise AdvisoryError(f"advisory record {name}: a range event is not a mapping")
            events.extend((str(k), str(v)) for k, v in event.items() if k in _EVENT_ORDER)
        ranges.append(tuple(events))
    versions = tuple(str(v) for v in entry.get("versions") or [])
    return _Affected(tuple(ranges), versions)


def _timestamp(value: Any) -> datetime | None:
    """An RFC 3339 timestamp; fractions beyond microseconds are cut (OSV allows nanoseconds)."""
    if not isinstance(value, str) or not value:
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip().replace("z", "Z"))
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


# -- matching ----------------------------------------------------------------------------------


def _exact_pin(text: str) -> tuple[str, str] | Unchecked:
    """``name==version`` of a requirement string, else why it cannot be checked."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import InvalidVersion, Version

    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        return Unchecked(text, f"not a valid requirement ({str(exc).splitlines()[0]})")
    if req.url:
        return Unchecked(text, f"a direct reference ({req.url}) has no version to look up; pin name==version")
    specs = list(req.specifier)
    if len(specs) != 1 or specs[0].operator not in ("==", "===") or specs[0].version.endswith(".*"):
        shown = str(req.specifier) or "no version"
        return Unchecked(text, f"not pinned to one version ({shown}); the audit needs name==version")
    try:
        Version(specs[0].version)
    except InvalidVersion:
        return Unchecked(text, f"{specs[0].version!r} is not a PEP 440 version")
    return req.name, specs[0].version


def _natural(text: str) -> list[Any]:
    """Sort key that puts PYSEC-2021-7 before PYSEC-2021-66."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _version(text: str) -> Any:
    from packaging.version import InvalidVersion, Version

    if text == "0":  # OSV: "introduced: 0" means from the first release
        return None
    try:
        return Version(text)
    except InvalidVersion:
        return False


def _affects(entries: Iterable[_Affected], pinned: Any) -> bool | str:
    """True/False, or the reason the answer is unknown (a range event that does not parse)."""
    unknown = ""
    for entry in entries:
        if any(_same(v, pinned) for v in entry.versions):
            return True
        for events in entry.ranges:
            verdict = _in_range(events, pinned)
            if verdict is True:
                return True
            if isinstance(verdict, str):
                unknown = verdict
    return unknown or False


def _same(listed: str, pinned: Any) -> bool:
    parsed = _version(listed)
    return parsed == pinned if parsed not in (None, False) else listed == str(pinned)


def _in_range(events: tuple[tuple[str, str], ...], pinned: Any) -> bool | str:
    parsed = []
    bad = ""
    for kind, text in events:
        version = _version(text)
        if version is False:
            bad = bad or f"range event {kind}={text!r} is not a PEP 440 version"
            continue
        parsed.append((kind, version))
    if bad:
        # still decidable when the pin comes before every (readable) start of the range
        starts = [v for k, v in parsed if k == "introduced"]
        introduced_all_read = len(starts) == sum(1 for k, _ in events if k == "introduced")
        if introduced_all_read and starts and all(v is not None and pinned < v for v in starts):
            return False
        return bad
    # evaluate in version order ("0" first), as the OSV schema prescribes
    parsed.sort(key=lambda kv: ((0,) if kv[1] is None else (1, kv[1]), _EVENT_ORDER[kv[0]]))
    affected = False
    for kind, version in parsed:
        if kind == "introduced" and (version is None or pinned >= version):
            affected = True
        elif kind in ("fixed", "limit") and version is not None and pinned >= version:
            affected = False
        elif kind == "last_affected" and version is not None and pinned > version:
            affected = False
    return affected


def _lowest_fix_above(entries: Iterable[_Affected], pinned: Any) -> str | None:
    fixes = []
    for entry in entries:
        for events in entry.ranges:
            for kind, text in events:
                version = _version(text)
                if kind == "fixed" and version not in (None, False) and version > pinned:
                    fixes.append(version)
    return str(min(fixes)) if fixes else None
