"""The exporter contract: the base class every format (built-in or third-party) subclasses."""

from __future__ import annotations

import ast
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, TemplateError, UndefinedError

from .errors import ExportError, UnsafePathError
from .workflow import Workflow

__all__ = ["ExportContext", "Exporter"]


class Exporter(ABC):
    """One export format.

    Subclasses set :attr:`name` (the ``--mulm-format`` value) and implement :meth:`export`,
    writing every file through the :class:`ExportContext` so paths stay inside the output
    directory and generated Python is parsed before it is written.
    """

    name: str = ""
    description: str = ""
    #: block kinds this format can render; None means every kind
    supported_blocks: frozenset[str] | None = None
    #: folder of the artifact holding the installable project (its pyproject.toml)
    project_subdir: str = "."

    def check(self, workflow: Workflow) -> list[str]:
        """One line per thing in the workflow this format cannot export (configuration
        values, say); the export is refused with these lines."""
        return []

    def warnings(self, workflow: Workflow) -> list[str]:
        """Things the artifact does that a reviewer must know (shown in the report)."""
        return []

    def options(self, workflow: Workflow) -> dict[str, Any]:
        """Options that change the artifact; they are part of the cache key."""
        return {}

    @abstractmethod
    def export(self, ctx: ExportContext) -> None:
        """Write the artifact into ``ctx.out_dir``."""

    def requirements(self, workflow: Workflow) -> list[str]:
        """Pinned runtime requirements the artifact declares (recorded in the manifest)."""
        from .deps import requirements_for

        return requirements_for(workflow)


@dataclass
class ExportContext:
    workflow: Workflow
    out_dir: Path
    env: Environment
    exporter: Exporter
    options: Mapping[str, Any] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    docs: Any = None  # pytest_mulm.llm.docs.Docs: prose for READMEs, cards, narrative (AI or template)

    def path(self, relpath: str) -> Path:
        """Resolve ``relpath`` under the output directory; refuse anything that escapes."""
        rel = Path(relpath)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise UnsafePathError(f"{self.exporter.name}: refusing to write {relpath!r} outside the output directory")
        target = (self.out_dir / rel).resolve()
        root = self.out_dir.resolve()
        if root != target and root not in target.parents:
            raise UnsafePathError(f"{self.exporter.name}: refusing to write {relpath!r} outside the output directory")
        return target

    def write_text(self, relpath: str, text: str) -> Path:
        target = self.path(relpath)
        if target.suffix == ".py":
            try:
                ast.parse(text, filename=relpath)
            except SyntaxError as exc:
                raise ExportError(
                    f"{self.exporter.name}: generated {relpath} does not parse ({exc.msg}, line {exc.lineno}); "
                    "this is a bug in the template or the exporter"
                ) from None
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        self.written.append(relpath)
        return target

    def write_bytes(self, relpath: str, data: bytes) -> Path:
        target = self.path(relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        self.written.append(relpath)
        return target

    def write_json(self, relpath: str, data: Any) -> Path:
        return self.write_text(relpath, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")

    def render(self, template: str, relpath: str | None = None, *, folder: str | None = None, **variables: Any) -> str:
        """Render ``<folder>/<template>`` (folder defaults to the format's name) and write it
        to ``relpath`` (default: the template name minus ``.jinja``)."""
        name = f"{folder or self.exporter.name}/{template}"
        try:
            text = self.env.get_template(name).render(**{"workflow": self.workflow, "docs": self.docs, **variables})
        except UndefinedError as exc:
            raise ExportError(f"{self.exporter.name}: template {name}: {exc.message}") from None
        except TemplateError as exc:
            raise ExportError(f"{self.exporter.name}: template {name}: {exc}") from None
        if relpath is None:
            relpath = template.removesuffix(".jinja")
        self.write_text(relpath, text)
        return text
