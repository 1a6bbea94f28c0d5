"""Registers the built-in block types through the same hook third-party plugins use."""

from __future__ import annotations

from collections.abc import Callable

from .blocks import BlockType, builtin_block_types
from .hookspecs import hookimpl


@hookimpl
def register_block_types(register: Callable[[BlockType], None]) -> None:
    for block_type in builtin_block_types().values():
        register(block_type)
