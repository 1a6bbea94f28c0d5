"""The LLM layer inside a verification run: cassettes as the cache, the budget, no key,
generated blocks. Model answers come from pytest-mulm's local fake OpenAI server or a
scripted loopback server defined here; nothing reaches the network."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pytest_mulm.llm import LLMClient
from pytest_mulm.llm.blockgen import GenerationRefused, resolve_generated_blocks
from pytest_mulm.llm.fake_server import FakeOpenAI
from pytest_mulm.loader import load_workflow, parse_workflow
from pytest_mulm.runtime import Runtime

ROOT = Path(__file__).resolve().parent
SUMMARY_CHAT = ROOT / "workflows" / "own" / "summary-chat.json"
GENERATED = ROOT / "workflows" / "llm" / "generated-text.json"
REPO_CASSETTES = ROOT.parent / "cassettes"

VOWELS_DOC = {
    "id": "vowels", "nodes": [
        {"id": "text", "data": {"type": "input", "category": "input", "config": {"inputType": "text", "examples": ["banana"]}}},
        {"id": "count", "data": {"label": "Count vowels", "type": "analysis", "config": {
            "generate": "Count the vowels (a, e, i, o, u) in the text, ignoring case.",
            "examples": [{"input": "banana", "output": 3}, {"input": "AEIOU xyz", "output": 5}]}}},
        {"id": "out", "data": {"type": "output", "category": "output", "config": {}}},
    ],
    "edges": [{"id": "e1", "source": "text", "target": "count"}, {"id": "e2", "source": "count", "target": "out"}],
}
GOOD_CODE = "```python\ndef count_vowels(text):\n    return sum(1 for c in text.lower() if c in 'aeiou')\n```"
UNSAFE_CODE = ("```python\nimport subprocess\n\ndef count_vowels(text):\n"
               "    return len(subprocess.run('echo ' + text, shell=True, capture_output=True).stdout)\n```")


class Scripted:
    """A loopback OpenAI-compatible server that answers every chat request with ``answer``."""

    def __init__(self, answer: str):
        self.answer, self.requests = answer, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                outer.requests += 1
                payload = json.dumps({
                    "id": "scripted", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": outer.answer}}],
                    "usage": {"prompt_tokens": 200, "completion_tokens": 40, "total_tokens": 240},
                }).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_model_written_block_is_recorded_once_then_replayed(tmp_path: Path) -> None:
    wf = parse_workflow(VOWELS_DOC, base_dir=tmp_path)
    assert wf.problems, "a generated block without code cannot run before the LLM layer writes it"
    server = Scripted(GOOD_CODE)
    try:
        client = LLMClient("record", cassette_dir=tmp_path / "c", base_url=server.base_url, api_key="sk-test-x",
                           ledger_path=tmp_path / "l.jsonl")
        resolved, infos = resolve_generated_blocks(wf, client)
        client.close()
    finally:
        server.stop()
    assert infos[0]["origin"] == "model" and infos[0]["cost_usd"] > 0 and server.requests == 1
    assert Runtime(resolved).run("Banana bread") == 5
    replay = LLMClient("replay", cassette_dir=tmp_path / "c", ledger_path=tmp_path / "l2.jsonl")
    again, infos2 = resolve_generated_blocks(wf, replay)
    assert infos2[0]["cost_usd"] == 0 and replay.usage_stats()["exact_hits"] == 1
    assert again.node("count").source == resolved.node("count").source


def test_unsafe_model_code_is_refused_showing_the_code_and_the_rule(tmp_path: Path) -> None:
    wf = parse_workflow(VOWELS_DOC, base_dir=tmp_path)
    server = Scripted(UNSAFE_CODE)
    try:
        client = LLMClient("record", cassette_dir=tmp_path, base_url=server.base_url, api_key="sk-test-x",
                           ledger_path=tmp_path / "l.jsonl")
        with pytest.raises(GenerationRefused) as caught:
            resolve_generated_blocks(wf, client)
    finally:
        server.stop()
    message = str(caught.value)
    assert "node 'count'" in message and "shell=True" in message  # the code the model wrote
    assert "line 1: import of 'subprocess' is not allowed" in message
    assert "line 4: bandit B602" in message
    assert "give the block data.sourceCode" in message
    assert server.requests == 2, "one retry with the reasons, then refusal"


@pytest.mark.slow
def test_generated_blocks_by_pattern_verify_for_free(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(f"--mulm-workflow={GENERATED}", "--mulm-format=python-package",
                                           "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-2000:]
    report = json.loads((pytester.path / "mulm-out" / "mulm-report.json").read_text())
    origins = {b["node"]: b["origin"] for b in report["llm"]["generated_blocks"]}
    assert origins == {"normalise": "pattern:normalize_text", "words": "pattern:split_words"}
    assert report["llm"]["paid_calls"] == 0 and report["llm"]["cost_usd"] == 0


def test_generated_block_without_pattern_or_cassette_is_a_usage_error(pytester: pytest.Pytester) -> None:
    wf = pytester.path / "vowels.json"
    wf.write_text(json.dumps(VOWELS_DOC))
    result = pytester.runpytest_subprocess(f"--mulm-workflow={wf}", "--mulm-format=python-package", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "node 'count'" in err and "could not be asked" in err and "Traceback" not in err


@pytest.mark.slow
def test_second_identical_run_makes_no_requests_and_costs_nothing(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAI() as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-9999")
        args = [f"--mulm-workflow={SUMMARY_CHAT}", "--mulm-format=python-package", "--mulm-ai=record",
                "--mulm-cassettes=cassettes", "-p", "no:cacheprovider"]
        first = pytester.runpytest_subprocess(*args)
        assert first.ret == pytest.ExitCode.OK, first.stdout.str()[-2000:]
        usage = json.loads((pytester.path / "mulm-out" / "mulm-report.json").read_text())["llm"]
        sent = len(list(fake.chat_requests()))
        assert sent == usage["paid_calls"] > 0 and usage["cost_usd"] > 0
        second = pytester.runpytest_subprocess(*args)
        assert second.ret == pytest.ExitCode.OK
        usage2 = json.loads((pytester.path / "mulm-out" / "mulm-report.json").read_text())["llm"]
        assert len(list(fake.chat_requests())) == sent, "the second run sent HTTP requests"
        assert usage2["paid_calls"] == 0 and usage2["cost_usd"] == 0 and usage2["exact_hits"] > 0
    stored = "\n".join(p.read_text() for p in (pytester.path / "cassettes").rglob("*.yaml"))
    assert "sk-test-SECRET-9999" not in stored and "authorization" not in stored.lower()


@pytest.mark.slow
def test_run_without_key_or_reachable_api_passes(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://192.0.2.1:9/v1")  # TEST-NET: nothing answers there
    result = pytester.runpytest_subprocess(f"--mulm-workflow={SUMMARY_CHAT}", "--mulm-format=python-package",
                                           f"--mulm-cassettes={REPO_CASSETTES}", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-2000:]
    report = json.loads((pytester.path / "mulm-out" / "mulm-report.json").read_text())
    assert report["llm"]["paid_calls"] == 0 and report["llm"]["exact_hits"] > 0
    assert report["formats"]["python-package"]["docs"]["origin"] == "ai"


def test_llm_block_answers_come_from_the_cassettes_in_the_reference(tmp_path: Path) -> None:
    wf = load_workflow(SUMMARY_CHAT)
    client = LLMClient("replay", cassette_dir=REPO_CASSETTES, ledger_path=tmp_path / "l.jsonl")
    answer = Runtime(wf, llm=client).run(wf.examples[0])
    assert answer.startswith("Fake answer ") and client.usage_stats()["exact_hits"] == 1
    assert Runtime(wf).run(wf.examples[0]).startswith("[template fallback")
