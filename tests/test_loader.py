"""Loading and validating workflow JSON (design.md §4 and §10).

Every bad workflow is one ``WorkflowError`` line naming the node or edge, the field and
what is valid; blocks that load but cannot run end up in ``Workflow.problems``.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest

from pytest_mulm.blocks import builtin_block_types
from pytest_mulm.errors import WorkflowError
from pytest_mulm.loader import load_workflow, parse_workflow

HERE = Path(__file__).parent
ORIGINALS = Path("/work/shared/mulm-original")
ORIGINAL_NAMES = ["data-pipeline", "document-qa-rag", "image-classification", "sentiment-analysis-pipeline"]


# -- builders ------------------------------------------------------------------------------


def node(nid, type_, config=None, **data):
    """A node as µLM writes it: React Flow type 'aiBlock', the block type in data.type."""
    return {"id": nid, "type": "aiBlock", "position": {"x": 0, "y": 0},
            "data": {"label": nid, "type": type_, "config": config or {}, **data}}


def text_input(nid="in", **config):
    return node(nid, "input", {"inputType": "text", **config})


def tensor_input(nid="in", width=4, **config):
    return node(nid, "input", {"inputType": "tensor", "shape": [width], **config})


def python(nid, source, type_="python", **config):
    return node(nid, type_, config, sourceCode=source)


def dense(nid, kin, units, type_="dense", **config):
    weights = {"kernel": [[0.1] * units for _ in range(kin)], "bias": [0.0] * units}
    return node(nid, type_, {"units": units, "weights": weights, **config})


def router(nid, kin, experts, **config):
    weights = {"kernel": [[0.0] * experts for _ in range(kin)], "bias": [0.0] * experts}
    return node(nid, "router", {"experts": experts, "weights": weights, **config})


def output(nid="out", **config):
    return node(nid, "output", config)


def edge(source, target, eid=None, handle=None):
    return {"id": eid or f"{source}-{target}", "source": source, "target": target,
            "sourceHandle": None, "targetHandle": handle}


def wf(nodes, edges, **top):
    return {"nodes": nodes, "edges": edges, **top}


def chain(*nodes, **top):
    """A straight pipeline: each node feeds the next."""
    ids = [n["id"] for n in nodes]
    return wf(list(nodes), [edge(a, b) for a, b in itertools.pairwise(ids)], **top)


IDENTITY = "def f(x):\n    return x\n"


def write(tmp_path, doc, name="workflow.json"):
    """Write ``doc`` as JSON, or ``bytes`` exactly as given."""
    path = tmp_path / name
    path.write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
    return path


def load(tmp_path, doc):
    return load_workflow(write(tmp_path, doc))


def load_error(tmp_path, doc, *parts):
    """Load ``doc`` expecting a WorkflowError: one line that mentions every part."""
    with pytest.raises(WorkflowError) as info:
        load(tmp_path, doc)
    message = str(info.value)
    assert "\n" not in message, f"message is not one line: {message!r}"
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


# -- error kinds: the file ------------------------------------------------------------------


def test_not_json(tmp_path):
    load_error(tmp_path, b'{"nodes": [', "workflow.json", "is not valid JSON", "line 1")


@pytest.mark.parametrize("doc", [[1, 2], "just a string"], ids=["list", "string"])
def test_top_level_not_an_object(tmp_path, doc):
    kind = type(doc).__name__
    load_error(tmp_path, doc, "workflow.json", f"top level is a JSON {kind}", "expected an object with 'nodes' and 'edges'")


def test_binary_garbage(tmp_path):
    garbage = b"\xff\xfe\x00\x80\xc3\x28" + os.urandom(256)  # never valid UTF-8
    load_error(tmp_path, garbage, "workflow.json", "not UTF-8", "expected µLM workflow JSON")


@pytest.mark.parametrize(
    "text",
    [b"[" * 100_000, b'{"nodes": [' + b"1" * 5000 + b"]}"],
    ids=["nested-100k-deep", "5000-digit-integer"],
)
def test_pathological_json_is_a_workflow_error_not_a_traceback(tmp_path, text):
    # design.md §10: a bad workflow is one line, never a traceback
    load_error(tmp_path, text, "workflow.json")


# -- error kinds: graph structure -------------------------------------------------------------


def test_empty_graph(tmp_path):
    load_error(tmp_path, wf([], []), "nodes", "empty", "at least one block")


def test_nodes_missing(tmp_path):
    load_error(tmp_path, {"edges": []}, "nodes", "missing", "a list of nodes")


def test_missing_node_id(tmp_path):
    nameless = text_input()
    del nameless["id"]
    load_error(tmp_path, wf([text_input("a"), nameless], []), "nodes[1]", "id", "unique string id")


def test_duplicate_node_id(tmp_path):
    load_error(tmp_path, wf([text_input("a"), output("a")], []), "node 'a'", "id", "duplicate", "must be unique")


def test_duplicate_edge_id(tmp_path):
    doc = wf([text_input(), output()], [edge("in", "out", "e1"), edge("in", "out", "e1")])
    load_error(tmp_path, doc, "edge 'e1'", "id", "duplicate", "must be unique")


def test_cycle_names_its_path(tmp_path):
    doc = wf([text_input(), python("a", IDENTITY), python("b", IDENTITY), output()],
             [edge("in", "a"), edge("a", "b"), edge("b", "a"), edge("b", "out")])
    load_error(tmp_path, doc, "node 'a'", "edges", "a -> b -> a", "acyclic")


def test_dangling_edge(tmp_path):
    doc = wf([text_input(), output()], [edge("in", "ghost", "e1")])
    load_error(tmp_path, doc, "edge 'e1'", "target", "'ghost'", "known nodes: in, out")


def test_edge_missing_source(tmp_path):
    doc = wf([text_input(), output()], [{"id": "e1", "target": "out"}])
    load_error(tmp_path, doc, "edge 'e1'", "source", "missing", "connects a source node to a target node")


def test_no_input_block(tmp_path):
    load_error(tmp_path, chain(python("p", IDENTITY), output()), "nodes", "no input block", "data.type 'input'")


# -- error kinds: blocks ----------------------------------------------------------------------


def test_unknown_block_type_lists_known_types(tmp_path):
    message = load_error(tmp_path, chain(text_input(), node("x", "wizard"), output()),
                         "node 'x'", "data.type", "'wizard'", "known types:")
    known = message.split("known types:")[1]
    for name in builtin_block_types():
        assert name in known


def test_unparsable_source_code_gives_its_line(tmp_path):
    source = "def f(x):\n    return x +\n"
    load_error(tmp_path, chain(text_input(), python("p", source), output()),
               "node 'p'", "data.sourceCode", "does not parse", "line 2")


def test_weights_that_do_not_chain(tmp_path):
    doc = chain(tensor_input(width=4), dense("d", 3, 4), output())
    load_error(tmp_path, doc, "node 'd'", "data.config.weights.kernel", "[3, 4]", "4 features", "must be [4, units]")


def test_bias_kernel_mismatch(tmp_path):
    d = dense("d", 4, 3)
    d["data"]["config"]["weights"]["bias"] = [0.0, 0.0]
    load_error(tmp_path, chain(tensor_input(), d, output()),
               "node 'd'", "data.config.weights.bias", "2 values", "3 units", "must match")


def test_normalize_mean_std_length_mismatch(tmp_path):
    norm = node("n", "normalize", {"mean": [0, 0, 0, 0], "std": [1, 1, 1]})
    load_error(tmp_path, chain(tensor_input(), norm, output()),
               "node 'n'", "data.config.std", "3 values", "mean has 4", "must match")


def test_ports_that_do_not_connect(tmp_path):
    doc = wf([text_input(), dense("d", 4, 2), output()], [edge("in", "d", "e1"), edge("d", "out")])
    load_error(tmp_path, doc, "edge 'e1'", "target", "carries text", "takes tensor, array, number", "Python block")


def test_mixture_without_gate_handle(tmp_path):
    doc = json.loads((HERE / "workflows" / "tiny_moe.json").read_text())
    gate_edge = next(e for e in doc["edges"] if e["id"] == "gate-mix")
    gate_edge["targetHandle"] = None
    load_error(tmp_path, doc, "node 'mix'", "edges", "targetHandle 'gate'")


@pytest.mark.parametrize("top_k", [0, 3, 1.5])
def test_router_top_k_out_of_range(tmp_path, top_k):
    doc = chain(tensor_input(), router("r", 4, 2, topK=top_k), output())
    load_error(tmp_path, doc, "node 'r'", "data.config.topK", f"is {top_k!r}", "from 1 to 2")


def test_weights_file_escaping_the_folder(tmp_path):
    np.savez(tmp_path / "x.npz", kernel=np.ones((4, 2)), bias=np.zeros(2))  # exists, but outside
    folder = tmp_path / "wf"
    folder.mkdir()
    doc = chain(tensor_input(), node("d", "dense", {"weightsFile": "../x.npz"}), output())
    load_error(folder, doc, "node 'd'", "data.config.weightsFile", "'../x.npz'", "inside the workflow's folder")


def test_weights_file_missing(tmp_path):
    doc = chain(tensor_input(), node("d", "dense", {"weightsFile": "w.npz"}), output())
    load_error(tmp_path, doc, "node 'd'", "data.config.weightsFile", "'w.npz' not found")


def test_unknown_activation(tmp_path):
    act = node("a", "activation", {"function": "swish"})
    load_error(tmp_path, chain(tensor_input(), act, output()),
               "node 'a'", "data.config.function", "'swish'", "valid: linear, relu, gelu, tanh, sigmoid")


def test_llm_prompt_template_that_does_not_parse(tmp_path):
    llm = node("l", "llm", {"promptTemplate": "Summarise {{ input "})
    load_error(tmp_path, chain(text_input(), llm, output()),
               "node 'l'", "data.config.promptTemplate", "does not parse", "line 1")


@pytest.mark.parametrize("where", ["workflow", "config", "metadata"])
def test_dependencies_with_an_invalid_requirement(tmp_path, where):
    bad = "jinja2==="
    block = python("p", IDENTITY)
    top = {}
    if where == "workflow":
        top["dependencies"] = [bad]
        named = "workflow"
    elif where == "config":
        block["data"]["config"]["dependencies"] = [bad]
        named = "node 'p'"
    else:
        block["data"]["metadata"] = {"dependencies": [bad]}
        named = "node 'p'"
    doc = chain(text_input(), block, output(), **top)
    load_error(tmp_path, doc, named, "dependencies", repr(bad), 'e.g. "jinja2==3.1.6"')


# -- what loads -------------------------------------------------------------------------------


def test_bare_react_flow_document_with_viewport_and_extra_keys(tmp_path):
    doc = {
        "nodes": [{"id": "in", "data": {"type": "input", "config": {"inputType": "text"}, "color": "red"}},
                  {"id": "out", "data": {"type": "output"}, "selected": True, "width": 150}],
        "edges": [{"id": "e1", "source": "in", "target": "out", "animated": True}],
        "viewport": {"x": 10, "y": -5, "zoom": 1.25},
        "somethingNew": {"kept": [1, 2, 3]},
    }
    w = load(tmp_path, doc)
    assert w.order == ("in", "out")
    assert (w.inputs, w.outputs) == (("in",), ("out",))
    assert w.raw["somethingNew"] == {"kept": [1, 2, 3]}  # kept and ignored
    assert w.problems == ()


def test_unknown_type_with_source_code_is_a_python_block(tmp_path):
    w = load(tmp_path, chain(text_input(), python("p", IDENTITY, type_="sentimentMagic"), output()))
    p = w.node("p")
    assert (p.kind, p.raw_type, p.entrypoint) == ("python", "sentimentMagic", "f")


def test_python_block_without_function_loads_with_one_problem(tmp_path):
    w = load(tmp_path, chain(text_input(), python("p", "x = 1\n"), output()))
    assert len(w.problems) == 1
    assert "node 'p'" in w.problems[0]
    assert "\n" not in w.problems[0]
    assert w.node("p").entrypoint is None


def test_several_public_functions_without_entrypoint_is_a_problem(tmp_path):
    source = "def a(x):\n    return x\n\ndef b(x):\n    return x\n\ndef _helper():\n    pass\n"
    w = load(tmp_path, chain(text_input(), python("p", source), output()))
    assert len(w.problems) == 1
    assert all(part in w.problems[0] for part in ("node 'p'", "a, b", "config.entrypoint"))


def test_config_entrypoint_selects_the_function(tmp_path):
    source = "def a(x):\n    return x\n\ndef b(x):\n    return x\n"
    w = load(tmp_path, chain(text_input(), python("p", source, entrypoint="b"), output()))
    assert w.node("p").entrypoint == "b"
    assert w.problems == ()


def test_implicit_imports_are_detected(tmp_path):
    uses_re = "def clean(text):\n    return re.sub(r'\\s+', ' ', text)\n"
    imports_re = "import re\n\n" + uses_re
    w = load(tmp_path, chain(text_input(), python("bare", uses_re), python("explicit", imports_re), output()))
    assert w.node("bare").implicit_imports == (("re", "re"),)
    assert w.node("explicit").implicit_imports == ()


def test_tiny_moe_fixture_loads(tmp_path):
    w = load_workflow(HERE / "workflows" / "tiny_moe.json")
    assert w.problems == ()
    assert w.node("gate").params["kernel"].shape == (2, 2)
    assert w.node("e0").params["kernel"].dtype == np.float32
    assert [e.target_handle for e in w.upstream("mix")] == ["expert0", "expert1", "gate"]


def test_original_mulm_workflows_are_all_here():
    assert sorted(p.stem for p in ORIGINALS.glob("*.json")) == ORIGINAL_NAMES


@pytest.mark.parametrize(
    ("name", "unusable"),
    [
        ("data-pipeline", set()),
        ("sentiment-analysis-pipeline", set()),
        ("document-qa-rag", {"doc-input", "embeddings", "vector-store"}),
        ("image-classification", {"img-preprocess", "cnn-model"}),
    ],
)
def test_original_mulm_workflows_load(name, unusable):
    w = load_workflow(ORIGINALS / f"{name}.json")
    assert len(w.problems) == len(unusable)  # one line per unusable block
    named = set()
    for line in w.problems:
        assert "\n" not in line
        ids = {nid for nid in w.order if f"node '{nid}'" in line}
        assert len(ids) == 1, line
        named |= ids
    assert named == unusable


def test_content_hash_is_stable_and_follows_the_weights(tmp_path):
    def save_weights(kernel):
        np.savez(tmp_path / "w.npz", **{"d/kernel": np.array(kernel, dtype=np.float32),
                                        "d/bias": np.zeros(2, dtype=np.float32)})

    d = node("d", "dense", {"units": 2, "weightsFile": "w.npz", "weightsKey": "d"})
    path = write(tmp_path, chain(tensor_input(width=2), d, output()))
    save_weights([[1, 0], [0, 1]])
    first = load_workflow(path).content_hash
    assert load_workflow(path).content_hash == first
    save_weights([[1, 0], [0, 2]])
    assert load_workflow(path).content_hash != first

    inline = chain(tensor_input(width=4), dense("d", 4, 2), output())
    before = parse_workflow(inline).content_hash
    inline["nodes"][1]["data"]["config"]["weights"]["kernel"][0][0] = 0.2
    assert parse_workflow(inline).content_hash != before


def test_topological_order_respects_edges(tmp_path):
    # listed in the file backwards, with a diamond in the middle
    doc = wf([output(), python("c", "def f(a, b):\n    return a + b\n"), python("b", IDENTITY),
              python("a", IDENTITY), text_input()],
             [edge("in", "a"), edge("in", "b"), edge("a", "c", handle="a"), edge("b", "c", handle="b"),
              edge("c", "out")])
    w = load(tmp_path, doc)
    assert sorted(w.order) == sorted(n["id"] for n in doc["nodes"])
    for e in w.edges:
        assert w.order.index(e.source) < w.order.index(e.target), e
    assert tuple(n.id for n in w.nodes) == w.order


def test_examples_synthesized_when_no_input_has_any(tmp_path):
    tensor = load(tmp_path, chain(tensor_input(width=3), output()))
    assert tensor.examples_synthesized is True
    assert tensor.examples == ([0.0, 0.0, 0.0],)

    text = load(tmp_path, chain(text_input(), output()))
    assert text.examples_synthesized is True
    assert len(text.examples) == 1 and isinstance(text.examples[0], str)

    given = load(tmp_path, chain(text_input(examples=["great", "awful"]), output()))
    assert given.examples_synthesized is False
    assert given.examples == ("great", "awful")
