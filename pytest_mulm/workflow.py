"""The validated, immutable workflow model every later stage reads.

Produced only by :func:`pytest_mulm.loader.load_workflow`; nothing downstream mutates it
(design.md §3: load → validate → runtime → export → verify → report).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Edge", "Node", "Workflow", "handle_key"]


@dataclass(frozen=True)
class Edge:
    id: str
    source: str
    target: str
    target_handle: str | None = None


@dataclass(frozen=True)
class Node:
    """One block. ``kind`` is the resolved block type (``dense``, ``python``, ...)."""

    id: str
    kind: str
    label: str
    description: str
    category: str
    config: Mapping[str, Any]
    source: str | None = None  # Python source of the block, if any
    entrypoint: str | None = None  # the function to call, resolved at load
    implicit_imports: tuple[tuple[str, str], ...] = ()  # (name, module) the block uses unimported
    params: Mapping[str, np.ndarray] = field(default_factory=dict)  # float32 weights
    raw_type: str = ""  # data.type as written, for messages

    @property
    def title(self) -> str:
        return f"node '{self.id}' ({self.label})" if self.label and self.label != self.id else f"node '{self.id}'"


@dataclass(frozen=True)
class Workflow:
    id: str
    name: str
    description: str
    version: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    order: tuple[str, ...]  # node ids in topological order
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    examples: tuple[Any, ...]  # one runtime input value per example
    examples_synthesized: bool
    dependencies: tuple[str, ...]  # declared requirement strings (pins)
    deployment: Mapping[str, Any]
    content_hash: str  # sha256 over the canonical document and every weights file
    problems: tuple[str, ...] = ()  # one line per block that cannot run; export refuses these
    path: Path | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", types.MappingProxyType({n.id: n for n in self.nodes}))

    def node(self, node_id: str) -> Node:
        return self._by_id[node_id]  # type: ignore[attr-defined]

    def upstream(self, node_id: str) -> list[Edge]:
        """Incoming edges of a node, ordered by target handle then edge order."""
        incoming = [e for e in self.edges if e.target == node_id]
        return sorted(incoming, key=lambda e: handle_key(e.target_handle))

    def downstream(self, node_id: str) -> list[Edge]:
        return [e for e in self.edges if e.source == node_id]

    @property
    def has_numeric(self) -> bool:
        from .blocks import NUMERIC_KINDS

        return any(n.kind in NUMERIC_KINDS for n in self.nodes)

    @property
    def slug(self) -> str:
        from .naming import slugify

        return slugify(self.name or self.id or "workflow")


def handle_key(handle: str | None) -> str:
    # in0, in1, ..., in10 and expert0..expert12 must sort numerically, not lexically
    if not handle:
        return ""
    stem = handle.rstrip("0123456789")
    digits = handle[len(stem):]
    return f"{stem}{int(digits):08d}" if digits else handle
