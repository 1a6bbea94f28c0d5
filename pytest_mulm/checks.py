"""Checks more than one format's suite performs, written once."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .exporting import ExportResult
from .venv import CommandResult, Venv

__all__ = ["PEAK_MB", "error_line", "library_package", "run_artifact_tests"]

# Peak resident memory of the measuring process itself, as Python source for `python -c`.
PEAK_MB = (
    "def _peak_mb():\n"
    "    # VmHWM starts afresh at exec; ru_maxrss would carry over the parent's peak\n"
    "    try:\n"
    "        for line in open('/proc/self/status'):\n"
    "            if line.startswith('VmHWM:'):\n"
    "                return int(line.split()[1]) / 1024\n"
    "    except OSError:\n"
    "        pass\n"
    "    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == 'darwin' else 1024)\n"
)



def run_artifact_tests(venv: Venv, export: ExportResult, run_dir: Path) -> tuple[CommandResult, list[str]]:
    """Run the artifact's own ``tests/`` inside ``venv`` against the installed package.

    From a copy without ``src/`` so the installed package is what gets imported and the
    cached export stays byte-for-byte as its manifest records. Returns the command
    result and pytest's short summary lines (``FAILED ...``, ``ERROR ...``).
    """
    work = Path(tempfile.mkdtemp(prefix="artifact-tests-", dir=run_dir))
    shutil.copytree(export.project_dir, work, ignore=shutil.ignore_patterns("src"), dirs_exist_ok=True)
    # the artifact's own tests run as its user would run them: no model, no replay server
    out = Venv(venv.path).run(
        [str(venv.python), "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", str(work / "tests")],
        cwd=work, timeout=900,
    )
    summary = [line for line in out.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return out, summary


def library_package(project_dir: Path) -> str:
    """Import name of the generated workflow library under ``<project>/src`` (it has pipeline.py)."""
    found = [p.name for p in (project_dir / "src").iterdir() if (p / "pipeline.py").is_file()]
    assert len(found) == 1, f"expected one workflow library under {project_dir / 'src'}, found {found}"
    return found[0]


def error_line(stderr: str) -> str:
    """The ``error: ...`` line a generated CLI prints, else the last line of stderr."""
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    return lines[-1] if lines else (stderr.strip().splitlines() or ["(no output)"])[-1]
