"""Turning workflow strings into safe names: slugs, identifiers, distribution names."""

from __future__ import annotations

import keyword
import re
import unicodedata

__all__ = ["identifier", "slugify"]


def slugify(text: str, *, default: str = "workflow") -> str:
    """Lower-case ASCII words joined by '-': safe as a file, folder or distribution name."""
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    slug = slug[:60].strip("-")
    if not slug or not slug[0].isalpha():
        slug = f"{default}-{slug}" if slug else default
    return slug


def identifier(text: str, *, prefix: str = "n") -> str:
    """A valid, non-keyword Python identifier derived from ``text``."""
    ident = re.sub(r"\W+", "_", slugify(text, default=prefix).replace("-", "_"))
    if keyword.iskeyword(ident) or not ident.isidentifier():
        ident = f"{prefix}_{ident}"
    return ident


def one_line(text: object) -> str:
    """Text on one physical line with no control characters.

    Safe inside a ``#`` comment or a docstring line: ``str.split()`` breaks on every
    character Python's tokenizer treats as a line end (``\\n``, ``\\r``) and more;
    what remains non-printable (NUL, DEL, escapes) is dropped.
    """
    joined = " ".join(str(text).split())
    return "".join(ch for ch in joined if ch.isprintable())


def printable(text: object) -> str:
    """Text for a terminal line: non-printable characters shown as escapes, so a workflow
    string can neither break a message into several lines nor send terminal controls."""
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
        for ch in str(text)
    )
