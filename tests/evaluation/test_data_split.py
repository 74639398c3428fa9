"""AdvBench is split in two fixed halves: the evaluation suite and MORA's training pool."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefvec.evaluation.data import advbench_is_eval, eval_data_dir, load_advbench
from prefvec.training.data import split_bucket

ROOT = Path(__file__).resolve().parents[2]


def test_advbench_halves_are_disjoint_and_cover_the_set() -> None:
    root = eval_data_dir()
    ev, tr = load_advbench(root), load_advbench(root, "train")
    ev_ids, tr_ids = {p.id for p in ev}, {p.id for p in tr}
    assert not ev_ids & tr_ids
    assert len(ev_ids | tr_ids) == 520  # every AdvBench behaviour, once
    assert all(split_bucket(p.prompt, seed=0) < 0.5 for p in ev)
    assert all(not advbench_is_eval(p.prompt) for p in tr)
    with pytest.raises(ValueError, match="part"):
        load_advbench(root, "test")


def test_helpful_heldout_pairs_are_unseen_by_every_shipped_training_set() -> None:
    """alpaca_pairs (the helpfulness measure) = the helpful vector's validation pairs, and the
    refusal set draws its AlpacaEval prompts from the other side of that split only."""
    from prefvec.evaluation.data import load_alpaca_heldout
    from prefvec.training.config import (
        DPOJobConfig,
        RacoJobConfig,
        build_config,
        data_for,
        load_yaml,
    )
    from prefvec.training.data import (
        HELPFUL_VAL_FRACTION,
        default_data_dir,
        load_preference_data,
        split_pairs,
    )
    from prefvec.training.refusal.sources import alpaca_train

    held = load_alpaca_heldout()
    assert len(held) >= 100
    prompts = {it.messages[0]["content"] for it in held}
    shipped = build_config(RacoJobConfig, load_yaml(ROOT / "vectors/configs/helpful.yaml"))
    plain = build_config(DPOJobConfig, load_yaml(ROOT / "results/configs/helpful-plain.yaml"))
    for cfg in (shipped, plain):  # the shipped helpful and its comparison row share the split
        assert cfg.val_fraction == HELPFUL_VAL_FRACTION and cfg.seed == 0
        pairs, _ = load_preference_data("helpful", [ROOT / d for d in data_for(cfg, "helpful")])
        train, val = split_pairs(pairs, cfg.val_fraction, cfg.seed)
        assert {p.messages[0]["content"] for p in val} == prompts
        assert not prompts & {p.messages[0]["content"] for p in train}
    refusal_side = {p.text for p in alpaca_train(default_data_dir(), max_chars=10_000)}
    assert refusal_side and not prompts & refusal_side


def test_truthfulqa_heldout_questions_are_the_truthful_vectors_validation_side() -> None:
    from prefvec.evaluation.data import load_truthfulqa_mc
    from prefvec.training.config import DPOJobConfig, build_config, load_yaml
    from prefvec.training.data import TRUTHFUL_VAL_FRACTION, load_preference_data, split_pairs

    root = eval_data_dir()
    full = load_truthfulqa_mc(root, "mc1_targets")
    held = load_truthfulqa_mc(root, "mc1_targets", heldout=True)
    assert len(full) == 790 and 100 <= len(held) < len(full)
    cfg = build_config(DPOJobConfig, load_yaml(ROOT / "vectors/configs/truthful.yaml"))
    assert cfg.val_fraction == TRUTHFUL_VAL_FRACTION and cfg.seed == 0
    pairs, _ = load_preference_data("truthful", [ROOT / d for d in cfg.data])
    train, _ = split_pairs(pairs, cfg.val_fraction, cfg.seed)
    trained = {p.messages[0]["content"].strip() for p in train}
    assert trained and not {it.prompt for it in held} & trained
