"""Steady-state merge-cache miss: the cache holds 2 merged entries and the workload cycles over 3
recipes, so every activation is a miss that evicts the least recent entry (whose buffers the new
snapshot reuses). Prints the median miss time against ``ModelMerger.apply`` alone.

Run: ``.venv/bin/python bench/warm_miss.py [--base SPEC] [--threads 2] [--rounds 12]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch

from common import random_dense
from switching import make_backend, recipes_of


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="bundled:smollm2-135m-instruct")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=12)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    backend = make_backend(args.base, "float32", "cpu", 8 << 30)
    merger = backend.merger
    deltas = [random_dense(backend.model, seed=s) for s in (1, 2)]
    recipes = recipes_of(3)

    def builder(r):  # type: ignore[no-untyped-def]
        return lambda: [(deltas[0], r.weights[0][1]), (deltas[1], r.weights[1][1])]

    backend.activate_dense(recipes[0].key, builder(recipes[0]))
    backend.cache.max_bytes = 2 * merger.dirty_nbytes  # room for exactly 2 entries
    miss, merge = [], []
    for i in range(args.rounds):
        r = recipes[i % 3]
        t = time.perf_counter()
        backend.activate_dense(r.key, builder(r))
        miss.append(time.perf_counter() - t)
        t = time.perf_counter()
        merger.apply(builder(r)(), key=r.key)
        merge.append(time.perf_counter() - t)
    mi, me = statistics.median(miss[3:]), statistics.median(merge[3:])
    out = {"miss_ms": mi * 1e3, "apply_ms": me * 1e3, "ratio": mi / me,
           "evictions": backend.cache.evictions}  # fmt: skip
    print(f"warm miss {mi * 1e3:.1f} ms, apply alone {me * 1e3:.1f} ms, ratio {mi / me:.3f}")
    return out


if __name__ == "__main__":
    main()
