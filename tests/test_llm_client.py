"""LLMClient through its public API, against the local fake OpenAI-compatible server.

The fake server (pytest_mulm.llm.fake_server) is a real HTTP server on loopback with
deterministic answers and realistic usage; no test here reaches the network.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_mulm.llm import LLMClient, LLMConfigError
from pytest_mulm.llm.cassettes import secrets_in
from pytest_mulm.llm.fake_server import FakeOpenAI
from pytest_mulm.llm.tokens import count_chat_tokens

SECRET = "sk-test-DO-NOT-STORE-4242"
PROMPT = "Write one sentence about an iris classifier with 4 inputs, as JSON."


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def client(tmp_path: Path, fake: FakeOpenAI) -> LLMClient:
    fake.reset()
    return LLMClient("record", cassette_dir=tmp_path / "cassettes", base_url=fake.base_url, api_key=SECRET,
                     ledger_path=tmp_path / "ledger.jsonl", backoff=0.01)


def _sent(fake: FakeOpenAI) -> int:
    return len(list(fake.chat_requests()))


def test_repeated_prompt_is_an_exact_hit_without_a_request(client: LLMClient, fake: FakeOpenAI) -> None:
    first = client.generate(PROMPT, max_tokens=40, temperature=0)
    assert first.cache is None and not first.fallback and first.cost_usd > 0
    assert _sent(fake) == 1
    again = client.generate(PROMPT, max_tokens=40, temperature=0)
    assert again.cache == "exact" and again.text == first.text and again.cost_usd == 0
    assert _sent(fake) == 1, "an exact hit must not send anything"
    stats = client.usage_stats()
    assert (stats["calls"], stats["paid_calls"], stats["exact_hits"]) == (2, 1, 1)
    assert stats["cost_usd"] == pytest.approx(first.cost_usd)


@pytest.mark.parametrize("variant", [
    {"prompt": PROMPT.replace("4 inputs", "5 inputs")},          # a number
    {"prompt": PROMPT.replace("as JSON", "as YAML")},            # a format name
    {"temperature": 0.7},                                          # a sampling parameter
    {"top_p": 0.5}, {"seed": 7}, {"max_tokens": 41}, {"stop": ["\n"]}, {"n": 2},
    {"model": "gpt-4o-mini"},
    {"response_format": {"type": "json_object"}},
    {"service_tier": "flex"},
])
def test_prompts_that_differ_in_one_detail_are_misses(client: LLMClient, fake: FakeOpenAI, variant: dict) -> None:
    client.generate(PROMPT, max_tokens=40, temperature=0)
    params = {"max_tokens": 40, "temperature": 0, **variant}
    prompt = params.pop("prompt", PROMPT)
    answer = client.generate(prompt, **params)
    assert answer.cache is None, f"{variant} was served from the cache"
    assert _sent(fake) == 2


def test_reordered_keys_are_the_same_request(client: LLMClient, fake: FakeOpenAI) -> None:
    client.complete({"model": client.model, "messages": [{"role": "user", "content": "hi"}], "temperature": 0})
    again = client.complete({"temperature": 0, "messages": [{"content": "hi", "role": "user"}], "model": client.model})
    assert again.cache == "exact" and _sent(fake) == 1


def test_zero_budget_falls_back_without_sending(tmp_path: Path, fake: FakeOpenAI) -> None:
    fake.reset()
    client = LLMClient("record", cassette_dir=tmp_path, base_url=fake.base_url, api_key=SECRET, budget_usd=0,
                       ledger_path=tmp_path / "ledger.jsonl")
    answer = client.generate(PROMPT, max_tokens=40, fallback="the template answer")
    assert answer.fallback and answer.text == "the template answer" and "budget exhausted" in answer.reason
    assert _sent(fake) == 0 and answer.cost_usd == 0


def test_replay_mode_never_sends_and_falls_back_on_a_miss(tmp_path: Path, fake: FakeOpenAI) -> None:
    recorder = LLMClient("record", cassette_dir=tmp_path, base_url=fake.base_url, api_key=SECRET,
                         ledger_path=tmp_path / "l1.jsonl")
    recorded = recorder.generate(PROMPT, max_tokens=40)
    recorder.close()
    fake.reset()
    replay = LLMClient("replay", cassette_dir=tmp_path, base_url=fake.base_url, api_key=SECRET,
                       ledger_path=tmp_path / "l2.jsonl")
    assert replay.generate(PROMPT, max_tokens=40).text == recorded.text
    miss = replay.generate(PROMPT + " Please.", max_tokens=40)
    assert miss.fallback and "replay mode" in miss.reason
    assert _sent(fake) == 0
    assert replay.usage_stats()["cost_usd"] == 0


def test_no_cassette_holds_a_key_cookie_or_organisation(client: LLMClient, fake: FakeOpenAI) -> None:
    client.generate(PROMPT, max_tokens=40)
    client.generate(PROMPT, max_tokens=41)
    assert secrets_in(client.store.root, needles=[SECRET]) == []
    text = "\n".join(p.read_text() for p in client.store.root.rglob("*.yaml"))
    for header in ("authorization", "set-cookie", "openai-organization", "openai-project", SECRET):
        assert header not in text.lower()


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_errors_are_retried_with_backoff_and_not_stored(client: LLMClient, fake: FakeOpenAI, status: int) -> None:
    fake.fail_next(status, count=2, retry_after=0.01 if status == 429 else None)
    answer = client.generate(PROMPT, max_tokens=40)
    assert not answer.fallback and answer.cache is None
    assert _sent(fake) == 3 and client.usage_stats()["retries"] == 2
    assert len(list(client.store.root.rglob("*.yaml"))) == 1  # only the good answer was stored


def test_persistent_failure_falls_back_and_costs_nothing(client: LLMClient, fake: FakeOpenAI) -> None:
    fake.fail_next(500, count=10)
    answer = client.generate(PROMPT, max_tokens=40)
    assert answer.fallback and "failed" in answer.reason
    assert _sent(fake) == client.max_retries + 1
    totals = client.ledger.totals()
    assert totals.spent_micro == 0 and totals.reserved_micro == 0
    assert list(client.store.root.rglob("*.yaml")) == []
    fake.reset()


def test_timeout_is_retried_then_falls_back(tmp_path: Path, fake: FakeOpenAI) -> None:
    fake.reset()
    client = LLMClient("record", cassette_dir=tmp_path, base_url=fake.base_url, api_key=SECRET, timeout=0.3,
                       max_retries=1, backoff=0.01, ledger_path=tmp_path / "ledger.jsonl")
    fake.stall_next(1.5, count=2)
    answer = client.generate(PROMPT, max_tokens=40)
    assert answer.fallback and "Timeout" in answer.reason
    assert client.ledger.totals().spent_micro == 0


def test_no_key_falls_back(tmp_path: Path, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    fake.reset()
    client = LLMClient("live", cassette_dir=tmp_path, base_url=fake.base_url, ledger_path=tmp_path / "l.jsonl")
    answer = client.generate(PROMPT)
    assert answer.fallback and "no API key" in answer.reason and _sent(fake) == 0


def test_off_mode_never_reads_or_sends(client: LLMClient, fake: FakeOpenAI, tmp_path: Path) -> None:
    client.generate(PROMPT, max_tokens=40)
    off = LLMClient("off", cassette_dir=client.store.root, base_url=fake.base_url, api_key=SECRET,
                    ledger_path=tmp_path / "off.jsonl")
    assert off.generate(PROMPT, max_tokens=40).fallback
    assert _sent(fake) == 1


def test_estimate_is_within_five_percent_of_the_servers_prompt_tokens(client: LLMClient) -> None:
    # the fake server counts prompt tokens by OpenAI's documented chat accounting; the
    # estimate must agree with what a server reports for plain chat
    messages = [{"role": "system", "content": "You write short READMEs for exported ML workflows."},
                {"role": "user", "content": "Describe the iris-mlp workflow: 4 inputs, 16 hidden units, 3 classes."}]
    answer = client.generate(messages, max_tokens=30)
    reported = answer.usage["prompt_tokens"]
    estimated = count_chat_tokens(messages, client.model)
    assert abs(estimated - reported) <= 0.05 * reported
    dollars = client.estimate(messages, max_tokens=30)
    from pytest_mulm.llm.models import max_cost_micro

    assert dollars == max_cost_micro(client.model, estimated, 30) / 1e6


def test_bad_settings_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(LLMConfigError, match="unknown LLM mode 'sometimes'; valid: off, replay, record, live"):
        LLMClient("sometimes", cassette_dir=tmp_path)
    with pytest.raises(LLMConfigError, match="budget -1"):
        LLMClient("replay", cassette_dir=tmp_path, budget_usd=-1)


WORKER = textwrap.dedent("""
    import json, sys
    from pytest_mulm.llm import LLMClient
    base, cassettes, ledger, worker = sys.argv[1:5]
    client = LLMClient("live", cassette_dir=cassettes, base_url=base, api_key="sk-test-x", budget_usd=0.002,
                       ledger_path=ledger)
    charged = 0
    answered = 0
    for i in range(40):
        answer = client.generate(f"worker {worker} question {i}: describe a workflow", max_tokens=50)
        if not answer.fallback:
            answered += 1
            charged += round(answer.cost_usd * 1e6)
    print(json.dumps({"charged": charged, "answered": answered}))
""")


def test_eight_concurrent_workers_never_overspend_and_lose_no_charge(tmp_path: Path, fake: FakeOpenAI) -> None:
    from pytest_mulm.llm.ledger import Ledger
    from pytest_mulm.llm.models import max_cost_micro

    fake.reset()
    ledger = tmp_path / "ledger.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, fake.base_url, str(tmp_path / "c"), str(ledger), str(w)],
                              stdout=subprocess.PIPE, text=True) for w in range(8)]
    results = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    totals = Ledger(ledger, 0.002).totals()
    budget = 2000
    one_call_max = max_cost_micro("gpt-6-luna", 40, 50)
    assert totals.spent_micro <= budget + one_call_max
    assert totals.spent_micro == sum(r["charged"] for r in results), "a charge was lost"
    answered = sum(r["answered"] for r in results)
    assert answered == _sent(fake), "every answered call was charged exactly once"
    assert 0 < answered < 8 * 40, "the budget must have stopped some calls"


def test_mulm_cache_stats_and_prune(client: LLMClient, capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_mulm.cli import main

    for i in range(3):
        client.generate(f"{PROMPT} ({i})", max_tokens=40)
    client.close()
    root = str(client.store.root)
    assert main(["cache", "stats", "--cassettes", root]) == 0
    assert "3 cassette(s)" in capsys.readouterr().out
    assert main(["cache", "prune", "--cassettes", root, "--max-size", "1", "--dry-run"]) == 0
    assert "3 cassette(s) would be removed" in capsys.readouterr().out
    assert len(list(client.store.root.rglob("*.yaml"))) == 3
    assert main(["cache", "prune", "--cassettes", root, "--max-age-days", "0"]) == 0
    assert list(client.store.root.rglob("*.yaml")) == []
    assert main(["cache", "prune", "--cassettes", root]) == 2
    assert "give --max-size, --max-age-days or both" in capsys.readouterr().err


def test_similarity_tier_is_opt_in_and_guarded(tmp_path: Path, fake: FakeOpenAI) -> None:
    fake.reset()
    kwargs = dict(cassette_dir=tmp_path, base_url=fake.base_url, api_key=SECRET, ledger_path=tmp_path / "l.jsonl")
    original = "Write a README for the exported iris package. Include installation steps and a usage example."
    paraphrase = "Please write a README for the exported iris package, including installation steps and a usage example."
    LLMClient("record", **kwargs).generate(original, max_tokens=40)
    exact_only = LLMClient("replay", **kwargs)
    assert exact_only.generate(paraphrase, max_tokens=40).fallback, "similarity is off by default"
    similar = LLMClient("replay", similarity=True, **kwargs)
    hit = similar.generate(paraphrase, max_tokens=40)
    assert hit.cache == "similar" and not hit.fallback
    for near_miss in (original.replace("iris", "wine"),                        # an entity / name
                      original.replace("a usage example", "no usage example"),  # a negation
                      original + " Use Markdown tables, not JSON."):             # a format
        assert similar.generate(near_miss, max_tokens=40).fallback, near_miss
    assert similar.generate(paraphrase, max_tokens=41).fallback, "structured fields must match exactly"
    assert similar.usage_stats()["similar_hits"] == 1
    assert _sent(fake) == 1
