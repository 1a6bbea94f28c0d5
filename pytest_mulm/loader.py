"""Loading and validating µLM / React Flow workflow JSON (design.md §4).

Validation happens here, once. Every structural error is a :class:`WorkflowError` whose
single line names the node or edge, the field and what is valid. Blocks that load but
cannot run (a ``sourceCode`` defining no function, say) are collected in
``Workflow.problems``; exporting refuses them with one line each.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .blocks import ACTIVATIONS, NUMERIC_KINDS, BlockType
from .errors import WorkflowError
from .workflow import Edge, Node, Workflow, handle_key

__all__ = ["load_workflow", "parse_workflow"]

# Names µLM blocks use without importing them (the original tool's blocks call re, np and
# json bare). They are imported explicitly for the block and the artifact says so.
IMPLICIT_MODULES = {
    "re": "re", "json": "json", "math": "math", "random": "random", "time": "time",
    "datetime": "datetime", "collections": "collections", "itertools": "itertools",
    "functools": "functools", "statistics": "statistics", "string": "string",
    "np": "numpy", "pd": "pandas",
}
INPUT_TYPES = {"text": "text", "number": "number", "array": "tensor", "tensor": "tensor",
               "object": "object", "image": "any", "file": "any"}
MAX_BYTES = 50 * 1024 * 1024
_BUILTINS = frozenset(dir(builtins))


def load_workflow(path: str | Path, *, block_types: Mapping[str, BlockType] | None = None) -> Workflow:
    """Read, parse and validate a workflow file. Raises :class:`WorkflowError`."""
    p = Path(path)
    where = f"workflow '{p}'"
    if not p.is_file():
        raise WorkflowError("no such file (give the path of a µLM workflow .json)", where=where)
    data = p.read_bytes()
    if len(data) > MAX_BYTES:
        raise WorkflowError(f"file is {len(data)} bytes; the limit is {MAX_BYTES}", where=where)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise WorkflowError(
            f"is not UTF-8 text (byte {exc.start}); expected µLM workflow JSON", where=where
        ) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowError(
            f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", where=where
        ) from None
    except RecursionError:
        raise WorkflowError("is nested too deeply to be a workflow; expected µLM workflow JSON", where=where) from None
    except ValueError as exc:  # e.g. integers longer than Python's digit limit
        raise WorkflowError(f"is not usable JSON: {str(exc).splitlines()[0]}", where=where) from None
    return parse_workflow(doc, base_dir=p.parent, path=p, block_types=block_types)


def parse_workflow(
    doc: Any,
    *,
    base_dir: Path | None = None,
    path: Path | None = None,
    block_types: Mapping[str, BlockType] | None = None,
) -> Workflow:
    """Validate an already-decoded JSON document."""
    if block_types is None:
        from .plugins import get_registry

        block_types = get_registry().block_types
    where = f"workflow '{path}'" if path else "workflow"
    if not isinstance(doc, dict):
        raise WorkflowError(
            f"top level is a JSON {type(doc).__name__}; expected an object with 'nodes' and 'edges'",
            where=where,
        )
    nodes_raw = doc.get("nodes")
    edges_raw = doc.get("edges", [])
    if not isinstance(nodes_raw, list):
        raise WorkflowError("missing or not a list; a workflow needs a list of nodes", where=where, field="nodes")
    if not nodes_raw:
        raise WorkflowError("is empty; a workflow needs at least one block", where=where, field="nodes")
    if not isinstance(edges_raw, list):
        raise WorkflowError("is not a list of edges", where=where, field="edges")

    _reject_surrogates(doc, where)
    base_dir = base_dir or Path.cwd()
    weights_digest = hashlib.sha256()
    raw_nodes = _check_node_ids(nodes_raw)
    edges = _parse_edges(edges_raw, raw_nodes)
    order = _topological_order(list(raw_nodes), edges)
    has_in = {e.target for e in edges}
    has_out = {e.source for e in edges}

    nodes: dict[str, Node] = {}
    problems: list[str] = []
    for nid, raw in raw_nodes.items():
        node, node_problems = _parse_node(
            raw, nid, block_types, is_root=nid not in has_in, is_sink=nid not in has_out,
            base_dir=base_dir, digest=weights_digest,
        )
        nodes[nid] = node
        problems.extend(node_problems)

    inputs = tuple(n for n in order if nodes[n].kind == "input")
    outputs = tuple(n for n in order if nodes[n].kind == "output") or tuple(
        n for n in order if n not in has_out
    )
    if not inputs:
        raise WorkflowError(
            "has no input block; add a node with data.type 'input' (or category 'input')",
            where=where, field="nodes",
        )
    for nid in inputs:
        if nid in has_in:
            edge = next(e for e in edges if e.target == nid)
            raise WorkflowError(
                f"input block has an incoming edge from '{edge.source}'; inputs start the graph",
                where=f"edge '{edge.id}'", field="target",
            )

    _check_ports_and_shapes(nodes, edges, order, block_types)
    examples, synthesized = _examples(nodes, inputs)
    deployment = doc.get("deploymentConfig") if isinstance(doc.get("deploymentConfig"), dict) else {}
    content = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    content_hash = hashlib.sha256(content.encode("utf-8", "surrogatepass") + weights_digest.digest()).hexdigest()
    return Workflow(
        id=_text(doc.get("id")) or (path.stem if path else "workflow"),
        name=_text(doc.get("name")) or _text(doc.get("id")) or (path.stem if path else "workflow"),
        description=_text(doc.get("description")),
        version=_version(doc.get("version")),
        nodes=tuple(nodes[n] for n in order),
        edges=tuple(edges),
        order=tuple(order),
        inputs=inputs,
        outputs=outputs,
        examples=tuple(examples),
        examples_synthesized=synthesized,
        dependencies=tuple(_dependencies(doc.get("dependencies"), where, "dependencies")),
        deployment=deployment,
        content_hash=content_hash,
        problems=tuple(problems),
        path=path,
        raw=doc,
    )


def _reject_surrogates(doc: dict, where: str) -> None:
    # JSON may spell unpaired UTF-16 surrogates (\\ud800); no file or package can hold them
    def bad(value: Any) -> bool:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False

    if not bad(doc):
        return
    for i, node in enumerate(doc.get("nodes") or []):
        if bad(node):
            nid = node.get("id") if isinstance(node, dict) else None
            raise WorkflowError("holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff); text must be valid Unicode",
                                where=f"node '{nid}'" if nid is not None else f"nodes[{i}]")
    raise WorkflowError("holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff); text must be valid Unicode", where=where)


# -- graph structure ---------------------------------------------------------------------


def _check_node_ids(nodes_raw: list) -> dict[str, dict]:
    seen: dict[str, dict] = {}
    for i, raw in enumerate(nodes_raw):
        if not isinstance(raw, dict):
            raise WorkflowError(f"is a JSON {type(raw).__name__}; each node must be an object", where=f"nodes[{i}]")
        nid = raw.get("id")
        if nid is None or nid == "":
            raise WorkflowError("missing; every node needs a unique string id", where=f"nodes[{i}]", field="id")
        if not isinstance(nid, (str, int)) or isinstance(nid, bool):
            raise WorkflowError(f"is {nid!r}; a node id must be a string", where=f"nodes[{i}]", field="id")
        nid = str(nid)
        if nid in seen:
            raise WorkflowError(f"duplicate id; ids must be unique (nodes[{i}] repeats it)", where=f"node '{nid}'", field="id")
        seen[nid] = raw
    return seen


def _parse_edges(edges_raw: list, nodes: Mapping[str, dict]) -> list[Edge]:
    edges: list[Edge] = []
    seen: set[str] = set()
    for i, raw in enumerate(edges_raw):
        if not isinstance(raw, dict):
            raise WorkflowError(f"is a JSON {type(raw).__name__}; each edge must be an object", where=f"edges[{i}]")
        raw_id = raw.get("id")
        eid = f"edges[{i}]" if raw_id is None or raw_id == "" else str(raw_id)
        where = f"edge '{eid}'"
        if eid in seen:
            raise WorkflowError("duplicate id; edge ids must be unique", where=where, field="id")
        seen.add(eid)
        for end in ("source", "target"):
            ref = raw.get(end)
            if ref is None or ref == "":
                raise WorkflowError("missing; an edge connects a source node to a target node", where=where, field=end)
            if str(ref) not in nodes:
                known = ", ".join(list(nodes)[:12])
                raise WorkflowError(f"points to unknown node '{ref}'; known nodes: {known}", where=where, field=end)
        handle = raw.get("targetHandle")
        edges.append(Edge(eid, str(raw["source"]), str(raw["target"]), str(handle) if handle not in (None, "") else None))
    return edges


def _topological_order(ids: list[str], edges: list[Edge]) -> list[str]:
    indeg = {n: 0 for n in ids}
    succ: dict[str, list[str]] = {n: [] for n in ids}
    for e in edges:
        indeg[e.target] += 1
        succ[e.source].append(e.target)
    # Kahn's algorithm keeping file order among ready nodes: deterministic output.
    ready = [n for n in ids if indeg[n] == 0]
    order: list[str] = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for m in succ[n]:
            indeg[m] -= 1
            if indeg[m] == 0:
                ready.append(m)
    if len(order) != len(ids):
        cycle = _find_cycle([n for n in ids if indeg[n] > 0], succ)
        raise WorkflowError(
            f"the graph has a cycle: {' -> '.join(cycle)}; workflows must be acyclic (remove one of these edges)",
            where=f"node '{cycle[0]}'", field="edges",
        )
    return order


def _find_cycle(candidates: list[str], succ: Mapping[str, list[str]]) -> list[str]:
    remaining = set(candidates)
    # Nodes left after Kahn's algorithm are on a cycle or downstream of one; prune the
    # downstream ones (no successor left) so every walk below must close a cycle.
    pruned = True
    while pruned:
        pruned = False
        for n in list(remaining):
            if not any(m in remaining for m in succ[n]):
                remaining.discard(n)
                pruned = True
    candidates = [n for n in candidates if n in remaining]
    for start in candidates:
        path, index = [start], {start: 0}
        node = start
        while True:
            nxt = next((m for m in succ[node] if m in remaining), None)
            if nxt is None:
                break
            if nxt in index:
                return path[index[nxt]:] + [nxt]
            index[nxt] = len(path)
            path.append(nxt)
            node = nxt
    return candidates[:1] * 2


# -- nodes -------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _version(value: Any) -> str:
    text = _text(value) or "0.1.0"
    import re

    return text if re.fullmatch(r"\d+(\.\d+){0,3}", text) else "0.1.0"


def _resolve_kind(raw: dict, data: dict, block_types: Mapping[str, BlockType], *, is_root: bool, is_sink: bool) -> str:
    dtype = data.get("type")
    if not isinstance(dtype, str) or not dtype:
        # bare React Flow nodes may carry the block type on the node itself
        top = raw.get("type")
        dtype = top if isinstance(top, str) and top not in ("aiBlock", "default", "custom") else ""
    category = _text(data.get("category"))
    if dtype in block_types and dtype != "python":
        return dtype
    if category == "input" and is_root:
        return "input"
    if category == "output" and is_sink:
        return "output"
    if isinstance(data.get("sourceCode"), str) and data["sourceCode"].strip():
        return "python"
    config = data.get("config")
    if dtype == "python" or (isinstance(config, dict) and config.get("generate")):
        return "python"
    return ""


def _parse_node(raw: dict, nid: str, block_types: Mapping[str, BlockType], *, is_root: bool,
                is_sink: bool, base_dir: Path, digest: Any) -> tuple[Node, list[str]]:
    data = raw.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WorkflowError(f"is a JSON {type(data).__name__}; expected an object", where=f"node '{nid}'", field="data")
    # bare format: config may sit on the node itself
    config = data.get("config", raw.get("config", {}))
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise WorkflowError(f"is a JSON {type(config).__name__}; expected an object", where=f"node '{nid}'", field="data.config")
    label = _text(data.get("label")) or nid
    where = f"node '{nid}'"
    kind = _resolve_kind(raw, data, block_types, is_root=is_root, is_sink=is_sink)
    if not kind:
        known = ", ".join(sorted(k for k in block_types))
        shown = data.get("type", raw.get("type"))
        raise WorkflowError(
            f"unknown block type {shown!r}; known types: {known} (or give the block sourceCode)",
            where=where, field="data.type",
        )
    source = data.get("sourceCode", raw.get("sourceCode"))
    if source is not None and not isinstance(source, str):
        raise WorkflowError(f"is a JSON {type(source).__name__}; expected Python source text", where=where, field="data.sourceCode")
    problems: list[str] = []
    entrypoint = None
    implicit: tuple[tuple[str, str], ...] = ()
    uses_source = kind in ("python", "input", "output") and source is not None and source.strip() != ""
    if uses_source:
        entrypoint, implicit, problem = _analyse_source(source, nid, label, config)
        if problem:
            problems.append(problem)
    elif kind == "python" and config.get("generate"):
        problems.append(
            f"node '{nid}' ({label}): generated block (config.generate) has no code yet: pytest-mulm writes it "
            "through the LLM layer when it exports (pytest --mulm-workflow, mulm export); or give it sourceCode"
        )
    elif kind == "python":
        problems.append(f"node '{nid}' ({label}): Python block without sourceCode; give it sourceCode defining one function")
    for key, deps in (("data.config.dependencies", config.get("dependencies")),
                      ("data.metadata.dependencies", (data.get("metadata") or {}).get("dependencies") if isinstance(data.get("metadata"), dict) else None)):
        _dependencies(deps, where, key)
    params = _numeric_params(kind, config, where, base_dir, digest) if kind in NUMERIC_KINDS else {}
    if kind == "llm":
        _check_llm(config, where)
    node = Node(
        id=nid, kind=kind, label=label, description=_text(data.get("description")),
        category=_text(data.get("category")), config=config,
        source=source if uses_source else None, entrypoint=entrypoint,
        implicit_imports=implicit, params=params, raw_type=_text(data.get("type")),
    )
    return node, problems


def _analyse_source(source: str, nid: str, label: str, config: Mapping) -> tuple[str | None, tuple, str | None]:
    where = f"node '{nid}'"
    try:
        tree = ast.parse(source, filename=f"<block {nid}>")
    except SyntaxError as exc:
        line = (exc.text or "").strip()
        at = f" at line {exc.lineno}" if exc.lineno else ""
        raise WorkflowError(
            f"does not parse: {exc.msg}{at}" + (f": {line[:60]!r}" if line else ""),
            where=where, field="data.sourceCode",
        ) from None
    except ValueError as exc:  # NUL bytes
        raise WorkflowError(f"does not parse: {exc}", where=where, field="data.sourceCode") from None
    funcs = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    public = [f for f in funcs if not f.startswith("_")]
    wanted = config.get("entrypoint")
    if wanted is not None and (not isinstance(wanted, str) or not wanted.isidentifier()):
        raise WorkflowError(f"is {wanted!r}; give the name of a function defined in sourceCode", where=where, field="data.config.entrypoint")
    title = f"node '{nid}' ({label})"
    if wanted:
        if wanted not in funcs:
            return None, (), f"{title}: config.entrypoint {wanted!r} is not defined in sourceCode (defined: {', '.join(funcs) or 'none'})"
        entry = wanted
    elif len(public) == 1:
        entry = public[0]
    elif not public:
        return None, (), f"{title}: sourceCode defines no function to call; define one public function or set config.entrypoint"
    else:
        return None, (), f"{title}: sourceCode defines several public functions ({', '.join(public)}); set config.entrypoint to one of them"
    return entry, _implicit_imports(tree), None


def _implicit_imports(tree: ast.Module) -> tuple[tuple[str, str], ...]:
    bound: set[str] = set()
    loaded: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name):
            (loaded if isinstance(n.ctx, ast.Load) else bound).add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(n.name)
            if not isinstance(n, ast.ClassDef):
                for a in n.args.args + n.args.kwonlyargs + n.args.posonlyargs:
                    bound.add(a.arg)
                for a in (n.args.vararg, n.args.kwarg):
                    if a:
                        bound.add(a.arg)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            for alias in n.names:
                bound.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(n, ast.arg):
            bound.add(n.arg)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            bound.add(n.name)
    free = loaded - bound - _BUILTINS
    return tuple(sorted((name, IMPLICIT_MODULES[name]) for name in free if name in IMPLICIT_MODULES))


def _check_llm(config: Mapping, where: str) -> None:
    template = config.get("promptTemplate", "{{ input }}")
    if not isinstance(template, str):
        raise WorkflowError("must be a string (a Jinja2 template)", where=where, field="data.config.promptTemplate")
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import SandboxedEnvironment

    try:
        SandboxedEnvironment().parse(template)
    except TemplateSyntaxError as exc:
        raise WorkflowError(f"does not parse: {exc.message} at line {exc.lineno}", where=where, field="data.config.promptTemplate") from None


# -- numeric blocks ----------------------------------------------------------------------


def _array(value: Any, where: str, field: str, ndim: int) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise WorkflowError(f"is not a numeric {'matrix' if ndim == 2 else 'list'}", where=where, field=field) from None
    if arr.ndim != ndim:
        raise WorkflowError(f"has {arr.ndim} dimension(s); expected {ndim}", where=where, field=field)
    if not np.all(np.isfinite(arr)):
        raise WorkflowError("holds NaN or infinity; weights must be finite", where=where, field=field)
    return arr


def _load_npz(config: Mapping, where: str, base_dir: Path, digest: Any) -> dict[str, np.ndarray]:
    name = config.get("weightsFile")
    if not isinstance(name, str) or not name:
        raise WorkflowError("must name an .npz file next to the workflow", where=where, field="data.config.weightsFile")
    base = base_dir.resolve()
    target = (base / name).resolve()
    if base not in target.parents or target.suffix != ".npz":
        raise WorkflowError(f"{name!r} must be a relative path to an .npz file inside the workflow's folder", where=where, field="data.config.weightsFile")
    if not target.is_file():
        raise WorkflowError(f"{name!r} not found next to the workflow ({base})", where=where, field="data.config.weightsFile")
    blob = target.read_bytes()
    digest.update(name.encode() + hashlib.sha256(blob).digest())
    try:
        with np.load(target, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # a corrupt file gives zipfile/ValueError/OSError variants
        raise WorkflowError(f"{name!r} is not a readable .npz ({type(exc).__name__})", where=where, field="data.config.weightsFile") from None
    key = config.get("weightsKey", "")
    prefix = f"{key}/" if key else ""
    picked = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    if not picked:
        raise WorkflowError(
            f"no arrays named '{prefix}*' in {name!r} (it has: {', '.join(sorted(arrays)[:10])})",
            where=where, field="data.config.weightsKey",
        )
    return picked


def _numeric_params(kind: str, config: Mapping, where: str, base_dir: Path, digest: Any) -> dict[str, np.ndarray]:
    if kind in ("dense", "expert", "router"):
        if "weightsFile" in config:
            src = _load_npz(config, where, base_dir, digest)
            field_base = "data.config.weightsFile"
        else:
            src = config.get("weights")
            field_base = "data.config.weights"
            if not isinstance(src, dict):
                raise WorkflowError("missing; give {'kernel': [[...]], 'bias': [...]} or a weightsFile", where=where, field=field_base)
        for part in ("kernel", "bias"):
            if part not in src:
                raise WorkflowError(f"has no '{part}'; dense weights need 'kernel' [in, units] and 'bias' [units]", where=where, field=field_base)
        kernel = _array(src["kernel"], where, f"{field_base}.kernel", 2)
        bias = _array(src["bias"], where, f"{field_base}.bias", 1)
        if bias.shape[0] != kernel.shape[1]:
            raise WorkflowError(f"bias has {bias.shape[0]} values but kernel has {kernel.shape[1]} units; they must match", where=where, field=f"{field_base}.bias")
        units_key = "experts" if kind == "router" else "units"
        units = config.get(units_key)
        if units is not None and units != kernel.shape[1]:
            raise WorkflowError(f"is {units!r} but the kernel has {kernel.shape[1]} columns", where=where, field=f"data.config.{units_key}")
        act = config.get("activation", "linear")
        if kind != "router" and act not in ACTIVATIONS:
            raise WorkflowError(f"is {act!r}; valid: {', '.join(ACTIVATIONS)}", where=where, field="data.config.activation")
        top_k = config.get("topK")
        if kind == "router" and top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= kernel.shape[1]):
            raise WorkflowError(f"is {top_k!r}; must be a whole number from 1 to {kernel.shape[1]} (the number of experts)", where=where, field="data.config.topK")
        return {"kernel": kernel, "bias": bias}
    if kind == "normalize":
        mean = _array(config.get("mean"), where, "data.config.mean", 1)
        std = _array(config.get("std"), where, "data.config.std", 1)
        if mean.shape != std.shape:
            raise WorkflowError(f"has {std.shape[0]} values but mean has {mean.shape[0]}; they must match", where=where, field="data.config.std")
        if np.any(std == 0):
            raise WorkflowError("contains 0; division by zero", where=where, field="data.config.std")
        return {"mean": mean, "std": std}
    if kind == "activation":
        fn = config.get("function", config.get("activation"))
        if fn not in ACTIVATIONS:
            raise WorkflowError(f"is {fn!r}; valid: {', '.join(ACTIVATIONS)}", where=where, field="data.config.function")
    if kind in ("softmax", "concat") and config.get("axis", -1) != -1:
        raise WorkflowError(f"is {config.get('axis')!r}; only -1 (the feature axis) is supported", where=where, field="data.config.axis")
    return {}


# -- ports and shapes --------------------------------------------------------------------


def _port_type(node: Node) -> str:
    if node.kind == "input":
        if node.source:
            return "any"
        return INPUT_TYPES.get(_text(node.config.get("inputType")) or "any", "any")
    if node.kind in NUMERIC_KINDS:
        return "tensor"
    if node.kind == "llm":
        return "text"
    return "any"


def _check_ports_and_shapes(nodes: Mapping[str, Node], edges: list[Edge], order: list[str], block_types: Mapping[str, BlockType]) -> None:
    dims: dict[str, int | None] = {}
    for nid in order:
        node = nodes[nid]
        incoming = sorted((e for e in edges if e.target == nid), key=lambda e: handle_key(e.target_handle))
        block = block_types.get(node.kind)
        if block is not None:
            for e in incoming:
                src_type = _port_type(nodes[e.source])
                if not block.connects_from(src_type):
                    raise WorkflowError(
                        f"carries {src_type} from '{e.source}' but {node.kind} block '{nid}' takes {', '.join(block.accepts)}; "
                        "put a Python block between them to convert",
                        where=f"edge '{e.id}'", field="target",
                    )
        dims[nid] = _shape_step(node, incoming, nodes, dims)


def _shape_step(node: Node, incoming: list[Edge], nodes: Mapping[str, Node], dims: dict[str, int | None]) -> int | None:
    where = f"node '{node.id}'"
    ins = [dims.get(e.source) for e in incoming]
    k = node.kind
    if k == "input":
        shape = node.config.get("shape")
        if isinstance(shape, list) and shape and isinstance(shape[-1], int):
            return shape[-1]
        ex = node.config.get("examples")
        if not node.source and isinstance(ex, list) and ex and isinstance(ex[0], list) and ex[0] and not isinstance(ex[0][0], list):
            return len(ex[0])
        return None
    if k in NUMERIC_KINDS and k not in ("concat", "mixture") and len(incoming) != 1:
        raise WorkflowError(f"{k} blocks take exactly one input; this one has {len(incoming)}", where=where, field="edges")
    d = ins[0] if ins else None
    if k == "normalize":
        n = node.params["mean"].shape[0]
        if d is not None and d != n:
            raise WorkflowError(f"has {n} values but the upstream value has {d} features", where=where, field="data.config.mean")
        return n
    if k in ("dense", "expert", "router"):
        kin, units = node.params["kernel"].shape
        if d is not None and d != kin:
            raise WorkflowError(
                f"has shape [{kin}, {units}] but the upstream value has {d} features; kernel shape must be [{d}, units]",
                where=where, field="data.config.weights.kernel",
            )
        return units
    if k in ("activation", "softmax"):
        return d
    if k == "concat":
        return sum(ins) if ins and all(i is not None for i in ins) else None  # type: ignore[arg-type]
    if k == "mixture":
        return _mixture_shape(node, incoming, nodes, dims)
    if k == "output":
        labels = node.config.get("labels")
        if labels is not None:
            if not isinstance(labels, list) or not labels:
                raise WorkflowError("must be a non-empty list of label strings", where=where, field="data.config.labels")
            if d is not None and d != len(labels):
                raise WorkflowError(f"has {len(labels)} labels but the upstream value has {d} values", where=where, field="data.config.labels")
        return d
    return None


def _mixture_shape(node: Node, incoming: list[Edge], nodes: Mapping[str, Node], dims: dict[str, int | None]) -> int | None:
    where = f"node '{node.id}'"
    gate = [e for e in incoming if e.target_handle == "gate"]
    experts = [e for e in incoming if (e.target_handle or "").startswith("expert")]
    if len(gate) != 1:
        raise WorkflowError("needs exactly one edge with targetHandle 'gate' from a router", where=where, field="edges")
    if not experts or len(experts) + 1 != len(incoming):
        raise WorkflowError("expert edges need targetHandle 'expert0', 'expert1', ...", where=where, field="edges")
    n_gate = dims.get(gate[0].source)
    if n_gate is not None and n_gate != len(experts):
        raise WorkflowError(f"the gate has {n_gate} experts but {len(experts)} expert edges arrive", where=where, field="edges")
    expert_dims = {dims.get(e.source) for e in experts}
    if len(expert_dims) > 1 and None not in expert_dims:
        raise WorkflowError(f"experts give different widths {sorted(expert_dims)}; they must all match", where=where, field="edges")
    return next(iter(expert_dims)) if len(expert_dims) == 1 else None


# -- examples and dependencies -------------------------------------------------------------


def _examples(nodes: Mapping[str, Node], inputs: tuple[str, ...]) -> tuple[list[Any], bool]:
    per_input: dict[str, list] = {}
    for nid in inputs:
        ex = nodes[nid].config.get("examples")
        if ex is not None and not isinstance(ex, list):
            raise WorkflowError("must be a list of example input values", where=f"node '{nid}'", field="data.config.examples")
        per_input[nid] = list(ex or [])
    synthesized = not any(per_input.values())
    if synthesized:
        per_input = {nid: [_synthesize(nodes[nid])] for nid in inputs}
    count = min(len(v) for v in per_input.values()) if all(per_input.values()) else 0
    if count == 0:
        missing = [nid for nid, v in per_input.items() if not v]
        raise WorkflowError("has no examples while other inputs do; give every input the same number of examples", where=f"node '{missing[0]}'", field="data.config.examples")
    if len(inputs) == 1:
        return per_input[inputs[0]][:count], synthesized
    return [{nid: per_input[nid][i] for nid in inputs} for i in range(count)], synthesized


def _synthesize(node: Node) -> Any:
    kind = _text(node.config.get("inputType")) or "text"
    shape = node.config.get("shape")
    if kind in ("tensor", "array") and isinstance(shape, list) and shape and all(isinstance(s, int) and s > 0 for s in shape):
        return np.zeros(shape, dtype=np.float32).tolist()
    if kind == "number":
        return 0
    if kind == "object":
        return {}
    return "This is an example input."


def _dependencies(value: Any, where: str, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise WorkflowError('must be a list of requirement strings such as "jinja2==3.1.6"', where=where, field=field)
    from .deps import check_requirement

    for req in value:
        check_requirement(req, where=where, field=field)
    return list(value)
