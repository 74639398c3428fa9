"""Behaviour, not reward accuracy: how many validation prompts of a training set get a decline?

A vector's card reports held-out DPO reward accuracy: whether the chosen reply gained likelihood
against the rejected one *relative to the reference*. That can be 1.00 while greedy decoding still
gives the rejected behaviour. This probe takes the same validation split a training job uses
(``prepare_pairs``: split by hash of the prompt, seed, share, cap, row kinds), merges each weight
setting into the base in process (the evaluation's ``ModelHandle``) and counts greedy replies that
the string-match judge calls a decline.

    python bench/decline_probe.py --data data/refusal/refusal_v5.jsonl --kinds benign_risky \\
        --vectors-dir results/vectors/helpful-on-harmless,vectors \\
        --points "harmless=1;helpful=1,harmless=1" --out results/eval/decline-probe.json

With ``--split train`` it reads the training split instead, and ``--save-declined FILE`` writes
the data file's own rows (JSONL, unchanged) whose prompt the *first* weight setting declined:
the mining step for a compliance objective aimed at what a vector still declines. The validation
split is never mined, so the default probe stays a held-out measure of the result.

``--save-anchor FILE`` mines an anchor set from any training source (hh-rlhf's red-team
dialogues, for one): for each training prompt the first setting declines, a new row with that
setting's own reply as ``chosen``, the pair's rejected reply as ``rejected`` and ``kind``
``--anchor-kind``. A RACO anchor on these rows keeps the merge's own decline likely where it
declined, on wording the refusal set's templates never used. Prompts too close to a held-out
suite's (HarmBench, JailbreakBench, Do-Not-Answer, XSTest) are dropped, as the refusal set does;
``--single-turn`` keeps only one-message prompts (the held-out suites are single-turn).

``--save-loops FILE`` mines negatives against repetition: for each training prompt that the
first setting declines without looping, and that a later (stronger) setting answers with a
reply that loops (distinct-trigram ratio < 0.5, the evaluation's ``collapse``), a new row with
the first setting's reply as ``chosen`` and the looping one as ``rejected``: DPO on these rows
teaches a vector to end its decline instead of repeating it once extrapolated.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="decline_probe", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="preference JSONL (the training file)")
    p.add_argument("--kinds", default="", help="only rows of these kinds, comma-separated")
    p.add_argument("--points", required=True, help='weight settings, e.g. "harmless=1;base"')
    p.add_argument("--vectors-dir", default="vectors", help="folder(s) of vector files")
    p.add_argument("--base", default="bundled:smollm2-135m-instruct")
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--max-val-pairs", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--dtype", default="float32")
    p.add_argument(
        "--split",
        choices=["val", "train"],
        default="val",
        help="which split of the training job to probe (default: val)",
    )
    p.add_argument(
        "--save-declined",
        default="",
        help="write the data rows whose prompt the first setting declined (JSONL)",
    )
    p.add_argument(
        "--save-anchor",
        default="",
        help="write new rows (the first setting's declining reply as chosen) for an anchor",
    )
    p.add_argument("--anchor-kind", default="harmful", help="the `kind` of --save-anchor rows")
    p.add_argument(
        "--save-loops",
        default="",
        help="write new rows (the first setting's clean decline as chosen, a later setting's "
        "looping reply as rejected)",
    )
    p.add_argument(
        "--single-turn", action="store_true", help="probe only prompts of one user message"
    )
    p.add_argument(
        "--likelihoods",
        action="store_true",
        help="also score each pair's chosen and rejected reply under the merged model",
    )
    p.add_argument("--out", default="", help="write every reply and the counts here (JSON)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from prefvec.errors import ValidationError
    from prefvec.evaluation.grid import parse_points, point_label
    from prefvec.evaluation.targets import ModelHandle
    from prefvec.scoring.refusal import is_refusal
    from prefvec.training.config import DPOJobConfig
    from prefvec.training.dpo import prepare_pairs

    args = build_parser().parse_args(argv)
    try:
        points = parse_points(args.points)
        cfg = DPOJobConfig(
            val_fraction=args.val_fraction, max_val_pairs=args.max_val_pairs, seed=args.seed
        )
        kinds = [k for k in args.kinds.split(",") if k]
        train, val, info = prepare_pairs(cfg, "probe", [args.data], kinds)
        for name in ("save_declined", "save_anchor", "save_loops"):
            if getattr(args, name) and args.split != "train":
                raise ValidationError(
                    f"`{name}` mines the training split only; add --split train", field=name
                )
        if args.save_loops and len(points) < 2:
            raise ValidationError(
                f"`points` needs two settings or more for --save-loops (the first one's clean "
                f"declines against later ones' loops), got {args.points!r}",
                field="points",
            )
    except ValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pairs = train if args.split == "train" else val
    if args.single_turn:
        pairs = [p for p in pairs if len(p.messages) == 1]
    dropped: dict[str, Any] = {}
    if args.save_anchor or args.save_loops:
        pairs, dropped = drop_close_to_heldout(pairs)
    prompts = [p.prompt for p in pairs]
    handle = ModelHandle(args.base, vectors_dir=args.vectors_dir, dtype=args.dtype)
    rows: list[dict[str, Any]] = []
    for weights in points:
        target = handle.target(weights)
        replies = target.generate(prompts, max_new_tokens=args.max_new_tokens)
        declined = [is_refusal(r) for r in replies]
        label = point_label(weights)
        split = "validation" if args.split == "val" else "training"
        print(f"{label}: {sum(declined)}/{len(declined)} {split} prompts declined")
        row = {
            "weights": weights, "declined": sum(declined), "n": len(declined),
            "replies": [{"prompt": p, "reply": r, "declined": d}
                        for p, r, d in zip(prompts, replies, declined, strict=True)],
        }  # fmt: skip
        if args.likelihoods:
            scored = score_pairs(target.model, target.tokenizer, pairs)
            for reply, sc in zip(row["replies"], scored, strict=True):
                reply.update(sc)
            row["likelihood"] = summarize(scored)
            print(f"{label}: {describe(row['likelihood'])}")
        rows.append(row)
    first = rows[0]["weights"]  # the setting mined (with --save-loops the later ones too)
    mined = rows if args.save_loops else rows[:1]  # their vectors' hashes go in the manifest
    shas = (
        {n: handle.vector_sha256(n) for r in mined for n in r["weights"]}
        if args.save_declined or args.save_anchor or args.save_loops
        else {}
    )
    if args.save_declined:
        n_saved = save_declined(args.data, pairs, rows[0]["replies"], args.save_declined)
        write_manifest(args, argv, kinds, len(pairs), first, n_saved, shas, args.save_declined)
        print(f"wrote {n_saved} rows to {args.save_declined} (and its .manifest.json)")
    if args.save_anchor:
        n_saved = save_anchor(pairs, rows[0], args.anchor_kind, args.save_anchor)
        write_manifest(
            args, argv, kinds, len(pairs), first, n_saved, shas, args.save_anchor, dropped
        )
        print(f"wrote {n_saved} anchor rows to {args.save_anchor} (and its .manifest.json)")
    if args.save_loops:
        n_saved = save_loops(pairs, rows, args.save_loops)
        write_manifest(
            args, argv, kinds, len(pairs), first, n_saved, shas, args.save_loops, dropped
        )
        print(f"wrote {n_saved} loop rows to {args.save_loops} (and its .manifest.json)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        report = {"data": args.data, "kinds": kinds, "data_hash": info["data_hash"],
                  "settings": {k: v for k, v in vars(args).items() if k != "out"},
                  "points": rows}  # fmt: skip
        Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    return 0


def score_pairs(model: Any, tokenizer: Any, pairs: Sequence[Any]) -> list[dict[str, Any]]:
    """Per pair under ``model``: Σ log π of the chosen and of the rejected reply, and the
    probability of each reply's first token (what greedy decoding picks first)."""
    import torch

    from prefvec.training.logps import collate, encode_pair, token_logps

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    model.eval()
    with torch.no_grad():
        for p in pairs:
            enc = encode_pair(tokenizer, p.messages, p.chosen, p.rejected, max_length=512)
            logp = token_logps(model, collate([enc], pad))  # (2, T-1): chosen, rejected
            first = len(enc.prompt) - 1  # logp[:, i] scores token i + 1
            out.append({
                "logp_chosen": float(logp[0].sum()), "logp_rejected": float(logp[1].sum()),
                "p_first_chosen": float(logp[0, first].exp()),
                "p_first_rejected": float(logp[1, first].exp()),
            })  # fmt: skip
    return out


def summarize(scored: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How many pairs the model prefers the chosen reply on: whole reply, and first token."""
    n = len(scored)
    return {
        "n": n,
        "chosen_likelier": sum(s["logp_chosen"] > s["logp_rejected"] for s in scored),
        "chosen_first_token_likelier": sum(
            s["p_first_chosen"] > s["p_first_rejected"] for s in scored
        ),
        "mean_p_first_chosen": sum(s["p_first_chosen"] for s in scored) / max(n, 1),
        "mean_p_first_rejected": sum(s["p_first_rejected"] for s in scored) / max(n, 1),
    }


def describe(summary: dict[str, Any]) -> str:
    n = summary["n"]
    return (
        f"chosen reply likelier on {summary['chosen_likelier']}/{n}, its first token likelier "
        f"on {summary['chosen_first_token_likelier']}/{n} (mean P(first token) chosen "
        f"{summary['mean_p_first_chosen']:.3f}, rejected {summary['mean_p_first_rejected']:.3f})"
    )


def save_declined(
    data: str, pairs: Sequence[Any], replies: Sequence[dict[str, Any]], out: str
) -> int:
    """Copy the lines of ``data`` behind the declined pairs (``pair.source`` is ``name:line``)."""
    wanted = {int(p.source.rsplit(":", 1)[1]) for p, r in zip(pairs, replies, strict=True)
              if r["declined"]}  # fmt: skip
    from prefvec.training.data import _open_text

    with _open_text(Path(data)) as f:
        lines = [line.rstrip("\n") for line in f]  # numbered as the loader numbers them
    kept = [lines[n - 1] for n in sorted(wanted)]
    write_lines(out, kept)
    return len(kept)


def write_lines(out: str, lines: Sequence[str]) -> None:
    """Write JSONL lines to ``out`` atomically: a stopped run never leaves half a file."""
    from prefvec.fileio import atomic_write_bytes

    atomic_write_bytes(out, "".join(line + "\n" for line in lines).encode())


def drop_close_to_heldout(pairs: Sequence[Any]) -> tuple[list[Any], dict[str, Any]]:
    """The pairs whose prompt is not too close to a held-out suite's or to a demo prompt of the
    refusal templates (the refusal set's check: content-word Jaccard ≥ 0.5), and
    ``{pair source: (similarity, closest)}`` of those dropped."""
    from prefvec.evaluation.data import eval_data_dir
    from prefvec.training.refusal.sources import SourcePrompt, contamination, heldout_prompts
    from prefvec.training.refusal.templates import load_templates

    tpl = load_templates()
    held = heldout_prompts(eval_data_dir(None))
    held += list(tpl.heldout_harmful + tpl.heldout_benign_risky)
    probe = [SourcePrompt(p.source, p.messages[-1]["content"], p.kind, "") for p in pairs]
    close = contamination(probe, held)
    kept = [p for p in pairs if p.source not in close]
    return kept, {k: {"similarity": s, "closest": t} for k, (s, t) in close.items()}


def save_anchor(pairs: Sequence[Any], point: dict[str, Any], kind: str, out: str) -> int:
    """New JSONL rows for the pairs ``point`` declined: its own reply (tidied to its last full
    sentence) as chosen, the pair's rejected reply as rejected. Each row keeps the pair's split
    group, so it lands on the training side of the same split again."""
    from prefvec.evaluation.grid import point_label
    from prefvec.training.refusal.build import tidy

    label = point_label(point["weights"])
    rows = [
        {"prompt": p.messages, "chosen": tidy(r["reply"]), "rejected": p.rejected,
         "kind": kind, "group": p.group,
         "provenance": {"prompt": p.source, "rejected": p.source,
                        "chosen": f"greedy reply at {label} (decline probe)"}}
        for p, r in zip(pairs, point["replies"], strict=True)
        if r["declined"]
    ]  # fmt: skip
    write_lines(out, [json.dumps(row) for row in rows])
    return len(rows)


def save_loops(pairs: Sequence[Any], points: Sequence[dict[str, Any]], out: str) -> int:
    """New JSONL rows for the pairs whose first-setting reply declines without looping and
    whose reply at a later setting loops: the first reply (tidied to its last full sentence) as
    chosen, the first looping later reply as rejected; kind and split group are the pair's."""
    from prefvec.evaluation.grid import point_label
    from prefvec.scoring.text import is_collapsed
    from prefvec.training.refusal.build import tidy

    first, later = points[0], points[1:]
    rows = []
    for i, pair in enumerate(pairs):
        clean = first["replies"][i]
        if not clean["declined"] or is_collapsed(clean["reply"]):
            continue
        looped = next((pt for pt in later if is_collapsed(pt["replies"][i]["reply"])), None)
        if looped is None:
            continue
        rows.append(
            {"prompt": pair.messages, "chosen": tidy(clean["reply"]),
             "rejected": looped["replies"][i]["reply"], "kind": pair.kind, "group": pair.group,
             "provenance": {"prompt": pair.source,
                            "chosen": f"greedy reply at {point_label(first['weights'])} "
                                      "(decline probe)",
                            "rejected": f"greedy reply at {point_label(looped['weights'])}, "
                                        "looping (decline probe)"}}
        )  # fmt: skip
    write_lines(out, [json.dumps(row) for row in rows])
    return len(rows)


def write_manifest(
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    kinds: Sequence[str],
    n_probed: int,
    weights: dict[str, float],
    n_saved: int,
    vector_sha256: dict[str, str],
    saved: str,
    dropped: dict[str, Any] | None = None,
) -> None:
    """Provenance beside the mined rows ``saved``: ``<file stem>.manifest.json``."""
    from prefvec.vector_store.store import sha256_file

    out = Path(saved)
    manifest = {
        "command": shlex.join(
            ["python", "bench/decline_probe.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "source": {"path": args.data, "sha256": sha256_file(args.data)},
        "kinds": list(kinds),
        "split": {"mined": args.split, "val_fraction": args.val_fraction, "seed": args.seed},
        "declined_at": weights,
        "vectors": vector_sha256,
        "base": args.base,
        "decoding": {"greedy": True, "max_new_tokens": args.max_new_tokens, "dtype": args.dtype},
        "judge": "prefvec.scoring.refusal.is_refusal (string match)",
        "probed": n_probed,
        "single_turn": args.single_turn,
        "rows": n_saved,
        "sha256": sha256_file(out),
    }
    if dropped is not None:
        manifest["dropped_as_close_to_heldout"] = dropped
    path = out.with_name(out.stem + ".manifest.json")
    path.write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
