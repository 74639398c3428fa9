"""Benchmark 2: recipe switching in the server backend (merged-weight cache, dense path).

Drives :class:`prefvec.server.backends.transformers_backend.TransformersBackend` directly (the
engine's ``run_batch`` calls exactly ``activate_dense`` then ``decode``), with R recipes over two
synthetic dense vectors (every parameter):

* ``activate_dense`` when the recipe is already active (no weight work at all), on a cache hit
  (restore + copy of the cached merged weights), and on a miss (one merge + snapshot into the
  cache), next to ``ModelMerger.apply`` alone (the merge a miss must cost);
* throughput of batches of 8 greedy requests serving one recipe, and cycling over R recipes
  batch by batch with the cache holding them all (target ≥ 0.9 of single-recipe throughput), and
  cycling with the cache disabled (a merge per batch) for contrast.

Run: ``python bench/switching.py [--quick] [--device cuda] [--out results/switching.json]``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Report,
    command_line,
    median,
    model_spec,
    parser,
    random_dense,
    setup,
    sync,
    time_fn,
)

PROMPTS = [
    "Explain how a rainbow forms.",
    "Write a haiku about autumn.",
    "What is the capital of France?",
    "Give three tips for better sleep.",
    "Summarise the plot of Hamlet.",
    "How do vaccines work?",
    "Describe a cat to someone who has never seen one.",
    "Why is the sky blue?",
]


def make_backend(spec: str, dtype: str, device: str, cache_bytes: int) -> Any:
    from prefvec.server.backends.transformers_backend import TransformersBackend
    from prefvec.server.settings import ServerSettings

    settings = ServerSettings(base=spec, dtype=dtype, device=device, merge_cache_bytes=cache_bytes)
    backend = TransformersBackend(settings)
    backend.load()
    backend.model.eval()
    backend.start(lambda ref, sha: None)  # recipes are activated by the bench itself
    return backend


def make_jobs(backend: Any, key_spec: Any, n: int, max_tokens: int) -> list[Any]:
    """``n`` greedy dense generation requests of one recipe."""
    from prefvec.server.backends.base import GenerationRequest
    from prefvec.server.generation import SamplingParams
    from prefvec.server.resolver import Resolved

    resolved = Resolved(key_spec, "dense")
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    jobs = []
    for i in range(n):
        msgs = [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]
        text = backend.tokenizer.apply_chat_template(
            msgs, add_generation_prompt=True, tokenize=False
        )
        ids = list(backend.tokenizer(text, add_special_tokens=False)["input_ids"])
        jobs.append(GenerationRequest(ids, params, resolved))
    return jobs


def decode_all(backend: Any, requests: Sequence[Any]) -> int:
    """Run ``requests`` together on the backend; completion tokens generated."""
    import asyncio

    from prefvec.server.backends.base import FinishEvent

    async def one(req: Any) -> int:
        n = 0
        async for event in backend.generate(req):
            if isinstance(event, FinishEvent):
                n = event.usage.completion_tokens
        return n

    async def run() -> list[int]:
        backend.pause()  # queue all, then admit them as one batch
        tasks = [asyncio.ensure_future(one(r)) for r in requests]
        await asyncio.sleep(0)
        backend.resume()
        return list(await asyncio.gather(*tasks))

    return sum(asyncio.run(run()))


def run_batches(backend: Any, recipes: Sequence[Any], builders: Any, n: int, tokens: int) -> float:
    """Serve one batch per recipe in ``recipes`` (activate + decode); return completion tokens."""
    total = 0
    for spec in recipes:
        jobs = make_jobs(backend, spec, n, tokens)
        backend.activate_dense(spec.key, builders[spec.key])
        total += decode_all(backend, jobs)
    return float(total)


def bench_alternatives(
    backend: Any, key: str, build: Any, repeats: int
) -> tuple[float, float, float]:
    """Medians of: ``snapshot()`` (clone), a snapshot into reused buffers, and a cache hit done
    as one ``copy_`` per cached tensor (bench-only alternatives to the src code)."""
    import torch

    merger = backend.merger
    merger.current_key = None
    backend.activate_dense(key, build)  # builds and caches on a miss
    cached = backend.cache.get(key)
    params = dict(backend.model.named_parameters())
    bufs = {n: torch.empty_like(t) for n, t in cached.items()}

    @torch.no_grad()
    def snap_into() -> None:
        for n, b in bufs.items():
            b.copy_(params[n])

    @torch.no_grad()
    def hit_direct() -> None:
        for n, t in cached.items():
            params[n].copy_(t)

    t_snap = median(time_fn(merger.snapshot, repeats))
    return t_snap, median(time_fn(snap_into, repeats)), median(time_fn(hit_direct, repeats))


def recipes_of(r: int) -> list[Any]:
    from prefvec.merging.spec import MergeSpec

    return [MergeSpec(weights={"a@1": 1.0 - 0.2 * i, "b@1": 0.3 + 0.1 * i}) for i in range(r)]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = parser("switching", __doc__.splitlines()[0])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--recipes", type=int, default=3, help="R recipes in the cycle")
    p.add_argument("--tokens", type=int, default=None, help="new tokens per request")
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args(argv)
    machine = setup(args)
    rep = Report("switching", command_line("switching", argv), machine)
    repeats = args.repeats or (1 if args.quick else 5)
    tokens = args.tokens or (4 if args.quick else 16)
    backend = make_backend(model_spec(args), args.dtype, args.device, 8 << 30)
    merger = backend.merger
    deltas = [random_dense(backend.model, seed=s) for s in (1, 2)]
    recipes = recipes_of(args.recipes)
    builders = {
        r.key: (lambda r=r: [(deltas[0], r.weights[0][1]), (deltas[1], r.weights[1][1])])
        for r in recipes
    }
    k0, k1 = recipes[0].key, recipes[1].key

    # -- activation costs ------------------------------------------------------------------
    for r in recipes:  # fill the cache
        backend.activate_dense(r.key, builders[r.key])
    same = time_fn(lambda: backend.activate_dense(k1, builders[k1]), repeats * 20)

    def hit() -> None:
        backend.activate_dense(k0, builders[k0])
        backend.activate_dense(k1, builders[k1])

    hits = [t / 2 for t in time_fn(hit, repeats)]

    def miss() -> None:
        backend.cache.clear()
        merger.current_key = None
        backend.activate_dense(k0, builders[k0])

    misses = time_fn(miss, repeats)
    merge_only = time_fn(lambda: merger.apply(builders[k0]()), repeats)
    t_same, t_hit, t_miss, t_merge = map(median, (same, hits, misses, merge_only))
    t_snap, t_snap_alt, t_hit_alt = bench_alternatives(backend, k1, builders[k1], repeats)
    sec = "activation cost (one recipe switch)"
    rep.row(
        "already active (current key)",
        section=sec,
        ms=t_same * 1e3,
        ratio_to_merge=t_same / t_merge,
    )
    rep.row(
        "cache hit (restore + copy in)", section=sec, ms=t_hit * 1e3, ratio_to_merge=t_hit / t_merge
    )
    rep.row(
        "cache miss (merge + snapshot)",
        section=sec,
        ms=t_miss * 1e3,
        ratio_to_merge=t_miss / t_merge,
    )
    rep.row("ModelMerger.apply alone (K=2)", section=sec, ms=t_merge * 1e3, ratio_to_merge=1.0)
    for label, t in (
        ("ModelMerger.snapshot (clone)", t_snap),
        ("alt: snapshot into reused buffers (copy_)", t_snap_alt),
        ("alt: hit as one copy_ per tensor (no restore)", t_hit_alt),
    ):
        rep.row(label, section=sec, ms=t * 1e3, ratio_to_merge=t / t_merge)
    rep.target("already-active switch", t_same * 1e3, "no weight work (≈ µs)", t_same < 1e-3, "ms")
    rep.target(
        "miss / one merge", t_miss / t_merge, "≈ 1 merge (+ snapshot copy)", t_miss / t_merge < 2.5
    )

    # -- throughput ------------------------------------------------------------------------
    for r in recipes:  # re-fill the cache (the miss test cleared it)
        backend.activate_dense(r.key, builders[r.key])
    single = [recipes[0]] * len(recipes)
    res: dict[str, list[float]] = {"single": [], "cycle": [], "nocache": []}

    def tok_s(seq: Sequence[Any]) -> float:
        sync(args.device)
        t0 = time.perf_counter()
        n_tok = run_batches(backend, seq, builders, args.batch, tokens)
        sync(args.device)
        return n_tok / (time.perf_counter() - t0)

    tok_s(recipes)  # warm-up
    for _ in range(repeats):
        res["single"].append(tok_s(single))
        res["cycle"].append(tok_s(recipes))
        backend.cache.max_bytes = 0  # cache off: a merge per batch
        backend.cache.clear()
        res["nocache"].append(tok_s(recipes))
        backend.cache.max_bytes = 8 << 30
        for r in recipes:
            backend.activate_dense(r.key, builders[r.key])
    s, c, n = median(res["single"]), median(res["cycle"]), median(res["nocache"])
    sec = f"throughput, batches of {args.batch} × {tokens} tokens, {args.dtype}"
    rep.row("one recipe", section=sec, tok_s=s, ratio=1.0)
    rep.row(f"cycling over R={len(recipes)} (cached)", section=sec, tok_s=c, ratio=c / s)
    rep.row(f"cycling over R={len(recipes)}, cache off", section=sec, tok_s=n, ratio=n / s)
    rep.target("cycling (cached) / single recipe", c / s, ">= 0.90", c / s >= 0.90)
    rep.extra["cache_stats"] = backend.stats()["cache"]
    rep.notes.append(
        f"medians: activation over {repeats} repeats; throughput over "
        f"{repeats} rounds of R batches each; two dense vectors over every parameter"
    )
    return rep.write(args.out)


if __name__ == "__main__":
    main()
