"""The ``python-package`` format: an installable package with a CLI, tests and API docs."""

from __future__ import annotations

import sys
from collections.abc import Callable

from pytest_mulm.blocks import NUMERIC_KINDS
from pytest_mulm.exporter import ExportContext, Exporter
from pytest_mulm.hookspecs import hookimpl
from pytest_mulm.workflow import Workflow

from .library import api_reference, library_requirements, names_for, write_library

FORMAT = "python-package"


class PythonPackageExporter(Exporter):
    name = FORMAT
    description = "Installable Python package (PEP 621, src layout) with a CLI, tests and API docs"
    supported_blocks = frozenset({"input", "output", "python", "llm", *NUMERIC_KINDS})

    def requirements(self, workflow: Workflow) -> list[str]:
        return library_requirements(workflow)

    def export(self, ctx: ExportContext) -> None:
        names = names_for(ctx.workflow)
        pkg = f"src/{names['package']}"
        common = write_library(ctx, pkg, names)
        ctx.render("__main__.py.jinja", f"{pkg}/__main__.py", **common)
        ctx.render("cli.py.jinja", f"{pkg}/cli.py", **common)
        ctx.render("test_package.py.jinja", f"tests/test_{names['package']}.py", **common)
        ctx.render("pyproject.toml.jinja", "pyproject.toml", **common)
        ctx.write_text("requirements.txt", "".join(f"{r}\n" for r in common["requirements"]))
        ctx.render("gitignore.jinja", ".gitignore", **common)
        ctx.render("README.md.jinja", "README.md", **common)
        ctx.render("API.md.jinja", "docs/API.md", modules=api_reference(ctx, pkg, names["package"]), **common)
        # CI that runs the package's own tests, on the Python version that exported it
        ci_python = f"{sys.version_info.major}.{sys.version_info.minor}"
        ctx.render("github-ci.yml.jinja", ".github/workflows/test.yml", ci_python=ci_python, **common)
        ctx.render("gitlab-ci.yml.jinja", ".gitlab-ci.yml", ci_python=ci_python, **common)


@hookimpl
def register_exporters(register: Callable[[Exporter], None]) -> None:
    register(PythonPackageExporter())


@hookimpl
def register_suites(register: Callable[[str, str], None]) -> None:
    register(FORMAT, "pytest_mulm.suites.python_package")


