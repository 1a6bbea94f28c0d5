"""Public fixtures of pytest-mulm. Their docstrings are what ``pytest --fixtures`` shows.

Expensive work (exports, wheels, venvs) happens once per test run even under
pytest-xdist: the first worker does it under a file lock in a folder all workers share,
the others read the recorded result (pytest-xdist docs, "Making session-scoped fixtures
execute only once").
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .exporting import ExportResult
    from .plugin import MulmSettings
    from .venv import Venv
    from .workflow import Workflow


def once(run_dir: Path, name: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Compute a JSON-able result once per run across processes; later callers read it."""
    from filelock import FileLock

    run_dir.mkdir(parents=True, exist_ok=True)
    result_file = run_dir / f"{name}.json"
    with FileLock(str(run_dir / f"{name}.lock")):
        if result_file.is_file():
            return json.loads(result_file.read_text(encoding="utf-8"))
        result = compute()
        tmp = result_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(result), encoding="utf-8")
        tmp.replace(result_file)
        return result


@pytest.fixture(scope="session")
def mulm_settings(pytestconfig: pytest.Config) -> MulmSettings:
    """The resolved pytest-mulm settings (workflow path, formats, output folder)."""
    from .plugin import settings_of

    return settings_of(pytestconfig)


@pytest.fixture(scope="session")
def mulm_workflow(mulm_settings: MulmSettings) -> Workflow:
    """The validated workflow given with ``--mulm-workflow`` (immutable).

    Skips the test when no workflow was given.
    """
    if mulm_settings.workflow is None:
        pytest.skip("no workflow given: run pytest with --mulm-workflow=WF.json")
    return mulm_settings.workflow


@pytest.fixture(scope="session")
def mulm_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder shared by every xdist worker of this run (and only this run)."""
    base = tmp_path_factory.getbasetemp()
    # Under xdist each worker's basetemp is <run>/popen-gwN; the parent is per run.
    root = base.parent if base.name.startswith("popen-gw") else base
    path = root / "mulm-run"
    path.mkdir(parents=True, exist_ok=True)
    # Copies of artifacts (with their generated tests) live here; a --basetemp inside the
    # project must not make a later pytest run collect them.
    ignore = path / "conftest.py"
    if not ignore.exists():
        ignore.write_text("collect_ignore_glob = ['*']\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def mulm_llm(mulm_settings: MulmSettings, mulm_run_dir: Path) -> Iterator[Any]:
    """The run's :class:`~pytest_mulm.llm.client.LLMClient` (``--mulm-ai``, ``--mulm-budget``,
    ``--mulm-model``, ``--mulm-cassettes``, ``--mulm-similarity``).

    Every xdist worker has its own client; the budget ledger is one file shared by all
    of them, so the budget holds for the whole run. Usage is added to the report.
    """
    from .llm.client import LLMClient

    client = LLMClient(
        mulm_settings.ai_mode, cassette_dir=mulm_settings.cassette_dir, budget_usd=mulm_settings.budget_usd,
        model=mulm_settings.model, similarity=mulm_settings.similarity, ledger_path=mulm_run_dir / "llm-ledger.jsonl",
    )
    try:
        yield client
    finally:
        client.close()
        usage_dir = mulm_run_dir / "llm-usage"
        usage_dir.mkdir(parents=True, exist_ok=True)
        (usage_dir / f"{os.getpid()}.json").write_text(json.dumps(client.usage_stats()), encoding="utf-8")


@pytest.fixture(scope="session")
def mulm_docs(request: pytest.FixtureRequest, mulm_settings: MulmSettings, mulm_workflow: Workflow,
              mulm_run_dir: Path) -> Any:
    """The prose of this run's artifacts (:class:`~pytest_mulm.llm.docs.Docs`): written once
    per run by one batched call through ``mulm_llm`` (free from a cassette in replay
    mode), else the template texts; ``.origin`` says which."""
    from .llm.docs import Docs, template_docs, write_docs

    if mulm_settings.ai_mode == "off":
        return template_docs(mulm_workflow, reason="the LLM layer is off (--mulm-ai=off)")
    client = request.getfixturevalue("mulm_llm")
    return Docs.from_dict(once(mulm_run_dir, "docs", lambda: write_docs(mulm_workflow, client).as_dict()))


@pytest.fixture(scope="session")
def _mulm_llm_env(request: pytest.FixtureRequest, mulm_workflow: Workflow) -> Iterator[dict[str, str]]:
    """``OPENAI_BASE_URL``/``OPENAI_API_KEY`` of a cassette replay server for artifacts under
    test, when the workflow has llm blocks (one server per worker); else nothing."""
    if not any(n.kind == "llm" for n in mulm_workflow.nodes):
        yield {}
        return
    from .llm.replay_server import ReplayServer

    with ReplayServer(request.getfixturevalue("mulm_llm")) as server:
        yield server.env


@dataclass(frozen=True)
class ReferenceOutcome:
    """The reference runtime's answer for one example: ``output`` or ``error``."""

    input: Any
    output: Any = None
    error: str | None = None
    missing_module: str | None = None  # the verifying environment lacks a block dependency

    @property
    def ok(self) -> bool:
        return self.error is None


@pytest.fixture(scope="session")
def mulm_reference(request: pytest.FixtureRequest, mulm_workflow: Workflow) -> list[ReferenceOutcome]:
    """The reference runtime's outcome for every example input, in order.

    The ground truth every format is compared with. llm blocks answer through
    ``mulm_llm`` (cassettes, budget, template fallback).
    """
    from .ops import to_jsonable
    from .runtime import BlockFailure, Runtime

    llm = request.getfixturevalue("mulm_llm") if any(n.kind == "llm" for n in mulm_workflow.nodes) else None
    runtime = Runtime(mulm_workflow, llm=llm)
    outcomes = []
    for value in mulm_workflow.examples:
        try:
            outcomes.append(ReferenceOutcome(to_jsonable(value), runtime.run(value)))
        except BlockFailure as exc:
            missing = exc.exc.name if isinstance(exc.exc, ModuleNotFoundError) else None
            outcomes.append(ReferenceOutcome(to_jsonable(value), error=str(exc), missing_module=missing))
    return outcomes


@pytest.fixture(scope="session")
def _mulm_exports() -> dict[str, ExportResult]:
    return {}


@pytest.fixture
def mulm_export(request: pytest.FixtureRequest, mulm_settings: MulmSettings, mulm_workflow: Workflow,
                mulm_format: str, _mulm_exports: dict[str, ExportResult], mulm_docs: Any) -> ExportResult:
    """The export of the workflow to the current ``mulm_format``.

    Built once per run into the content-addressed cache under ``--mulm-out`` (reused when
    nothing changed). Returns an :class:`~pytest_mulm.exporting.ExportResult` with
    ``path``, ``key``, ``from_cache`` and the ``manifest``. Any test that uses it runs once
    per selected format.
    """
    from .errors import MissingDependencyError
    from .exporting import export_workflow

    if mulm_format not in _mulm_exports:
        try:
            _mulm_exports[mulm_format] = export_workflow(
                mulm_workflow, mulm_format, out_dir=mulm_settings.out_dir, templates_dir=mulm_settings.templates_dir,
                docs=mulm_docs,
            )
        except MissingDependencyError as exc:
            pytest.skip(str(exc))
        request.node.user_properties.append(("mulm_export", _mulm_exports[mulm_format].as_dict()))
    return _mulm_exports[mulm_format]


@pytest.fixture
def mulm_wheel(mulm_export: ExportResult, mulm_run_dir: Path) -> dict[str, Any]:
    """Build the export's wheel once per run: ``{"wheel": path or None, "log": str}``."""
    from .venv import build_wheel

    def build() -> dict[str, Any]:
        wheel, result = build_wheel(mulm_export.project_dir, mulm_run_dir / f"wheel-{mulm_export.key}")
        return {"wheel": str(wheel) if wheel else None, "log": result.tail(), "seconds": result.seconds}

    return once(mulm_run_dir, f"wheel-{mulm_export.key}", build)


@pytest.fixture
def mulm_install(request: pytest.FixtureRequest, mulm_export: ExportResult, mulm_run_dir: Path) -> dict[str, Any]:
    """Create a fresh venv and install the artifact once per run: its wheel (with the
    ``test`` extra) when it is a Python project, else its ``requirements.txt``.

    Returns ``{"ok": bool, "venv": path, "log": str, "seconds": float}``.
    """
    from .venv import Venv

    project = mulm_export.project_dir
    if not (project / "pyproject.toml").is_file():
        def install_requirements() -> dict[str, Any]:
            path = mulm_run_dir / f"venv-{mulm_export.key}"
            venv, created = Venv.create(path)
            if not created.ok:
                return {"ok": False, "venv": str(path), "log": created.tail(), "seconds": created.seconds}
            result = venv.install("-r", str(project / "requirements.txt"))
            return {"ok": result.ok, "venv": str(path), "log": result.tail(), "seconds": created.seconds + result.seconds}

        return once(mulm_run_dir, f"install-{mulm_export.key}", install_requirements)
    mulm_wheel = request.getfixturevalue("mulm_wheel")

    def install() -> dict[str, Any]:
        path = mulm_run_dir / f"venv-{mulm_export.key}"
        if not mulm_wheel["wheel"]:
            return {"ok": False, "venv": str(path), "log": "no wheel was built:\n" + mulm_wheel["log"], "seconds": 0.0}
        venv, created = Venv.create(path)
        if not created.ok:
            return {"ok": False, "venv": str(path), "log": created.tail(), "seconds": created.seconds}
        dist = Path(mulm_wheel["wheel"]).name.split("-")[0]
        result = venv.install(f"{dist}[test] @ {Path(mulm_wheel['wheel']).as_uri()}")
        return {"ok": result.ok, "venv": str(path), "log": result.tail(), "seconds": created.seconds + result.seconds}

    return once(mulm_run_dir, f"install-{mulm_export.key}", install)


@pytest.fixture
def mulm_venv(mulm_install: dict[str, Any], mulm_format: str, _mulm_llm_env: dict[str, str]) -> Venv:
    """A fresh virtualenv with the current format's artifact installed (shared per run).

    Commands run in it see the cassette replay server as their OpenAI API when the
    workflow has llm blocks. Fails the test (pointing at ``test_install``) when the
    install did not succeed.
    """
    from .venv import Venv

    if not mulm_install["ok"]:
        pytest.fail(f"the artifact did not install, see test_install[{mulm_format}]:\n{mulm_install['log']}", pytrace=False)
    return Venv(Path(mulm_install["venv"]), env=_mulm_llm_env)


def artifact_scripts(export: ExportResult) -> dict[str, str]:
    """The console scripts an exported project declares (``[project.scripts]``)."""
    import tomllib

    meta = tomllib.loads((export.project_dir / "pyproject.toml").read_text(encoding="utf-8"))
    return dict(meta.get("project", {}).get("scripts", {}))


@pytest.fixture(scope="session")
def _mulm_services() -> Iterator[dict[str, Any]]:
    from .service import kill_all

    running: dict[str, Any] = {}
    try:
        yield running
    finally:
        kill_all(list(running.values()))


@pytest.fixture
def mulm_service(mulm_venv: Venv, mulm_export: ExportResult, mulm_run_dir: Path,
                 _mulm_services: dict[str, Any]) -> Any:
    """A server process of the current format's artifact, on a free loopback port.

    Started once per worker from the artifact's ``*-service`` console script in the
    fresh venv, with freshly generated credentials (``.api_keys``, ``.jwt_secret``) and
    the rate limit raised (``MULM_RATE_LIMIT``) so checks and benchmarks are not
    throttled; the rate-limit check starts its own server with the workflow's limits.
    Returns a :class:`~pytest_mulm.service.RunningService` (``.url``, ``.log_tail()``).
    Stopped at the end of the session, also when tests fail.
    """
    from .service import start_service

    key = mulm_export.key
    if key not in _mulm_services:
        commands = [name for name in artifact_scripts(mulm_export) if name.endswith("-service")]
        if not commands:
            pytest.skip(f"the {mulm_export.format} artifact declares no '*-service' command")
        try:
            _mulm_services[key] = start_service(
                mulm_venv, commands[0], log_dir=mulm_run_dir / "logs", env={"MULM_RATE_LIMIT": "1000000/60", **mulm_venv.env},
            )
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
    return _mulm_services[key]
