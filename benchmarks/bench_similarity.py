"""Precision and recall of the similarity tier on the frozen evaluation set.

    python benchmarks/bench_similarity.py [--threshold T] [--json OUT]

A pair of ``tests/data/similarity_pairs.jsonl`` is *served from cache* when
``similarity(a, b) >= threshold`` and ``guards(a, b)`` is empty. Pairs with ``same: true``
are paraphrases (serving them is right), the others near-misses (serving them is a wrong
answer). Precision is printed first because a false hit is a wrong answer in someone's
deployment, while a false miss only costs an API call. Target (design.md §7): precision
>= 99.5 % at recall >= 90 %.

Also printed: a threshold sweep, the operating point (highest recall with precision
>= 99.5 %), the contribution of the guards alone and of the score alone, and every false
hit and false miss at the chosen threshold with the guard reasons.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_mulm.llm.similarity import DEFAULT_THRESHOLD, guards, similarity  # noqa: E402

DATA = ROOT / "tests" / "data" / "similarity_pairs.jsonl"
SWEEP = (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)
PRECISION_TARGET = 0.995
RECALL_TARGET = 0.90


def load(path: Path = DATA) -> list[dict[str, Any]]:
    """The evaluation pairs, one JSON object per line."""
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def score_pairs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each pair with its similarity and guard reasons (computed once, reused per threshold)."""
    return [{**r, "score": similarity(r["a"], r["b"]), "guards": guards(r["a"], r["b"])}
            for r in rows]


def metrics(scored: list[dict[str, Any]], threshold: float, *, use_guards: bool = True,
            use_score: bool = True) -> dict[str, Any]:
    """Confusion counts, precision and recall at ``threshold``."""
    tp = fp = fn = tn = 0
    for r in scored:
        hit = (not use_score or r["score"] >= threshold) and (not use_guards or not r["guards"])
        if hit and r["same"]:
            tp += 1
        elif hit:
            fp += 1
        elif r["same"]:
            fn += 1
        else:
            tn += 1
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"threshold": threshold, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "precision": precision, "recall": recall}


def _short(text: str, n: int = 90) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    args = parser.parse_args(argv)

    rows = load()
    scored = score_pairs(rows)
    kinds = Counter(r["kind"] for r in rows)
    n_same = sum(r["same"] for r in rows)
    print(f"evaluation set: {DATA.relative_to(ROOT)}: {len(rows)} pairs, {n_same} paraphrases,"
          f" {len(rows) - n_same} near-misses ({', '.join(f'{k} {v}' for k, v in kinds.most_common())})")

    at = metrics(scored, args.threshold)
    print(f"\nthreshold {args.threshold:.2f}: precision {at['precision']:.1%} "
          f"({at['tp']}/{at['tp'] + at['fp']}), recall {at['recall']:.1%} "
          f"({at['tp']}/{at['tp'] + at['fn']}); false hits {at['fp']}, false misses {at['fn']}")
    ok = at["precision"] >= PRECISION_TARGET and at["recall"] >= RECALL_TARGET
    print(f"target precision >= {PRECISION_TARGET:.1%} at recall >= {RECALL_TARGET:.0%}: "
          f"{'met' if ok else 'NOT met'}")

    sweep = [metrics(scored, t) for t in SWEEP]
    print("\nsweep (guards on)       precision   recall    TP   FP   FN")
    for m in sweep:
        print(f"  threshold {m['threshold']:.2f}        {m['precision']:8.1%} {m['recall']:8.1%}"
              f" {m['tp']:5d} {m['fp']:4d} {m['fn']:4d}")
    good = [m for m in sweep if m["precision"] >= PRECISION_TARGET]
    op = max(good, key=lambda m: (m["recall"], m["threshold"])) if good else None
    if op:
        print(f"operating point: highest recall with precision >= {PRECISION_TARGET:.1%}: "
              f"threshold {op['threshold']:.2f} (precision {op['precision']:.1%}, "
              f"recall {op['recall']:.1%}); the default {DEFAULT_THRESHOLD:.2f} is deliberately "
              "stricter where precision is flat (see the DEFAULT_THRESHOLD comment)")

    # Ablations: which layer does the work (honest attribution, not a target).
    no_guard = metrics(scored, args.threshold, use_guards=False)
    guard_only = metrics(scored, args.threshold, use_score=False)
    print(f"\nablation at {args.threshold:.2f}: score only (no guards): precision "
          f"{no_guard['precision']:.1%}, recall {no_guard['recall']:.1%}, false hits "
          f"{no_guard['fp']}; guards only (no score): precision {guard_only['precision']:.1%},"
          f" recall {guard_only['recall']:.1%}, false hits {guard_only['fp']}")
    guarded = Counter(g.split(":")[0] for r in scored if not r["same"] for g in r["guards"][:1])
    print("first guard reason on near-misses: "
          + ", ".join(f"{k} {v}" for k, v in guarded.most_common()))

    served = lambda r: r["score"] >= args.threshold and not r["guards"]  # noqa: E731
    false_hits = [r for r in scored if served(r) and not r["same"]]
    false_misses = [r for r in scored if not served(r) and r["same"]]
    print(f"\nfalse hits at {args.threshold:.2f} ({len(false_hits)}):")
    for r in false_hits:
        print(f"  [{r['kind']}] {r['score']:.3f} | {_short(r['a'])} || {_short(r['b'])}")
    print(f"false misses at {args.threshold:.2f} ({len(false_misses)}):")
    for r in false_misses:
        why = "; ".join(r["guards"]) or f"score {r['score']:.3f} < {args.threshold:.2f}"
        print(f"  [{r.get('variant', r['kind'])}] {_short(r['a'], 70)} || "
              f"{_short(r['b'], 70)}\n      -> {why}")

    if args.json:
        out = {
            "data": str(DATA.relative_to(ROOT)), "pairs": len(rows), "paraphrases": n_same,
            "default_threshold": args.threshold, "at_default": at, "sweep": sweep,
            "operating_point": op, "ablation_no_guards": no_guard,
            "ablation_guards_only": guard_only,
            "false_hits": [{k: r[k] for k in ("a", "b", "kind", "score")} for r in false_hits],
            "false_misses": [{"a": r["a"], "b": r["b"], "variant": r.get("variant"),
                              "score": r["score"], "guards": r["guards"]}
                             for r in false_misses],
        }
        args.json.write_text(json.dumps(out, indent=2) + "\n", "utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
