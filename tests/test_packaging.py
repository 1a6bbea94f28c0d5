"""Packaging: the distribution exposes one import name, ``pytest_mulm``, and both a built
wheel and an editable install find every exporter and template (design.md §2 "Layout").

The repository is copied (git-tracked plus untracked, non-ignored files) into a temporary
folder first, so building never writes ``build/`` or ``*.egg-info`` into the work tree and
the editable install can be edited without touching the real templates. Every probe runs in
a fresh venv, in a subprocess whose working directory is an empty temporary folder, so the
repository root is never on ``sys.path`` and cannot hide a packaging mistake.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "iris-mlp.json"
FORMAT = "python-package"
DIST_INFO_SUFFIX = ".dist-info"

BUILD_TIMEOUT = 300
VENV_TIMEOUT = 120
INSTALL_TIMEOUT = 600  # first run may download the dependencies (numpy, pytest, ...)
RUN_TIMEOUT = 180


# -- helpers ------------------------------------------------------------------------------------


def _clean_env(venv: Path | None = None) -> dict[str, str]:
    """The caller's environment without anything that would put other code on sys.path."""
    env = {
        k: v for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH", "VIRTUAL_ENV",
                     "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
                     "MULM_LOAD_PLUGINS", "UV_PYTHON", "CONDA_PREFIX"}
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env["UV_NO_PROGRESS"] = "1"
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    return env


def run(cmd: list[str | Path], *, cwd: Path, timeout: float = RUN_TIMEOUT, venv: Path | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; on a non-zero exit or a timeout fail the test with the full output."""
    argv = [str(c) for c in cmd]
    shown = " ".join(argv)
    try:
        proc = subprocess.run(argv, check=False, cwd=cwd, env=_clean_env(venv), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"timed out after {timeout}s: {shown}\n--- stdout\n{_text(exc.stdout)}\n"
                    f"--- stderr\n{_text(exc.stderr)}", pytrace=False)
    if check and proc.returncode != 0:
        pytest.fail(f"exit {proc.returncode}: {shown}\n(cwd {cwd})\n--- stdout\n{proc.stdout}\n"
                    f"--- stderr\n{proc.stderr}", pytrace=False)
    return proc


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


def uv_bin() -> str:
    uv = pytest.importorskip("uv", reason="the packaging tests need uv (pip install -e '.[dev]')")
    return uv.find_uv_bin()


def repo_files() -> list[str]:
    """Tracked plus untracked, non-ignored files of the repository (what a clean clone plus
    the developer's new files would hold)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("the packaging tests copy the repository with git ls-files")
    out = run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO).stdout
    return sorted({f for f in out.split("\0") if f and (REPO / f).is_file()})


def copy_repo(dest: Path) -> Path:
    for rel in repo_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    assert (dest / "pyproject.toml").is_file(), f"copy of {REPO} has no pyproject.toml"
    return dest


def _is_cache(rel: Path) -> bool:
    return "__pycache__" in rel.parts or rel.suffix in {".pyc", ".pyo"}


def template_files(root: Path = REPO) -> list[str]:
    """Every file under templates/ (POSIX paths relative to it), caches excluded."""
    base = root / "templates"
    return sorted(p.relative_to(base).as_posix() for p in base.rglob("*")
                  if p.is_file() and not _is_cache(p.relative_to(base)))


def exporter_modules(root: Path = REPO) -> list[str]:
    """Every module of exporters/ (POSIX paths relative to it), caches excluded."""
    base = root / "exporters"
    return sorted(p.relative_to(base).as_posix() for p in base.rglob("*.py")
                  if not _is_cache(p.relative_to(base)))


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def make_venv(path: Path) -> Path:
    run([uv_bin(), "venv", "--quiet", "--python", sys.executable, path], cwd=path.parent,
        timeout=VENV_TIMEOUT)
    assert venv_python(path).exists(), f"uv venv made no interpreter in {path}"
    return path


# The probe runs inside the installed venv: it reports what the installed package finds and
# checks nothing itself, so a failing assertion in the test shows the whole report.
PROBE = textwrap.dedent(
    r'''
    import importlib, json, pkgutil, sys
    from importlib import metadata, resources

    report = {"sys_path": sys.path, "errors": {}}

    def attempt(key, fn):
        try:
            return fn()
        except BaseException as exc:  # report every failure, keep probing
            report["errors"][key] = f"{type(exc).__name__}: {exc}"
            return None

    import pytest_mulm, pytest_mulm.exporters, pytest_mulm.templates
    from pytest_mulm.plugins import get_registry
    from pytest_mulm.templating import builtin_templates_dir, make_environment

    report["pytest_mulm"] = pytest_mulm.__file__
    report["pytest_mulm.exporters"] = pytest_mulm.exporters.__file__
    report["pytest_mulm.templates"] = pytest_mulm.templates.__file__
    report["builtin_templates_dir"] = str(builtin_templates_dir())

    registry = get_registry()
    report["formats"] = registry.formats()
    modules = {}
    for name, exporter in registry.exporters.items():
        mod = type(exporter).__module__
        modules[f"exporter:{name}"] = mod
    for fmt, mods in registry.suites.items():
        for i, mod in enumerate(mods):
            modules[f"suite:{fmt}:{i}"] = mod
    for info in pkgutil.iter_modules(pytest_mulm.exporters.__path__, "pytest_mulm.exporters."):
        modules[f"exporters-package:{info.name}"] = info.name
    report["modules"] = modules
    report["module_files"] = {
        key: attempt(f"import {mod}", lambda mod=mod: importlib.import_module(mod).__file__)
        for key, mod in modules.items()
    }
    report["suites"] = {fmt: list(mods) for fmt, mods in registry.suites.items()}

    def walk(node, prefix=""):
        for child in node.iterdir():
            rel = prefix + child.name
            if child.name == "__pycache__" or rel.endswith((".pyc", ".pyo")):
                continue
            if child.is_dir():
                yield from walk(child, rel + "/")
            else:
                yield rel

    found = sorted(walk(resources.files("pytest_mulm.templates")))
    report["resource_templates"] = found
    env = make_environment()
    loaded = {}
    for rel in found:
        if rel == "__init__.py":  # the package marker, not a template
            continue
        def load(rel=rel):
            plain = env.get_template(rel)
            default = env.get_template("default:" + rel)
            text = resources.files("pytest_mulm.templates").joinpath(rel).read_text(encoding="utf-8")
            return {"filename": plain.filename, "same_as_default": plain.filename == default.filename,
                    "chars": len(text)}
        loaded[rel] = attempt(f"template {rel}", load)
    report["loaded_templates"] = loaded

    for name in ("exporters", "templates"):
        def imp(name=name):
            mod = importlib.import_module(name)
            return {"imported": getattr(mod, "__file__", None) or list(getattr(mod, "__path__", []))}
        try:
            report[f"import {name}"] = imp()
        except ModuleNotFoundError as exc:
            report[f"import {name}"] = {"ModuleNotFoundError": exc.name}
        except BaseException as exc:
            report[f"import {name}"] = {"other": f"{type(exc).__name__}: {exc}"}

    dist = metadata.distribution("pytest-mulm")
    report["dist_files"] = sorted(str(f) for f in (dist.files or []))
    report["entry_points"] = sorted(f"{ep.group}:{ep.name}={ep.value}" for ep in dist.entry_points)
    print("@@PROBE@@" + json.dumps(report))
    '''
)


@dataclass
class Install:
    kind: str  # "wheel" or "editable"
    venv: Path
    source: Path | None  # the repository copy an editable install points at
    work: Path  # an empty folder to run the probes in

    @property
    def python(self) -> Path:
        return venv_python(self.venv)

    @property
    def site_packages(self) -> Path:
        found = list((self.venv / "lib").glob("python3*/site-packages"))
        assert len(found) == 1, f"site-packages of {self.venv}: {found}"
        return found[0]

    def bin(self, name: str) -> Path:
        path = self.venv / "bin" / name
        assert path.exists(), f"{name} is not installed in {self.venv} ({self.kind} install)"
        return path

    def probe(self) -> dict:
        proc = run([self.python, "-c", PROBE], cwd=self.work, venv=self.venv)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@PROBE@@")]
        assert lines, f"probe printed no report\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        return json.loads(lines[-1][len("@@PROBE@@"):])

    def where_code_lives(self) -> Path:
        """Where the installed modules and templates must come from."""
        return self.site_packages if self.kind == "wheel" else self.source


def _under(path: str | None, root: Path) -> bool:
    return path is not None and Path(path).resolve().is_relative_to(root.resolve())


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built once per session from a temporary copy of the repository."""
    root = tmp_path_factory.mktemp("wheel-build")
    src = copy_repo(root / "repo")
    out = root / "dist"
    run([uv_bin(), "build", "--wheel", "--out-dir", out, src], cwd=root, timeout=BUILD_TIMEOUT)
    wheels = sorted(out.glob("*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {out}, found {wheels}"
    return wheels[0]


def _install(kind: str, root: Path, wheel: Path | None = None) -> Install:
    """pytest-mulm installed into a fresh venv, from ``wheel`` or editable from a repo copy."""
    venv = make_venv(root / "venv")
    work = root / "work"
    work.mkdir()
    if kind == "wheel":
        assert wheel is not None
        target: list[str | Path] = [wheel]
        source = None
    else:
        source = copy_repo(root / "repo")
        target = ["-e", source]
    run([uv_bin(), "pip", "install", "--python", venv_python(venv), *target], cwd=work,
        timeout=INSTALL_TIMEOUT)
    return Install(kind, venv, source, work)


@pytest.fixture(scope="module")
def wheel_install(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Install:
    return _install("wheel", tmp_path_factory.mktemp("install-wheel"), wheel)


@pytest.fixture(scope="module")
def editable_install(tmp_path_factory: pytest.TempPathFactory) -> Install:
    return _install("editable", tmp_path_factory.mktemp("install-editable"))


@pytest.fixture(params=["wheel", "editable"])
def installed(request: pytest.FixtureRequest) -> Install:
    """Each install kind in turn, so every check below is written once and run for both."""
    return request.getfixturevalue(f"{request.param}_install")


# -- 1. the wheel's contents --------------------------------------------------------------------


def test_wheel_has_one_import_name_with_every_template_and_exporter(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
    top = {n.split("/", 1)[0] for n in names}
    dist_info = {t for t in top if t.endswith(DIST_INFO_SUFFIX)}
    assert len(dist_info) == 1, f"dist-info folders in {wheel.name}: {sorted(dist_info)}"
    assert top - dist_info == {"pytest_mulm"}, (
        f"{wheel.name} must expose exactly one top-level name, pytest_mulm; it has {sorted(top)}"
    )
    with zipfile.ZipFile(wheel) as zf:
        top_level = zf.read(f"{dist_info.pop()}/top_level.txt").decode().split()
    assert top_level == ["pytest_mulm"], f"top_level.txt: {top_level}"

    shipped = set(names)
    templates = template_files()
    assert templates, "templates/ is empty?"
    missing = [t for t in templates if f"pytest_mulm/templates/{t}" not in shipped]
    assert not missing, f"template files missing from {wheel.name}: {missing}"
    extra = sorted(n for n in shipped if n.startswith("pytest_mulm/templates/")
                   and n.removeprefix("pytest_mulm/templates/") not in templates)
    assert not extra, f"files in the wheel's templates that the repo's templates/ lacks: {extra}"

    modules = exporter_modules()
    assert "__init__.py" in modules and len(modules) > 1, f"exporters/: {modules}"
    missing = [m for m in modules if f"pytest_mulm/exporters/{m}" not in shipped]
    assert not missing, f"exporter modules missing from {wheel.name}: {missing}"
    assert not any(_is_cache(Path(n)) for n in names), "the wheel ships bytecode caches"


# -- 2./3. the installed package, from the wheel and editable -----------------------------------


def test_installed_package_finds_every_exporter_suite_and_template(installed: Install):
    report = installed.probe()
    home = installed.where_code_lives()
    dump = json.dumps(report, indent=1)

    assert not report["errors"], (
        f"{installed.kind} install: failures\n{json.dumps(report['errors'], indent=1)}\n{dump}"
    )
    assert not any(_under(p, REPO) for p in report["sys_path"] if p), (
        f"the repository {REPO} is on sys.path of the probe; the test proves nothing\n{dump}"
    )

    # the code and templates come from the install, never from the real repository
    for key in ("pytest_mulm", "pytest_mulm.exporters", "pytest_mulm.templates", "builtin_templates_dir"):
        assert _under(report[key], home), f"{key} = {report[key]} is not under {home}\n{dump}"
    if installed.kind == "editable":
        assert _under(report["pytest_mulm.exporters"], home / "exporters"), dump
        assert _under(report["pytest_mulm.templates"], home / "templates"), dump

    # every registered exporter and suite module, and every module of exporters/, imports
    assert FORMAT in report["formats"], dump
    assert FORMAT in report["suites"] and report["suites"][FORMAT], dump
    for key, path in report["module_files"].items():
        assert _under(path, home), f"{key} ({report['modules'][key]}) loaded from {path}\n{dump}"
    from_package = sorted(
        mod.removeprefix("pytest_mulm.exporters.") + ".py"
        for key, mod in report["modules"].items() if key.startswith("exporters-package:")
    )
    assert from_package == sorted(m for m in exporter_modules() if m != "__init__.py"), dump

    # every template file is found through importlib.resources and loads through Jinja2
    assert report["resource_templates"] == template_files(), (
        f"templates seen through importlib.resources differ from the repo's templates/\n{dump}"
    )
    for rel, info in report["loaded_templates"].items():
        assert info["same_as_default"], f"{rel}: default: prefix resolves elsewhere\n{dump}"
        assert _under(info["filename"], home), f"{rel} loaded from {info['filename']}\n{dump}"

    # no generic top-level names
    for name in ("exporters", "templates"):
        assert report[f"import {name}"] == {"ModuleNotFoundError": name}, (
            f"`import {name}` must fail with ModuleNotFoundError in the {installed.kind} install\n{dump}"
        )
    if installed.kind == "wheel":
        top = {f.split("/", 1)[0] for f in report["dist_files"] if not f.startswith("..")}
        assert {t for t in top if not t.endswith(DIST_INFO_SUFFIX)} == {"pytest_mulm"}, dump
    assert "console_scripts:mulm=pytest_mulm.cli:main" in report["entry_points"], dump
    assert "pytest11:mulm=pytest_mulm.plugin" in report["entry_points"], dump


def test_installed_cli_lists_and_exports_python_package(installed: Install):
    formats = run([installed.bin("mulm"), "formats"], cwd=installed.work, venv=installed.venv)
    names = [line.split("\t", 1)[0] for line in formats.stdout.splitlines()]
    assert FORMAT in names, f"`mulm formats` ({installed.kind}):\n{formats.stdout}\n{formats.stderr}"

    out = installed.work / f"out-{uuid.uuid4().hex[:8]}"
    proc = run([installed.bin("mulm"), "export", EXAMPLE, "--format", FORMAT, "-o", out],
               cwd=installed.work, venv=installed.venv)
    manifest = out / "mulm-manifest.json"
    assert manifest.is_file(), f"no {manifest}\n{proc.stdout}\n{proc.stderr}"
    data = json.loads(manifest.read_text(encoding="utf-8"))
    files = data.get("files", {})
    assert "README.md" in files and "pyproject.toml" in files, f"manifest files: {sorted(files)}"
    for rel in files:
        assert (out / rel).is_file(), f"the manifest lists {rel}, which {out} lacks"


def test_installed_pytest_loads_the_plugin(installed: Install):
    proc = run([installed.bin("pytest"), "--help"], cwd=installed.work, venv=installed.venv)
    assert "--mulm-workflow" in proc.stdout, (
        f"`pytest --help` in the {installed.kind} venv lacks --mulm-workflow (pytest11 entry point)\n"
        f"{proc.stdout[-3000:]}\n{proc.stderr}"
    )


def test_editable_install_sees_template_edits(editable_install: Install):
    """The editable install reads the source tree live, not a copy made at install time."""
    installed = editable_install
    rel = f"{FORMAT}/README.md.jinja"
    template = installed.source / "templates" / rel
    marker = f"LIVE-EDIT-{uuid.uuid4().hex}"
    original = template.read_text(encoding="utf-8")
    template.write_text(original + f"\n{marker}\n", encoding="utf-8")
    try:
        check = textwrap.dedent(
            f"""
            from importlib import resources
            from pytest_mulm.templating import make_environment
            text = resources.files("pytest_mulm.templates").joinpath({rel!r}).read_text(encoding="utf-8")
            source = make_environment().loader.get_source(make_environment(), {rel!r})[0]
            print("resources:", {marker!r} in text, "jinja:", {marker!r} in source)
            """
        )
        proc = run([installed.python, "-c", check], cwd=installed.work, venv=installed.venv)
        assert proc.stdout.split() == ["resources:", "True", "jinja:", "True"], proc.stdout + proc.stderr

        out = installed.work / f"out-edit-{uuid.uuid4().hex[:8]}"
        run([installed.bin("mulm"), "export", EXAMPLE, "--format", FORMAT, "-o", out],
            cwd=installed.work, venv=installed.venv)
        readme = (out / "README.md").read_text(encoding="utf-8")
        assert marker in readme, f"the export did not use the edited template:\n{readme[-1500:]}"
    finally:
        template.write_text(original, encoding="utf-8")
