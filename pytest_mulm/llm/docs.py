"""AI-enhanced prose for the artifacts: one batched, structured call per workflow.

Every small text the exports need (a summary of the workflow for READMEs, the model
card and the API description; one sentence per block for the notebook narrative) is
asked for in ONE request with a JSON schema, instead of one request per text. When no
model may answer (mode, budget, no key, a replay miss) or the answer is unusable, the
template texts are used; :attr:`Docs.origin` says which, and the artifacts and the
report show it. Model text is data like any workflow string: templates escape it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..naming import one_line
from ..workflow import Workflow

__all__ = ["DOCS_MAX_TOKENS", "Docs", "template_docs", "write_docs"]

DOCS_MAX_TOKENS = 700
SUMMARY_LIMIT = 600
BLOCK_LIMIT = 240
SYSTEM = ("You write short, factual documentation for exported machine-learning workflows. "
          "Describe only what the given blocks do; do not invent data, metrics or claims. Plain text, no Markdown.")


@dataclass(frozen=True)
class Docs:
    """Prose for one workflow's artifacts and where it came from."""

    summary: str
    blocks: dict[str, str] = field(default_factory=dict)
    origin: str = "template"  # "ai" or "template"
    model: str | None = None
    cache: str | None = None  # "exact"/"similar" when replayed, None when asked or templated
    cost_usd: float = 0.0
    reason: str = ""  # why the template texts were used
    author: str = ""  # the model, or the fake server that stood in for it

    @property
    def marker(self) -> str:
        """One line for the artifact saying who wrote its descriptions."""
        if self.origin == "ai":
            how = "replayed from a cassette" if self.cache else "asked live"
            return f"Descriptions written by {self.author or self.model} through pytest-mulm's LLM layer ({how}) and not reviewed by a person."
        return "Descriptions written from pytest-mulm's templates (no model was asked)."

    @property
    def digest(self) -> str:
        """Part of the export cache key: new prose is a new export."""
        return hashlib.sha256(json.dumps([self.summary, self.blocks], sort_keys=True).encode()).hexdigest()[:16]

    def block(self, node_id: str) -> str:
        return self.blocks.get(node_id, "")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Docs:
        return cls(**{k: data[k] for k in ("summary", "blocks", "origin", "model", "cache", "cost_usd", "reason", "author") if k in data})


def template_docs(workflow: Workflow, reason: str = "") -> Docs:
    """The texts written without a model: the workflow's own words, or a plain account of its shape."""
    kinds = [workflow.node(n).kind for n in workflow.order]
    shape = (f"{len(workflow.nodes)} blocks ({', '.join(dict.fromkeys(kinds))}) from "
             f"{len(workflow.inputs)} input(s) to {len(workflow.outputs)} output(s).")
    summary = one_line(workflow.description) or f"{one_line(workflow.name or workflow.id)}: {shape}"
    blocks = {n.id: one_line(n.description) or f"A {n.kind} block." for n in workflow.nodes}
    return Docs(summary=summary[:SUMMARY_LIMIT], blocks=blocks, reason=reason)


def _request(workflow: Workflow) -> tuple[list[dict[str, str]], dict[str, Any]]:
    blocks = [{"id": n.id, "type": n.kind, "label": n.label, "description": n.description,
               **({"config": {k: v for k, v in n.config.items() if k in ("units", "activation", "labels", "inputType",
                                                                          "shape", "promptTemplate", "topK")}}
                  if n.config else {}),
               **({"code": (n.source or "")[:600]} if n.source else {})}
              for n in (workflow.node(i) for i in workflow.order)]
    context = {"name": workflow.name, "description": workflow.description, "blocks": blocks,
               "edges": [[e.source, e.target] for e in workflow.edges]}
    user = ("Workflow (JSON):\n```json\n" + json.dumps(context, ensure_ascii=False, indent=1) + "\n```\n"
            "Write: summary = 2 or 3 sentences on what the workflow does, for its README and model card; "
            "blocks = for every block id, one sentence on what that block does.")
    ids = [n.id for n in workflow.nodes]
    schema = {
        "type": "object", "additionalProperties": False, "required": ["summary", "blocks"],
        "properties": {
            "summary": {"type": "string"},
            "blocks": {"type": "object", "additionalProperties": False, "required": ids,
                       "properties": {i: {"type": "string"} for i in ids}},
        },
    }
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}], {
        "type": "json_schema", "json_schema": {"name": "workflow_docs", "strict": True, "schema": schema}}


def write_docs(workflow: Workflow, client: Any) -> Docs:
    """Ask once (cached, budgeted) for every text; fall back to the templates otherwise."""
    messages, response_format = _request(workflow)
    completion = client.generate(messages, compress=True, temperature=0, max_tokens=DOCS_MAX_TOKENS,
                                 response_format=response_format, fallback="")
    if completion.fallback:
        return template_docs(workflow, reason=completion.reason)
    base = template_docs(workflow)
    try:
        data = json.loads(completion.text)
        summary = one_line(data["summary"])[:SUMMARY_LIMIT]
        answered = data.get("blocks") or {}
        if not summary or not isinstance(answered, dict):
            raise ValueError("empty summary or no blocks")
    except (ValueError, KeyError, TypeError) as exc:
        return Docs(base.summary, base.blocks, reason=f"the model's answer was not the requested JSON ({exc})",
                    cost_usd=completion.cost_usd)
    blocks = {nid: one_line(answered.get(nid, ""))[:BLOCK_LIMIT] or text for nid, text in base.blocks.items()}
    return Docs(summary, blocks, origin="ai", model=completion.model, cache=completion.cache, cost_usd=completion.cost_usd,
                author=completion.author)
