"""pytest-mulm: export µLM workflows to deployable artifacts and prove each one works.

Python API::

    from pytest_mulm import load_workflow, export_workflow, run_workflow
    wf = load_workflow("examples/iris-mlp.json")
    result = export_workflow(wf, "python-package", out_dir="mulm-out")
    # after a pytest --mulm-workflow run over it:
    verification = verify_deployment(result)

Plugin authors: see :mod:`pytest_mulm.hookspecs`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import ExportError, MulmError, PluginError, UnknownFormatError, WorkflowError
from .hookspecs import hookimpl

__all__ = [
    "ExportError",
    "MulmError",
    "PluginError",
    "UnknownFormatError",
    "WorkflowError",
    "__version__",
    "export_workflow",
    "hookimpl",
    "load_workflow",
    "run_workflow",
    "verify_deployment",
]


def __getattr__(name: str):
    # Lazy: `import pytest_mulm` (done by pytest for every run via the pytest11 entry point)
    # must stay cheap; numpy and jinja2 load only when the API is used.
    if name == "load_workflow":
        from .loader import load_workflow

        return load_workflow
    if name == "export_workflow":
        from .exporting import export_workflow

        return export_workflow
    if name == "run_workflow":
        from .runtime import run_workflow

        return run_workflow
    if name == "verify_deployment":
        from .verify import verify_deployment

        return verify_deployment
    raise AttributeError(f"module 'pytest_mulm' has no attribute {name!r}")
