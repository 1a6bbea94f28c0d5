"""The numeric part of a workflow, cut out for the edge formats (ONNX, TFLite).

The numeric blocks must form one contiguous subgraph: values enter it from input or
Python blocks (its inputs) and leave it to output, Python or llm blocks (its outputs).
A non-numeric block between two numeric ones would split the model in two; the export
refuses that, naming the block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_mulm.blocks import NUMERIC_KINDS
from pytest_mulm.errors import WorkflowError
from pytest_mulm.naming import identifier
from pytest_mulm.workflow import Workflow

__all__ = ["NumericSubgraph", "numeric_subgraph"]


@dataclass(frozen=True)
class NumericSubgraph:
    """``nodes`` in topological order; ``inputs`` are (outside source id, feature width);
    ``outputs`` are numeric node ids whose values leave the subgraph (or end the
    workflow); ``names`` maps a node id to its tensor name in the models."""

    nodes: tuple[str, ...]
    inputs: tuple[tuple[str, int], ...]
    outputs: tuple[str, ...]
    names: dict[str, str]
    widths: dict[str, int]

    def input_names(self) -> list[str]:
        return [self.names[src] for src, _ in self.inputs]

    def output_names(self) -> list[str]:
        return [self.names[n] for n in self.outputs]


def _width(workflow: Workflow, nid: str, widths: dict[str, int]) -> int | None:
    node = workflow.node(nid)
    if node.kind in ("dense", "expert", "router"):
        return int(node.params["kernel"].shape[1])
    if node.kind == "normalize":
        return int(node.params["mean"].shape[0])
    ups = [widths.get(e.source) for e in workflow.upstream(nid)]
    if node.kind in ("activation", "softmax"):
        return ups[0]
    if node.kind == "concat":
        return sum(ups) if all(u is not None for u in ups) else None  # type: ignore[arg-type]
    if node.kind == "mixture":
        experts = [widths.get(e.source) for e in workflow.upstream(nid) if (e.target_handle or "").startswith("expert")]
        return experts[0] if experts else None
    return None


def _input_width(workflow: Workflow, source: str, consumer: str) -> int | None:
    """Feature width of a value entering the subgraph, from the first block that reads it."""
    node = workflow.node(consumer)
    if node.kind in ("dense", "expert", "router"):
        return int(node.params["kernel"].shape[0])
    if node.kind == "normalize":
        return int(node.params["mean"].shape[0])
    src = workflow.node(source)
    shape = src.config.get("shape") if src.kind == "input" else None
    if isinstance(shape, list) and shape and isinstance(shape[-1], int):
        return shape[-1]
    return None


def numeric_subgraph(workflow: Workflow, probe: dict[str, Any] | None = None) -> NumericSubgraph | None:
    """The workflow's numeric subgraph, or None when it has no numeric blocks.

    ``probe`` holds block values from one reference run; it gives the width of values a
    Python block feeds into the subgraph, which no configuration states."""
    members = [n for n in workflow.order if workflow.node(n).kind in NUMERIC_KINDS]
    if not members:
        return None
    inside = set(members)
    # everything reachable from a subgraph output that leads back into the subgraph splits it
    for nid in workflow.order:
        if nid in inside:
            continue
        feeds_from = any(e.source in inside for e in workflow.upstream(nid))
        if feeds_from and _reaches(workflow, nid, inside):
            raise WorkflowError(
                "sits between numeric blocks, which would split the edge model in two; "
                "move it before or after the numeric blocks",
                where=workflow.node(nid).title, field="edges",
            )
    names = {}
    used: set[str] = set()
    inputs: list[tuple[str, int]] = []
    widths: dict[str, int] = {}
    for nid in members:
        for e in workflow.upstream(nid):
            if e.source not in inside and e.source not in dict(inputs):
                width = _input_width(workflow, e.source, nid)
                if width is None and probe is not None and e.source in probe:
                    shape = np.shape(probe[e.source])
                    width = int(shape[-1]) if shape else None
                if width is None:
                    raise WorkflowError(
                        f"feeds numeric block '{nid}' a value of unknown width; give the input a shape "
                        "or start the numeric part with normalize or dense",
                        where=workflow.node(e.source).title, field="data.config.shape",
                    )
                inputs.append((e.source, width))
                widths[e.source] = width
        width = _width(workflow, nid, widths)
        if width is None:
            raise WorkflowError("has an output width that cannot be worked out", where=workflow.node(nid).title)
        widths[nid] = width
    for nid in [src for src, _ in inputs] + members:
        base = identifier(nid, prefix="t")
        name, i = base, 2
        while name in used:
            name, i = f"{base}_{i}", i + 1
        used.add(name)
        names[nid] = name
    outputs = tuple(
        n for n in members
        if not workflow.downstream(n) or any(e.target not in inside for e in workflow.downstream(n))
    )
    return NumericSubgraph(tuple(members), tuple(inputs), outputs, names, widths)


def _reaches(workflow: Workflow, start: str, targets: set[str]) -> bool:
    seen, stack = set(), [start]
    while stack:
        nid = stack.pop()
        for e in workflow.downstream(nid):
            if e.target in targets:
                return True
            if e.target not in seen:
                seen.add(e.target)
                stack.append(e.target)
    return False


def example_traces(workflow: Workflow) -> list[dict[str, Any]]:
    """Every block's value for every example, from the reference runtime (one dict each)."""
    from pytest_mulm.runtime import Runtime, Trace

    runtime = Runtime(workflow)
    traces = []
    for value in workflow.examples:
        trace = Trace()
        runtime.run(value, trace)
        traces.append(trace.values or {})
    return traces


def block_values(workflow: Workflow, sub: NumericSubgraph, values: dict[str, Any]) -> dict[str, Any]:
    """Every numeric block's value, by the reference runtime's own block code; ``values``
    holds the subgraph's inputs by source id and is filled in place."""
    from pytest_mulm.runtime import Runtime

    runtime = Runtime(workflow)
    for nid in sub.nodes:
        inputs = {(e.target_handle or e.source): values[e.source] for e in workflow.upstream(nid)}
        values[nid] = runtime._step(workflow.node(nid), None, inputs, [])
    return values


def evaluate_subgraph(workflow: Workflow, sub: NumericSubgraph, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
    """The subgraph's outputs by the reference runtime's own block code (no second copy of
    the maths): ``feeds`` and the result are keyed by tensor name, values [batch, width]."""
    values: dict[str, Any] = {src: np.asarray(feeds[sub.names[src]], dtype=np.float32) for src, _ in sub.inputs}
    block_values(workflow, sub, values)
    return {sub.names[n]: values[n] for n in sub.outputs}
