"""AdvBench is split in two fixed halves: the evaluation suite and MORA's training pool."""

from __future__ import annotations

import pytest

from prefvec.evaluation.data import advbench_is_eval, eval_data_dir, load_advbench
from prefvec.training.data import split_bucket


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
