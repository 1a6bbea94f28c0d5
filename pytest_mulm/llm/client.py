"""``LLMClient``: every model call of pytest-mulm goes through here (design.md §7).

Order of a call: build the exact request body → exact cassette hit (free, no request) →
similar hit when the similarity tier is on (free) → in ``replay``/``off`` mode a miss is
answered by the template fallback → otherwise reserve the call's maximum cost in the
budget ledger (refused: fallback, nothing sent) → send through the openai SDK inside
the key's vcrpy cassette (``record``) or directly (``live``), retrying 429, 5xx and
timeouts with backoff → settle the actual cost, or cancel it when the call failed.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MulmError
from . import models, tokens
from .cassettes import CassetteError, CassetteStore, request_key
from .ledger import Ledger, format_usd

__all__ = ["MODES", "Completion", "LLMClient", "LLMConfigError", "template_fallback"]

MODES = ("off", "replay", "record", "live")
CHAT_PATH = "/chat/completions"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
# the output cap reserved for a call that gives no max_tokens: the budget must hold the worst case
DEFAULT_OUTPUT_CAP = 4096
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
# answers of pytest_mulm.llm.fake_server carry this system_fingerprint
FAKE_FINGERPRINT_PREFIX = "fp_fake"


class LLMConfigError(MulmError, ValueError):
    """An LLM setting that cannot work as given."""


def template_fallback(prompt: str) -> str:
    """The deterministic answer used when no model may be asked (the runtime's too)."""
    first = " ".join(prompt.split())[:200]
    return f"[template fallback: no model was called] {first}"


@dataclass
class Completion:
    """One answer. ``cache`` is ``"exact"``, ``"similar"`` or None (asked, or fell back)."""

    text: str
    cache: str | None = None
    cost_usd: float = 0.0
    usage: dict[str, int] = field(default_factory=dict)
    fallback: bool = False
    model: str = ""
    reason: str = ""  # why a fallback answered
    key: str = ""
    response: dict[str, Any] | None = field(default=None, repr=False)  # the API's JSON, when there was one

    @property
    def author(self) -> str:
        """Who wrote the text: the model, or the fake server that stood in for it in tests."""
        if self.fallback:
            return "pytest-mulm's templates"
        fingerprint = str((self.response or {}).get("system_fingerprint") or "")
        if fingerprint.startswith(FAKE_FINGERPRINT_PREFIX):
            return f"pytest-mulm's local fake OpenAI server (a deterministic test stand-in for {self.model})"
        return self.model


@dataclass
class _Stats:
    calls: int = 0
    paid_calls: int = 0
    exact_hits: int = 0
    similar_hits: int = 0
    fallbacks: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_micro: int = 0
    retries: int = 0


def _messages(prompt_or_messages: str | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(prompt_or_messages, str):
        return [{"role": "user", "content": prompt_or_messages}]
    out = [dict(m) for m in prompt_or_messages]
    if not out or not all(isinstance(m.get("role"), str) for m in out):
        raise LLMConfigError("messages must be a non-empty list of {'role': ..., 'content': ...} objects")
    return out


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user" and isinstance(m.get("content"), str):
            return m["content"]
    return ""


class LLMClient:
    """Cached, budgeted access to an OpenAI-compatible chat API.

    ``mode``: ``off`` (never ask a model), ``replay`` (cassettes only; a miss falls back
    to the template; the default), ``record`` (cassettes, misses are asked and
    recorded), ``live`` (always ask; nothing is read from or written to cassettes).
    ``base_url``/``api_key`` default to ``OPENAI_BASE_URL``/``OPENAI_API_KEY``. The
    budget ledger is shared with every process that uses the same ``ledger_path``.
    """

    def __init__(self, mode: str = "replay", cassette_dir: str | os.PathLike[str] = "cassettes", budget_usd: float = 25.0,
                 model: str | None = None, base_url: str | None = None, api_key: str | None = None,
                 similarity: bool = False, ledger_path: str | os.PathLike[str] | None = None, *,
                 timeout: float = 60.0, max_retries: int = 3, backoff: float = 0.5,
                 similarity_threshold: float | None = None, today: Any = None):
        if mode not in MODES:
            raise LLMConfigError(f"unknown LLM mode {mode!r}; valid: {', '.join(MODES)}")
        if not isinstance(budget_usd, (int, float)) or budget_usd < 0:
            raise LLMConfigError(f"budget {budget_usd!r}: give a number of dollars, 0 or more")
        self.mode = mode
        self.today = today
        self.model = model or models.default_model(today)
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.budget_usd = float(budget_usd)
        self.store = CassetteStore(Path(cassette_dir))
        if ledger_path is None:
            ledger_path = Path(tempfile.mkdtemp(prefix="mulm-ledger-")) / "ledger.jsonl"
        self.ledger = Ledger(Path(ledger_path), budget_usd)
        self.similarity = similarity
        self.similarity_threshold = similarity_threshold
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self._stats = _Stats()
        self._lock = threading.Lock()
        self._index: Any = None
        self._sdk: Any = None
        self._warned: set[str] = set()
        self.events: list[str] = []  # alerts and warnings, for the report

    # -- public API ---------------------------------------------------------------------
    def generate(self, prompt_or_messages: str | Sequence[Mapping[str, Any]], *, model: str | None = None,
                 fallback: str | Callable[[], str] | None = None, compress: bool = False, **params: Any) -> Completion:
        """Answer a prompt (or chat messages): cached, budgeted, never raising for the model's faults.

        ``fallback`` is the template answer used when no model answers (default: the
        template fallback of the last user message). ``compress`` applies the lossless
        prompt compression first. Other keyword arguments go into the request body.
        """
        messages = _messages(prompt_or_messages)
        if compress:
            from .compression import compress_messages

            messages = compress_messages(messages)
        if params.get("stream"):
            raise LLMConfigError("stream=True is not supported by generate(); it returns whole answers")
        return self.complete({"model": model or self.model, "messages": messages, **params}, fallback=fallback)

    def complete(self, body: Mapping[str, Any], *, fallback: str | Callable[[], str] | None = None) -> Completion:
        """Answer an exact chat-completion request body (what an artifact sends); the
        stored or received JSON is in ``Completion.response``."""
        body = dict(body)
        model = str(body.get("model") or self.model)
        body["model"] = model
        messages = _messages(body.get("messages") or [])
        key = request_key("POST", CHAT_PATH, body)
        with self._lock:
            self._stats.calls += 1

        def fall(reason: str) -> Completion:
            text = fallback() if callable(fallback) else fallback if fallback is not None else template_fallback(_last_user_text(messages))
            with self._lock:
                self._stats.fallbacks += 1
            return Completion(text, fallback=True, model=model, reason=reason, key=key)

        if self.mode == "off":
            return fall("the LLM layer is off (--mulm-ai=off)")
        if self.mode != "live":
            hit = self._replay(key, model, "exact")
            if hit is None and self.similarity:
                similar = self._similar(body)
                if similar is not None:
                    hit = self._replay(similar, model, "similar")
            if hit is not None:
                return hit
            if self.mode == "replay":
                return fall("no cassette answers this request (replay mode; record it with --mulm-ai=record and a key)")
        if not self._api_key:
            return fall("no API key (set OPENAI_API_KEY)")
        if body.get("stream"):
            return fall("streamed requests are not sent by the LLM layer")
        self._warn_lifecycle(model)
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens")) or DEFAULT_OUTPUT_CAP
        n = int(body.get("n") or 1)
        maximum = models.max_cost_micro(model, tokens.count_chat_tokens(messages, model), int(max_tokens) * n)
        reservation = self.ledger.reserve(maximum, label=f"{model} {key[:12]}")
        if reservation is None:
            totals = self.ledger.totals()
            return fall(f"budget exhausted: {format_usd(totals.spent_micro)} of {format_usd(totals.budget_micro)} spent, "
                        f"this call may cost up to {format_usd(maximum)} (raise --mulm-budget)")
        try:
            response = self._send(body, key)
        except _CallFailed as exc:
            self.ledger.cancel(reservation)
            return fall(f"the model call failed: {exc}")
        usage = dict(response.get("usage") or {})
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        cost = min(models.cost_micro(model, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)), cached),
                   reservation.micro)
        alert = self.ledger.settle(reservation, cost)
        if alert:
            self.events.append(alert)
        with self._lock:
            s = self._stats
            s.paid_calls += 1
            s.tokens_in += int(usage.get("prompt_tokens", 0))
            s.tokens_out += int(usage.get("completion_tokens", 0))
            s.cost_micro += cost
            if self._index is not None:
                self._index.add(key, body)
        return Completion(_content(response), cost_usd=cost / 1e6, usage=usage, model=model, key=key, response=response)

    def estimate(self, prompt_or_messages: str | Sequence[Mapping[str, Any]], model: str | None = None,
                 max_tokens: int | None = None) -> float:
        """Dollars a call would cost at most: its prompt tokens plus ``max_tokens`` of output."""
        messages = _messages(prompt_or_messages)
        model = model or self.model
        return models.max_cost_micro(model, tokens.count_chat_tokens(messages, model), int(max_tokens or 0)) / 1e6

    def usage_stats(self) -> dict[str, Any]:
        """Calls, hits, tokens and dollars of this client; budget figures of the shared ledger."""
        totals = self.ledger.totals()
        with self._lock:
            s = self._stats
            per_export = s.cost_micro  # one client serves one export run
            return {
                "mode": self.mode, "model": self.model,
                "calls": s.calls, "paid_calls": s.paid_calls, "exact_hits": s.exact_hits,
                "similar_hits": s.similar_hits, "fallbacks": s.fallbacks, "retries": s.retries,
                "tokens_in": s.tokens_in, "tokens_out": s.tokens_out,
                "cost_usd": s.cost_micro / 1e6, "budget_usd": self.budget_usd,
                "spent_usd": totals.spent_micro / 1e6, "remaining_usd": totals.remaining_micro / 1e6,
                # None: nothing has cost anything yet, so no projection can be made
                "projected_exports_left": (totals.remaining_micro // per_export) if per_export else None,
                "events": list(self.events),
            }

    def close(self) -> None:
        self.store.flush()

    # -- internals ----------------------------------------------------------------------
    def _replay(self, key: str, model: str, kind: str) -> Completion | None:
        if self.store.lookup(key) is None:
            return None
        try:
            stored = self.store.read_response(key)
        except CassetteError as exc:
            warnings.warn(f"unreadable cassette ignored: {exc}", stacklevel=3)
            return None
        data = stored["json"] if stored["json"] is not None else _from_sse(stored["text"])
        with self._lock:
            if kind == "exact":
                self._stats.exact_hits += 1
            else:
                self._stats.similar_hits += 1
        return Completion(_content(data), cache=kind, usage=dict(data.get("usage") or {}), model=model, key=key, response=data)

    def _similar(self, body: dict[str, Any]) -> str | None:
        from .similarity import SimilarityIndex

        if self._index is None:
            index = SimilarityIndex()
            for path in sorted(self.store.root.glob("*/*.yaml")):
                try:
                    request = _stored_request(path)
                except (OSError, ValueError, KeyError):
                    continue
                index.add(path.stem, request)
            self._index = index
        match = self._index.find(body, self.similarity_threshold)
        return match.key if match is not None else None

    def _warn_lifecycle(self, model: str) -> None:
        message = models.shutdown_warning(model, self.today)
        if message and model not in self._warned:
            self._warned.add(model)
            self.events.append(message)
            warnings.warn(message, stacklevel=3)

    def _client(self) -> Any:
        if self._sdk is None:
            import openai

            self._sdk = openai.OpenAI(base_url=self.base_url, api_key=self._api_key, max_retries=0, timeout=self.timeout)
        return self._sdk

    def _send(self, body: dict[str, Any], key: str) -> dict[str, Any]:
        import openai

        client = self._client()
        attempt = 0
        while True:
            try:
                if self.mode == "record":
                    with self.store.use(key, record=True):
                        raw = client.chat.completions.with_raw_response.create(**body)
                else:
                    raw = client.chat.completions.with_raw_response.create(**body)
                return json.loads(raw.text)
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                error: Exception = exc
                retry_after = None
            except openai.APIStatusError as exc:
                if exc.status_code not in RETRY_STATUSES:
                    raise _CallFailed(f"HTTP {exc.status_code}: {_error_message(exc)}") from None
                error = exc
                retry_after = _retry_after(exc)
            attempt += 1
            if attempt > self.max_retries:
                raise _CallFailed(f"{type(error).__name__} after {attempt} attempt(s): {_error_message(error)}")
            with self._lock:
                self._stats.retries += 1
            delay = retry_after if retry_after is not None else self.backoff * 2 ** (attempt - 1) * (1 + random.random() / 4)
            time.sleep(min(delay, 30.0))


class _CallFailed(Exception):
    pass


def _error_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:200]
    return str(exc)[:200]


def _retry_after(exc: Any) -> float | None:
    try:
        value = exc.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, ValueError):
        return None


def _content(data: Mapping[str, Any]) -> str:
    try:
        return str(data["choices"][0]["message"].get("content") or "")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""


def _from_sse(text: str) -> dict[str, Any]:
    """A streamed answer folded into the shape of a whole one."""
    parts: list[str] = []
    usage: dict[str, Any] = {}
    for line in text.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        for choice in chunk.get("choices") or []:
            parts.append((choice.get("delta") or {}).get("content") or "")
        usage = chunk.get("usage") or usage
    return {"choices": [{"message": {"content": "".join(parts)}}], "usage": usage}


def _stored_request(path: Path) -> dict[str, Any]:
    from .cassettes import DeterministicYamlSerializer

    data = DeterministicYamlSerializer.deserialize(path.read_text(encoding="utf-8"))
    body = data["interactions"][0]["request"]["body"]
    return json.loads(body if isinstance(body, (str, bytes)) else json.dumps(body))
