"""The workflow library every code-shipping format embeds: straight-line Python.

The workflow becomes ``pipeline.py`` (one statement per block, in topological order).
Every workflow string reaches generated code only as a ``repr`` literal or a sanitised
identifier; block source code is copied into its own module under ``blocks/``; weights
go to ``weights.npz``; the numeric primitives are a verbatim copy of
:mod:`pytest_mulm.ops` so the library depends on numpy alone (and only when it has
numeric blocks). ``python-package`` ships it with a CLI, ``fastapi-service`` behind an
HTTP API.
"""

from __future__ import annotations

import ast
import io
import json
import sys
from importlib import resources
from typing import Any

import numpy as np

from pytest_mulm import __version__
from pytest_mulm.deps import distribution_for, imports_of, requirements_for
from pytest_mulm.exporter import ExportContext
from pytest_mulm.naming import identifier, one_line, slugify
from pytest_mulm.ops import to_jsonable
from pytest_mulm.runtime import BlockFailure, Runtime, llm_model, llm_params
from pytest_mulm.workflow import Node, Workflow

LIBRARY_TEMPLATES = "python-package"

# import names the package must never take: it would shadow them, or depend on itself
RESERVED = frozenset({"pytest", "numpy", "jinja2", "setuptools", "pip", "wheel", "test", "tests", "src", "site"})


def names_for(workflow: Workflow) -> dict[str, str]:
    dist = slugify(workflow.name or workflow.id)
    package = identifier(dist, prefix="wf")
    taken = RESERVED | set(sys.stdlib_module_names) | {
        distribution_for(m) or "" for n in workflow.nodes if n.source for m in imports_of(n.source)
    } | {m.split(".")[0] for n in workflow.nodes if n.source for m in imports_of(n.source)}
    if package in taken or dist in taken:
        dist, package = f"{dist}-workflow", f"{package}_workflow"
    return {"dist": dist, "package": package, "command": dist}


def library_requirements(workflow: Workflow, extra: tuple[str, ...] = ()) -> list[str]:
    """The library's pinned requirements, plus ``extra`` distributions (pinned the same way)."""
    llm = ("jinja2",) if any(n.kind == "llm" for n in workflow.nodes) else ()
    return requirements_for(workflow, extra=[*llm, *extra])


def write_library(ctx: ExportContext, pkg: str, names: dict[str, str], *, model: Any = None) -> dict[str, Any]:
    """Write the workflow library into ``pkg`` (a folder under the output); return the
    template variables shared by the format's other files.

    With ``model`` (a :class:`~exporters.edge_subgraph.NumericSubgraph`) the numeric
    blocks are not generated: one call of the edge model (``edge_model.py``, shipped by
    the caller) replaces them.
    """
    wf = ctx.workflow
    variables = _variables(wf)
    block_modules = _write_blocks(ctx, wf, pkg, variables)
    if wf.has_numeric and model is None:
        ctx.write_bytes(f"{pkg}/weights.npz", _weights_npz(wf, variables))
    examples = _examples_with_expected(wf)
    ctx.write_json(f"{pkg}/examples.json", examples)
    common = {
        "names": names, "requirements": library_requirements(wf), "examples": examples,
        "mulm_version": __version__, "has_llm": any(n.kind == "llm" for n in wf.nodes),
        "fallback_examples": wf.examples_synthesized,
    }
    ctx.write_text(f"{pkg}/_ops.py", resources.files("pytest_mulm").joinpath("ops.py").read_text(encoding="utf-8"))
    ctx.render("pipeline.py.jinja", f"{pkg}/pipeline.py", folder=LIBRARY_TEMPLATES,
               body=_pipeline_body(wf, variables, block_modules, model), returns=_returns(wf, variables),
               block_modules=sorted(set(block_modules.values())), edge_model=model is not None, **common)
    ctx.render("__init__.py.jinja", f"{pkg}/__init__.py", folder=LIBRARY_TEMPLATES, **common)
    if common["has_llm"]:
        ctx.render("llm.py.jinja", f"{pkg}/llm.py", folder=LIBRARY_TEMPLATES, **common)
    ctx.write_text(f"{pkg}/blocks/__init__.py", '"""The workflow\'s Python blocks, one module each, copied from the workflow."""\n')
    return common


# -- code generation -------------------------------------------------------------------------


def _variables(wf: Workflow) -> dict[str, str]:
    """One unique Python identifier per node id."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for node in wf.nodes:
        base = identifier(node.id, prefix="n")
        name, i = base, 2
        while name in used:
            name, i = f"{base}_{i}", i + 1
        used.add(name)
        out[node.id] = name
    return out


def _write_blocks(ctx: ExportContext, wf: Workflow, pkg: str, variables: dict[str, str]) -> dict[str, str]:
    modules: dict[str, str] = {}
    for node in wf.nodes:
        if not node.source:
            continue
        mod = f"b_{variables[node.id]}"
        modules[node.id] = mod
        origin = ("written from its spec (config.generate) by pytest-mulm's LLM layer and checked against its examples"
                  if node.config.get("generate") else "copied verbatim from the workflow by pytest-mulm")
        header = [f"# Block {one_line(node.title)} {origin}."]
        imports = [f"import {m} as {n}" if n != m else f"import {m}" for n, m in node.implicit_imports]
        if imports:
            header.append("# The block uses these names without importing them; imported here explicitly.")
        source = node.source or ""
        if "__future__" in source:  # __future__ imports must stay first: add ours at the end
            text = "\n".join(header) + "\n" + source.rstrip() + "\n\n" + "\n".join(imports) + "\n"
        else:
            text = "\n".join(header + imports) + "\n\n" + source.strip("\n") + "\n"
        ctx.write_text(f"{pkg}/blocks/{mod}.py", text)
    return modules


def _weights_npz(wf: Workflow, variables: dict[str, str]) -> bytes:
    arrays = {f"{variables[n.id]}__{k}": v for n in wf.nodes for k, v in n.params.items()}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _pipeline_body(wf: Workflow, variables: dict[str, str], modules: dict[str, str], model: Any = None) -> list[str]:
    lines: list[str] = []
    multi = len(wf.inputs) > 1
    inside = set(model.nodes) if model is not None else set()
    pending = model is not None
    for nid in wf.order:
        node = wf.node(nid)
        if nid in inside:
            continue
        if pending and any(e.source in inside for e in wf.upstream(nid)):
            lines.extend(_model_call(model, variables))
            pending = False
        v = f"v_{variables[nid]}"
        ins = {(e.target_handle or e.source): f"v_{variables[e.source]}" for e in wf.upstream(nid)}
        first = next(iter(ins.values()), "None")
        lines.append(f"# {node.kind}: {one_line(node.title)}")
        lines.append(f"{v} = {_expression(node, variables, modules, ins, first, multi)}")
    if pending:  # the model's values end the workflow
        lines.extend(_model_call(model, variables))
    return lines


def _model_call(model: Any, variables: dict[str, str]) -> list[str]:
    """One call of the edge model in place of every numeric block (names are sanitised)."""
    feeds = ", ".join(f"{model.names[src]!r}: v_{variables[src]}" for src, _ in model.inputs)
    lines = ["# the numeric blocks, as one edge model", f"_outs = edge_model().run({{{feeds}}})"]
    lines += [f"v_{variables[out]} = _outs[{model.names[out]!r}]" for out in model.outputs]
    return lines


def _returns(wf: Workflow, variables: dict[str, str]) -> str:
    if len(wf.outputs) == 1:
        return f"ops.to_jsonable(v_{variables[wf.outputs[0]]})"
    items = ", ".join(f"{o!r}: ops.to_jsonable(v_{variables[o]})" for o in wf.outputs)
    return "{" + items + "}"


def _call(node: Node, modules: dict[str, str], ins: dict[str, str]) -> str:
    fn = f"{modules[node.id]}.{node.entrypoint}"
    if not ins:
        return f"_call({node.title!r}, {fn})"
    if len(ins) == 1:
        return f"_call({node.title!r}, {fn}, {next(iter(ins.values()))})"
    kwargs = ", ".join(f"{k!r}: {val}" for k, val in ins.items())
    return f"_call({node.title!r}, {fn}, **{{{kwargs}}})"


def _expression(node: Node, variables: dict[str, str], modules: dict[str, str], ins: dict[str, str], first: str, multi: bool) -> str:
    k, c = node.kind, node.config
    w = variables[node.id]
    if k == "input":
        raw = f"value[{node.id!r}]" if multi else "value"
        return _call(node, modules, {"value": raw}) if node.source else raw
    if k == "python" or (k == "output" and node.source):
        return _call(node, modules, ins)
    if k == "output":
        labels = c.get("labels")
        return f"ops.label_output({first}, {list(map(str, labels))!r})" if labels else first
    if k == "normalize":
        return f"ops.normalize({first}, W[{w + '__mean'!r}], W[{w + '__std'!r}])"
    if k in ("dense", "expert"):
        return f"ops.dense({first}, W[{w + '__kernel'!r}], W[{w + '__bias'!r}], {c.get('activation', 'linear')!r})"
    if k == "activation":
        return f"ops.activate({first}, {c.get('function', c.get('activation'))!r})"
    if k == "softmax":
        return f"ops.softmax({first})"
    if k == "concat":
        return f"ops.concat([{', '.join(ins.values())}])"
    if k == "router":
        return f"ops.router({first}, W[{w + '__kernel'!r}], W[{w + '__bias'!r}], {c.get('topK')!r})"
    if k == "mixture":
        experts = [val for h, val in ins.items() if h.startswith("expert")]
        return f"ops.mixture({ins['gate']}, [{', '.join(experts)}])"
    if k == "llm":
        names = {"input": first, **ins} if len(ins) == 1 else ins
        mapping = ", ".join(f"{h!r}: {val}" for h, val in names.items())
        temperature, max_tokens = llm_params(node)
        return (
            f"llm.complete({node.id!r}, {c.get('promptTemplate', '{{ input }}')!r}, {{{mapping}}}, "
            f"system={str(c.get('systemPrompt', ''))!r}, model={llm_model(node)!r}, "
            f"temperature={temperature!r}, max_tokens={max_tokens!r})"
        )
    raise NotImplementedError(k)  # refused earlier by supported_blocks


def _examples_with_expected(wf: Workflow) -> list[dict[str, Any]]:
    """The workflow's examples with the reference runtime's answer, for the generated tests."""
    runtime = Runtime(wf)
    out = []
    for value in wf.examples:
        entry: dict[str, Any] = {"input": to_jsonable(value)}
        try:
            entry["expected"] = runtime.run(value)
        except BlockFailure as exc:
            entry["reference_error"] = str(exc)
        except Exception as exc:  # the reference could not run here; the suite reports it
            entry["reference_error"] = f"{type(exc).__name__}: {exc}"
        out.append(entry)
    if wf.examples_synthesized:
        for entry in out:
            entry["synthesized"] = True
    return json.loads(json.dumps(out, allow_nan=True))


def api_reference(ctx: ExportContext, pkg: str, package: str) -> list[dict[str, Any]]:
    """Docstrings of the generated modules, read with ast (nothing is imported)."""
    modules = []
    for rel in sorted(p for p in ctx.written if p.startswith(pkg) and p.endswith(".py")):
        tree = ast.parse(ctx.path(rel).read_text(encoding="utf-8"))
        dotted = package + "." + rel[len(pkg) + 1 : -3].replace("/", ".")
        dotted = dotted.removesuffix(".__init__")
        items = []
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                sig = f"({ast.unparse(node.args)})" if isinstance(node, ast.FunctionDef) else ""
                items.append({"name": node.name, "signature": sig, "doc": ast.get_docstring(node) or ""})
        modules.append({"name": dotted, "doc": ast.get_docstring(tree) or "", "items": items})
    return modules
