"""The ``huggingface-space`` format: a Gradio app ready to push to a Hugging Face Space.

The app (``app.py``) is generic: what it shows (one component per input port, the
interface kind, titles, examples) comes from ``space_config.json``, written here as
data, so workflow strings never become code. The workflow itself runs through the
generated library in ``src/``. ``README.md`` carries the Space front matter; the model
card is ``MODEL_CARD.md`` (a Space's README is its card, so the model card is a second
file); both are built with huggingface_hub's card classes and validated offline before
they are written.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

from pytest_mulm.blocks import NUMERIC_KINDS
from pytest_mulm.errors import MissingDependencyError
from pytest_mulm.exporter import ExportContext, Exporter
from pytest_mulm.hookspecs import hookimpl
from pytest_mulm.loader import INPUT_TYPES
from pytest_mulm.naming import one_line
from pytest_mulm.workflow import Workflow

from .library import library_requirements, names_for, write_library

FORMAT = "huggingface-space"
# The Gradio release the suite launches and tests; the front matter's sdk_version and
# requirements.txt pin exactly this one.
GRADIO_VERSION = "6.31.0"
SPACE_REQUIREMENTS = (f"gradio=={GRADIO_VERSION}",)
SAMPLE_DATA = "sample_data.jsonl"
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"

THEMES = ("default", "base", "soft", "monochrome", "glass", "origin", "citrus", "ocean")
INTERFACES = ("auto", "form", "chat")
COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")
# licence identifiers the Hub accepts (a subset of its list: the common open ones)
LICENSES = (
    "apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "gpl-3.0", "lgpl-3.0", "agpl-3.0", "mpl-2.0",
    "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc0-1.0", "openrail", "bigscience-openrail-m",
    "llama3", "unlicense", "other", "unknown",
)
GRADIO_KEYS = {"title", "description", "article", "theme", "interface", "showExamples", "submitLabel",
               "colorFrom", "colorTo", "emoji", "license", "tags", "pinned"}
CARD_KEYS = {"license", "language", "tags", "task", "intendedUse", "limitations", "authors"}
# at most this many number fields for a vector input; longer vectors are typed as JSON
MAX_NUMBER_FIELDS = 16


def _section(workflow: Workflow, key: str) -> dict[str, Any]:
    value = workflow.deployment.get(key) if isinstance(workflow.deployment, Mapping) else None
    return dict(value) if isinstance(value, Mapping) else {}


def space_problems(workflow: Workflow) -> list[str]:
    """One line per unusable value in ``deploymentConfig.gradioInterface`` / ``modelCard``."""
    problems: list[str] = []
    ui = _section(workflow, "gradioInterface")
    where = "deploymentConfig.gradioInterface"
    if ui.get("theme", "default") not in THEMES:
        problems.append(f"{where}.theme: {ui.get('theme')!r} is not a built-in Gradio theme; valid: {', '.join(THEMES)}")
    if ui.get("interface", "auto") not in INTERFACES:
        problems.append(f"{where}.interface: {ui.get('interface')!r}; valid: {', '.join(INTERFACES)}")
    if ui.get("interface") == "chat" and not chat_eligible(workflow):
        problems.append(f"{where}.interface: 'chat' needs one text input and one text output from an llm block; "
                        "this workflow gets a form (use 'auto' or 'form')")
    for key in ("colorFrom", "colorTo"):
        if key in ui and ui[key] not in COLORS:
            problems.append(f"{where}.{key}: {ui[key]!r}; valid: {', '.join(COLORS)}")
    for key in ("title", "description", "article", "submitLabel", "emoji"):
        if key in ui and not isinstance(ui[key], str):
            problems.append(f"{where}.{key}: give text, not {type(ui[key]).__name__}")
    card = _section(workflow, "modelCard")
    license_ = card.get("license", ui.get("license", "mit"))
    if license_ not in LICENSES:
        problems.append(f"deploymentConfig.modelCard.license: {license_!r} is not a Hub licence id; valid include: "
                        f"{', '.join(LICENSES)}")
    for key, value in (("tags", card.get("tags")), ("gradioInterface.tags", ui.get("tags"))):
        if value is not None and (not isinstance(value, list) or not all(isinstance(t, str) for t in value)):
            problems.append(f"deploymentConfig.{key}: give a list of strings")
    return problems


def chat_eligible(workflow: Workflow) -> bool:
    """Text in, text out, with an ``llm`` block: the shape a chat interface fits."""
    if len(workflow.inputs) != 1 or len(workflow.outputs) != 1:
        return False
    node = workflow.node(workflow.inputs[0])
    text_in = not node.source and str(node.config.get("inputType", "")) == "text"
    out = workflow.node(workflow.outputs[0])
    upstream = [workflow.node(e.source).kind for e in workflow.upstream(out.id)]
    text_out = out.kind == "llm" or (not out.source and not out.config.get("labels") and upstream == ["llm"])
    return text_in and text_out and any(n.kind == "llm" for n in workflow.nodes)


def _input_port(workflow: Workflow, nid: str) -> dict[str, Any]:
    node = workflow.node(nid)
    kind = "json" if node.source else INPUT_TYPES.get(str(node.config.get("inputType", "any")), "any")
    shape = node.config.get("shape")
    port: dict[str, Any] = {"id": nid, "label": one_line(node.label or nid)[:80],
                            "info": one_line(node.description)[:200]}
    if kind == "text":
        port.update(widget="text", placeholder=one_line(str(node.config.get("placeholder", "")))[:200])
    elif kind == "number":
        port.update(widget="number")
    elif (kind == "tensor" and isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int)
          and 0 < shape[0] <= MAX_NUMBER_FIELDS):
        names = [one_line(p)[:40] for p in re.split(r"[,;]", node.description or "")]
        port.update(widget="numbers", size=shape[0],
                    names=names if len(names) == shape[0] and all(names) else [f"x{i}" for i in range(shape[0])])
    else:  # objects, other tensors, anything a Python block reads: typed as JSON
        port.update(widget="json")
    return port


def space_config(workflow: Workflow) -> dict[str, Any]:
    """What ``app.py`` shows, as data."""
    ui = _section(workflow, "gradioInterface")
    wanted = ui.get("interface", "auto")
    interface = "chat" if chat_eligible(workflow) and wanted in ("auto", "chat") else "form"
    outputs = []
    for nid in workflow.outputs:
        node = workflow.node(nid)
        labels = node.config.get("labels") if node.kind == "output" and not node.source else None
        outputs.append({"id": nid, "label": one_line(node.label or nid)[:80], "labels": [str(x) for x in labels] if labels else None})
    return {
        "title": one_line(ui.get("title") or workflow.name or workflow.id)[:120],
        "description": str(ui.get("description") or workflow.description or ""),
        "article": str(ui.get("article") or ""),
        "theme": ui.get("theme", "default"),
        "interface": interface,
        "submit_label": one_line(ui.get("submitLabel") or "Run")[:40],
        "show_examples": bool(ui.get("showExamples", True)),
        "inputs": [_input_port(workflow, nid) for nid in workflow.inputs],
        "outputs": outputs,
        "sample_data": SAMPLE_DATA,
        "api_name": "chat" if interface == "chat" else "predict",
    }


def front_matter(workflow: Workflow, names: dict[str, str]) -> dict[str, Any]:
    ui = _section(workflow, "gradioInterface")
    card = _section(workflow, "modelCard")
    tags = ["pytest-mulm", "mulm", *(card.get("tags") or []), *(ui.get("tags") or []), *_workflow_tags(workflow)]
    return {
        "title": _plain(ui.get("title") or workflow.name or names["dist"])[:60],
        "emoji": one_line(ui.get("emoji", "🧩"))[:4] or "🧩",
        "colorFrom": ui.get("colorFrom", "indigo"),
        "colorTo": ui.get("colorTo", "blue"),
        "sdk": "gradio",
        "sdk_version": GRADIO_VERSION,
        "python_version": PYTHON_VERSION,
        "app_file": "app.py",
        "pinned": bool(ui.get("pinned", False)),
        "license": card.get("license", ui.get("license", "mit")),
        "short_description": _plain(workflow.description or workflow.name or names["dist"])[:60],
        "tags": list(dict.fromkeys(str(t) for t in tags if str(t).strip())),
    }


def _plain(text: Any) -> str:
    """One line with no markup characters: the Hub shows these fields as they are."""
    return re.sub(r"[<>`]", "", one_line(text)).strip()


def _workflow_tags(workflow: Workflow) -> list[str]:
    tags = workflow.raw.get("tags")
    return [slug for t in tags if isinstance(t, str) and (slug := re.sub(r"[^a-z0-9-]+", "-", t.lower()).strip("-"))] \
        if isinstance(tags, list) else []


def card_problems(text: str, *, space: bool) -> list[str]:
    """Validate a Space README or a model card offline with huggingface_hub's classes.

    The Hub's own validation is an HTTP call (``RepoCard.validate``); this checks what
    can be checked here: the front matter parses into the card class with metadata
    errors raised, and the fields a Space or model card needs have valid values.
    """
    from huggingface_hub import ModelCard, SpaceCard

    try:
        card = (SpaceCard if space else ModelCard)(text, ignore_metadata_errors=False)
    except Exception as exc:  # huggingface_hub raises ValueError and yaml errors alike
        return [f"the card does not parse: {type(exc).__name__}: {exc}"]
    data = card.data.to_dict()
    problems = []
    if data.get("license") not in LICENSES:
        problems.append(f"license: {data.get('license')!r} is not a Hub licence id")
    if not isinstance(data.get("tags", []), list):
        problems.append("tags: must be a list")
    if space:
        required = {"sdk": "gradio", "app_file": "app.py"}
        problems += [f"{k}: {data.get(k)!r}, expected {v!r}" for k, v in required.items() if data.get(k) != v]
        if not re.fullmatch(r"\d+\.\d+\.\d+", str(data.get("sdk_version", ""))):
            problems.append(f"sdk_version: {data.get('sdk_version')!r} is not a release number like 6.31.0")
        if not re.fullmatch(r"3\.\d+(\.\d+)?", str(data.get("python_version", ""))):
            problems.append(f"python_version: {data.get('python_version')!r} is not a Python 3 version")
        for key in ("colorFrom", "colorTo"):
            if data.get(key) not in COLORS:
                problems.append(f"{key}: {data.get(key)!r}; valid: {', '.join(COLORS)}")
        if len(str(data.get("short_description", ""))) > 60:
            problems.append("short_description: at most 60 characters")
    elif not str(card.text).strip():
        problems.append("the model card has no text")
    return problems


def model_card_text(env: Any, workflow: Workflow, names: dict[str, str], *, docs: Any = None,
                    metrics: list[dict[str, Any]] | None = None, verified_by: str = "") -> str:
    """The model card, with ``metrics`` (from a verification run) when there are any.

    ``env`` is the exporters' Jinja environment (user template overrides apply);
    ``docs`` the prose (:class:`~pytest_mulm.llm.docs.Docs`, templates when None).
    """
    from pytest_mulm.llm.docs import template_docs

    docs = docs if docs is not None else template_docs(workflow)
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    cfg = _section(workflow, "modelCard")
    task = cfg.get("task") or _task(workflow)
    results = [
        EvalResult(task_type=task, dataset_type="mulm-examples", dataset_name=f"{names['dist']} examples",
                   metric_type=m["type"], metric_name=m["name"], metric_value=m["value"], verified=False)
        for m in metrics or []
    ]
    data = ModelCardData(
        model_name=names["dist"], license=cfg.get("license", _section(workflow, "gradioInterface").get("license", "mit")),
        language=cfg.get("language"), library_name="pytest-mulm", pipeline_tag=task,
        tags=["pytest-mulm", *(cfg.get("tags") or [])], eval_results=results or None,
    )
    limitations = [str(cfg["limitations"])] if cfg.get("limitations") else []
    limitations.append(f"Verified only on the workflow's {len(workflow.examples)} example input(s); "
                       "inputs unlike them are untested.")
    if workflow.examples_synthesized:
        limitations.append("The workflow had no examples: the verification input was synthesized.")
    if any(n.kind == "llm" for n in workflow.nodes):
        limitations.append("LLM blocks ask the model configured by OPENAI_API_KEY (a deterministic template "
                           "answers without one); verification used recorded answers, and nothing here measures "
                           "the quality of model answers.")
    body = env.get_template(f"{FORMAT}/MODEL_CARD.md.jinja").render(
        workflow=workflow, names=names, task=task, nodes=[workflow.node(n) for n in workflow.order], docs=docs,
        intended=cfg.get("intendedUse") or docs.summary,
        limitations=limitations, metrics=metrics or [], verified_by=verified_by or "pytest-mulm",
    )
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}", ignore_metadata_errors=False))


def _task(workflow: Workflow) -> str:
    outs = [workflow.node(n) for n in workflow.outputs]
    if any(n.config.get("labels") for n in outs):
        kinds = {workflow.node(n).config.get("inputType") for n in workflow.inputs}
        return "text-classification" if kinds == {"text"} else "tabular-classification"
    if chat_eligible(workflow):
        return "text-generation"
    return "other"


class HuggingFaceSpaceExporter(Exporter):
    name = FORMAT
    description = "Hugging Face Space: Gradio app, Space front matter, model card, sample data"
    supported_blocks = frozenset({"input", "output", "python", "llm", *NUMERIC_KINDS})

    def check(self, workflow: Workflow) -> list[str]:
        return space_problems(workflow)

    def options(self, workflow: Workflow) -> dict[str, Any]:
        return {"gradio": GRADIO_VERSION, "python": PYTHON_VERSION}

    def requirements(self, workflow: Workflow) -> list[str]:
        return sorted({*library_requirements(workflow), *SPACE_REQUIREMENTS}, key=str.lower)

    def export(self, ctx: ExportContext) -> None:
        try:
            import huggingface_hub  # noqa: F401  (the card classes)
        except ImportError:
            raise MissingDependencyError(f"{FORMAT} needs huggingface_hub: pip install 'pytest-mulm[space]'") from None
        import yaml

        wf = ctx.workflow
        names = names_for(wf)
        common = write_library(ctx, f"src/{names['package']}", names)
        config = space_config(wf)
        ctx.write_json("space_config.json", config)
        ctx.write_text(SAMPLE_DATA, "".join(_jsonl({"input": e["input"]}) for e in common["examples"]))
        requirements = self.requirements(wf)
        ctx.write_text("requirements.txt", "".join(f"{r}\n" for r in requirements))
        ctx.render("app.py.jinja", "app.py", package=names["package"], **common)
        matter = front_matter(wf, names)
        readme_body = ctx.env.get_template(f"{FORMAT}/README.md.jinja").render(
            **{**common, "workflow": wf, "docs": ctx.docs, "config": config, "matter": matter, "requirements": requirements})
        readme = f"---\n{yaml.safe_dump(matter, sort_keys=False, allow_unicode=True)}---\n{readme_body}"
        card = model_card_text(ctx.env, wf, names, docs=ctx.docs)
        for text, space, name in ((readme, True, "README.md"), (card, False, "MODEL_CARD.md")):
            problems = card_problems(text, space=space)
            if problems:  # our own output: a bug here, never the user's
                raise AssertionError(f"{name} does not validate: {problems}")
            ctx.write_text(name, text)
        ctx.render("gitignore.jinja", ".gitignore", folder="python-package", **common)


def _jsonl(record: dict[str, Any]) -> str:
    import json

    return json.dumps(record, ensure_ascii=False) + "\n"


@hookimpl
def register_exporters(register: Callable[[Exporter], None]) -> None:
    register(HuggingFaceSpaceExporter())


@hookimpl
def register_suites(register: Callable[[str, str], None]) -> None:
    register(FORMAT, "pytest_mulm.suites.huggingface_space")


__all__ = ["GRADIO_VERSION", "HuggingFaceSpaceExporter", "card_problems", "model_card_text", "space_config"]
