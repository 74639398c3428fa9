"""RACO trainer on a tiny model: per-objective gradients, the combined step, conflicting goals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prefvec.training.config import RacoJobConfig
from prefvec.training.raco import MultiPair, RacoTrainer, build_policy
from prefvec.training.raco_solver import combine_gradients


def _conflicting_pairs() -> list[MultiPair]:
    """Objective 0 prefers 'yes' on 'apple' prompts; objective 1 prefers 'no' on 'zebra' prompts.

    The same two replies with opposite preferences: the gradients conflict, but the prompts tell
    the cases apart, so both objectives can improve at once.
    """
    out = []
    for i in range(8):
        if i % 2 == 0:
            out.append(
                MultiPair([{"role": "user", "content": f"apple pie {i}"}], "yes", "no", (1, 0))
            )
        else:
            out.append(
                MultiPair([{"role": "user", "content": f"zebra zoo {i}"}], "yes", "no", (0, -1))
            )
    return out


def _trainer(base: Path, mode: str = "raco", lr: float = 5e-3) -> RacoTrainer:
    cfg = RacoJobConfig(base=str(base), lora_targets=["q_proj", "v_proj"], lora_r=4, device="cpu")
    model, tok, ref = build_policy(base, cfg)
    return RacoTrainer(
        model, tok, [0.5, 0.5], mode=mode, c=0.4, learning_rate=lr, ref_model=ref, max_length=64
    )


def _grads(trainer: RacoTrainer, pairs: list[MultiPair]) -> torch.Tensor:
    enc, labels = trainer.encode(pairs)
    losses, _ = trainer.losses(enc, labels)
    return trainer._objective_grads(losses)


def test_raco_step_lowers_both_conflicting_losses(tiny_base_dir: Path) -> None:
    torch.manual_seed(0)
    trainer = _trainer(tiny_base_dir, lr=3e-3)
    pairs = _conflicting_pairs()
    g = _grads(trainer, pairs)
    assert float(torch.nn.functional.cosine_similarity(g[0], g[1], dim=0)) < 0  # they conflict
    frozen = {
        n: p.detach().clone() for n, p in trainer.model.named_parameters() if not p.requires_grad
    }
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    enc, labels = trainer.encode(pairs)
    start = trainer.losses(enc, labels)[0].detach()
    for _ in range(10):
        trainer.step([pairs])
    end = trainer.losses(enc, labels)[0].detach()
    assert (end < start).all(), (start, end)
    changed = [
        n
        for n, p in trainer.model.named_parameters()
        if p.requires_grad and not torch.equal(p, before[n])
    ]
    assert changed
    for n, p in trainer.model.named_parameters():  # only trainable (LoRA) parameters move
        if n in frozen:
            assert torch.equal(p, frozen[n])


def test_micro_step_writes_the_combined_direction(tiny_base_dir: Path) -> None:
    trainer = _trainer(tiny_base_dir)
    pairs = _conflicting_pairs()
    with torch.no_grad():  # give LoRA B a non-zero start so both LoRA factors get gradients
        for n, p in trainer.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    g = _grads(trainer, pairs)
    expected, _ = combine_gradients(g, [0.5, 0.5], c=0.4, mode="raco")
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.micro_step(pairs)
    got = torch.cat([p.grad.reshape(-1) for p in trainer.params])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_weighted_sum_mode_is_plain_backward(tiny_base_dir: Path) -> None:
    trainer = _trainer(tiny_base_dir, mode="weighted_sum")
    pairs = _conflicting_pairs()
    with torch.no_grad():
        for n, p in trainer.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    g = _grads(trainer, pairs)
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.micro_step(pairs)
    got = torch.cat([p.grad.reshape(-1) for p in trainer.params])
    torch.testing.assert_close(got, 0.5 * g[0] + 0.5 * g[1], rtol=1e-5, atol=1e-7)


def test_full_finetune_mode_uses_frozen_reference(tiny_base_dir: Path) -> None:
    cfg = RacoJobConfig(base=str(tiny_base_dir), use_lora=False, device="cpu")
    model, tok, ref = build_policy(tiny_base_dir, cfg)
    assert ref is not None and not any(p.requires_grad for p in ref.parameters())
    trainer = RacoTrainer(model, tok, [0.5, 0.5], learning_rate=1e-3, ref_model=ref, max_length=64)
    before = ref.model.embed_tokens.weight.clone()
    trainer.step([_conflicting_pairs()])
    assert torch.equal(ref.model.embed_tokens.weight, before)
    assert not torch.equal(model.model.embed_tokens.weight, before)


@pytest.mark.parametrize("mode", ["raco", "cagrad", "weighted_sum"])
def test_raco_job_stores_a_vector(
    tiny_base_dir: Path, toy_pairs_file: Path, tmp_path: Path, mode: str
) -> None:
    from prefvec.training.raco import run_raco_job
    from prefvec.vector_store import LocalStore

    cfg = RacoJobConfig(
        base=str(tiny_base_dir), preferences=["a", "b"], mode=mode,
        data_per_preference=[f"a={toy_pairs_file}", f"b={toy_pairs_file}"],
        lora_targets=["q_proj", "v_proj"], steps=3, batch_size=2, logging_steps=1, save_steps=2,
        max_length=64, max_prompt_length=32, output_dir=str(tmp_path / "run"),
        store_dir=str(tmp_path / "store"), progress=False, device="cpu",
    )  # fmt: skip
    report = run_raco_job(cfg)
    assert len(report["curves"]) == 3 and (tmp_path / "run/checkpoint.pt").is_file()
    vec = LocalStore(tmp_path / "store").get(report["stored"])
    assert vec.kind == "lowrank" and vec.metadata.eval_scores
    assert any(float(b.abs().max()) > 0 for _, b in vec.factors().values())
