"""Re-record the cassettes shipped for the examples.

By default the answers come from pytest-mulm's local fake OpenAI-compatible server
(deterministic, free, offline): that is how the shipped cassettes were made. With
``--real`` the requests go to the API at OPENAI_BASE_URL with OPENAI_API_KEY (costs
money, within --budget).

    python cassettes/record.py            # fake server (what is committed)
    python cassettes/record.py --real     # a real model
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pytest_mulm.llm.client import LLMClient
from pytest_mulm.llm.docs import write_docs
from pytest_mulm.llm.fake_server import FakeOpenAI
from pytest_mulm.loader import load_workflow
from pytest_mulm.runtime import Runtime

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
WORKFLOWS = [EXAMPLES / "iris-mlp.json", EXAMPLES / "moe-router.json", EXAMPLES / "sentiment-pipeline.json",
             HERE.parent / "tests" / "workflows" / "own" / "summary-chat.json"]


def record(client: LLMClient) -> None:
    for path in WORKFLOWS:
        wf = load_workflow(path)
        before = client.usage_stats()["cost_usd"]
        docs = write_docs(wf, client)  # the prose of every format's artifacts
        runtime = Runtime(wf, llm=client)  # the llm blocks on every example
        for value in wf.examples:
            runtime.run(value)
        cost = client.usage_stats()["cost_usd"] - before
        print(f"{path.name}: docs {docs.origin}, {len(wf.examples)} example(s), ${cost:.6f} at list prices")
    client.close()
    print(client.usage_stats())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="ask the API at OPENAI_BASE_URL instead of the fake server")
    parser.add_argument("--budget", type=float, default=1.0, help="dollars (with --real)")
    args = parser.parse_args()
    if args.real:
        record(LLMClient("record", cassette_dir=HERE, budget_usd=args.budget, api_key=os.environ.get("OPENAI_API_KEY")))
        return
    with FakeOpenAI() as fake:
        record(LLMClient("record", cassette_dir=HERE, base_url=fake.base_url, api_key="fake-key-not-a-secret"))


if __name__ == "__main__":
    main()
