"""A local OpenAI-compatible server backed by the cassettes, for artifacts under test.

The suites point the artifact (installed CLI, running service, Space, notebook kernel)
at this server through ``OPENAI_BASE_URL``, so its ``llm`` blocks get exactly the answer
the reference runtime gets: the cassette's in ``replay`` mode, a recorded new answer in
``record`` mode (misses are forwarded by the :class:`~pytest_mulm.llm.client.LLMClient`
and recorded), and the same template fallback otherwise. No artifact under test
reaches the network in ``replay`` mode. Answers carry ``x-mulm-cache`` and
``x-mulm-fallback`` headers saying where they came from.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .client import LLMClient

__all__ = ["ReplayServer"]

# what an artifact under test is given as its key: the server ignores it, no secret is involved
REPLAY_KEY = "mulm-replay-server"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # the artifact's own logs say what it asked

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": self.server.client.model, "object": "model"}]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

    def do_POST(self) -> None:
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
            return
        try:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                raise ValueError("the body must be a JSON object with a messages list")
        except ValueError as exc:
            self._json(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})
            return
        self.server.requests += 1
        completion = self.server.client.complete(body)
        if completion.response is not None:
            answer = completion.response
        else:  # the fallback, shaped as a completion so the artifact reads it like any answer
            answer = {
                "id": f"mulm-fallback-{completion.key[:16]}", "object": "chat.completion", "created": int(time.time()),
                "model": completion.model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": completion.text}}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            }
        self._json(200, answer, {"x-mulm-cache": completion.cache or "miss",
                                 "x-mulm-fallback": "1" if completion.fallback else "0"})

    def _json(self, status: int, value: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(value).encode("utf-8")
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, client: LLMClient):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.client = client
        self.requests = 0


class ReplayServer:
    """``with ReplayServer(client) as server: env = server.env`` — serves on a free loopback port."""

    def __init__(self, client: LLMClient):
        self.client = client
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ReplayServer:
        self._server = _Server(self.client)
        self._thread = threading.Thread(target=self._server.serve_forever, name="mulm-replay", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the replay server is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def requests(self) -> int:
        return self._server.requests if self._server is not None else 0

    @property
    def env(self) -> dict[str, str]:
        """What an artifact process needs to use this server instead of the real API."""
        return {"OPENAI_BASE_URL": self.base_url, "OPENAI_API_KEY": REPLAY_KEY}
