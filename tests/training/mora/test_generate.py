"""The in-process generator on the tiny model, and the built-in prompt sources."""

from __future__ import annotations

from pathlib import Path

from prefvec.training.data import split_bucket
from prefvec.training.mora import InProcessGenerator, MoraConfig, PromptRecord
from prefvec.training.mora.prompts import advbench_train, alpaca_train, load_prompts


def test_in_process_samples_are_seeded(tiny_base_dir: Path, one_thread: None) -> None:
    cfg = MoraConfig(base=str(tiny_base_dir), temperature=1.0, top_p=1.0, max_new_tokens=6)
    gen = InProcessGenerator.from_config(cfg)
    prompts = [PromptRecord("a", "Hello there"), PromptRecord("b", "How are you?")]
    first = gen.sample(prompts, 3, seed=0)
    assert [len(t) for t in first] == [3, 3]
    assert len(set(first[0])) > 1  # sampling, not greedy
    assert gen.sample(prompts, 3, seed=0) == first
    assert gen.sample(prompts[1:], 3, seed=0) == first[1:]  # independent of the other prompts
    assert gen.sample(prompts, 3, seed=1) != first


def test_builtin_sources_are_training_halves() -> None:
    adv = advbench_train()
    assert adv and all(split_bucket(r.text, seed=0) >= 0.5 for r in adv)
    assert all(r.intents == ["harmful"] and r.reference is None for r in adv)
    alp = alpaca_train()
    assert alp and all(r.intents == ["benign"] and r.reference for r in alp)
    assert all(split_bucket(r.text, seed=0) >= 0.1 for r in alp)  # not in split_pairs' val side
    got = load_prompts(["advbench-train", "alpaca-train"], limit_per_source=5, seed=3)
    assert len(got) == 10 and got == load_prompts(["advbench-train", "alpaca-train"], 5, 3)
