"""Fresh virtual environments for verification: uv when present, venv + pip otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CommandResult", "Venv", "find_uv"]


def find_uv() -> str | None:
    """The uv binary: on PATH, or the one the ``uv`` wheel ships beside this interpreter."""
    found = shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found]

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return None


@dataclass(frozen=True)
class CommandResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = 25) -> str:
        text = (self.stdout + "\n" + self.stderr).strip().splitlines()
        return "\n".join(text[-lines:])


def run(args: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
        input: str | None = None, timeout: float = 900) -> CommandResult:
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            list(args), cwd=cwd, env=env, input=input, capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        return CommandResult(list(args), -1, _text(exc.stdout), _text(exc.stderr) + f"\ntimed out after {timeout}s", time.perf_counter() - started)
    return CommandResult(list(args), proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - started)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for commands run inside a verification venv.

    Drops variables that would make the venv see this interpreter's packages or an API key
    (a verified artifact must not depend on either).
    """
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTEST_ADDOPTS")
           and not k.startswith("OPENAI_")
           and not k.startswith("PYTEST_XDIST") and not k.startswith("COV_")}
    env.update(extra)
    return env


@dataclass(frozen=True)
class Venv:
    path: Path
    # added to every command's environment: e.g. OPENAI_BASE_URL of the cassette replay server
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def bin(self) -> Path:
        return self.path / ("Scripts" if os.name == "nt" else "bin")

    @property
    def python(self) -> Path:
        return self.bin / ("python.exe" if os.name == "nt" else "python")

    def script(self, name: str) -> Path:
        return self.bin / (f"{name}.exe" if os.name == "nt" else name)

    @classmethod
    def create(cls, path: Path, *, python: str | None = None) -> tuple[Venv, CommandResult]:
        python = python or sys.executable
        uv = find_uv()
        if uv:
            result = run([uv, "venv", "--quiet", "--python", python, str(path)], env=clean_env())
        else:
            result = run([python, "-m", "venv", str(path)], env=clean_env())
        return cls(path), result

    def install(self, *requirements: str, timeout: float = 1800) -> CommandResult:
        uv = find_uv()
        if uv:
            args = [uv, "pip", "install", "--quiet", "--python", str(self.python), *requirements]
        else:
            args = [str(self.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements]
        return run(args, env=clean_env(), timeout=timeout)

    def run(self, args: Sequence[str], **kwargs) -> CommandResult:
        kwargs.setdefault("env", clean_env(PATH=f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}", **self.env))
        return run(list(args), **kwargs)

    def python_run(self, code: str, **kwargs) -> CommandResult:
        return self.run([str(self.python), "-c", code], **kwargs)


def build_wheel(project: Path, out_dir: Path) -> tuple[Path | None, CommandResult]:
    """Build a wheel of ``project`` (copied first, so the export folder stays pristine)."""
    work = out_dir / "src"
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(project, work)
    uv = find_uv()
    if uv:
        result = run([uv, "build", "--wheel", "--quiet", "--out-dir", str(out_dir), str(work)], env=clean_env())
    else:
        result = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out_dir), str(work)], env=clean_env())
    wheels = sorted(out_dir.glob("*.whl"))
    return (wheels[0] if result.ok and wheels else None), result
