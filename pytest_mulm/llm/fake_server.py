"""A local fake of the OpenAI chat API, for tests and for recording example cassettes.

A real HTTP server on ``127.0.0.1`` (free port, daemon threads), so the real ``openai``
SDK, its httpx transport and vcrpy's patches are all exercised over loopback::

    with FakeOpenAI() as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0)
        client.chat.completions.create(model="gpt-4o-mini", messages=[...])
        assert len(fake.requests) == 1

Answers are deterministic functions of the request body (:func:`fake_answer`), so a
recorded cassette is the same on every run and a replayed answer can be checked against
the request that produced it. The server also reproduces what makes real responses
awkward to store: secret and volatile headers (``openai-organization``, ``set-cookie``,
``x-request-id``, ...), gzip bodies, SSE streams, and switchable faults (:meth:`fail_next`,
:meth:`stall_next`, :meth:`cut_stream_next`).

Endpoints (any base path: only the tail is looked at): ``POST .../chat/completions``,
``GET .../models`` and ``GET .../models/<id>``. Every request needs an
``Authorization: Bearer ...`` header, as with the real API (401 otherwise).
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import re
import socket
import threading
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .tokens import count_chat_tokens, encoding_for

__all__ = ["CREATED", "FAKE_HEADERS", "FakeOpenAI", "ReceivedRequest", "fake_answer"]

# a fixed timestamp (2026-01-01T00:00:00Z): recorded cassettes must not change between runs
CREATED = 1767225600

# what real responses carry and cassettes must not: tests look for these values in
# stored files; x-request-id and openai-processing-ms change on every response
FAKE_HEADERS = {
    "openai-organization": "org-FAKEORG0123456789",
    "openai-project": "proj_FAKEPROJECT0123456789",
    "set-cookie": "__cf_bm=FAKECOOKIE0123456789; path=/; HttpOnly; Secure; SameSite=None",
}

_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-6-luna")

_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to access this resource.", "invalid_request_error", None),
    404: ("The requested resource was not found.", "invalid_request_error", "not_found"),
    429: (
        "Rate limit reached for requests. Please try again later.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    502: ("Bad gateway.", "server_error", None),
    503: (
        "The engine is currently overloaded, please try again later.",
        "server_error",
        "overloaded",
    ),
}


@dataclass(frozen=True)
class ReceivedRequest:
    """One HTTP request as the fake server saw it (header names in lower case)."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any


@dataclass
class _Fault:
    kind: str  # "fail" | "stall" | "cut"
    status: int = 0
    retry_after: float | None = None
    message: str | None = None
    seconds: float = 0.0
    after_chunks: int = 1
    abort: bool = False


# ---------------------------------------------------------------------------------------
# deterministic answers


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(body: Mapping[str, Any]) -> str:
    # stream and stream_options change the transport, not the answer: a streamed and a
    # plain request for the same prompt get the same text, as with a seeded real model
    relevant = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    return hashlib.sha256(_canonical(relevant).encode("utf-8")).hexdigest()[:12]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type") == "text"
        )
    return ""


def _echo(messages: Any, limit: int = 60) -> str:
    last = ""
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, Mapping) and message.get("role") == "user":
                last = _text_of(message.get("content"))
    last = " ".join(last.split())
    return last if len(last) <= limit else last[: limit - 1] + "…"


def _instance(schema: Any, root: Mapping[str, Any], text: str, depth: int = 0) -> Any:
    """A small value valid against ``schema`` (the subset structured outputs use)."""
    if not isinstance(schema, Mapping) or depth > 12:
        return text
    if "$ref" in schema:
        ref = str(schema["$ref"])
        target: Any = root
        for part in ref.removeprefix("#/").split("/") if ref.startswith("#/") else ():
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return _instance(target, root, text, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        if schema.get(combinator):
            return _instance(schema[combinator][0], root, text, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        return {
            name: _instance(sub, root, f"{text} ({name})" if depth else text, depth + 1)
            for name, sub in props.items()
        }
    if kind == "array":
        if schema.get("maxItems") == 0:
            return []
        return [_instance(schema.get("items", {}), root, text, depth + 1)]
    if kind == "integer":
        return int(schema.get("minimum", 0))
    if kind == "number":
        return schema.get("minimum", 0)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return text


def fake_answer(body: Mapping[str, Any], index: int = 0) -> str:
    """The full (untruncated) content the fake server answers ``body`` with.

    ``Fake answer <digest>: <echo of the last user message>`` where the digest covers
    every field but ``stream``/``stream_options``; valid JSON when ``response_format``
    asks for ``json_object`` or ``json_schema``. Choice ``index`` > 0 (``n`` > 1) gets a
    suffix so the choices differ.
    """
    digest = _digest(body)
    echo = _echo(body.get("messages"))
    suffix = f" (choice {index})" if index else ""
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    if kind == "json_object":
        return _canonical({"answer": echo + suffix, "digest": digest})
    if kind == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if isinstance(schema, Mapping):
            return _canonical(_instance(schema, schema, f"Fake {digest}: {echo}{suffix}"))
        return _canonical({"answer": echo + suffix, "digest": digest})
    return f"Fake answer {digest}: {echo}{suffix}"


def _forced_tool(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The function tool the request forces (tool_choice "required" or a named one)."""
    tools = [
        t
        for t in body.get("tools") or []
        if isinstance(t, Mapping) and isinstance(t.get("function"), Mapping)
    ]
    choice = body.get("tool_choice")
    if not tools or choice in (None, "none", "auto"):
        return None
    if choice == "required":
        return tools[0]["function"]
    if isinstance(choice, Mapping):
        wanted = (choice.get("function") or {}).get("name")
        return next((t["function"] for t in tools if t["function"].get("name") == wanted), None)
    return None


# ---------------------------------------------------------------------------------------
# the HTTP server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeOpenAI


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1: keep-alive like the real API, and chunked bodies so a stream can be cut
    # without the peer mistaking a closed connection for a normal end
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # test output stays clean; fake.requests is the log

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, add=False)

    # -- dispatch -------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        fake = self.server.fake
        try:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            path = self.path.split("?", 1)[0]
            fake._record(
                ReceivedRequest(method, path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            if fake._stopping.is_set():
                self.close_connection = True
                return
            auth = self.headers.get("Authorization", "")
            if not re.fullmatch(r"Bearer \S+", auth.strip()):
                self._error(
                    401, "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
                )
                return
            fault = fake._take_fault(("stall", "fail"))
            if fault is not None and fault.kind == "stall":
                # the client gives up meanwhile; interruptible so stop() does not wait
                fake._stopping.wait(fault.seconds)
                fault = None
            if fault is not None:
                self._error(fault.status, fault.message, retry_after=fault.retry_after)
                return
            if method == "POST" and path.endswith("/chat/completions"):
                self._chat(body)
            elif method == "GET" and re.search(r"/models/?$", path):
                self._json(200, {"object": "list", "data": [self._model(m) for m in _MODELS]})
            elif method == "GET" and (m := re.search(r"/models/([^/]+)$", path)):
                self._json(200, self._model(m.group(1)))
            else:
                self._error(404, f"Unknown request URL: {method} {path}.")
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            # the client went away (timeout, cut stream); nothing left to answer
            self.close_connection = True

    @staticmethod
    def _model(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": CREATED, "owned_by": "pytest-mulm-fake"}

    # -- responses -------------------------------------------------------------------
    def _common_headers(self) -> None:
        fake = self.server.fake
        for name, value in FAKE_HEADERS.items():
            self.send_header(name, value)
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        self.send_header("openai-processing-ms", str(next(fake._counter) % 997 + 3))
        self.send_header("openai-version", "2020-10-01")

    def _send_body(
        self, status: int, payload: bytes, content_type: str, extra: Mapping[str, str] = {}
    ) -> None:  # noqa: B006 - read only
        if "gzip" in (self.headers.get("Accept-Encoding") or "").lower():
            # mtime=0: the same answer compresses to the same bytes
            payload = gzip.compress(payload, mtime=0)
            extra = {**extra, "Content-Encoding": "gzip"}
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self._common_headers()
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def _json(self, status: int, value: Any, extra: Mapping[str, str] = {}) -> None:  # noqa: B006 - read only
        # indented like the real API, so stored bodies look like real ones
        self._send_body(
            status,
            json.dumps(value, indent=2, ensure_ascii=False).encode("utf-8"),
            "application/json",
            extra,
        )

    def _error(
        self,
        status: int,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        param: str | None = None,
    ) -> None:
        default_message, kind, code = _ERRORS.get(
            status,
            ("Request failed.", "server_error" if status >= 500 else "invalid_request_error", None),
        )
        extra: dict[str, str] = {}
        if status == 429:
            retry_after = 1 if retry_after is None else retry_after
        if retry_after is not None:
            extra["Retry-After"] = f"{retry_after:g}"
        error = {"message": message or default_message, "type": kind, "param": param, "code": code}
        self._json(status, {"error": error}, extra)

    # -- chat completions ----------------------------------------------------------
    def _chat(self, body: Any) -> None:
        if not isinstance(body, dict):
            self._error(400, "We could not parse the JSON body of your request.")
            return
        model = body.get("model")
        if not isinstance(model, str) or not model:
            self._error(400, "you must provide a model parameter", param="model")
            return
        messages = body.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, dict) for m in messages)
        ):
            self._error(
                400, "'messages' must be a non-empty array of message objects.", param="messages"
            )
            return
        choices, completion_tokens = self._choices(body)
        prompt_tokens = count_chat_tokens(messages, model)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        # from the canonical body, not the raw bytes: clients that format the same
        # request differently (key order, spaces) get the same completion id
        ident = f"chatcmpl-{hashlib.sha256(_canonical(body).encode('utf-8')).hexdigest()[:24]}"
        head = {
            "id": ident,
            "created": CREATED,
            "model": model,
            "system_fingerprint": "fp_fake0001",
            "service_tier": body.get("service_tier") or "default",
        }
        if body.get("stream") is True:
            options = body.get("stream_options")
            include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
            self._stream(head, choices, usage if include_usage else None)
            return
        completion = {
            **head,
            "object": "chat.completion",
            "choices": [
                {"index": i, "message": msg, "logprobs": None, "finish_reason": finish}
                for i, (msg, finish, _pieces) in enumerate(choices)
            ],
            "usage": usage,
        }
        self._json(200, completion)

    def _choices(
        self, body: dict[str, Any]
    ) -> tuple[list[tuple[dict[str, Any], str, list[str]]], int]:
        """Per choice: (message, finish_reason, streamed pieces); and completion tokens."""
        encoding = encoding_for(str(body["model"]))
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        limit = limit if isinstance(limit, int) and limit >= 0 else None
        n = body.get("n") if isinstance(body.get("n"), int) and body.get("n", 1) > 0 else 1
        tool = _forced_tool(body)
        out: list[tuple[dict[str, Any], str, list[str]]] = []
        total = 0
        for index in range(n):
            if tool is not None:
                params = tool.get("parameters") or {"type": "object", "properties": {}}
                arguments = _canonical(
                    _instance(
                        params, params, f"Fake {_digest(body)}: {_echo(body.get('messages'))}"
                    )
                )
                name = str(tool.get("name", "tool"))
                call = {
                    "id": f"call_{_digest({**body, 'index': index})}",
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
                total += len(encoding.encode(name + arguments, disallowed_special=()))
                out.append(
                    (
                        {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [call],
                            "refusal": None,
                            "annotations": [],
                        },
                        "tool_calls",
                        [],
                    )
                )
                continue
            tokens = encoding.encode(fake_answer(body, index), disallowed_special=())
            finish = "stop"
            if limit is not None and len(tokens) > limit:
                tokens, finish = tokens[:limit], "length"
            total += len(tokens)
            # one streamed piece per token, as the real API does; decoded cumulatively
            # so multi-byte characters split across tokens stay intact
            pieces: list[str] = []
            done = ""
            for end in range(1, len(tokens) + 1):
                text = encoding.decode(tokens[:end])
                if not text.endswith("\ufffd") or end == len(tokens):
                    pieces.append(text[len(done) :])
                    done = text
            content = encoding.decode(tokens)
            out.append(
                (
                    {"role": "assistant", "content": content, "refusal": None, "annotations": []},
                    finish,
                    pieces,
                )
            )
        return out, total

    def _stream(
        self,
        head: dict[str, Any],
        choices: list[tuple[dict[str, Any], str, list[str]]],
        usage: dict[str, Any] | None,
    ) -> None:
        fake = self.server.fake
        cut = fake._take_fault(("cut",))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self._common_headers()
        self.end_headers()
        base = {**head, "object": "chat.completion.chunk"}
        extra = {"usage": None} if usage is not None else {}

        def chunk(choice_list: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
            return {**base, "choices": choice_list, **extra, **more}

        events: list[dict[str, Any]] = []
        for index, (message, finish, pieces) in enumerate(choices):
            events.append(
                chunk(
                    [
                        {
                            "index": index,
                            "delta": {
                                "role": "assistant",
                                "content": "" if message.get("content") is not None else None,
                                "refusal": None,
                            },
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ]
                )
            )
            if message.get("tool_calls"):
                calls = [{"index": 0, **message["tool_calls"][0]}]
                events.append(
                    chunk(
                        [
                            {
                                "index": index,
                                "delta": {"tool_calls": calls},
                                "logprobs": None,
                                "finish_reason": None,
                            }
                        ]
                    )
                )
            for piece in pieces:
                events.append(
                    chunk(
                        [
                            {
                                "index": index,
                                "delta": {"content": piece},
                                "logprobs": None,
                                "finish_reason": None,
                            }
                        ]
                    )
                )
            events.append(
                chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": finish}])
            )
        if usage is not None:
            events.append({**base, "choices": [], "usage": usage})
        for number, event in enumerate(events):
            if cut is not None and number >= cut.after_chunks:
                if cut.abort:
                    # no terminating chunk: the client sees a broken transfer
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._chunk(b"")  # a clean HTTP end, but no [DONE]: a partial stream
                return
            self._chunk(
                f"data: {json.dumps(event, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()
            )
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode("ascii") + data + b"\r\n")
        self.wfile.flush()


class FakeOpenAI:
    """A running fake OpenAI-compatible server; use as a context manager.

    ``requests`` lists every request received (failed ones too), so tests can count
    HTTP calls; faults are queued and consumed one request at a time.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._faults: deque[_Fault] = deque()
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._counter = itertools.count()
        self.requests: list[ReceivedRequest] = []

    # -- life cycle ---------------------------------------------------------------
    def start(self) -> FakeOpenAI:
        """Bind a free loopback port and serve in a daemon thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self._host, 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-openai",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections, so nothing answers any more."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(
                "the fake OpenAI server is not running; call start() or use 'with FakeOpenAI()'"
            )
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no API prefix)."""
        return f"http://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to give the SDK as ``base_url``: ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    # -- switches -----------------------------------------------------------------
    def fail_next(
        self,
        status: int,
        count: int = 1,
        retry_after: float | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``count`` requests with ``status`` and an OpenAI-shaped error.

        A 429 always carries ``Retry-After`` (``retry_after`` seconds, default 1).
        """
        if not 400 <= status <= 599:
            raise ValueError(f"fail_next: status must be an HTTP error (400 to 599), got {status}")
        with self._lock:
            self._faults.extend(
                _Fault("fail", status=status, retry_after=retry_after, message=message)
                for _ in range(count)
            )

    def stall_next(self, seconds: float, count: int = 1) -> None:
        """Sleep ``seconds`` before answering the next ``count`` requests (client timeouts)."""
        with self._lock:
            self._faults.extend(_Fault("stall", seconds=seconds) for _ in range(count))

    def cut_stream_next(
        self, count: int = 1, *, after_chunks: int = 2, abort: bool = False
    ) -> None:
        """End the next ``count`` streams after ``after_chunks`` events, without ``[DONE]``.

        By default the HTTP transfer ends cleanly (a partial stream the client cannot
        tell from a short one); ``abort=True`` drops the connection mid-transfer instead.
        """
        with self._lock:
            self._faults.extend(
                _Fault("cut", after_chunks=after_chunks, abort=abort) for _ in range(count)
            )

    def reset(self) -> None:
        """Forget received requests and pending faults."""
        with self._lock:
            self.requests.clear()
            self._faults.clear()

    # -- used by the handler ------------------------------------------------------------
    def _record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _take_fault(self, kinds: tuple[str, ...]) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind in kinds:
                    self._faults.remove(fault)
                    return fault
        return None

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def chat_requests(self) -> Iterator[ReceivedRequest]:
        """The received chat-completion requests, in order."""
        return (r for r in list(self.requests) if r.path.endswith("/chat/completions"))
