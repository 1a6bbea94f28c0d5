"""Running an exporter: content-addressed cache, atomic builds, the manifest.

An export lives in ``<out>/<format>/<key>/`` where ``key`` hashes the workflow (weights
included), the format, its options, the plugin version and any template overrides. The
first process to take the lock builds into a temporary sibling and renames it into place;
the manifest is written last, so a folder without one is an interrupted build and is
never reused. Every other process (xdist workers, later runs) reads the finished folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from . import __version__
from .errors import ExportError, WorkflowError
from .exporter import ExportContext, Exporter
from .plugins import get_registry
from .templating import make_environment, templates_digest
from .workflow import Workflow

__all__ = ["MANIFEST", "ExportResult", "cache_key", "export_workflow"]

MANIFEST = "mulm-manifest.json"


@dataclass(frozen=True)
class ExportResult:
    format: str
    path: Path
    key: str
    from_cache: bool
    seconds: float
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def project_dir(self) -> Path:
        """The folder with the artifact's installable project (pyproject.toml)."""
        return self.path / self.manifest.get("project", ".")

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format, "path": str(self.path), "key": self.key,
            "from_cache": self.from_cache, "seconds": round(self.seconds, 4),
            "content_hash": self.manifest.get("workflow", {}).get("content_hash"),
            "docs": self.manifest.get("docs"),
        }


def refuse_unrunnable(workflow: Workflow, exporter: Exporter) -> None:
    config = exporter.check(workflow)
    lines = list(workflow.problems) + config
    if exporter.supported_blocks is not None:
        for node in workflow.nodes:
            if node.kind not in exporter.supported_blocks:
                lines.append(f"{node.title}: block type {node.kind!r} cannot be exported to {exporter.name}")
    if lines:
        raise WorkflowError(
            f"cannot export to {exporter.name}: {len(lines)} " + ("problem(s)" if config else "block(s) unusable"),
            where=f"workflow '{workflow.id}'", lines=lines,
        )


def cache_key(workflow: Workflow, exporter: Exporter, templates_dir: Path | None, docs: Any = None) -> str:
    material = {
        "docs": docs.digest if docs is not None and docs.origin == "ai" else None,
        "workflow": workflow.content_hash,
        "format": exporter.name,
        "options": exporter.options(workflow),
        "plugin": __version__,
        "templates": templates_digest(templates_dir, exporter.name),
    }
    blob = json.dumps(material, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def export_workflow(
    workflow: Workflow,
    format: str,
    *,
    out_dir: str | Path = "mulm-out",
    templates_dir: str | Path | None = None,
    target: str | Path | None = None,
    docs: Any = None,
) -> ExportResult:
    """Export ``workflow`` to ``format``.

    With ``target`` the artifact is written exactly there (the ``mulm export -o`` case);
    otherwise into the content-addressed cache under ``out_dir``. ``docs`` (from
    :func:`pytest_mulm.llm.docs.write_docs`) is the prose the artifact's READMEs, cards
    and narrative use; without it the template texts are used.
    """
    from .llm.docs import template_docs

    exporter = get_registry().exporter(format)
    refuse_unrunnable(workflow, exporter)
    tdir = Path(templates_dir) if templates_dir else None
    docs = docs if docs is not None else template_docs(workflow)
    key = cache_key(workflow, exporter, tdir, docs)
    started = time.perf_counter()
    if target is not None:
        final = Path(target)
        _guard_target(final)
        _build(workflow, exporter, final, key, tdir, docs)
        return ExportResult(format, final, key, False, time.perf_counter() - started, _read_manifest(final))
    prepare_out_dir(Path(out_dir))
    final = Path(out_dir) / exporter.name / key
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if (final / MANIFEST).is_file():
            return ExportResult(format, final, key, True, time.perf_counter() - started, _read_manifest(final))
        if final.exists():  # a folder without a manifest is an interrupted build
            shutil.rmtree(final)
        _build(workflow, exporter, final, key, tdir, docs)
    return ExportResult(format, final, key, False, time.perf_counter() - started, _read_manifest(final))


def prepare_out_dir(out: Path) -> None:
    """Create the output folder so that pytest never collects the generated tests in it
    and git never picks it up (exports are build products, traced by their manifests)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("conftest.py", "# Written by pytest-mulm: exports here are verified by their suites, not collected.\ncollect_ignore_glob = ['*']\n"),
        (".gitignore", "# Written by pytest-mulm: build products.\n*\n"),
    ):
        path = out / name
        if not path.exists():
            path.write_text(text, encoding="utf-8")


def _guard_target(final: Path) -> None:
    if final.exists() and (not final.is_dir() or (any(final.iterdir()) and not (final / MANIFEST).is_file())):
        raise ExportError(
            f"output folder {final} exists and is not an earlier export (no {MANIFEST}); "
            "choose an empty or new folder"
        )


def _build(workflow: Workflow, exporter: Exporter, final: Path, key: str, templates_dir: Path | None, docs: Any) -> None:
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        ctx = ExportContext(
            workflow=workflow, out_dir=tmp, env=make_environment(templates_dir),
            exporter=exporter, options=exporter.options(workflow), docs=docs,
        )
        exporter.export(ctx)
        ctx.write_json(MANIFEST, _manifest(workflow, exporter, key, ctx))
        if final.exists():
            old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _manifest(workflow: Workflow, exporter: Exporter, key: str, ctx: ExportContext) -> dict[str, Any]:
    files = {}
    for rel in sorted(set(ctx.written)):
        files[rel] = hashlib.sha256(ctx.path(rel).read_bytes()).hexdigest()
    return {
        "schema": 1,
        "format": exporter.name,
        "cache_key": key,
        "plugin": {"name": "pytest-mulm", "version": __version__},
        "workflow": {
            "id": workflow.id, "name": workflow.name, "version": workflow.version,
            "content_hash": workflow.content_hash,
            "source": str(workflow.path) if workflow.path else None,
        },
        "dependencies": exporter.requirements(workflow),
        "project": exporter.project_subdir,
        "docs": {k: v for k, v in ctx.docs.as_dict().items() if k in ("origin", "model", "author", "cache", "cost_usd", "reason")},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": files,
    }


def _read_manifest(path: Path) -> dict[str, Any]:
    return json.loads((path / MANIFEST).read_text(encoding="utf-8"))
