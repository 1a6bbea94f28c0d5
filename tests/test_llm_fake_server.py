"""The fake OpenAI server, driven over loopback by the real openai SDK and by raw httpx."""

from __future__ import annotations

import gzip
import json

import httpx
import openai
import pytest
import tiktoken

from pytest_mulm.llm.fake_server import CREATED, FAKE_HEADERS, FakeOpenAI, fake_answer
from pytest_mulm.llm.tokens import ensure_encodings

SECRET = "sk-test-SECRET123"
MODEL = "gpt-4o-mini"


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def client(fake):
    return openai.OpenAI(base_url=fake.base_url, api_key=SECRET, max_retries=0, timeout=10)


@pytest.fixture(scope="module")
def o200k():
    ensure_encodings()  # offline: the packaged copy, never a download
    return tiktoken.get_encoding("o200k_base")


def _messages(text="What is the capital of France?"):
    return [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": text}]


def test_answer_is_deterministic_and_derived_from_the_request(client, fake):
    first = client.chat.completions.create(model=MODEL, messages=_messages())
    second = client.chat.completions.create(model=MODEL, messages=_messages())
    other = client.chat.completions.create(model=MODEL, messages=_messages("And of Spain?"))

    assert first.model_dump() == second.model_dump()
    content = first.choices[0].message.content
    assert content == fake_answer({"model": MODEL, "messages": _messages()})
    assert content.startswith("Fake answer ") and content.endswith(
        ": What is the capital of France?"
    )
    assert other.choices[0].message.content != content
    assert first.model == MODEL and first.created == CREATED
    assert first.choices[0].finish_reason == "stop"
    assert first.id.startswith("chatcmpl-")
    assert len(fake.requests) == 3


def test_any_parameter_changes_the_answer(client):
    base = client.chat.completions.create(model=MODEL, messages=_messages())
    warmer = client.chat.completions.create(model=MODEL, messages=_messages(), temperature=0.9)
    assert base.choices[0].message.content != warmer.choices[0].message.content


def test_usage_follows_openai_chat_accounting(client, o200k):
    messages = _messages("Count my tokens, please: naïve café 東京")
    reply = client.chat.completions.create(model=MODEL, messages=messages)
    # 3 per message + its role and content tokens, + 3 priming the reply
    expected_prompt = 3 + sum(
        3 + len(o200k.encode(m["role"])) + len(o200k.encode(m["content"])) for m in messages
    )
    content = reply.choices[0].message.content
    assert reply.usage.prompt_tokens == expected_prompt
    assert reply.usage.completion_tokens == len(o200k.encode(content))
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.usage.prompt_tokens_details.cached_tokens == 0


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_token_limit_truncates_with_finish_reason_length(client, o200k, field):
    full = fake_answer({"model": MODEL, "messages": _messages(), field: 4})
    reply = client.chat.completions.create(model=MODEL, messages=_messages(), **{field: 4})
    choice = reply.choices[0]
    assert choice.finish_reason == "length"
    assert reply.usage.completion_tokens == 4
    assert choice.message.content == o200k.decode(o200k.encode(full)[:4])
    assert full.startswith(choice.message.content) and choice.message.content != full


def test_json_response_formats_are_valid_json(client):
    as_object = client.chat.completions.create(
        model=MODEL, messages=_messages(), response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(as_object.choices[0].message.content), dict)

    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "population": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "kind": {"enum": ["capital", "town"]},
        },
        "required": ["city", "population", "tags", "kind"],
        "additionalProperties": False,
    }
    structured = client.chat.completions.create(
        model=MODEL,
        messages=_messages(),
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": schema, "strict": True},
        },
    )
    value = json.loads(structured.choices[0].message.content)
    assert set(value) == {"city", "population", "tags", "kind"}
    assert isinstance(value["city"], str) and isinstance(value["population"], int)
    assert isinstance(value["tags"], list) and value["kind"] == "capital"


def test_n_choices_differ(client):
    reply = client.chat.completions.create(model=MODEL, messages=_messages(), n=2)
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.choices[0].message.content != reply.choices[1].message.content


def test_forced_tool_call_has_json_arguments(client):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup_city",
                "parameters": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}},
                    "required": ["name"],
                },
            },
        }
    ]
    reply = client.chat.completions.create(
        model=MODEL,
        messages=_messages(),
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "lookup_city"}},
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "lookup_city"
    assert isinstance(json.loads(call.function.arguments)["name"], str)


def test_stream_gives_the_same_text_and_optional_usage(client):
    plain = client.chat.completions.create(model=MODEL, messages=_messages())
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=_messages(), stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert len([c for c in chunks if c.choices]) > 3  # really streamed in pieces
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == plain.usage.total_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"

    without = list(client.chat.completions.create(model=MODEL, messages=_messages(), stream=True))
    assert all(c.usage is None for c in without)


def test_raw_sse_ends_with_done(fake):
    body = {"model": MODEL, "messages": _messages(), "stream": True}
    response = httpx.post(
        f"{fake.base_url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {SECRET}"},
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [e for e in response.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"


def test_real_api_headers_and_gzip(fake):
    body = {"model": MODEL, "messages": _messages()}
    headers = {"Authorization": f"Bearer {SECRET}", "Accept-Encoding": "gzip"}
    with httpx.Client() as http:
        first = http.post(f"{fake.base_url}/chat/completions", json=body, headers=headers)
        second = http.post(f"{fake.base_url}/chat/completions", json=body, headers=headers)
        plain = http.post(
            f"{fake.base_url}/chat/completions",
            json=body,
            headers={**headers, "Accept-Encoding": "identity"},
        )
        with http.stream(
            "POST", f"{fake.base_url}/chat/completions", json=body, headers=headers
        ) as streamed:
            raw = b"".join(streamed.iter_raw())
    for name, value in FAKE_HEADERS.items():
        assert first.headers[name] == value
    assert (
        first.headers["x-request-id"] != second.headers["x-request-id"]
    )  # volatile, like the real API
    assert "openai-processing-ms" in first.headers
    assert first.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain.headers
    # on the wire it really is gzip of the same JSON
    assert raw[:2] == b"\x1f\x8b"
    assert gzip.decompress(raw) == plain.content
    assert first.json() == plain.json()


def test_missing_authorization_is_401(fake):
    response = httpx.post(
        f"{fake.base_url}/chat/completions", json={"model": MODEL, "messages": _messages()}
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert len(fake.requests) == 1  # counted even though refused


def test_requests_are_recorded_and_reset(client, fake):
    client.chat.completions.create(model=MODEL, messages=_messages(), temperature=0)
    [request] = fake.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert "gzip" in request.headers["accept-encoding"]  # the SDK asks for gzip
    assert request.json == {"model": MODEL, "messages": _messages(), "temperature": 0}
    fake.reset()
    assert fake.requests == []


def test_models_endpoint(client):
    ids = [m.id for m in client.models.list().data]
    assert MODEL in ids
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"


def test_fail_next_429_has_retry_after_then_recovers(client, fake):
    fake.fail_next(429, retry_after=7)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=MODEL, messages=_messages())
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.body["code"] == "rate_limit_exceeded"
    assert (
        client.chat.completions.create(model=MODEL, messages=_messages()).choices[0].finish_reason
        == "stop"
    )


def test_sdk_retries_a_429_and_the_server_counts_both(fake):
    retrying = openai.OpenAI(base_url=fake.base_url, api_key=SECRET, max_retries=1, timeout=10)
    fake.fail_next(429, retry_after=0.01)
    reply = retrying.chat.completions.create(model=MODEL, messages=_messages())
    assert reply.choices[0].finish_reason == "stop"
    assert len(fake.requests) == 2


@pytest.mark.parametrize(
    ("status", "error"), [(500, openai.InternalServerError), (503, openai.InternalServerError)]
)
def test_fail_next_server_errors(client, fake, status, error):
    fake.fail_next(status, count=2)
    for _ in range(2):
        with pytest.raises(error) as info:
            client.chat.completions.create(model=MODEL, messages=_messages())
        assert info.value.status_code == status
        assert info.value.body["type"] == "server_error"
    client.chat.completions.create(model=MODEL, messages=_messages())
    assert len(fake.requests) == 3


def test_fail_next_refuses_a_success_status(fake):
    with pytest.raises(ValueError, match="400 to 599"):
        fake.fail_next(200)


def test_stall_causes_an_sdk_timeout(client, fake):
    fake.stall_next(5)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model=MODEL, messages=_messages(), timeout=0.5)
    # the stalled thread does not block the server
    assert (
        client.chat.completions.create(model=MODEL, messages=_messages()).choices[0].finish_reason
        == "stop"
    )


def test_cut_stream_ends_without_done(client, fake):
    full = (
        client.chat.completions.create(model=MODEL, messages=_messages()).choices[0].message.content
    )
    fake.cut_stream_next(after_chunks=3)
    chunks = list(client.chat.completions.create(model=MODEL, messages=_messages(), stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) == 3
    assert full.startswith(text) and text != full
    assert all(c.choices[0].finish_reason is None for c in chunks)

    fake.cut_stream_next(after_chunks=1)
    body = {"model": MODEL, "messages": _messages(), "stream": True}
    raw = httpx.post(
        f"{fake.base_url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {SECRET}"},
    )
    assert raw.status_code == 200 and "[DONE]" not in raw.text


def test_aborted_stream_is_a_connection_error(client, fake):
    fake.cut_stream_next(after_chunks=2, abort=True)
    with pytest.raises(openai.APIConnectionError):
        list(client.chat.completions.create(model=MODEL, messages=_messages(), stream=True))


def test_stopped_server_answers_nothing():
    fake = FakeOpenAI().start()
    client = openai.OpenAI(base_url=fake.base_url, api_key=SECRET, max_retries=0, timeout=5)
    client.chat.completions.create(
        model=MODEL, messages=_messages()
    )  # opens a keep-alive connection
    fake.stop()
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model=MODEL, messages=_messages())
    assert len(fake.requests) == 1
