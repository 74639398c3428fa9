"""Log-likelihood margins of preference pairs under the base plus one vector at a time.

For the first ``--n`` rows of ``--kind`` in a preference JSONL, prints
log p(chosen | prompt) − log p(rejected | prompt), summed over the reply's tokens as DPO scores
them (``prefvec.training.logps``, fp32), under the base and under base + weight·φ for each
``--vectors`` file. It shows whether a vector ranks pairs the way it was trained to, apart from
what it does to greedy generation.

    python bench/pair_margins.py --vectors results/vectors/harmless-v5/harmless.safetensors \\
        results/vectors/harmless-v5-contrast/harmless.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _messages(prompt: str | list[dict[str, str]]) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vectors", nargs="+", required=True, help="vector files (.safetensors)")
    p.add_argument("--data", default="data/refusal/refusal_v5.jsonl")
    p.add_argument("--kind", default="harmful", help="rows whose `kind` is this")
    p.add_argument("--n", type=int, default=6)
    p.add_argument("--weight", type=float, default=1.0)
    p.add_argument("--base", default="bundled:smollm2-135m-instruct")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefvec.merging.apply import ModelMerger
    from prefvec.models import resolve_model_dir
    from prefvec.training.logps import collate, encode_pair, sequence_logps
    from prefvec.vector_store.format import PreferenceVector

    torch.set_num_threads(args.threads)
    model_dir = resolve_model_dir(args.base)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    merger = ModelMerger(model)
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("kind") == args.kind][: args.n]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    pairs = [
        encode_pair(tok, _messages(r["prompt"]), r["chosen"], r["rejected"], max_length=10**6)
        for r in rows
    ]

    for label, path in [("base", None), *[(v, v) for v in args.vectors]]:
        delta = PreferenceVector.load(path).to_dense() if path else {}
        merger.apply([(delta, args.weight)])  # restores the base first
        with torch.no_grad():
            chosen, rejected = sequence_logps(model, collate(pairs, pad)).chunk(2)
        margins = (chosen - rejected).tolist()
        print(f"{label}: " + ", ".join(f"{m:+.1f}" for m in margins))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
