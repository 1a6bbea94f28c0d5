"""The block catalogue: which ``data.type`` values exist and what their ports carry.

Plugins add block types through the ``register_block_types`` hook; the built-ins below
are registered through the same hook by :mod:`pytest_mulm.builtin_blocks`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["NUMERIC_KINDS", "PORT_TYPES", "BlockType"]

# Port types of the workflow format; "any" is what a Python block produces or accepts.
PORT_TYPES = ("text", "number", "array", "object", "tensor", "any")
NUMERIC_KINDS = frozenset(
    {"dense", "expert", "activation", "softmax", "normalize", "concat", "router", "mixture"}
)
ACTIVATIONS = ("linear", "relu", "gelu", "tanh", "sigmoid", "softmax")


@dataclass(frozen=True)
class BlockType:
    """A kind of block.

    :param name: the ``data.type`` value that selects it.
    :param accepts: port types it takes as input (``any`` accepts every type).
    :param produces: port type of its value.
    :param compute: for third-party blocks, ``compute(node, inputs: dict) -> value`` used by
        the reference runtime; built-in kinds are computed by the runtime itself.
    """

    name: str
    accepts: tuple[str, ...] = ("any",)
    produces: str = "any"
    description: str = ""
    compute: Callable[..., object] | None = None

    def connects_from(self, port_type: str) -> bool:
        if "any" in self.accepts or port_type == "any":
            return True
        return port_type in self.accepts


def numeric_accepts() -> tuple[str, ...]:
    return ("tensor", "array", "number")


def builtin_block_types() -> Mapping[str, BlockType]:
    tensor = numeric_accepts()
    types = [
        BlockType("input", accepts=(), produces="any", description="the workflow's input value"),
        BlockType("output", description="the workflow's result; optional labels for probabilities"),
        BlockType("python", description="a block with sourceCode defining one public function"),
        BlockType("llm", produces="text", description="a prompt template answered by a model"),
    ]
    for kind in sorted(NUMERIC_KINDS):
        types.append(BlockType(kind, accepts=tensor, produces="tensor", description=f"numeric {kind}"))
    return {t.name: t for t in types}
