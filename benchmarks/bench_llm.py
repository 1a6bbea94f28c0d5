"""LLM layer figures (design.md §9): the cost of an AI-enhanced export, prompt
compression savings, cache lookup, and the estimate against the server's count.

Answers come from pytest-mulm's local fake OpenAI-compatible server, whose ``usage``
counts tokens by OpenAI's documented chat accounting; dollars are at the list prices of
the dated table in ``pytest_mulm/llm/models.py``. Because a real model's answers may be
longer than the fake's, the guaranteed maximum (prompt tokens plus every ``max_tokens``
cap) is printed beside the measured cost: that is what the budget reserves.

    .venv/bin/python benchmarks/bench_llm.py [--json benchmarks/llm-results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from pytest_mulm.llm import LLMClient
from pytest_mulm.llm.compression import compress_messages, savings
from pytest_mulm.llm.docs import _request, write_docs
from pytest_mulm.llm.fake_server import FakeOpenAI
from pytest_mulm.loader import load_workflow
from pytest_mulm.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = [ROOT / "examples" / f"{n}.json" for n in ("iris-mlp", "moe-router", "sentiment-pipeline")]


def export_cost(path: Path, fake: FakeOpenAI, tmp: Path) -> dict:
    """One AI-enhanced export from empty cassettes: the prose, plus every llm block on every example."""
    wf = load_workflow(path)
    client = LLMClient("record", cassette_dir=tmp / path.stem, base_url=fake.base_url, api_key="fake-key",
                       ledger_path=tmp / f"{path.stem}.ledger")
    sent_before = len(list(fake.chat_requests()))
    docs = write_docs(wf, client)
    runtime = Runtime(wf, llm=client)
    for value in wf.examples:
        runtime.run(value)
    stats = client.usage_stats()
    messages, _ = _request(wf)
    compressed = compress_messages(messages)
    # what the budget reserved before each call: prompt tokens plus the max_tokens cap
    ledger = [json.loads(line) for line in (tmp / f"{path.stem}.ledger").read_text().splitlines()]
    worst = sum(rec["micro"] for rec in ledger if rec["kind"] == "reserve")
    # a second identical export: everything from the cassettes
    again = LLMClient("record", cassette_dir=tmp / path.stem, base_url=fake.base_url, api_key="fake-key",
                      ledger_path=tmp / f"{path.stem}.ledger2")
    write_docs(wf, again)
    runtime2 = Runtime(wf, llm=again)
    for value in wf.examples:
        runtime2.run(value)
    second = again.usage_stats()
    return {
        "workflow": path.stem, "docs": docs.origin, "requests": len(list(fake.chat_requests())) - sent_before,
        "paid_calls": stats["paid_calls"], "tokens_in": stats["tokens_in"], "tokens_out": stats["tokens_out"],
        "cost_usd": stats["cost_usd"], "max_cost_usd": worst / 1e6,
        "second_run_paid_calls": second["paid_calls"], "second_run_cost_usd": second["cost_usd"],
        "compression": savings(messages, compressed, client.model),
    }


def lookup_ms(tmp: Path, fake: FakeOpenAI, n: int = 2000) -> dict:
    client = LLMClient("record", cassette_dir=tmp / "lookup", base_url=fake.base_url, api_key="fake-key",
                       ledger_path=tmp / "lookup.ledger")
    client.generate("warm up", max_tokens=5)
    times = []
    for _ in range(n):
        started = time.perf_counter()
        client.generate("warm up", max_tokens=5)
        times.append((time.perf_counter() - started) * 1000)
    return {"exact_hit_generate_median_ms": round(statistics.median(times), 4), "samples": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI() as fake:
        rows = [export_cost(p, fake, Path(tmp)) for p in EXAMPLES]
        lookup = lookup_ms(Path(tmp), fake)
    print(f"{'workflow':<20} {'docs':<8} {'req':>4} {'tok in':>7} {'tok out':>8} {'cost $':>10} {'max $':>10} "
          f"{'2nd run $':>10} {'prompt saved':>13}")
    for r in rows:
        c = r["compression"]
        print(f"{r['workflow']:<20} {r['docs']:<8} {r['requests']:>4} {r['tokens_in']:>7} {r['tokens_out']:>8} "
              f"{r['cost_usd']:>10.6f} {r['max_cost_usd']:>10.6f} {r['second_run_cost_usd']:>10.6f} "
              f"{c['saved']:>5} ({c['ratio'] * 100:.1f} %)")
    print(f"target: one AI-enhanced export < $0.01 at list prices: "
          f"{'met' if all(r['max_cost_usd'] < 0.01 for r in rows) else 'NOT met'} (by the guaranteed maximum)")
    print(f"cache: exact-hit generate() median {lookup['exact_hit_generate_median_ms']} ms "
          f"(cassette lookup alone: benchmarks/bench_cassettes.py)")
    if args.json:
        args.json.write_text(json.dumps({"exports": rows, "lookup": lookup}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
