"""Benchmark 4c: what a prefill chunk costs the running rows (choosing ``max_prefill_tokens``).

With iteration-level batching, each turn of the transformers backend runs at most one prefill
chunk and then one decode step of the running batch, so a chunk of T prompt tokens delays every
running row's next token by the chunk's forward time. This measures, in process on the model:
the forward time of a prefill chunk of T tokens (T = 64 … 1024, one row) against one decode step
of a batch of 8 rows, and so the stall per step and the whole prompt's prefill time at each chunk
size for a long prompt.

Run: ``python bench/prefill.py [--quick] [--out results/prefill.json]``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from bench.common import Report, command_line, load, median, model_spec, parser, setup, time_fn


def forward_time(model: Any, batch: int, past: int, new: int, repeats: int) -> float:
    """Median seconds of one forward of ``new`` tokens per row over a cache of ``past`` tokens
    (the cache is built once and cropped back after every timed forward)."""
    from transformers import DynamicCache

    vocab = int(model.config.vocab_size)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, new), generator=g)
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        if past:
            ctx = torch.randint(0, vocab, (batch, past), generator=g)
            model(input_ids=ctx, past_key_values=cache, use_cache=True, logits_to_keep=1)

        def run() -> None:
            model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache.crop(-new)  # drop what this forward added

        return median(time_fn(run, repeats=repeats))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = parser("prefill", __doc__.splitlines()[0])
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="server default: fp32")
    p.add_argument("--prompt", type=int, default=None, help="long prompt length (tokens)")
    args = p.parse_args(argv)
    machine = setup(args)
    rep = Report("prefill", command_line("prefill", argv), machine)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    model = load(model_spec(args), dtype, args.device).model
    repeats = args.repeats or (1 if args.quick else 3)
    chunks = [8, 16] if args.quick else [64, 128, 256, 512, 1024]
    prompt = args.prompt or (32 if args.quick else 1024)
    decode = forward_time(model, 8, 128, 1, repeats)
    rep.row("decode step, batch 8 (cache 128)", section="forward times", ms=decode * 1e3)
    stalls: dict[int, float] = {}
    for t in chunks:
        chunk = forward_time(model, 1, 0, t, repeats)
        stalls[t] = chunk  # the running rows wait this long once per chunk
        n_chunks = -(-prompt // t)
        rep.row(
            f"prefill chunk {t} tokens", section="forward times", ms=chunk * 1e3,
            stall_vs_decode=chunk / decode, prompt_prefill_s=n_chunks * (chunk + decode),
        )  # fmt: skip
    from prefvec.server.settings import ServerSettings

    default = ServerSettings().max_prefill_tokens
    t = default if default in stalls else max(stalls)
    whole = max(stalls)  # the largest chunk: closest to an unchunked prefill
    n_t, n_whole = -(-prompt // t), -(-prompt // whole)
    slowdown = (n_t * (stalls[t] + decode)) / (n_whole * (stalls[whole] + decode))
    rep.target(f"stall of one {t}-token chunk, in decode steps", stalls[t] / decode, "<= 8",
               stalls[t] / decode <= 8)  # fmt: skip
    rep.target(f"{prompt}-token prompt prefill at {t}-token chunks vs {whole}", slowdown,
               "<= 1.15", slowdown <= 1.15)  # fmt: skip
    return rep.write(args.out)


if __name__ == "__main__":
    main()
