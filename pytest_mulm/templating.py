"""The one Jinja2 environment factory for exporters.

Loader chain (style-anchors §3.5): a user's override folder, then the built-in templates.
``default:`` prefixes reach the built-ins directly so an override can extend them:
``{% extends "default:python-package/README.md.jinja" %}``. Strict undefined, trailing
newlines kept, no autoescape (templates write code; workflow strings reach them only
through the ``py`` (repr) and ``tojson`` filters or as Markdown text).
"""

from __future__ import annotations

import hashlib
import json
import shlex
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, FileSystemLoader, PrefixLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from .naming import one_line

__all__ = ["builtin_templates_dir", "make_environment", "templates_digest"]


def builtin_templates_dir() -> Path:
    return Path(str(resources.files("pytest_mulm.templates")))


def _py_literal(value: Any) -> str:
    """A Python literal for a JSON-like value: repr() for data, never interpolated as code."""
    return repr(value)


def _md_text(value: Any) -> str:
    """One line of Markdown-safe text (no raw HTML, no line breaks that start new blocks)."""
    return one_line(value).replace("<", "&lt;").replace(">", "&gt;")


def _docstring(value: Any) -> str:
    """Text safe inside a triple-quoted docstring: one line, no quotes or backslashes."""
    return one_line(value).replace("\\", "/").replace('"', "'")


def _toml_string(value: Any) -> str:
    """A TOML basic string: JSON's escaping plus DEL, which TOML forbids raw."""
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


def make_environment(override_dir: Path | None = None) -> SandboxedEnvironment:
    loaders = []
    if override_dir is not None:
        loaders.append(FileSystemLoader(str(override_dir)))
    builtin = FileSystemLoader(str(builtin_templates_dir()))
    loaders.append(builtin)
    loader = ChoiceLoader([PrefixLoader({"default": builtin}, delimiter=":"), *loaders])
    env = SandboxedEnvironment(
        loader=loader,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["py"] = _py_literal
    env.filters["md"] = _md_text
    env.filters["comment"] = one_line
    env.filters["toml"] = _toml_string
    env.filters["doc"] = _docstring
    env.filters["shell"] = shlex.quote
    env.filters["tojson"] = lambda v, indent=None: json.dumps(v, indent=indent, ensure_ascii=False, sort_keys=True)
    return env


def templates_digest(override_dir: Path | None, format_name: str) -> str:
    """Hash of the override templates for one format (part of the export cache key)."""
    h = hashlib.sha256()
    if override_dir is not None:
        root = Path(override_dir) / format_name
        if root.is_dir():
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()
