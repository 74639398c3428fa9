"""Training step benchmark: DPO step time and peak memory (full vs LoRA), RACO vs weighted sum.

Each case runs in its own process so that peak memory (CUDA: ``max_memory_allocated``; CPU:
the process's max RSS) belongs to that case alone. A "DPO step" is one optimizer step of the
sigmoid DPO loss: policy forward on chosen + rejected, reference forward (no grad), backward,
AdamW. The RACO case times RACO (K = 2, c = 0.4) and weighted-sum DPO on the same batch in one
process, and reports their ratio (target ≤ 1.8).

The ``trl-*`` cases run the path the shipped vectors are trained on (``prefvec.training.dpo``,
TRL's DPOTrainer, the recipe of ``--config``) for ``--trl-steps`` steps and then score the
held-out pairs, so that LoRA (adapter-off reference), LoRA with precomputed reference
log-probs and full fine-tuning compare on learning per second, not only on seconds.

    python bench/train_step.py                  # bundled SmolLM2-135M, CPU or CUDA
    python bench/train_step.py --quick          # tiny model, seconds (smoke test)
    python bench/train_step.py --cases trl-lora trl-lora-precomputed trl-full

Writes ``--out`` (JSON) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _pairs(n: int, quick: bool) -> list[Any]:
    from prefvec.training.data import load_preference_data
    from prefvec.training.raco import MultiPair

    if quick:
        msgs = [{"role": "user", "content": "How do I boil an egg?"}]
        return [
            MultiPair(msgs, "Boil it for 8 minutes.", "No idea.", (1, -1 if i % 2 else 1))
            for i in range(n)
        ]
    pairs, _ = load_preference_data("helpful")
    return [
        MultiPair(p.messages, p.chosen, p.rejected, (1, -1 if i % 2 else 1))
        for i, p in enumerate(pairs[:n])
    ]


def _timed_steps(trainer: Any, batch: list[Any], steps: int, warmup: bool = True) -> float:
    import torch

    if warmup:
        trainer.step([batch])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.step([batch])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def _peak_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


TRL_CASES = {  # the path the shipped vectors train on: prefvec.training.dpo (TRL DPOTrainer)
    "trl-lora": {"use_lora": True, "precompute_ref_log_probs": False},
    "trl-lora-precomputed": {"use_lora": True, "precompute_ref_log_probs": True},
    "trl-full": {"use_lora": False, "precompute_ref_log_probs": False},
}


def run_trl_case(case: str, args: argparse.Namespace) -> dict[str, Any]:
    """``--trl-steps`` steps of the shipped recipe (``--config``) through TRL, one epoch over
    that many batches, then the held-out DPO reward accuracy on the config's validation pairs:
    the learning that the wall time bought. LoRA's reference is the adapter switched off (one
    model in memory); full fine-tuning keeps a frozen copy; ``precomputed`` scores the reference
    once before training (its cost is inside the wall time)."""
    from prefvec.models import resolve_model_dir
    from prefvec.training.config import DPOJobConfig, build_config, load_yaml
    from prefvec.training.dpo import prepare_pairs, train_dpo_run

    values = {**load_yaml(args.config), **TRL_CASES[case]}
    values.update(steps=args.trl_steps, max_val_pairs=args.val_pairs, resume=False,
                  progress=False, logging_steps=1, save_steps=10**6,
                  device=args.device)  # fmt: skip
    if case == "trl-full":
        values["learning_rate"] = args.full_lr
    if args.quick:
        values.update(max_length=64, max_prompt_length=32, batch_size=2)
    cfg = build_config(DPOJobConfig, values)
    model_dir = Path(args.model_dir) if args.model_dir else resolve_model_dir(cfg.base)
    train, val, _ = prepare_pairs(cfg, cfg.preference)
    # a seeded sample, not the first pairs: the sets are ordered by kind (the refusal set lists
    # its harmful requests first), and a slice of one kind teaches a one-sided rule
    train = random.Random(cfg.seed).sample(train, min(len(train), cfg.steps * cfg.batch_size))
    with tempfile.TemporaryDirectory(prefix="prefvec-bench-trl-") as tmp:
        run = train_dpo_run(model_dir, train, val, cfg, Path(tmp) / "run")
    acc = run.eval.get("reward_accuracy")
    return {
        "case": case, "steps": cfg.steps, "batch_size": cfg.batch_size,
        "max_length": cfg.max_length, "learning_rate": cfg.learning_rate,
        "train_wall_s": run.wall_s, "dpo_step_s": run.wall_s / cfg.steps,
        "val_pairs": len(val), "val_reward_accuracy": acc,
        "val_reward_margin": run.eval.get("reward_margin"), "peak_mem_mb": _peak_mb(),
    }  # fmt: skip


def run_case(case: str, args: argparse.Namespace) -> dict[str, Any]:
    """One case in this process: ``full``, ``lora`` (DPO, K = 1), ``raco`` (K = 2, ratio) or
    one of :data:`TRL_CASES`."""
    if case in TRL_CASES:
        return run_trl_case(case, args)
    import torch

    from prefvec.models import resolve_model_dir
    from prefvec.training.config import RacoJobConfig
    from prefvec.training.raco import RacoTrainer, build_policy

    torch.manual_seed(0)
    model_dir = Path(args.model_dir) if args.model_dir else resolve_model_dir(args.base)
    cfg = RacoJobConfig(
        base=str(model_dir), use_lora=case != "full", lora_r=args.lora_r,
        lora_targets=args.lora_targets, device=args.device,
    )  # fmt: skip
    model, tok, ref = build_policy(model_dir, cfg)
    batch = _pairs(args.batch_size, args.quick)
    kw = dict(ref_model=ref, max_length=args.max_length, learning_rate=1e-5, beta=0.1)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out: dict[str, Any] = {"case": case, "trainable_params": trainable}
    if case in ("full", "lora"):
        batch1 = [type(p)(p.messages, p.a, p.b, (1,)) for p in batch]
        trainer = RacoTrainer(model, tok, [1.0], mode="weighted_sum", **kw)
        out["dpo_step_s"] = _timed_steps(trainer, batch1, args.steps)
    else:
        ws = RacoTrainer(model, tok, [0.5, 0.5], mode="weighted_sum", **kw)
        raco = RacoTrainer(model, tok, [0.5, 0.5], mode="raco", c=0.4, **kw)
        # Alternate the two (ws, raco, ws, raco, ...) so load drift on a shared machine hits
        # both alike; medians of per-step times, ratio of the medians.
        t_ws, t_raco = [], []
        for _ in range(args.steps):
            t_ws.append(_timed_steps(ws, batch, 1, warmup=not t_ws))
            t_raco.append(_timed_steps(raco, batch, 1, warmup=not t_raco))
        out["weighted_sum_step_s"] = statistics.median(t_ws)
        out["raco_step_s"] = statistics.median(t_raco)
        out["raco_ratio"] = out["raco_step_s"] / out["weighted_sum_step_s"]
        out["raco_ratio_per_step"] = [r / w for r, w in zip(t_raco, t_ws, strict=True)]
    out["peak_mem_mb"] = _peak_mb()
    return out


def _table(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"Model: {meta['model']} · device {meta['device']}"]
    trl = [r for r in results if r["case"] in TRL_CASES]
    results = [r for r in results if r["case"] not in TRL_CASES]
    if results:
        own = meta["own_cases"]
        lines += [
            "",
            f"Own trainer: batch {own['batch_size']} pairs · max_length {own['max_length']} · "
            f"LoRA r={own['lora_r']} on {','.join(own['lora_targets'])}",
            "",
            "| case | trainable params | step (s) | peak memory (MB) | note |",
            "|---|---:|---:|---:|---|",
        ]
    for r in results:
        if r["case"] == "raco":
            lines.append(
                f"| weighted-sum DPO (K=2, LoRA) | {r['trainable_params']:,} | "
                f"{r['weighted_sum_step_s']:.3f} | {r['peak_mem_mb']:.0f} | |"
            )
            lines.append(
                f"| RACO (K=2, c=0.4, LoRA) | {r['trainable_params']:,} | {r['raco_step_s']:.3f} | "
                f"{r['peak_mem_mb']:.0f} | {r['raco_ratio']:.2f}× weighted sum (target ≤ 1.8×) |"
            )
        else:
            lines.append(
                f"| DPO {r['case']} | {r['trainable_params']:,} | {r['dpo_step_s']:.3f} | "
                f"{r['peak_mem_mb']:.0f} | |"
            )
    if trl:
        lines += [
            "",
            f"TRL DPO (the shipped recipe, {meta['config']}): {trl[0]['steps']} steps × "
            f"{trl[0]['batch_size']} pairs, max_length {trl[0]['max_length']}, then held-out "
            "reward accuracy",
            "",
            "| case | lr | step (s) | held-out reward accuracy | mean margin | peak memory (MB) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in trl:
            acc = r["val_reward_accuracy"]
            margin = r["val_reward_margin"]
            lines.append(
                f"| {r['case']} | {r['learning_rate']:g} | {r['dpo_step_s']:.2f} | "
                f"{'—' if acc is None else f'{acc:.3f}'} (n = {r['val_pairs']}) | "
                f"{'—' if margin is None else f'{margin:+.3f}'} | {r['peak_mem_mb']:.0f} |"
            )
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model, few steps (smoke test)")
    p.add_argument("--base", default="bundled:smollm2-135m-instruct")
    p.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-targets", nargs="+", default=["q_proj", "k_proj", "v_proj", "o_proj"])
    p.add_argument("--cases", nargs="+", default=["lora", "full", "raco"],
                   choices=["lora", "full", "raco", *TRL_CASES])  # fmt: skip
    p.add_argument("--config", default="results/configs/harmless-v5.yaml",
                   help="the recipe the trl-* cases run")  # fmt: skip
    p.add_argument("--trl-steps", type=int, default=10, help="steps of each trl-* case")
    p.add_argument("--val-pairs", type=int, default=120, help="held-out pairs of each trl-* case")
    p.add_argument("--full-lr", type=float, default=1e-5,
                   help="learning rate of trl-full (LoRA keeps the config's)")  # fmt: skip
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default="out/bench/train_step.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.case:  # child process: one case, JSON on the last stdout line
        print(json.dumps(run_case(args.case, args)))
        return 0
    tmp = None
    if args.quick:
        from prefvec.testing import make_tiny_model

        tmp = tempfile.mkdtemp(prefix="prefvec-bench-")
        args.model_dir = str(make_tiny_model(Path(tmp) / "tiny"))
        args.steps, args.max_length, args.lora_targets = 2, 64, ["q_proj", "v_proj"]
    results = []
    for case in args.cases:
        cmd = [
            sys.executable,
            __file__,
            "--case",
            case,
            *(argv if argv is not None else sys.argv[1:]),
        ]
        if args.model_dir:
            cmd += ["--model-dir", args.model_dir]
        if args.quick:
            cmd += ["--steps", "2", "--max-length", "64", "--lora-targets", "q_proj", "v_proj",
                    "--trl-steps", "2", "--val-pairs", "4"]  # fmt: skip
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=os.environ.copy(), check=False
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            return proc.returncode
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    import torch

    meta: dict[str, Any] = {
        "model": "tiny (quick)" if args.quick else args.base,
        "device": "cuda"
        if torch.cuda.is_available() and args.device != "cpu"
        else f"cpu ({os.cpu_count()} cores)",
        "torch": torch.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }  # fmt: skip
    if any(c not in TRL_CASES for c in args.cases):  # the settings of the own-trainer cases
        meta["own_cases"] = {
            "batch_size": args.batch_size, "max_length": args.max_length, "lora_r": args.lora_r,
            "lora_targets": args.lora_targets, "steps_timed": args.steps,
        }  # fmt: skip
    if any(c in TRL_CASES for c in args.cases):  # the trl-* cases run this recipe
        meta["config"] = args.config
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(_table(results, meta))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
