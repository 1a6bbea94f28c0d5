"""The hook contract of pytest-mulm: everything a plugin can implement, in one file.

pytest-mulm keeps its own ``pluggy.PluginManager("mulm")`` (not pytest's) because
exporting also runs from the ``mulm`` command line and the Python API, outside pytest.
Built-in exporters are plugins registered exactly like third-party ones.

Writing a plugin
----------------

Declare an entry point in the ``mulm`` group of your distribution::

    [project.entry-points.mulm]
    docker = "mulm_docker.plugin"

and implement any of the hooks below in that module::

    from pytest_mulm import hookimpl
    from pytest_mulm.exporter import Exporter

    class DockerExporter(Exporter):
        name = "docker"
        description = "A Docker build context"

        def export(self, ctx):
            ctx.write_text("Dockerfile", "FROM python:3.12-slim\\n")

    @hookimpl
    def register_exporters(register):
        register(DockerExporter())

Hook names that are not declared here make loading fail (``check_pending``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .blocks import BlockType
    from .exporter import Exporter

__all__ = ["hookimpl", "hookspec", "register_block_types", "register_exporters", "register_suites", "report_sections"]

hookspec = pluggy.HookspecMarker("mulm")
hookimpl = pluggy.HookimplMarker("mulm")


@hookspec
def register_exporters(register: Callable[[Exporter], None]) -> None:
    """Register export formats.

    :param register: call it once per :class:`~pytest_mulm.exporter.Exporter` instance.
        A format name registered twice is an error naming both plugins.

    .. versionadded:: 0.1
    """


@hookspec
def register_block_types(register: Callable[[BlockType], None]) -> None:
    """Register block types (the ``data.type`` values a workflow may use).

    :param register: call it once per :class:`~pytest_mulm.blocks.BlockType`. A third-party
        block type needs a ``compute(node, inputs)`` for the reference runtime; exporters
        that cannot render it refuse the workflow naming the block.

    .. versionadded:: 0.1
    """


@hookspec
def register_suites(register: Callable[[str, str], None]) -> None:
    """Register verification suites.

    :param register: call it as ``register(format_name, "dotted.module.name")``. The module
        is an ordinary pytest test module; pytest-mulm collects it when ``--mulm-workflow``
        is given and the format is selected, and parametrizes its ``mulm_format`` fixture
        with that format, giving ids such as ``test_install[python-package]``. A suite
        registered for ``"*"`` is collected once and parametrized over every selected
        format (its module sets no ``MULM_FORMAT``); the security suite is one.

    .. versionadded:: 0.1
    """


@hookspec
def report_sections(report: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Contribute sections to ``mulm-report.json`` and the terminal summary.

    :param report: the report so far (read it, do not change it).
    :return: a list of ``{"title": str, "lines": [str, ...]}`` or None.

    .. versionadded:: 0.1
    """
