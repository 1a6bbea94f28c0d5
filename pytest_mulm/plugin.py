"""The pytest side of pytest-mulm: options, suite collection, fixtures, report.

Without ``--mulm-workflow`` (or the ``mulm_workflow`` ini key) this plugin adds options
and fixtures and changes nothing else in a test run. With it, the selected formats'
suites are collected as ordinary items (``test_install[python-package]``).

Option precedence, highest first: command line, ini key, built-in default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .fixtures import (  # noqa: F401  (fixtures are registered by being in this module)
    _mulm_exports,
    _mulm_llm_env,
    _mulm_services,
    mulm_docs,
    mulm_export,
    mulm_install,
    mulm_llm,
    mulm_reference,
    mulm_run_dir,
    mulm_service,
    mulm_settings,
    mulm_venv,
    mulm_wheel,
    mulm_workflow,
)

if TYPE_CHECKING:
    from .workflow import Workflow

SETTINGS_KEY = pytest.StashKey["MulmSettings"]()
GENERATED_KEY = pytest.StashKey[list]()

OPTIONS = {
    # name: (help, ini type, default)
    "workflow": ("Path of the µLM workflow JSON to export and verify", "string", None),
    "format": ("Export formats to verify: a comma list or 'all'. Default: 'all'", "string", "all"),
    "out": ("Folder for exports and mulm-report.json. Default: 'mulm-out'", "string", "mulm-out"),
    "templates": ("Folder of template overrides, searched before the built-in templates", "string", None),
    "ai": ("LLM mode: off, replay (cassettes only; misses use the template fallback), record (ask the "
           "model on a miss and record it; needs OPENAI_API_KEY) or live. Default: replay", "string", "replay"),
    "budget": ("Hard LLM budget in US dollars for the whole run, all workers together. Default: 25", "string", "25"),
    "model": ("Model for the LLM layer's own calls (docs, generated blocks). Default: the cheapest active "
              "model on the dated price table", "string", None),
    "cassettes": ("Folder of the LLM cassettes (the cache). Default: 'cassettes'", "string", "cassettes"),
    "similarity": ("Serve near-identical prompts from the cache: on or off. Default: off", "string", "off"),
    "advisories": ("Folder or zip of OSV advisory records (YAML or JSON) for the offline dependency audit", "string", None),
    "advisories_max_age": ("Fail the offline audit when the advisory snapshot is older than this many days. "
                           "Default: 30", "string", "30"),
    "security_baseline": ("JSON file of accepted security findings, each with a written reason", "string", None),
    "pip_audit": ("Online dependency audit with pip-audit --strict: auto (when PyPI's JSON API answers), on, off. "
                  "Default: auto", "string", "auto"),
    "safety": ("Also audit with safety: on or off. Default: off", "string", "off"),
    "regression": ("Benchmark gate: fail when a figure is this many percent worse than the saved baseline. "
                   "Default: 25", "string", "25"),
    "baseline": ("Folder of saved benchmark baselines (pytest-benchmark storage layout). Default: .benchmarks",
                 "string", ".benchmarks"),
    "save_baseline": ("Save this run's benchmark figures as the new baseline when every gate passed: on or off. "
                      "Default: off", "string", "off"),
}


@dataclass(frozen=True)
class MulmSettings:
    workflow_path: Path | None
    formats: tuple[str, ...]
    out_dir: Path
    templates_dir: Path | None
    workflow: Workflow | None = None
    ai_mode: str = "replay"
    budget_usd: float = 25.0
    model: str | None = None
    cassette_dir: Path = Path("cassettes")
    similarity: bool = False
    advisories: Path | None = None
    advisories_max_age_days: float = 30.0
    security_baseline: Path | None = None
    pip_audit: str = "auto"  # auto, on, off
    safety: bool = False
    regression_percent: float = 25.0
    baseline_dir: Path = Path(".benchmarks")
    save_baseline: bool = False

    @property
    def active(self) -> bool:
        return self.workflow is not None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mulm", "µLM workflow export and verification")
    for name, (help_text, ini_type, default) in OPTIONS.items():
        # --mulm-similarity and --mulm-save-baseline alone mean on
        extra = {"nargs": "?", "const": "on"} if name in ("similarity", "save_baseline") else {}
        group.addoption(f"--mulm-{name.replace('_', '-')}", dest=f"mulm_{name}", default=None, metavar=name.upper(),
                        help=help_text, **extra)
        parser.addini(f"mulm_{name}", help=help_text, type=ini_type, default=default)


def _option(config: pytest.Config, name: str) -> Any:
    value = config.getoption(f"mulm_{name}")
    if value is None:
        value = config.getini(f"mulm_{name}") or None
    return value if value is not None else OPTIONS[name][2]


def _resolve(config: pytest.Config) -> MulmSettings:
    base = config.invocation_params.dir
    wf_value = _option(config, "workflow")
    out = base / _option(config, "out")
    templates = _option(config, "templates")
    templates_dir = (base / templates) if templates else None
    if templates_dir is not None and not templates_dir.is_dir():
        raise pytest.UsageError(f"--mulm-templates: {templates_dir} is not a folder")
    llm = {**_llm_settings(config, base), **_gate_settings(config, base)}
    if wf_value is None:
        return MulmSettings(None, (), out, templates_dir, **llm)
    from .errors import MulmError
    from .exporting import refuse_unrunnable
    from .loader import load_workflow
    from .plugins import get_registry

    try:
        registry = get_registry()
        formats = tuple(registry.resolve_formats(_option(config, "format")))
        workflow = load_workflow(base / wf_value)
        workflow = _generate_blocks(config, workflow, llm)
        for fmt in formats:
            refuse_unrunnable(workflow, registry.exporter(fmt))
    except MulmError as exc:
        from .cli import error_lines

        raise pytest.UsageError("\n".join(error_lines(exc))) from None
    return MulmSettings(base / wf_value, formats, out, templates_dir, workflow, **llm)


def run_dir_of(config: pytest.Config) -> Path:
    """The folder all processes of this run share (the ``mulm_run_dir`` fixture's)."""
    base = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    return (base.parent if base.name.startswith("popen-gw") else base) / "mulm-run"


def _generate_blocks(config: pytest.Config, workflow: Workflow, llm: dict[str, Any]) -> Workflow:
    """Write the code of generated blocks (config.generate) before anything is exported.

    Patterns first (free); the model only when none reproduces the examples. Under
    xdist the controller runs first, so workers find its answers in the cassettes.
    """
    if not any(n.kind == "python" and n.source is None and n.config.get("generate") for n in workflow.nodes):
        return workflow
    import json
    import os

    from .llm.blockgen import resolve_generated_blocks
    from .llm.client import LLMClient

    run_dir = run_dir_of(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    client = LLMClient(llm["ai_mode"], cassette_dir=llm["cassette_dir"], budget_usd=llm["budget_usd"],
                       model=llm["model"], similarity=llm["similarity"], ledger_path=run_dir / "llm-ledger.jsonl")
    try:
        workflow, infos = resolve_generated_blocks(workflow, client, model=llm["model"])
    finally:
        client.close()
        usage = run_dir / "llm-usage"
        usage.mkdir(parents=True, exist_ok=True)
        (usage / f"{os.getpid()}-blocks.json").write_text(json.dumps(client.usage_stats()), encoding="utf-8")
    config.stash[GENERATED_KEY] = infos
    return workflow


def _switch(config: pytest.Config, name: str, valid: tuple[str, ...] = ("on", "off")) -> str:
    value = str(_option(config, name)).strip().lower()
    value = {"true": "on", "1": "on", "yes": "on", "false": "off", "0": "off", "no": "off"}.get(value, value)
    if value not in valid:
        raise pytest.UsageError(f"--mulm-{name.replace('_', '-')}: {value!r}; valid: {', '.join(valid)}")
    return value


def _number(config: pytest.Config, name: str, low: float = 0.0) -> float:
    raw = str(_option(config, name)).strip().rstrip("%")
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= low or value == float("inf"):
        raise pytest.UsageError(f"--mulm-{name.replace('_', '-')}: {raw!r}; give a number, {low:g} or more")
    return value


def _gate_settings(config: pytest.Config, base: Path) -> dict[str, Any]:
    advisories = _option(config, "advisories")
    baseline = _option(config, "security_baseline")
    if advisories and not (base / advisories).exists():
        raise pytest.UsageError(f"--mulm-advisories: {base / advisories} does not exist; give a folder or zip of OSV records")
    if baseline and not (base / baseline).is_file():
        raise pytest.UsageError(f"--mulm-security-baseline: {base / baseline} is not a file")
    return {
        "advisories": (base / advisories) if advisories else None,
        "advisories_max_age_days": _number(config, "advisories_max_age"),
        "security_baseline": (base / baseline) if baseline else None,
        "pip_audit": _switch(config, "pip_audit", ("auto", "on", "off")),
        "safety": _switch(config, "safety") == "on",
        "regression_percent": _number(config, "regression"),
        "baseline_dir": base / _option(config, "baseline"),
        "save_baseline": _switch(config, "save_baseline") == "on",
    }


def _llm_settings(config: pytest.Config, base: Path) -> dict[str, Any]:
    from .llm.client import MODES

    mode = str(_option(config, "ai")).strip().lower()
    if mode not in MODES:
        raise pytest.UsageError(f"--mulm-ai: {mode!r} is not a mode; valid: {', '.join(MODES)}")
    raw_budget = str(_option(config, "budget")).strip().lstrip("$")
    try:
        budget = float(raw_budget)
    except ValueError:
        budget = -1.0
    if not budget >= 0 or budget == float("inf"):
        raise pytest.UsageError(f"--mulm-budget: {raw_budget!r}; give a number of US dollars, 0 or more (e.g. 25 or 0.5)")
    similarity = str(_option(config, "similarity")).strip().lower()
    if similarity not in ("on", "off", "true", "false", "1", "0", "yes", "no"):
        raise pytest.UsageError(f"--mulm-similarity: {similarity!r}; valid: on, off")
    return {"ai_mode": mode, "budget_usd": budget, "model": _option(config, "model"),
            # on the command line relative to where pytest runs; from ini or by default
            # relative to the rootdir, where committed cassettes live
            "cassette_dir": (base / config.getoption("mulm_cassettes")) if config.getoption("mulm_cassettes")
            else config.rootpath / _option(config, "cassettes"),
            "similarity": similarity in ("on", "true", "1", "yes")}


@pytest.hookimpl(trylast=True)  # after pytest's own tmp_path setup: generated blocks use the run folder
def pytest_configure(config: pytest.Config) -> None:
    settings = _resolve(config)
    config.stash[SETTINGS_KEY] = settings
    if settings.active and not hasattr(config, "workerinput"):
        config.pluginmanager.register(MulmReporter(config, settings), "mulm-reporter")
    config.addinivalue_line("markers", "mulm_suite(format): a pytest-mulm verification item for FORMAT")


def settings_of(config: pytest.Config) -> MulmSettings:
    return config.stash[SETTINGS_KEY]


# -- collection ------------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: the suite items must exist before -k, -m and --lf filter the list
    settings = settings_of(config)
    if not settings.active:
        return
    import importlib

    from .plugins import get_registry

    registry = get_registry()
    # a suite registered for "*" runs once, parametrized over every selected format
    for module_name in [m for fmt in settings.formats for m in registry.suites.get(fmt, [])] + registry.suites.get("*", []):
        path = Path(importlib.import_module(module_name).__file__ or "")
        module = pytest.Module.from_parent(session, path=path, nodeid=f"mulm/{module_name.rsplit('.', 1)[-1]}")
        items.extend(_collect(session, module))


def _collect(session: pytest.Session, collector: pytest.Collector) -> list[pytest.Item]:
    found: list[pytest.Item] = []
    for node in collector.collect():
        if isinstance(node, pytest.Item):
            _tag(node)
            found.append(node)
        elif isinstance(node, pytest.Collector):
            found.extend(_collect(session, node))
    return found


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "mulm_format" not in metafunc.fixturenames:
        return
    settings = settings_of(metafunc.config)
    suite_format = getattr(metafunc.module, "MULM_FORMAT", None)
    formats = [f for f in settings.formats if suite_format in (None, f)]
    metafunc.parametrize("mulm_format", formats, scope="session")


def pytest_itemcollected(item: pytest.Item) -> None:
    _tag(item)


def _tag(item: pytest.Item) -> None:
    # the format travels with the item's reports, also from xdist workers to the controller
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "mulm_format" in callspec.params:
        if ("mulm_format", callspec.params["mulm_format"]) not in item.user_properties:
            item.user_properties.append(("mulm_format", callspec.params["mulm_format"]))


# -- results and report ------------------------------------------------------------------------


class MulmReporter:
    """Collects suite outcomes on the controller (xdist forwards worker reports here)."""

    def __init__(self, config: pytest.Config, settings: MulmSettings):
        self.config = config
        self.settings = settings
        self.results: list[dict[str, Any]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = {k: v for k, v in report.user_properties if isinstance(k, str)}
        if "mulm_format" not in props:
            return
        if report.when == "call" or (report.when == "setup" and not report.passed) or (report.when == "teardown" and report.failed):
            from .report import result_entry

            self.results.append(result_entry(report, props))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        from .report import build_report, llm_usage, write_report
        from .session_end import decide, partial_run

        # workers wrote their usage into the run folder when their session fixtures ended
        factory = getattr(self.config, "_tmp_path_factory", None)
        run_dir = factory.getbasetemp() / "mulm-run" if factory is not None else None
        self.llm = llm_usage(run_dir, self.settings) if run_dir is not None else None
        if self.llm is not None:
            self.llm["generated_blocks"] = self.config.stash.get(GENERATED_KEY, [])
        report = build_report(self.settings, self.results, int(exitstatus))
        self.verdict = decide(self.settings, self.results, report["formats"], self.llm, run_dir,
                              partial_run(self.config))
        if self.verdict.gate_failed and exitstatus == pytest.ExitCode.OK:
            # a failed gate fails the run even when every item passed (the exit code is the gate)
            session.exitstatus = exitstatus = pytest.ExitCode.TESTS_FAILED
        report = write_report(self.settings, report, self.results, int(exitstatus), llm=self.llm, verdict=self.verdict)
        if report["exit_status"] != exitstatus:  # a secret value had to be redacted from the reports
            self.verdict.gates["security"] = report["gates"]["security"]
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from .report import summary_lines

        terminalreporter.section("mulm verification")
        for line in summary_lines(self.results, self.settings, getattr(self, "llm", None), getattr(self, "verdict", None)):
            terminalreporter.write_line(line)
