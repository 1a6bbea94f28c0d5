"""The ``mulm`` command line: ``mulm export``, ``mulm formats``, ``mulm check`` and
``mulm cache stats|prune`` (the LLM cassettes)."""

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
    exp.add_argument("--ai", default="replay", choices=("off", "replay", "record", "live"),
                     help="who writes the READMEs' and cards' prose: a model through the LLM layer, or the "
                          "templates (off; and replay misses). Default: replay")
    exp.add_argument("--cassettes", default="cassettes", help="the LLM cassette folder (default: cassettes)")
    exp.add_argument("--budget", type=float, default=25.0, help="LLM budget in US dollars (default: 25)")
    sub.add_parser("formats", help="list the registered export formats")
    check = sub.add_parser("check", help="load and validate a workflow, then print its blocks")
    check.add_argument("workflow")
    cache = sub.add_parser("cache", help="the LLM cassettes: size, last use, eviction")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    for name, text in (("stats", "entries, size and last use of the cassettes"),
                       ("prune", "evict cassettes: older than --max-age-days, then least recently used over --max-size")):
        cmd = cache_sub.add_parser(name, help=text)
        cmd.add_argument("--cassettes", default="cassettes", help="the cassette folder (default: cassettes)")
        if name == "prune":
            cmd.add_argument("--max-size", help="size cap, e.g. 50MB, 500kB or a number of bytes")
            cmd.add_argument("--max-age-days", type=float, help="evict cassettes unused for longer than this")
            cmd.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    return parser


_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_size(text: str) -> int:
    import re

    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise MulmError(f"--max-size: {text!r}; give bytes or a size like 500kB, 50MB, 1GiB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _generate_blocks(workflow, args: argparse.Namespace):
    from .llm.blockgen import resolve_generated_blocks
    from .llm.client import LLMClient

    client = LLMClient(args.ai, cassette_dir=args.cassettes, budget_usd=args.budget)
    try:
        workflow, infos = resolve_generated_blocks(workflow, client)
    finally:
        client.close()
    for info in infos:
        print(f"generated block {info['node']}: {info['origin']} (${info['cost_usd']:.6f})")
    return workflow


def _docs(workflow, args: argparse.Namespace):
    from .llm.docs import template_docs, write_docs

    if args.ai == "off":
        return template_docs(workflow, reason="--ai off")
    from .llm.client import LLMClient

    client = LLMClient(args.ai, cassette_dir=args.cassettes, budget_usd=args.budget)
    try:
        return write_docs(workflow, client)
    finally:
        client.close()


def _cache(args: argparse.Namespace) -> int:
    import time

    from .llm.cassettes import CassetteStore

    root = Path(args.cassettes)
    if not root.is_dir():
        raise MulmError(f"--cassettes: {root} is not a folder")
    store = CassetteStore(root)
    if args.cache_command == "stats":
        s = store.stats()

        def when(t: float | None) -> str:
            return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"

        print(f"{s['root']}: {s['entries']} cassette(s), {s['bytes']} bytes; "
              f"last use oldest {when(s['oldest_use'])}, newest {when(s['newest_use'])}")
        return 0
    max_bytes = parse_size(args.max_size) if args.max_size else None
    if max_bytes is None and args.max_age_days is None:
        raise MulmError("mulm cache prune: give --max-size, --max-age-days or both")
    if args.max_age_days is not None and args.max_age_days < 0:
        raise MulmError("--max-age-days: give 0 or more days")
    if args.dry_run:
        import shutil
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "c"
            shutil.copytree(root, copy)
            removed = [root / p.relative_to(copy) for p in CassetteStore(copy).prune(max_bytes, args.max_age_days)]
    else:
        removed = store.prune(max_bytes, args.max_age_days)
    for path in removed:
        print(f"{'would remove' if args.dry_run else 'removed'} {path}")
    after = store.stats()
    print(f"{len(removed)} cassette(s) {'would be ' if args.dry_run else ''}removed; "
          f"{after['entries']} left, {after['bytes']} bytes")
    return 0


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

    if args.command == "cache":
        return _cache(args)
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
    workflow = _generate_blocks(workflow, args)
    docs = _docs(workflow, args)
    for fmt in formats:
        target = out if len(formats) == 1 else out / fmt
        result = export_workflow(workflow, fmt, target=target, templates_dir=args.templates, docs=docs)
        print(f"{fmt}: {result.path} ({len(result.manifest.get('files', {}))} files, {result.seconds:.2f}s)")
    print(f"prose: {docs.marker}" + (f" ({docs.reason})" if docs.reason else ""))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
