"""The LLM layer (design.md §7): cassettes as the cache, an exact and an opt-in similar
tier, offline token counts, a dated price table, a budget ledger shared by all workers,
and the template fallback whenever no model may answer.

    from pytest_mulm.llm import LLMClient
    client = LLMClient(mode="replay", cassette_dir="cassettes", budget_usd=25.0)
    answer = client.generate("Describe this workflow in one sentence.", max_tokens=60)
    answer.text, answer.cache, answer.cost_usd, answer.fallback
    client.usage_stats()
"""

from __future__ import annotations

from .client import MODES, Completion, LLMClient, LLMConfigError, template_fallback

__all__ = ["MODES", "Completion", "LLMClient", "LLMConfigError", "template_fallback"]
