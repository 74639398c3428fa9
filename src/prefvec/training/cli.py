"""``prefvec train dpo|raco|sequential``: flags from the job dataclasses, ``--config file.yaml``.

The main CLI calls :func:`register`; ``python -m prefvec.training.cli dpo ...`` runs the same
commands on their own. Flags override the YAML file; heavy imports happen inside the commands.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefvec.training.config import (
    DPOJobConfig,
    RacoJobConfig,
    SequentialJobConfig,
    add_config_arguments,
    config_from_args,
)


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    keep = ("stored", "vector_path", "eval", "wall_s", "n_train", "n_val", "data_hash")
    return {k: report[k] for k in keep if k in report}


def cmd_dpo(args: argparse.Namespace) -> int:
    from prefvec.training.dpo import run_dpo_job

    cfg = config_from_args(DPOJobConfig, args)
    result = run_dpo_job(cfg)
    report = {
        **result.report,
        "stored": result.record.ref if result.record else None,
        "vector_path": str(result.vector_path) if result.vector_path else None,
    }
    print(json.dumps(_summary(report), indent=2, default=str))
    return 0


def cmd_raco(args: argparse.Namespace) -> int:
    from prefvec.training.raco import run_raco_job

    report = run_raco_job(config_from_args(RacoJobConfig, args))
    print(json.dumps(_summary(report), indent=2, default=str))
    return 0


def cmd_sequential(args: argparse.Namespace) -> int:
    from prefvec.training.sequential import run_sequential_job

    report = run_sequential_job(config_from_args(SequentialJobConfig, args))
    print(json.dumps(_summary(report), indent=2, default=str))
    return 0


def cmd_data_refusal(args: argparse.Namespace) -> int:
    from prefvec.training.refusal.build import RefusalDataConfig, build_refusal_set

    manifest = build_refusal_set(config_from_args(RefusalDataConfig, args))
    keep = ("file", "sha256", "rows", "rows_by_kind")
    print(json.dumps({k: manifest[k] for k in keep}, indent=2))
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from prefvec.training.card import render_card

    notes = Path(args.notes).read_text(encoding="utf-8") if args.notes else ""
    text = render_card(args.vector, config_path=args.config, notes=notes, machine=args.machine)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


def register_data(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``data refusal`` (the refusal-preference set) to a subparsers object."""
    from prefvec.training.refusal.build import RefusalDataConfig

    data = subparsers.add_parser("data", help="build training data sets (refusal preferences)")
    sub = data.add_subparsers(dest="data_cmd", required=True)
    p = sub.add_parser(
        "refusal",
        help="refusal-preference set: decline harmful requests, help benign ones",
        description=(RefusalDataConfig.__doc__ or "").strip(),
    )
    add_config_arguments(p, RefusalDataConfig)
    p.set_defaults(func=cmd_data_refusal)
    return data


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``train`` with ``dpo``, ``raco`` and ``sequential``, and ``data``, to a subparsers
    object."""
    register_data(subparsers)
    train = subparsers.add_parser("train", help="train preference vectors (DPO, RACO, sequential)")
    sub = train.add_subparsers(dest="train_cmd", required=True)
    for name, cls, func, text in (
        ("dpo", DPOJobConfig, cmd_dpo, "DPO θ+ and label-swapped θ−; store φ = θ+ − θ−"),
        (
            "raco",
            RacoJobConfig,
            cmd_raco,
            "one model for K preferences (RACO / CAGrad / weighted sum)",
        ),
        ("sequential", SequentialJobConfig, cmd_sequential, "DPO on preferences one after another"),
    ):
        p = sub.add_parser(name, help=text, description=(cls.__doc__ or "").strip())
        add_config_arguments(p, cls)
        p.set_defaults(func=func)
    p = sub.add_parser("card", help="write a vector's card from its own metadata (+ notes)")
    p.add_argument("vector", help="the .safetensors file")
    p.add_argument("--config", default=None, help="the YAML it was trained from (for the command)")
    p.add_argument("--notes", default=None, help="Markdown appended (measurements with it)")
    p.add_argument("--machine", default=None, help="machine description, if not recorded")
    p.add_argument("--out", default=None, help="write here (default: stdout)")
    p.set_defaults(func=cmd_card)
    return train


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry: ``python -m prefvec.training.cli dpo --preference helpful ...``."""
    from prefvec.errors import PrefvecError

    parser = argparse.ArgumentParser(prog="prefvec-train")
    sub = parser.add_subparsers(dest="cmd", required=True)
    register(sub)
    args = parser.parse_args(["train", *(argv if argv is not None else sys.argv[1:])])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except PrefvecError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
