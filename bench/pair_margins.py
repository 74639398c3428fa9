"""Log-likelihood margins of preference pairs under the base plus one vector at a time.

For the first ``--n`` rows of ``--kind`` in a preference JSONL, prints
log p(chosen | prompt) − log p(rejected | prompt) (summed over the reply's tokens, fp32) under the
base and under base + weight·φ for each ``--vectors`` file. It shows whether a vector ranks pairs
the way it was trained to, apart from what it does to greedy generation.

    python bench/pair_margins.py --vectors results/vectors/harmless-v5/harmless.safetensors \\
        results/vectors/harmless-v5-contrast/harmless.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


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

    from prefvec.models import resolve_model_dir
    from prefvec.vector_store.format import PreferenceVector

    torch.set_num_threads(args.threads)
    model_dir = resolve_model_dir(args.base)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("kind") == args.kind][: args.n]

    def logp(prompt: str, reply: str) -> float:
        head = tok.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        ids = tok(head + reply, return_tensors="pt").input_ids
        n = len(tok(head).input_ids)
        with torch.no_grad():
            lp = model(ids).logits.log_softmax(-1)
        return float(lp[0, n - 1 : -1].gather(-1, ids[0, n:, None]).sum())

    for label, path in [("base", None), *[(v, v) for v in args.vectors]]:
        model.load_state_dict(original)
        if path:
            state = model.state_dict()
            for name, delta in PreferenceVector.load(path).to_dense(torch.float32).items():
                state[name].add_(args.weight * delta)
        margins = []
        for r in rows:
            prompt = r["prompt"] if isinstance(r["prompt"], str) else r["prompt"][-1]["content"]
            margins.append(logp(prompt, r["chosen"]) - logp(prompt, r["rejected"]))
        print(f"{label}: " + ", ".join(f"{m:+.1f}" for m in margins))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
