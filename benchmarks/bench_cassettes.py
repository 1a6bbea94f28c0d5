"""Cassette cache lookups at 10,000 entries (design.md §9: "cache lookup under 1 ms").

    python benchmarks/bench_cassettes.py [--entries N] [--lookups N] [--json OUT]

Fills a temporary folder with ``--entries`` real cassettes (written through
``CassetteStore.write_response``, the same filters and serializer as recording), then
times ``CassetteStore.lookup`` one call at a time for hits and misses in random order,
and for comparison ``read_response`` (load and parse one cassette), ``flush`` (the index
of last use), ``stats`` and ``prune``. Prints medians and p99; the target is judged from
the printed figure, never asserted. The only asserts are correctness checks (every hit
is found, every miss is not).

The files were just written, so the OS page cache is warm; that is also the state of a
test run that looks up cassettes it has listed or used before.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_mulm.llm.cassettes import CassetteStore, request_key  # noqa: E402

TARGET_LOOKUP_MS = 1.0
CHAT = "/chat/completions"


def _params(i: int) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You write export descriptions for ML workflows."},
            {"role": "user", "content": f"Describe workflow number {i} in two sentences."},
        ],
        "temperature": 0.2,
    }


def _answer(i: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{i:024d}",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": f"Workflow {i} classifies inputs. " * 8,
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 40, "completion_tokens": 64, "total_tokens": 104},
    }


def _ms(samples_ns: list[int]) -> tuple[float, float]:
    ordered = sorted(samples_ns)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) / 1e6, p99 / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--entries", type=int, default=10_000, help="cassettes to create (default 10000)"
    )
    parser.add_argument(
        "--lookups", type=int, default=20_000, help="timed lookups of hits, and as many of misses"
    )
    parser.add_argument("--reads", type=int, default=1_000, help="timed read_response calls")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory(prefix="mulm-bench-cassettes-") as tmp:
        store = CassetteStore(Path(tmp) / "cassettes", flush_every=10**9)
        keys: list[str] = []
        started = time.perf_counter()
        for i in range(args.entries):
            params = _params(i)
            key = request_key("POST", CHAT, params)
            path = store.write_response(
                key,
                {"method": "POST", "path": CHAT, "body": params},
                {"status": 200, "json": _answer(i)},
            )
            assert path is not None
            keys.append(key)
        fill_s = time.perf_counter() - started
        started = time.perf_counter()
        store.flush()
        first_flush_ms = (time.perf_counter() - started) * 1e3

        misses = [request_key("POST", CHAT, _params(args.entries + i)) for i in range(args.lookups)]
        hits = [rng.choice(keys) for _ in range(args.lookups)]
        order = [(k, True) for k in hits] + [(k, False) for k in misses]
        rng.shuffle(order)
        hit_ns: list[int] = []
        miss_ns: list[int] = []
        clock = time.perf_counter_ns
        for key, present in order:
            t0 = clock()
            found = store.lookup(key)
            elapsed = clock() - t0
            assert (found is not None) == present, key
            (hit_ns if present else miss_ns).append(elapsed)

        started = time.perf_counter()
        store.flush()  # every entry was hit: the index now holds all of them
        flush_ms = (time.perf_counter() - started) * 1e3

        read_ns: list[int] = []
        for key in rng.sample(keys, min(args.reads, len(keys))):
            t0 = clock()
            stored = store.read_response(key)
            read_ns.append(clock() - t0)
            assert stored["status"] == 200
        started = time.perf_counter()
        stats = store.stats()
        stats_ms = (time.perf_counter() - started) * 1e3
        assert stats["entries"] == args.entries
        started = time.perf_counter()
        removed = store.prune(max_bytes=stats["bytes"] // 2)
        prune_ms = (time.perf_counter() - started) * 1e3

    hit_med, hit_p99 = _ms(hit_ns)
    miss_med, miss_p99 = _ms(miss_ns)
    read_med, read_p99 = _ms(read_ns)
    figures = {
        "entries": args.entries,
        "lookups": args.lookups,
        "fill_s": round(fill_s, 2),
        "lookup_hit_median_ms": round(hit_med, 4),
        "lookup_hit_p99_ms": round(hit_p99, 4),
        "lookup_miss_median_ms": round(miss_med, 4),
        "lookup_miss_p99_ms": round(miss_p99, 4),
        "read_response_median_ms": round(read_med, 3),
        "read_response_p99_ms": round(read_p99, 3),
        "flush_first_ms": round(first_flush_ms, 1),
        "flush_all_hit_ms": round(flush_ms, 1),
        "stats_ms": round(stats_ms, 1),
        "prune_half_ms": round(prune_ms, 1),
        "pruned": len(removed),
        "bytes": stats["bytes"],
        "target_lookup_ms": TARGET_LOOKUP_MS,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(
        f"cassettes: {args.entries} entries, {stats['bytes'] / 1e6:.1f} MB, filled in {fill_s:.1f} s"
    )
    print(f"lookup hit   median {hit_med:.4f} ms  p99 {hit_p99:.4f} ms  ({args.lookups} calls)")
    print(f"lookup miss  median {miss_med:.4f} ms  p99 {miss_p99:.4f} ms  ({args.lookups} calls)")
    verdict = "met" if max(hit_med, miss_med) < TARGET_LOOKUP_MS else "NOT met"
    print(f"target: lookup < {TARGET_LOOKUP_MS} ms at {args.entries} entries: {verdict}")
    print(f"read_response median {read_med:.3f} ms  p99 {read_p99:.3f} ms")
    print(
        f"flush {first_flush_ms:.1f} ms (after fill), {flush_ms:.1f} ms (all hit); "
        f"stats {stats_ms:.1f} ms; prune to half {prune_ms:.1f} ms ({len(removed)} removed)"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
