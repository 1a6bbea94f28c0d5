"""Security checks of every exported artifact (issue 7): bandit, secrets, dependency audit, lint.

This package is a ``mulm`` plugin: it registers :mod:`pytest_mulm.suites.security` for
every format (``"*"``), so the suite is collected once and parametrized over the selected
formats. The scanners live in the modules beside this one and import their tools lazily.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pytest_mulm.errors import MulmError
from pytest_mulm.hookspecs import hookimpl

__all__ = ["ToolMissing", "register_suites", "run_json_tool", "tool_command"]


class ToolMissing(MulmError):
    """A scanner is not installed: its item skips with this message (never passes)."""


def tool_command(module: str, missing: str) -> list[str]:
    """``python -m <module>`` in this interpreter, or :class:`ToolMissing` with ``missing``."""
    if importlib.util.find_spec(module) is None:
        raise ToolMissing(missing)
    return [sys.executable, "-m", module]


def run_json_tool(name: str, cmd: Sequence[str], timeout: float) -> Any:
    """Run a scanner that prints a JSON report; its parsed report, or a MulmError naming
    the tool and quoting the end of its output when it gave none."""
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise MulmError(f"{name} did not finish within {timeout:g} s") from None
    try:
        return json.loads(out.stdout)
    except ValueError:
        tail = " | ".join((out.stderr or out.stdout).strip().splitlines()[-8:])
        raise MulmError(f"{name} failed (exit {out.returncode}) without a report: {tail}") from None


@hookimpl
def register_suites(register: Callable[[str, str], None]) -> None:
    register("*", "pytest_mulm.suites.security")
