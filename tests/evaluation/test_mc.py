"""Multiple-choice log-likelihood equals a hand computation on a tiny model; scoring rules."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from prefvec.evaluation.data import MCItem
from prefvec.evaluation.runner import RunContext, run_mc
from prefvec.evaluation.suites import SUITES, mc2_score, mc_correct, pair_outcome
from prefvec.evaluation.targets import InProcessTarget


@pytest.fixture(scope="module")
def tiny(srv_base_dir: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(srv_base_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(srv_base_dir)


def hand_logprob(model, tok, question: str, choice: str) -> float:  # type: ignore[no-untyped-def]
    """Σ_t log p(choice_t | chat(question), choice_<t), one token at a time, no batching."""
    text = tok.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    ctx = tok(text, add_special_tokens=False)["input_ids"]
    cont = tok(choice, add_special_tokens=False)["input_ids"]
    total = 0.0
    with torch.no_grad():
        for t, tok_id in enumerate(cont):
            ids = torch.tensor([ctx + cont[:t]])
            logits = model(input_ids=ids).logits[0, -1]
            total += float(torch.log_softmax(logits, -1)[tok_id])
    return total


def test_mc_logprobs_equal_hand_computation(tiny) -> None:  # type: ignore[no-untyped-def]
    model, tok = tiny
    target = InProcessTarget(model, tok, batch_size=3)
    q = ["Is the sky blue?", "2+2?"]
    choices = [["Yes, it is.", "No"], ["4", "five, I think", "22"]]
    items = [
        MCItem(f"q{i}", qq, cc, [1] + [0] * (len(cc) - 1))
        for i, (qq, cc) in enumerate(zip(q, choices, strict=True))
    ]
    metric, records = run_mc(target, SUITES["hhh_helpful"], items, RunContext(progress=False))
    for it, rec in zip(items, records, strict=True):
        want = [hand_logprob(model, tok, it.prompt, c) for c in it.choices]
        assert rec["logprobs"] == pytest.approx(want, abs=1e-4)
        assert rec["score"] == float(mc_correct(want, it.labels))
    assert metric.n == 2 and metric.value == sum(r["score"] for r in records) / 2


def test_scoring_rules_by_hand() -> None:
    assert mc_correct([-3.0, -1.0, -2.0], [0, 1, 0]) and not mc_correct([-1.0, -2.0], [0, 1])
    # p ∝ (e^0, e^-ln2, e^-ln4) = (1, 1/2, 1/4); true = first two -> 1.5 / 1.75
    assert mc2_score([0.0, -math.log(2), -math.log(4)], [1, 1, 0]) == pytest.approx(1.5 / 1.75)
    assert pair_outcome((-1.0, -5.0), (-2.0, -4.0)) == 1.0  # margin (+1) - (-1) > 0
    assert pair_outcome((-3.0, -3.0), (-2.0, -2.0)) == 0.5
    assert pair_outcome((-5.0, -1.0), (-4.0, -2.0)) == 0.0


def test_heldout_subset_is_scored_from_the_full_suites_records() -> None:
    """truthfulqa_mc1_heldout run with truthfulqa_mc1 reuses its scores (no second pass), and
    equals scoring it on its own."""
    from prefvec.evaluation.runner import RunContext, run_eval

    class Fake:
        label, weights, supports_logprobs = "fake", {}, True

        def __init__(self) -> None:
            self.calls = 0

        def logprobs(self, requests):  # type: ignore[no-untyped-def]
            self.calls += len(requests)
            return [-float(len(c)) for _, c in requests]  # shortest answer wins

    ctx = RunContext(progress=False)
    both, alone = Fake(), Fake()
    rep = run_eval(both, ["truthfulqa_mc1", "truthfulqa_mc1_heldout"], ctx)
    solo = run_eval(alone, ["truthfulqa_mc1_heldout"], ctx)
    one = run_eval(Fake(), ["truthfulqa_mc1"], ctx)
    assert rep.metric("truthfulqa_mc1_heldout").value == solo.metric("truthfulqa_mc1_heldout").value
    assert rep.metric("truthfulqa_mc1").value == one.metric("truthfulqa_mc1").value
    assert both.calls == sum(len(r["logprobs"]) for r in one.items["truthfulqa_mc1"])
