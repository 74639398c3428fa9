"""``prefvec mora <stage>``: rollouts, profiles, mine, fuse, pairs, report, or ``run`` (all).

Configuration layers, lowest first: the work folder's ``config.json`` (so later stages reuse the
first call's settings), ``--config file.yaml``, then the flags given. ``--force`` redoes stages
whose configuration changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from prefvec.training.mora.config import CLI_STAGES, MoraConfig

STAGE_HELP = {
    "rollouts": "sample N replies per prompt (in process or through a server)",
    "profiles": "score every rollout on every dimension; per-prompt reward profiles",
    "mine": "find the single-reward prompts",
    "fuse": "rewrite mined prompts to carry two intents; intent-preservation check",
    "pairs": "sample the kept rewrites again; max-margin DPO pairs (JSONL)",
    "report": "reachable region and diversity before vs after rewriting (JSON + PNG)",
    "run": "every stage in order (finished ones are skipped)",
}
STAGE_METHOD = {
    "rollouts": "rollouts",
    "profiles": "profiles",
    "mine": "mine",
    "fuse": "fuse",
    "pairs": "pairs",
    "report": "report",
    "run": "run",
}


def config_from_args(args: argparse.Namespace) -> MoraConfig:
    """``config.json`` of the work folder < ``--config`` YAML < flags."""
    from prefvec.training.config import build_config, load_yaml

    names = [f.name for f in dataclasses.fields(MoraConfig)]
    yaml_values = load_yaml(args.config) if args.config else {}
    flags = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    workdir = Path(flags.get("workdir") or yaml_values.get("workdir") or MoraConfig.workdir)
    saved: dict[str, Any] = {}
    if (workdir / "config.json").is_file():
        saved = json.loads((workdir / "config.json").read_text(encoding="utf-8"))
    return build_config(MoraConfig, {**saved, **yaml_values, "workdir": str(workdir)}, **flags)


def cmd_stage(args: argparse.Namespace) -> int:
    from prefvec.training.mora.pipeline import MoraPipeline

    cfg = config_from_args(args)
    pipe = MoraPipeline(cfg, force=args.force, progress=not args.no_progress)
    result = getattr(pipe, STAGE_METHOD[args.mora_stage])()
    if isinstance(result, dict):
        print(json.dumps(result, indent=2))
    else:
        stems = {
            "rollouts": "rollouts",
            "profiles": "profiles",
            "mine": "mined",
            "fuse": "fused",
            "pairs": "pairs",
        }
        meta = Path(cfg.workdir) / f"{stems[args.mora_stage]}.meta.json"
        print(meta.read_text(encoding="utf-8").strip())
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mora`` and its stages to a subparsers object."""
    from prefvec.training.config import add_config_arguments

    mora = subparsers.add_parser(
        "mora",
        help="MORA: rewrite single-reward prompts into multi-intent ones; max-margin DPO pairs",
        description=(MoraConfig.__doc__ or "").strip(),
    )
    sub = mora.add_subparsers(dest="mora_stage", required=True, metavar="STAGE")
    for stage in (*CLI_STAGES, "run"):
        p = sub.add_parser(stage, help=STAGE_HELP[stage], description=STAGE_HELP[stage])
        add_config_arguments(p, MoraConfig)
        p.add_argument("--force", action="store_true", help="redo stages whose config changed")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        p.set_defaults(func=cmd_stage)
    return mora
