"""The reference runtime: the ground truth every format is compared with.

Executes the DAG in topological order. Python blocks run in-process, each in its own
module namespace; numeric blocks run in float32 numpy (:mod:`pytest_mulm.ops`);
``llm`` blocks go through the LLM layer (:class:`~pytest_mulm.llm.client.LLMClient`:
cassettes, budget, template fallback) when a client is given, else through the template
fallback. Deterministic: same workflow, input and cassettes, same output.
"""

from __future__ import annotations

import contextlib
import io
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2.sandbox import SandboxedEnvironment

from . import ops
from .errors import WorkflowError
from .workflow import Node, Workflow

__all__ = ["BlockFailure", "Runtime", "llm_fallback", "run_workflow"]


class BlockFailure(Exception):
    """A block raised while running; names the block so reports can say which one."""

    def __init__(self, node: Node, exc: BaseException):
        self.node = node
        self.exc = exc
        super().__init__(f"{node.title} failed: {type(exc).__name__}: {exc}")


@dataclass
class Trace:
    """What happened besides the result: stdout of blocks, llm blocks that fell back."""

    stdout: str = ""
    fallbacks: tuple[str, ...] = ()
    values: dict[str, Any] | None = None  # every block's value, when asked for


def llm_fallback(prompt: str, system: str = "", model: str = "") -> str:
    """The deterministic template answer used when no model may be asked."""
    first = " ".join(prompt.split())[:200]
    return f"[template fallback: no model was called] {first}"


def llm_model(node: Node) -> str:
    """The model an llm block asks: its own, else the cheapest active one on the price table."""
    from .llm.models import default_model

    return str(node.config.get("model") or default_model())


def llm_params(node: Node) -> tuple[float | None, int | None]:
    """``temperature`` (0 to 2) and ``maxTokens`` (whole, 1 or more); other values are not sent."""
    t, m = node.config.get("temperature"), node.config.get("maxTokens")
    temperature = t if isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 2 else None
    max_tokens = m if isinstance(m, int) and not isinstance(m, bool) and m >= 1 else None
    return temperature, max_tokens


def llm_body(node: Node, prompt: str) -> dict[str, Any]:
    return ops.llm_request(prompt, str(node.config.get("systemPrompt", "")), llm_model(node), *llm_params(node))


_PROMPTS = SandboxedEnvironment(autoescape=False, keep_trailing_newline=True)


def render_prompt(node: Node, inputs: Mapping[str, Any]) -> str:
    template = node.config.get("promptTemplate", "{{ input }}")
    return _PROMPTS.from_string(template).render(**{k: ops.to_jsonable(v) for k, v in inputs.items()})


def load_block_function(node: Node) -> Callable[..., Any]:
    """Execute a Python block's source in a fresh module and return its entrypoint."""
    if node.entrypoint is None:
        raise WorkflowError("has no function to call", where=node.title, field="data.sourceCode")
    module = types.ModuleType(f"mulm_block_{node.id}")
    for name, mod in node.implicit_imports:
        module.__dict__[name] = __import__(mod, fromlist=["_"])
    code = compile(node.source or "", f"<block {node.id}>", "exec")
    exec(code, module.__dict__)  # the block's own code: running it is the point of the block
    return module.__dict__[node.entrypoint]


class Runtime:
    """Runs one workflow; Python blocks are loaded once and reused across calls."""

    def __init__(self, workflow: Workflow, *, llm: Any = None):
        """``llm``: an :class:`~pytest_mulm.llm.client.LLMClient` (or anything with its
        ``complete(body, fallback=...)``); without one, llm blocks answer by the template."""
        if workflow.problems:
            raise WorkflowError(
                f"{len(workflow.problems)} block(s) cannot run", where=f"workflow '{workflow.id}'",
                lines=list(workflow.problems),
            )
        self.workflow = workflow
        self.llm = llm
        self._functions: dict[str, Callable[..., Any]] = {}

    def _function(self, node: Node) -> Callable[..., Any]:
        if node.id not in self._functions:
            try:
                self._functions[node.id] = load_block_function(node)
            except Exception as exc:  # import errors of the block's own dependencies
                raise BlockFailure(node, exc) from exc
        return self._functions[node.id]

    def run(self, value: Any, trace: Trace | None = None) -> Any:
        wf = self.workflow
        values: dict[str, Any] = {}
        out = io.StringIO()
        fallbacks: list[str] = []
        with contextlib.redirect_stdout(out):
            for nid in wf.order:
                node = wf.node(nid)
                edges = wf.upstream(nid)
                inputs = {(e.target_handle or e.source): values[e.source] for e in edges}
                try:
                    values[nid] = self._step(node, value, inputs, fallbacks)
                except BlockFailure:
                    raise
                except Exception as exc:
                    raise BlockFailure(node, exc) from exc
        if trace is not None:
            trace.stdout = out.getvalue()
            trace.fallbacks = tuple(fallbacks)
            trace.values = values
        results = {nid: ops.to_jsonable(values[nid]) for nid in wf.outputs}
        return results[wf.outputs[0]] if len(results) == 1 else results

    def _step(self, node: Node, value: Any, inputs: dict[str, Any], fallbacks: list[str]) -> Any:
        k, p, c = node.kind, node.params, node.config
        single = next(iter(inputs.values())) if len(inputs) == 1 else None
        if k == "input":
            raw = value[node.id] if len(self.workflow.inputs) > 1 else value
            return self._function(node)(raw) if node.source else raw
        if k == "python" or (k == "output" and node.source):
            fn = self._function(node)
            if len(inputs) <= 1:
                return fn(single) if inputs else fn()
            return fn(**inputs)
        if k == "output":
            labels = c.get("labels")
            return ops.label_output(single, labels) if labels else single
        if k == "normalize":
            return ops.normalize(single, p["mean"], p["std"])
        if k in ("dense", "expert"):
            return ops.dense(single, p["kernel"], p["bias"], c.get("activation", "linear"))
        if k == "activation":
            return ops.activate(single, c.get("function", c.get("activation")))
        if k == "softmax":
            return ops.softmax(single)
        if k == "concat":
            return ops.concat(list(inputs.values()))  # upstream() already ordered in0, in1, ...
        if k == "router":
            return ops.router(single, p["kernel"], p["bias"], c.get("topK"))
        if k == "mixture":
            experts = [v for h, v in inputs.items() if h.startswith("expert")]
            return ops.mixture(inputs["gate"], experts)
        if k == "llm":
            prompt = render_prompt(node, inputs if len(inputs) != 1 else {"input": single, **inputs})
            if self.llm is None:
                fallbacks.append(node.id)
                return llm_fallback(prompt)
            completion = self.llm.complete(llm_body(node, prompt), fallback=llm_fallback(prompt))
            if completion.fallback:
                fallbacks.append(node.id)
            return completion.text
        from .plugins import get_registry

        block = get_registry().block_types.get(k)
        if block is not None and block.compute is not None:
            return block.compute(node, inputs)
        raise BlockFailure(node, NotImplementedError(f"block type {k!r} has no compute function"))


def run_workflow(workflow: Workflow, value: Any) -> Any:
    """Run ``workflow`` once on ``value`` and return JSON-compatible output."""
    return Runtime(workflow).run(value)
