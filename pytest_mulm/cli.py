"""The ``mulm`` command line: ``mulm export WF --format F -o DIR`` and ``mulm formats``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .errors import MulmError, WorkflowError
from .naming import printable

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mulm", description="Export µLM workflows to deployable artifacts.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="export a workflow (no verification; use pytest --mulm-workflow for that)")
    exp.add_argument("workflow", help="path of the µLM workflow JSON")
    exp.add_argument("--format", "-f", required=True, help="a format name, a comma list, or 'all'")
    exp.add_argument("-o", "--output", required=True, help="output folder (one subfolder per format when several)")
    exp.add_argument("--templates", help="folder of template overrides, searched before the built-ins")
    sub.add_parser("formats", help="list the registered export formats")
    check = sub.add_parser("check", help="load and validate a workflow, then print its blocks")
    check.add_argument("workflow")
    return parser


def error_lines(exc: MulmError) -> list[str]:
    lines = [str(exc)]
    if isinstance(exc, WorkflowError):
        lines.extend(f"  {line}" for line in exc.lines)
    return lines


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except MulmError as exc:
        for line in error_lines(exc):
            print(f"mulm: error: {line}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    from .plugins import get_registry

    registry = get_registry()
    if args.command == "formats":
        for name in registry.formats():
            print(f"{name}\t{registry.exporters[name].description}")
        return 0
    from .loader import load_workflow

    workflow = load_workflow(args.workflow)
    if args.command == "check":
        print(f"{printable(workflow.name)}: {len(workflow.nodes)} blocks, {len(workflow.edges)} edges, {len(workflow.examples)} example(s)")
        for node in workflow.nodes:
            print(f"  {printable(node.id)}\t{node.kind}\t{printable(node.label)}")
        for line in workflow.problems:
            print(f"  cannot run: {printable(line)}")
        return 1 if workflow.problems else 0
    from .exporting import export_workflow

    formats = registry.resolve_formats(args.format)
    if args.templates and not Path(args.templates).is_dir():
        raise MulmError(f"--templates: {args.templates} is not a folder")
    out = Path(args.output)
    for fmt in formats:
        target = out if len(formats) == 1 else out / fmt
        result = export_workflow(workflow, fmt, target=target, templates_dir=args.templates)
        print(f"{fmt}: {result.path} ({len(result.manifest.get('files', {}))} files, {result.seconds:.2f}s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
