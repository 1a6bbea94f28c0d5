"""Online dependency audits: pip-audit (``--strict``) and, when asked for, safety.

pip-audit's PyPI service looks each pin up at ``https://pypi.org/pypi/<name>/<version>/json``
and, where that answers 404 (as behind some mirrors and proxies), skips the package and
still prints "No known vulnerabilities found"; only ``--strict`` turns the skip into an
error. So the audit first probes that very URL for one of the pins (3 s timeout): in
``auto`` mode an unreachable service skips the item with the reason; in ``on`` mode
pip-audit runs anyway and the packages it could not check fail the item. Any package
pip-audit reports with a ``skip_reason`` fails the item too: nothing passes unchecked.

safety 3.x crashes offline before reading a local database, so it only runs when
configured (``--mulm-safety=on``) and then fails, with its output, when it cannot run.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import tool_command

__all__ = ["OnlineAudit", "probe_pypi", "run_pip_audit", "run_safety"]

PROBE_TIMEOUT = 3.0
TIMEOUT = 600


@dataclass
class OnlineAudit:
    """What an online auditor said: vulnerable pins, pins it could not check, its errors."""

    tool: str
    vulnerable: list[str] = field(default_factory=list)  # one readable line per package
    unchecked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the tool itself failed
    checked: int = 0

    @property
    def ok(self) -> bool:
        return not (self.vulnerable or self.unchecked or self.errors)

    def summary(self) -> dict[str, Any]:
        return {"check": self.tool, "checked": self.checked, "findings": self.vulnerable,
                "unchecked": self.unchecked, "errors": self.errors}


def _first_pin(requirements: Sequence[str]) -> tuple[str, str] | None:
    from .advisories import _exact_pin

    for text in requirements:
        pin = _exact_pin(text)
        if isinstance(pin, tuple):
            return pin
    return None


def probe_pypi(requirements: Sequence[str], *, base: str = "https://pypi.org/pypi",
               timeout: float = PROBE_TIMEOUT) -> str | None:
    """None when PyPI's per-version JSON API answers with vulnerability data for one of the
    pins, else the reason it does not (pip-audit could not check anything then)."""
    import urllib.error
    import urllib.request

    pin = _first_pin(requirements)
    if pin is None:
        return "no requirement is pinned to one version (name==version), so there is nothing pip-audit can look up"
    url = f"{base.rstrip('/')}/{pin[0]}/{pin[1]}/json"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": "application/json"}),  # noqa: S310
                                    timeout=timeout) as response:  # nosec B310 - fixed https URL of PyPI
            data = json.load(response)
    except urllib.error.HTTPError as exc:
        return f"PyPI's JSON API answered {url} with HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"PyPI's JSON API is not reachable ({url}: {reason})"
    if not isinstance(data, dict) or "vulnerabilities" not in data:
        return f"PyPI's JSON API answered {url} without vulnerability data"
    return None


def _requirements_file(requirements: Sequence[str], folder: str) -> Path:
    path = Path(folder) / "requirements.txt"
    path.write_text("".join(f"{r}\n" for r in requirements), encoding="utf-8")
    return path


def run_pip_audit(requirements: Sequence[str], *, command: Sequence[str] | None = None) -> OnlineAudit:
    """pip-audit --strict over ``requirements`` (no resolution, no pip: the pins as given)."""
    if command is None:
        command = tool_command("pip_audit", "pip-audit is not installed: pip install 'pytest-mulm[security]'")
    audit = OnlineAudit("pip-audit")
    with tempfile.TemporaryDirectory(prefix="mulm-pip-audit-") as tmp:
        req = _requirements_file(requirements, tmp)
        cmd = [*command, "-r", str(req), "--strict", "--progress-spinner", "off", "-f", "json",
               "--disable-pip", "--no-deps"]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            audit.errors.append(f"pip-audit did not finish within {TIMEOUT} s")
            return audit
    data = _json_object(out.stdout)
    if data is None:
        # --strict: a package it could not look up ends the run with an error and no report
        problems = [line.split(":", 2)[-1].strip() for line in out.stderr.splitlines() if "ERROR" in line]
        audit.errors.append(f"pip-audit failed (exit {out.returncode}): " + ("; ".join(problems) or _tail(out)))
        return audit
    for dep in data.get("dependencies", []):
        name, version = dep.get("name", "?"), dep.get("version", "?")
        if dep.get("skip_reason"):
            audit.unchecked.append(f"{name}: could not be checked: {dep['skip_reason']}")
            continue
        audit.checked += 1
        vulns = dep.get("vulns") or []
        if vulns:
            parts = []
            for v in vulns:
                aliases = f" ({', '.join(v.get('aliases') or [])})" if v.get("aliases") else ""
                fixes = ", ".join(v.get("fix_versions") or []) or "no fixed version known"
                parts.append(f"{v.get('id')}{aliases} fixed in {fixes}")
            audit.vulnerable.append(f"{name}=={version}: {'; '.join(parts)}")
    if out.returncode and not (audit.vulnerable or audit.unchecked):
        audit.errors.append(f"pip-audit exited {out.returncode}: {_tail(out)}")
    return audit


def run_safety(requirements: Sequence[str], *, command: Sequence[str] | None = None) -> OnlineAudit:
    """``safety check`` over ``requirements``; any failure to produce a report is an error."""
    if command is None:
        command = tool_command("safety", "safety is not installed (pip install safety), but --mulm-safety=on asks for it")
    audit = OnlineAudit("safety")
    with tempfile.TemporaryDirectory(prefix="mulm-safety-") as tmp:
        req = _requirements_file(requirements, tmp)
        try:
            out = subprocess.run([*command, "check", "-r", str(req), "--output", "json"], capture_output=True,
                                 text=True, timeout=TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            audit.errors.append(f"safety did not finish within {TIMEOUT} s")
            return audit
    data = _json_object(out.stdout)
    if data is None or not isinstance(data.get("vulnerabilities"), list):
        audit.errors.append(f"safety could not audit (exit {out.returncode}): {_tail(out)}")
        return audit
    scanned = data.get("scanned_packages") or {}
    audit.checked = len(scanned) if isinstance(scanned, dict) else 0
    by_package: dict[str, list[str]] = {}
    for v in data["vulnerabilities"]:
        key = f"{v.get('package_name')}=={v.get('analyzed_version')}"
        cve = f" ({v['CVE']})" if v.get("CVE") else ""
        by_package.setdefault(key, []).append(f"{v.get('vulnerability_id')}{cve}")
    audit.vulnerable = [f"{k}: {'; '.join(ids)}" for k, ids in sorted(by_package.items())]
    if audit.checked < len(requirements) and not audit.vulnerable:
        audit.unchecked.append(f"safety scanned {audit.checked} of {len(requirements)} requirements")
    return audit


def _json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in a tool's stdout (some print banners before it)."""
    start = text.find("{")
    if start < 0:
        return None
    try:
        data = json.loads(text[start:])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _tail(out: subprocess.CompletedProcess[str], n: int = 8) -> str:
    lines = (out.stderr.strip() or out.stdout.strip() or "no output").splitlines()
    return " | ".join(line.strip() for line in lines[-n:])
