"""Hardened vcrpy cassettes, recorded with the real openai SDK against the fake server."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import httpx2
import openai
import pytest
import vcr
from vcr.errors import CannotOverwriteExistingCassetteException

from pytest_mulm.errors import MulmError
from pytest_mulm.llm import cassettes
from pytest_mulm.llm.cassettes import (
    INDEX_NAME,
    CassetteError,
    CassetteMissError,
    CassetteStore,
    canonical_body,
    normalise_path,
    request_key,
    secrets_in,
)
from pytest_mulm.llm.fake_server import FAKE_HEADERS, FakeOpenAI

SECRET = "sk-test-SECRET123"
CHAT = "/chat/completions"

BASE = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "temperature": 0.2,
}


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def client(fake):
    return openai.OpenAI(base_url=fake.base_url, api_key=SECRET, max_retries=0, timeout=10)


@pytest.fixture
def store(tmp_path):
    with CassetteStore(tmp_path / "cassettes") as s:
        yield s


def offline_client() -> openai.OpenAI:
    # port 9 (discard) on loopback: nothing listens, so any request that escapes vcrpy fails
    return openai.OpenAI(
        base_url="http://127.0.0.1:9/v1", api_key="sk-other-key", max_retries=0, timeout=2
    )


def key_of(params: dict) -> str:
    return request_key("POST", CHAT, params)


def record(store: CassetteStore, client: openai.OpenAI, params: dict):
    with store.use(key_of(params), record=True):
        return client.chat.completions.create(**params)


def cassette_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.yaml")) if root.exists() else []


# ---------------------------------------------------------------------------------------
# keys


def test_canonical_body_ignores_key_order_and_spacing():
    a = b'{"model": "m", "messages": [{"role": "user", "content": "h\\u00e9"}], "temperature": 0.5}'
    b = '{"temperature":0.5,"messages":[{"content":"hé","role":"user"}],"model":"m"}'
    c = {"messages": [{"content": "hé", "role": "user"}], "temperature": 0.5, "model": "m"}
    assert canonical_body(a) == canonical_body(b) == canonical_body(c)
    assert (
        canonical_body(c)
        == '{"messages":[{"content":"hé","role":"user"}],"model":"m","temperature":0.5}'
    )
    assert canonical_body({**c, "temperature": 0.6}) != canonical_body(c)
    assert canonical_body(None) == canonical_body(b"") == ""


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:41234/v1/chat/completions", "/chat/completions"),
        ("https://api.openai.com/v1/chat/completions", "/chat/completions"),
        ("http://localhost:8080/openai/v1/chat/completions", "/chat/completions"),
        ("http://proxy.local/api/chat/completions", "/chat/completions"),
        ("/chat/completions", "/chat/completions"),
        (
            "https://x.openai.azure.com/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21&api-key=S",
            "/deployments/gpt4o/chat/completions?api-version=2024-10-21",
        ),
        ("http://h/v1/embeddings", "/embeddings"),
    ],
)
def test_normalise_path(url, expected):
    assert normalise_path(url) == expected
    assert normalise_path(normalise_path(url)) == expected  # stored URIs normalise to themselves


def test_request_key_ignores_origin_and_prefix_but_not_route_or_method():
    body = json.dumps(BASE)
    key = request_key("POST", "http://127.0.0.1:5555/v1/chat/completions", body)
    assert key == request_key("post", "https://api.openai.com/v1/chat/completions", BASE)
    assert key == key_of(BASE)
    assert key != request_key("POST", "/embeddings", BASE)
    assert key != request_key("GET", CHAT, BASE)
    assert len(key) == 64 and int(key, 16) >= 0


def test_lookup_of_missing_or_malformed_key_is_none(store):
    assert store.lookup(key_of(BASE)) is None
    assert store.lookup("../../etc/passwd") is None
    assert store.lookup("0" * 63 + "/") is None
    with pytest.raises(CassetteError, match="64 hex digits"):
        store.path_for("../x")
    assert issubclass(CassetteMissError, MulmError)


# ---------------------------------------------------------------------------------------
# record and replay through the real SDK


def test_record_then_replay_with_the_server_stopped(tmp_path):
    store = CassetteStore(tmp_path)
    with FakeOpenAI() as fake:
        live = record(
            store, openai.OpenAI(base_url=fake.base_url, api_key=SECRET, max_retries=0), BASE
        )
        assert len(fake.requests) == 1
    path = store.lookup(key_of(BASE))
    assert path == tmp_path / key_of(BASE)[:2] / f"{key_of(BASE)}.yaml"
    with store.use(key_of(BASE)):
        replayed = offline_client().chat.completions.create(**BASE)
    assert replayed.model_dump() == live.model_dump()
    assert replayed.choices[0].message.content.endswith("What is the capital of France?")


def test_async_client_is_intercepted_too(store, fake):
    async def ask(base_url: str) -> str:
        async with openai.AsyncOpenAI(base_url=base_url, api_key=SECRET, max_retries=0, timeout=5) as client:
            reply = await client.chat.completions.create(**BASE)
        return reply.choices[0].message.content

    with store.use(key_of(BASE), record=True):
        live = asyncio.run(ask(fake.base_url))
    with store.use(key_of(BASE)):
        replayed = asyncio.run(ask("http://127.0.0.1:9/v1"))
    assert replayed == live and len(fake.requests) == 1


def test_record_mode_replays_a_hit_without_calling_the_server(store, client, fake):
    first = record(store, client, BASE)
    second = record(store, client, BASE)
    assert second.model_dump() == first.model_dump()
    assert len(fake.requests) == 1


def test_same_request_twice_in_one_replay_block(store, client):
    record(store, client, BASE)
    offline = offline_client()
    with store.use(key_of(BASE)):
        a = offline.chat.completions.create(**BASE)
        b = offline.chat.completions.create(**BASE)
    assert a.model_dump() == b.model_dump()


def test_reordered_keys_hit(store, client, fake):
    live = record(store, client, BASE)
    reordered = {
        "temperature": BASE["temperature"],
        "messages": [{"content": m["content"], "role": m["role"]} for m in BASE["messages"]],
        "model": BASE["model"],
    }
    assert key_of(reordered) == key_of(BASE)
    # the SDK keeps the order of message keys, so its bytes on the wire really differ ...
    client.chat.completions.create(**reordered)
    assert list(fake.requests[-1].json["messages"][0]) == ["content", "role"]
    assert list(fake.requests[0].json["messages"][0]) == ["role", "content"]
    with store.use(key_of(reordered)):
        replayed = offline_client().chat.completions.create(**reordered)
    assert replayed.model_dump() == live.model_dump()
    # ... and top-level keys in another order, with other spacing, through plain httpx
    body = json.dumps(dict(reversed(list(reordered.items()))), indent=3).encode()
    with store.use(key_of(reordered)):
        answer = httpx.post(
            "http://127.0.0.1:9/v1/chat/completions",
            content=body,
            headers={"Content-Type": "application/json"},
        )
    assert answer.json()["choices"][0]["message"]["content"] == live.choices[0].message.content
    assert len(fake.requests) == 2


TOOLS = [
    {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "properties": {}}},
    }
]

CHANGES = {
    "model": {"model": "gpt-4o"},
    "messages-content": {
        "messages": [
            BASE["messages"][0],
            {"role": "user", "content": "What is the capital of Spain?"},
        ]
    },
    "messages-role": {
        "messages": [{"role": "developer", "content": "Answer briefly."}, BASE["messages"][1]]
    },
    "messages-extra": {"messages": [*BASE["messages"], {"role": "user", "content": "Thanks"}]},
    "temperature": {"temperature": 0.3},
    "top_p": {"top_p": 0.9},
    "max_tokens": {"max_tokens": 5},
    "max_completion_tokens": {"max_completion_tokens": 5},
    "seed": {"seed": 42},
    "stop": {"stop": ["\n"]},
    "n": {"n": 2},
    "tools": {"tools": TOOLS},
    "tool_choice": {"tool_choice": "none"},
    "response_format": {"response_format": {"type": "json_object"}},
    "reasoning_effort": {"reasoning_effort": "low"},
    "service_tier": {"service_tier": "flex"},
    "stream": {"stream": True},
    "logit_bias": {"logit_bias": {"1234": -100}},
    "presence_penalty": {"presence_penalty": 0.5},
    "frequency_penalty": {"frequency_penalty": 0.5},
    "logprobs": {"logprobs": True},
    "user": {"user": "someone"},
}


@pytest.mark.parametrize("field", list(CHANGES))
def test_changing_any_field_misses(store, client, fake, field):
    record(store, client, BASE)
    changed = {**copy.deepcopy(BASE), **CHANGES[field]}
    assert changed != BASE
    assert key_of(changed) != key_of(BASE)
    assert store.lookup(key_of(changed)) is None
    offline = offline_client()
    # its own (absent) cassette misses ...
    with pytest.raises(CassetteMissError), store.use(key_of(changed)):
        offline.chat.completions.create(**changed)
    # ... and so does the original's cassette: the body matcher refuses the changed request
    with pytest.raises(CassetteMissError) as info, store.use(key_of(BASE)):
        offline.chat.completions.create(**changed)
    assert isinstance(info.value.__cause__, CannotOverwriteExistingCassetteException)
    assert len(fake.requests) == 1  # a replay never goes to the network


def test_recording_under_the_wrong_key_warns_and_stores_nothing(store, client):
    other = {**BASE, "temperature": 0.9}
    with pytest.warns(UserWarning, match="not recorded"), store.use(key_of(BASE), record=True):
        client.chat.completions.create(**other)
    assert cassette_files(store.root) == []


# ---------------------------------------------------------------------------------------
# what is (not) stored


def test_cassette_holds_no_secrets_headers_or_binary(tmp_path):
    store = CassetteStore(tmp_path)
    with FakeOpenAI() as fake:
        client = openai.OpenAI(
            base_url=fake.base_url,
            api_key=SECRET,
            organization="org-CLIENTORG123",
            project="proj_CLIENTPROJ123",
            default_headers={"Cookie": "session=COOKIEVALUE123", "api-key": "AZUREKEY123"},
            max_retries=0,
        )
        record(store, client, BASE)
        sent = fake.requests[0].headers
    # the secrets really were on the wire, so their absence below means something
    assert (
        sent["authorization"] == f"Bearer {SECRET}"
        and sent["openai-organization"] == "org-CLIENTORG123"
    )
    assert sent["cookie"] == "session=COOKIEVALUE123" and "gzip" in sent["accept-encoding"]

    [path] = cassette_files(tmp_path)
    text = path.read_text(encoding="utf-8")
    lower = text.lower()
    for needle in (
        SECRET,
        "org-CLIENTORG123",
        "proj_CLIENTPROJ123",
        "COOKIEVALUE123",
        "AZUREKEY123",
        *FAKE_HEADERS.values(),
    ):
        assert needle not in text
    for header in (
        "authorization",
        "cookie",
        "set-cookie",
        "openai-organization",
        "openai-project",
        "api-key",
        "x-request-id",
        "openai-processing-ms",
        "date:",
        "content-encoding",
        "x-stainless",
        "user-agent",
    ):
        assert header not in lower
    assert "!!binary" not in text
    assert "127.0.0.1" not in text
    assert secrets_in(tmp_path, [SECRET, "COOKIEVALUE123"]) == []
    # the gzip body was decoded into readable JSON
    stored = store.read_response(key_of(BASE))
    assert stored["json"]["choices"][0]["message"]["content"].startswith("Fake answer")


def test_secrets_in_finds_what_vcrpy_defaults_store(tmp_path, fake, client):
    """The control for the test above: the pitfall is real, and secrets_in sees it."""
    unsafe = vcr.VCR(record_mode="once")
    path = tmp_path / "unsafe.yaml"
    with unsafe.use_cassette(str(path)):
        client.chat.completions.create(**BASE)
    text = path.read_text()
    assert SECRET in text and "!!binary" in text
    findings = secrets_in(tmp_path, [SECRET])
    assert any("secret #1" in f for f in findings)
    assert any("request header 'authorization'" in f for f in findings)
    assert any("response header 'set-cookie'" in f for f in findings)
    assert any("response header 'openai-organization'" in f for f in findings)
    assert all(SECRET not in f for f in findings)  # the report does not leak the secret


@pytest.mark.parametrize("status", [429, 500, 503])
def test_error_answers_are_not_stored(store, client, fake, status):
    fake.fail_next(status)
    # caught inside the block, so the cassette is saved normally: the filter must drop it
    with store.use(key_of(BASE), record=True), pytest.raises(openai.APIStatusError):
        client.chat.completions.create(**BASE)
    assert store.lookup(key_of(BASE)) is None
    assert cassette_files(store.root) == []
    record(store, client, BASE)  # the same setup does store a success
    assert store.lookup(key_of(BASE)) is not None


def test_a_retried_429_stores_only_the_success(store, fake):
    retrying = openai.OpenAI(base_url=fake.base_url, api_key=SECRET, max_retries=1, timeout=10)
    fake.fail_next(429, retry_after=0.01)
    record(store, retrying, BASE)
    assert len(fake.requests) == 2
    [path] = cassette_files(store.root)
    text = path.read_text()
    assert text.count("- request:") == 1 and "code: 200" in text and "429" not in text


def _stream_params(**more):
    return {**BASE, "stream": True, "stream_options": {"include_usage": True}, **more}


def _collect(stream) -> tuple[str, object]:
    chunks = list(stream)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks[-1].usage


def test_cut_stream_is_not_stored(store, client, fake):
    params = _stream_params()
    fake.cut_stream_next(after_chunks=3)
    with store.use(key_of(params), record=True):
        partial, _ = _collect(client.chat.completions.create(**params))
    assert partial  # the client got a (short) answer without noticing ...
    assert store.lookup(key_of(params)) is None  # ... which must not become the cached one
    with store.use(key_of(params), record=True):
        full, _ = _collect(client.chat.completions.create(**params))
    assert full.startswith(partial) and full != partial
    assert store.lookup(key_of(params)) is not None


def test_aborted_stream_is_not_stored(store, client, fake):
    params = _stream_params()
    fake.cut_stream_next(after_chunks=2, abort=True)
    with store.use(key_of(params), record=True), pytest.raises(openai.APIConnectionError):
        _collect(client.chat.completions.create(**params))
    assert cassette_files(store.root) == []


def test_full_stream_is_stored_and_replays(tmp_path):
    store = CassetteStore(tmp_path)
    params = _stream_params()
    with FakeOpenAI() as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key=SECRET, max_retries=0)
        with store.use(key_of(params), record=True):
            live_text, live_usage = _collect(client.chat.completions.create(**params))
    stored = store.read_response(key_of(params))
    assert stored["stream"] and stored["json"] is None
    assert stored["text"].rstrip().endswith("data: [DONE]")
    with store.use(key_of(params)):
        text, usage = _collect(offline_client().chat.completions.create(**params))
    assert text == live_text and usage == live_usage and usage.total_tokens > 0


def test_rerecording_is_byte_identical(tmp_path):
    params = {**BASE, "messages": [{"role": "user", "content": "Ünïcode ✓ and\nnew lines"}]}
    stream = _stream_params()
    roots = [tmp_path / "a", tmp_path / "b"]
    for root in roots:
        with FakeOpenAI() as fake:  # a new server, a new port, new request ids and dates
            client = openai.OpenAI(base_url=fake.base_url, api_key=SECRET, max_retries=0)
            store = CassetteStore(root)
            record(store, client, params)
            with store.use(key_of(stream), record=True):
                _collect(client.chat.completions.create(**stream))
    files_a, files_b = cassette_files(roots[0]), cassette_files(roots[1])
    assert len(files_a) == 2
    assert [p.relative_to(roots[0]) for p in files_a] == [p.relative_to(roots[1]) for p in files_b]
    for a, b in zip(files_a, files_b, strict=True):
        assert a.read_bytes() == b.read_bytes()

    # forcing a re-record ("all") over an existing cassette rewrites it with the same bytes
    path = CassetteStore(roots[0]).path_for(key_of(params))
    before, inode = path.read_bytes(), path.stat().st_ino
    with FakeOpenAI() as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key=SECRET, max_retries=0)
        with CassetteStore(roots[0]).vcr_for(key_of(params), "all"):
            client.chat.completions.create(**params)
        assert len(fake.requests) == 1
    assert path.stat().st_ino != inode  # replaced (atomically), not left alone
    assert path.read_bytes() == before


def test_a_failed_write_leaves_no_file(store, client, monkeypatch):
    def broken_replace(src, dst):
        raise OSError("disk full")

    unpatched = httpx2.HTTPTransport.handle_request
    monkeypatch.setattr(cassettes.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"), store.use(key_of(BASE), record=True):
        client.chat.completions.create(**BASE)
    monkeypatch.undo()
    leftovers = [p for p in store.root.rglob("*") if p.is_file()]
    assert leftovers == []
    # vcrpy saves before it unpatches: the failure must not leave the SDK's transport patched
    assert httpx2.HTTPTransport.handle_request is unpatched


def test_a_damaged_cassette_is_a_miss_not_an_answer(store, client):
    record(store, client, BASE)
    path = store.path_for(key_of(BASE))
    path.write_text(path.read_text()[:200], encoding="utf-8")  # as if cut off mid-write
    with pytest.raises(CassetteMissError), store.use(key_of(BASE)):
        offline_client().chat.completions.create(**BASE)


# ---------------------------------------------------------------------------------------
# direct access for the replay server


def _live_exchange(fake: FakeOpenAI, params: dict) -> tuple[dict, dict]:
    headers = {
        "Authorization": f"Bearer {SECRET}",
        "Accept-Encoding": "gzip",
        "Content-Type": "application/json",
    }
    with (
        httpx.Client() as http,
        http.stream(
            "POST", f"{fake.base_url}{CHAT}", content=json.dumps(params).encode(), headers=headers
        ) as answer,
    ):
        raw = b"".join(answer.iter_raw())  # still gzip: write_response must decode it
        response = {
            "status": answer.status_code,
            "reason": answer.reason_phrase,
            "headers": {k: answer.headers.get_list(k) for k in answer.headers},
            "body": raw,
        }
    request = {
        "method": "POST",
        "url": f"{fake.base_url}{CHAT}",
        "body": json.dumps(params),
        "headers": headers,
    }
    return request, response


def test_write_response_matches_vcrpy_byte_for_byte_and_replays(tmp_path, fake, client):
    recorded = CassetteStore(tmp_path / "vcr")
    record(recorded, client, BASE)
    written = CassetteStore(tmp_path / "direct")
    request, response = _live_exchange(fake, BASE)
    assert response["headers"]["content-encoding"] == ["gzip"]
    path = written.write_response(key_of(BASE), request, response)
    assert path is not None
    assert path.read_bytes() == recorded.path_for(key_of(BASE)).read_bytes()
    assert secrets_in(path, [SECRET]) == []
    # and vcrpy replays what write_response wrote
    with written.use(key_of(BASE)):
        replayed = offline_client().chat.completions.create(**BASE)
    assert replayed.choices[0].message.content.startswith("Fake answer")


def test_read_response_returns_status_headers_and_json(store, client):
    live = record(store, client, BASE)
    stored = store.read_response(key_of(BASE))
    assert stored["status"] == 200 and stored["stream"] is False
    assert stored["headers"]["content-type"] == "application/json"
    assert stored["json"]["choices"][0]["message"]["content"] == live.choices[0].message.content
    with pytest.raises(CassetteMissError):
        store.read_response(key_of({**BASE, "seed": 1}))


def test_write_response_refuses_what_recording_refuses(store, fake):
    request, _ = _live_exchange(fake, BASE)
    error = {
        "status": 429,
        "headers": {"content-type": "application/json", "retry-after": "1"},
        "json": {"error": {}},
    }
    assert store.write_response(key_of(BASE), request, error) is None
    partial = {
        "status": 200,
        "headers": {"content-type": "text/event-stream"},
        "text": 'data: {"choices":[]}\n\n',
    }
    assert store.write_response(key_of(BASE), request, partial) is None
    assert cassette_files(store.root) == []
    with pytest.raises(CassetteError, match="key"):
        store.write_response(key_of({**BASE, "seed": 7}), request, {"status": 200, "json": {}})
    ok = {
        "status": 200,
        "headers": {"Set-Cookie": "a=b", "X-Request-Id": "req_1"},
        "json": {"ok": True},
    }
    path = store.write_response(key_of(BASE), request, ok)
    assert path is not None and store.read_response(key_of(BASE))["json"] == {"ok": True}
    assert "set-cookie" not in path.read_text().lower() and "req_1" not in path.read_text()


# ---------------------------------------------------------------------------------------
# housekeeping


class Clock:
    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


def _fill(store: CassetteStore, count: int, start: int = 0) -> list[tuple[str, Path]]:
    out = []
    for i in range(start, start + count):
        params = {**BASE, "seed": i}
        request = {"method": "POST", "path": CHAT, "body": params}
        path = store.write_response(
            key_of(params), request, {"status": 200, "json": {"answer": "x" * 200, "i": i}}
        )
        out.append((key_of(params), path))
    return out


def test_lookups_update_the_index_on_flush(tmp_path):
    clock = Clock()
    store = CassetteStore(tmp_path, clock=clock)
    [(key, _)] = _fill(store, 1)
    store.flush()
    clock.now += 100
    assert store.lookup(key) is not None
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    assert index["last_use"][key] == clock.now - 100  # buffered, not written yet
    store.flush()
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    assert index["last_use"][key] == clock.now


def test_stats(tmp_path):
    clock = Clock()
    store = CassetteStore(tmp_path, clock=clock)
    assert store.stats() == {
        "entries": 0,
        "bytes": 0,
        "oldest_use": None,
        "newest_use": None,
        "root": str(tmp_path),
    }
    entries = []
    for i in range(3):
        entries += _fill(store, 1, start=i)
        clock.now += 10
    stats = store.stats()
    assert stats["entries"] == 3
    assert stats["bytes"] == sum(p.stat().st_size for _, p in entries)
    assert (stats["oldest_use"], stats["newest_use"]) == (clock.now - 30, clock.now - 10)


def test_prune_by_size_evicts_least_recently_used_first(tmp_path):
    clock = Clock()
    store = CassetteStore(tmp_path, clock=clock)
    entries = _fill(store, 5)
    # use order 3, 0, 4, 1, 2 (oldest first), while the files' mtimes say the opposite,
    # so an mtime-only LRU would pick different victims
    for offset, i in enumerate([3, 0, 4, 1, 2]):
        clock.now += 10
        assert store.lookup(entries[i][0]) is not None
        os.utime(entries[i][1], (1e9 + 1000 - offset, 1e9 + 1000 - offset))
    sizes = {i: entries[i][1].stat().st_size for i in range(5)}
    cap = sizes[4] + sizes[1] + sizes[2]
    removed = store.prune(max_bytes=cap)
    assert removed == [entries[3][1], entries[0][1]]
    assert [store.lookup(k) is not None for k, _ in entries] == [False, True, True, False, True]
    assert store.stats()["bytes"] <= cap
    assert set(json.loads((tmp_path / INDEX_NAME).read_text())["last_use"]) == {
        entries[i][0] for i in (1, 2, 4)
    }


def test_prune_by_age_with_mtime_fallback(tmp_path):
    clock = Clock()
    store = CassetteStore(tmp_path, clock=clock)
    entries = _fill(store, 4)
    store.flush()
    now = clock.now
    index = {
        entries[0][0]: now - 10 * 86400,
        entries[1][0]: now - 5 * 86400,
        entries[2][0]: now - 1 * 86400,
    }
    (tmp_path / INDEX_NAME).write_text(json.dumps({"version": 1, "last_use": index}))
    os.utime(
        entries[3][1], (now - 4 * 86400, now - 4 * 86400)
    )  # not in the index: its mtime counts
    removed = store.prune(max_age_days=3, now=now)
    assert sorted(removed) == sorted([entries[0][1], entries[1][1], entries[3][1]])
    assert [p.exists() for _, p in entries] == [False, False, True, False]
    assert store.prune(max_age_days=3, now=now) == []


def test_concurrent_flushes_lose_no_hits(tmp_path):
    """Four processes update the index at once; the file lock keeps every hit."""
    script = textwrap.dedent(
        """
        import sys
        from pytest_mulm.llm.cassettes import CassetteStore
        root, worker = sys.argv[1], int(sys.argv[2])
        store = CassetteStore(root, flush_every=10**9)
        for i in range(100):
            store._note_use(f"{worker:02d}{i:062d}")
            if i % 10 == 9:
                store.flush()
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(w)]) for w in range(4)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    assert len(index["last_use"]) == 400
