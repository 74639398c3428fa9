"""RACO trainer on a tiny model: per-objective gradients, the combined step, conflicting goals."""

from __future__ import annotations

import math
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


def _reply_token_logps(
    model: object, prompt: list[int], reply: list[int], adapter: bool
) -> torch.Tensor:
    """log π of each reply token, scored alone (adapter off: the reference), the oracle."""
    ids = torch.tensor([prompt + reply])
    if adapter:
        logits = model(input_ids=ids).logits  # type: ignore[operator]
    else:
        with model.disable_adapter():  # type: ignore[attr-defined]
            logits = model(input_ids=ids).logits  # type: ignore[operator]
    logp = torch.log_softmax(logits[0, :-1].float(), dim=-1)
    return logp[torch.arange(ids.shape[1] - 1), ids[0, 1:]][len(prompt) - 1 :]


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
        save_vector=str(tmp_path / "joint.safetensors"), nll_weights=[0.0, 0.5],
    )  # fmt: skip
    report = run_raco_job(cfg)
    assert len(report["curves"]) == 3 and (tmp_path / "run/checkpoint.pt").is_file()
    vec = LocalStore(tmp_path / "store").get(report["stored"])
    assert vec.kind == "lowrank" and vec.metadata.eval_scores
    assert any(float(b.abs().max()) > 0 for _, b in vec.factors().values())
    # the card of a joint vector: its command, both objectives' held-out accuracy, the machine
    from prefvec.training.card import render_card

    card = render_card(tmp_path / "joint.safetensors", config_path="c.yaml", root=tmp_path)
    assert f"prefvec train raco --config c.yaml --mode {mode}" in card
    n_val = report["data"]["a"]["n_val"]
    assert n_val > 0 and f"| a | {n_val} | **" in card and f"| b | {n_val} | **" in card
    assert "nll_weights | [0.0, 0.5]" in card and "machine: cpu" in card
    assert math.isfinite(report["eval"]["per_objective"]["a"]["reward_margin"])


def test_nll_term_matches_a_token_level_oracle(tiny_base_dir: Path) -> None:
    """nll_weights [w, 0]: objective 0's loss gains w × the token-mean NLL of its preferred
    replies (scored one sequence at a time here), objective 1's loss is untouched."""
    cfg = RacoJobConfig(base=str(tiny_base_dir), lora_targets=["q_proj"], lora_r=4, device="cpu")
    model, tok, ref = build_policy(tiny_base_dir, cfg)
    plain = RacoTrainer(model, tok, [0.5, 0.5], ref_model=ref, max_length=64)
    with_nll = RacoTrainer(model, tok, [0.5, 0.5], ref_model=ref, max_length=64,
                           nll_weights=[0.7, 0.0])  # fmt: skip
    pairs = _conflicting_pairs()
    pairs[0] = MultiPair(pairs[0].messages, "yes indeed", "no", (-1, 0))  # b preferred here
    model.eval()
    enc, labels = plain.encode(pairs)
    with torch.no_grad():
        base_losses, _ = plain.losses(enc, labels)
        got, _ = with_nll.losses(enc, labels)
        total, tokens = 0.0, 0
        for e, lab in zip(enc, labels[0].tolist(), strict=True):
            if lab == 0:
                continue
            reply = e.a if lab > 0 else e.b
            ids = torch.tensor([e.prompt + reply])
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
            targets = ids[0, 1:]
            per = logp[torch.arange(len(targets)), targets][len(e.prompt) - 1 :]
            total, tokens = total - float(per.sum()), tokens + len(reply)
    torch.testing.assert_close(got[0], base_losses[0] + 0.7 * total / tokens, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[1], base_losses[1])
    with pytest.raises(ValueError, match="nll_weights"):
        RacoTrainer(model, tok, [0.5, 0.5], ref_model=ref, nll_weights=[1.0])


def test_nll_weights_are_validated() -> None:
    from prefvec.errors import ValidationError

    with pytest.raises(ValidationError, match="nll_weights"):
        RacoJobConfig(preferences=["helpful", "harmless"], nll_weights=[1.0])
    with pytest.raises(ValidationError, match="nll_weights"):
        RacoJobConfig(preferences=["helpful", "harmless"], nll_weights=[1.0, -1.0])
    assert RacoJobConfig(nll_weights=[0.0, 1.0]).nll_weights == [0.0, 1.0]


@pytest.mark.parametrize(
    "field,value",
    [("loss_type", ["sigmoid", "sft"]), ("loss_weights", [1.0]),
     ("precompute_ref_log_probs", True), ("gradient_checkpointing", True),
     ("dtype", "bfloat16")],
)  # fmt: skip
def test_trl_only_settings_are_refused_not_ignored(field: str, value: object) -> None:
    """The raco job has its own trainer: a TRL setting it would not honour is a clear error."""
    from prefvec.errors import ValidationError

    with pytest.raises(ValidationError, match=f"`{field}`.*not supported by `train raco`"):
        RacoJobConfig(**{field: value})


def test_job_cuts_long_prompts_to_max_prompt_length(tiny_base_dir: Path, tmp_path: Path) -> None:
    """max_prompt_length is honoured as in the DPO path: the end of a long prompt is kept."""
    import json

    from prefvec.training.logps import chat_ids
    from prefvec.training.raco import _pools

    rows = [
        {"prompt": "filler " * 80 + f"final question {i}?", "chosen": "yes", "rejected": "no"}
        for i in range(12)
    ]
    data = tmp_path / "long.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = RacoJobConfig(
        base=str(tiny_base_dir), preferences=["a", "b"], val_fraction=0.3,
        data_per_preference=[f"a={data}", f"b={data}"], max_length=64, max_prompt_length=24,
        device="cpu",
    )  # fmt: skip
    _, tok, _ = build_policy(tiny_base_dir, cfg)
    pools, val, _ = _pools(cfg, tok)
    pairs = [p for pool in pools for p in pool] + val
    assert len(pairs) == 24
    for p in pairs:
        assert len(chat_ids(tok, p.messages, add_generation_prompt=True)) <= 24
        assert p.messages[-1]["content"].rstrip().endswith("?")  # the end is kept


def test_anchor_loss_matches_a_per_reply_oracle(tiny_base_dir: Path) -> None:
    """anchors [False, True]: objective 1's loss is the mean over its pairs' replies of
    ½ Σ_t (log π − log π_ref)², scored one reply at a time here; objective 0 keeps its DPO loss;
    at the LoRA start (π = π_ref) the anchor loss is exactly 0."""
    cfg = RacoJobConfig(base=str(tiny_base_dir), lora_targets=["q_proj"], lora_r=4, device="cpu")
    model, tok, ref = build_policy(tiny_base_dir, cfg)
    plain = RacoTrainer(model, tok, [0.5, 0.5], ref_model=ref, max_length=64)
    anchored = RacoTrainer(model, tok, [0.5, 0.5], ref_model=ref, max_length=64,
                           anchors=[False, True])  # fmt: skip
    pairs = _conflicting_pairs()
    enc, labels = plain.encode(pairs)
    model.eval()
    with torch.no_grad():
        at_start, _ = anchored.losses(enc, labels)
        assert float(at_start[1]) == 0.0
        torch.manual_seed(1)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # move the policy away from the reference
        dpo, _ = plain.losses(enc, labels)
        got, _ = anchored.losses(enc, labels)

        def reply_logps(prompt: list[int], reply: list[int], adapter: bool) -> torch.Tensor:
            return _reply_token_logps(model, prompt, reply, adapter)

        total, replies = 0.0, 0
        for e, lab in zip(enc, labels[1].tolist(), strict=True):
            if lab == 0:
                continue
            for reply in (e.a, e.b):
                d = reply_logps(e.prompt, reply, True) - reply_logps(e.prompt, reply, False)
                total, replies = total + 0.5 * float(d.pow(2).sum()), replies + 1
    assert total > 0
    torch.testing.assert_close(got[1], torch.tensor(total / replies), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got[0], dpo[0])
    with pytest.raises(ValueError, match="anchors"):
        RacoTrainer(model, tok, [0.5, 0.5], ref_model=ref, anchors=[True])


def test_anchor_objective_pulls_the_policy_back_to_the_reference(tiny_base_dir: Path) -> None:
    """Steps on an anchor objective alone shrink how far its replies have moved."""
    trainer = _trainer(tiny_base_dir, mode="weighted_sum", lr=1e-2)
    trainer.anchors = torch.tensor([False, True])
    pairs = [MultiPair(p.messages, p.a, p.b, (0, 1)) for p in _conflicting_pairs()]
    torch.manual_seed(2)
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    enc, labels = trainer.encode(pairs)
    with torch.no_grad():
        before = float(trainer.losses(enc, labels)[0][1])
    for _ in range(5):
        trainer.step([pairs])
    with torch.no_grad():
        after = float(trainer.losses(enc, labels)[0][1])
    assert before > 0 and after < 0.5 * before


def test_anchor_and_data_kinds_settings_are_validated() -> None:
    from prefvec.errors import ValidationError

    prefs = ["helpful", "harmless"]
    with pytest.raises(ValidationError, match=r"`anchors`.*not among"):
        RacoJobConfig(preferences=prefs, anchors=["truthful"])
    with pytest.raises(ValidationError, match=r"`anchors`.*no preference to learn"):
        RacoJobConfig(preferences=prefs, anchors=prefs)
    with pytest.raises(ValidationError, match="`nll_weights` must be 0 for the anchors"):
        RacoJobConfig(preferences=prefs, anchors=["harmless"], nll_weights=[0.0, 1.0])
    with pytest.raises(ValidationError, match=r"`data_kinds`.*'harmless'"):
        RacoJobConfig(preferences=prefs, data_kinds=["harmless"])
    with pytest.raises(ValidationError, match=r"`data_kinds`.*'truthful=x'"):
        RacoJobConfig(preferences=prefs, data_kinds=["truthful=x"])
    cfg = RacoJobConfig(preferences=prefs, data_kinds=["harmless=harmful,benign_risky"])
    assert cfg.kinds_for("harmless") == ["harmful", "benign_risky"]
    assert cfg.kinds_for("helpful") == []


def test_job_keeps_only_the_rows_of_data_kinds(
    tiny_base_dir: Path, toy_pairs_file: Path, tmp_path: Path
) -> None:
    """data_kinds keeps the rows of those kinds (training and validation); a kind that keeps
    nothing is an error naming the setting and the kinds the data has."""
    import json

    from prefvec.training.raco import _pools, run_raco_job

    rows = [
        {"prompt": f"request {i}", "chosen": f"c{i}", "rejected": f"r{i}",
         "kind": "harmful" if i % 3 == 0 else "benign"}
        for i in range(30)
    ]  # fmt: skip
    data = tmp_path / "kinds.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    common = dict(
        base=str(tiny_base_dir), preferences=["a", "b"], val_fraction=0.3, device="cpu",
        data_per_preference=[f"a={toy_pairs_file}", f"b={data}"], max_length=64,
        max_prompt_length=32,
    )  # fmt: skip
    cfg = RacoJobConfig(**common, data_kinds=["b=harmful"])  # type: ignore[arg-type]
    _, tok, _ = build_policy(tiny_base_dir, cfg)
    pools, val, info = _pools(cfg, tok)
    kept = [p for p in pools[1] + val if p.labels[1]]
    assert len(kept) == 10 and all(p.a.startswith("c") and int(p.a[1:]) % 3 == 0 for p in kept)
    assert info["b"]["kinds"] == ["harmful"]
    everything, _, _ = _pools(RacoJobConfig(**common), tok)  # type: ignore[arg-type]
    assert len(everything[1]) > len(pools[1])
    bad = RacoJobConfig(
        **common,
        data_kinds=["b=unknown"],
        output_dir=str(tmp_path / "r"),  # type: ignore[arg-type]
    )
    from prefvec.errors import ValidationError

    with pytest.raises(
        ValidationError, match=r"`data_kinds` b=unknown keeps no pair.*'benign', 'harm"
    ):
        run_raco_job(bad)


def test_card_of_an_anchored_job_names_the_anchor(
    tiny_base_dir: Path, toy_pairs_file: Path, tmp_path: Path
) -> None:
    from prefvec.training.card import render_card
    from prefvec.training.raco import run_raco_job

    cfg = RacoJobConfig(
        base=str(tiny_base_dir), preferences=["a", "b"], mode="weighted_sum", anchors=["b"],
        data_per_preference=[f"a={toy_pairs_file}", f"b={toy_pairs_file}"],
        lora_targets=["q_proj", "v_proj"], steps=2, batch_size=2, max_length=64,
        max_prompt_length=32, output_dir=str(tmp_path / "run"), store_dir=str(tmp_path / "s"),
        progress=False, device="cpu", save_vector=str(tmp_path / "v.safetensors"),
    )  # fmt: skip
    report = run_raco_job(cfg)
    assert report["eval"]["per_objective"]["b"]["loss"] >= 0.0
    card = render_card(tmp_path / "v.safetensors", config_path="c.yaml", root=tmp_path)
    assert "| b (anchor) |" in card and "| anchors | [b] |" in card


def test_job_on_top_of_a_vector_trains_from_base_plus_it_and_stores_only_the_change(
    tiny_base_dir: Path, toy_pairs_file: Path, tmp_path: Path
) -> None:
    """`on_top_of`: the policy starts from (and the reference is) base + the stored vector; the
    stored result is the trained change alone, so base + start + it == the trained model."""
    import json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from prefvec.errors import ValidationError
    from prefvec.training.card import render_card
    from prefvec.training.raco import run_raco_job
    from prefvec.vector_store import PreferenceVector
    from prefvec.vector_store.extract import load_state

    common = dict(
        base=str(tiny_base_dir), preferences=["a", "b"], mode="weighted_sum", anchors=["b"],
        data_per_preference=[f"a={toy_pairs_file}", f"b={toy_pairs_file}"],
        lora_targets=["q_proj", "v_proj"], lora_r=2, steps=2, batch_size=2, max_length=64,
        max_prompt_length=32, progress=False, device="cpu", learning_rate=0.05, no_store=True,
    )  # fmt: skip
    first = tmp_path / "start.safetensors"
    run_raco_job(RacoJobConfig(**common, output_dir=str(tmp_path / "r1"),  # type: ignore[arg-type]
                               save_vector=str(first), name="start"))  # fmt: skip
    out, saved = tmp_path / "r2", tmp_path / "top.safetensors"
    report = run_raco_job(
        RacoJobConfig(
            **common,
            output_dir=str(out),
            save_vector=str(saved),  # type: ignore[arg-type]
            on_top_of=str(first),
            seed=1,
        )
    )
    start, top = PreferenceVector.load(first), PreferenceVector.load(saved)
    assert top.metadata.rank == 2  # the change alone, not the start's factors as well
    base = load_state(tiny_base_dir)
    (start_dir,) = out.glob("stage0-start-*")
    for name, delta in start.to_dense().items():  # the start model is exactly base + start
        torch.testing.assert_close(base[name] + delta, load_state(start_dir / "merged")[name],
                                   rtol=0, atol=1e-6)  # fmt: skip
    adapter_cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert Path(adapter_cfg["base_model_name_or_path"]) == start_dir / "merged"
    trained = (
        PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(str(start_dir / "merged"), dtype=torch.float32),
            str(out / "adapter"),
        )
        .merge_and_unload()
        .state_dict()
    )
    dense_start, dense_top = start.to_dense(), top.to_dense()
    assert dense_top and any(float(d.abs().max()) > 0 for d in dense_top.values())
    for name in set(dense_start) | set(dense_top):
        want = base[name] + dense_start.get(name, 0) + dense_top.get(name, 0)
        torch.testing.assert_close(want, trained[name].float(), rtol=0, atol=1e-5)
    assert report["on_top_of"]["on_top_of"] == str(first)
    card = render_card(saved, config_path="c.yaml", root=tmp_path)
    assert f"trained ON TOP OF `{first}`" in card and "where base + the start vector" in card
    # a missing file or another base's vector: a ValidationError naming the field, nothing written
    other = PreferenceVector(
        start.metadata.model_copy(update={"base_fingerprint": "pvfp1:" + "0" * 40}),
        start.tensors,
    )
    other.save(tmp_path / "other.safetensors")
    for bad in (tmp_path / "other.safetensors", tmp_path / "missing.safetensors"):
        cfg = RacoJobConfig(**common, output_dir=str(tmp_path / "r3"),  # type: ignore[arg-type]
                            on_top_of=str(bad))  # fmt: skip
        with pytest.raises(ValidationError, match="`on_top_of`") as err:
            run_raco_job(cfg)
        assert err.value.field == "on_top_of"
    assert not (tmp_path / "r3").exists()


def test_resume_refuses_a_checkpoint_trained_with_other_settings(
    tiny_base_dir: Path, toy_pairs_file: Path, tmp_path: Path
) -> None:
    """--resume continues a run only with what it learnt from: the same settings, the same data
    (by content) and the same start vector (by sha256); more steps are fine."""
    from prefvec.errors import ValidationError
    from prefvec.training.raco import run_raco_job

    out = tmp_path / "run"
    common = dict(
        base=str(tiny_base_dir), preferences=["a", "b"], mode="weighted_sum",
        data_per_preference=[f"a={toy_pairs_file}", f"b={toy_pairs_file}"],
        lora_targets=["q_proj", "v_proj"], lora_r=2, batch_size=2, max_length=64,
        max_prompt_length=32, progress=False, device="cpu", no_store=True, save_steps=1,
        logging_steps=1,
        output_dir=str(out), resume=True,
    )  # fmt: skip
    first = tmp_path / "start.safetensors"
    run_raco_job(RacoJobConfig(**common, steps=1, save_vector=str(first)))  # type: ignore[arg-type]
    ckpt = (out / "checkpoint.pt").read_bytes()
    # a moved copy of the same data is the same run: it resumes and trains one more step
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(toy_pairs_file.read_bytes())
    moved = {**common, "data_per_preference": [f"a={copy}", f"b={toy_pairs_file}"]}
    report = run_raco_job(RacoJobConfig(**moved, steps=2))  # type: ignore[arg-type]
    assert [c["step"] for c in report["curves"]] == [1, 2]
    (out / "checkpoint.pt").write_bytes(ckpt)  # back to the one-step checkpoint
    changes: list[tuple[dict[str, object], str]] = [
        ({"learning_rate": 0.5}, "learning_rate"),
        ({"weights": [0.9, 0.1]}, "weights"),
        ({"prefix_tokens": [2, 0]}, "prefix_tokens"),
        ({"on_top_of": str(first)}, "on_top_of_sha256"),
        ({"data_per_preference": [f"a={toy_pairs_file}", f"b={tmp_path / 'b.jsonl'}"]},
         "data_hash"),
    ]  # fmt: skip
    lines = toy_pairs_file.read_text().splitlines()
    (tmp_path / "b.jsonl").write_text("\n".join(lines[: len(lines) // 2 + 2]) + "\n")
    for change, field in changes:
        cfg = RacoJobConfig(**{**common, "steps": 2, **change})  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match=rf"`resume`.*{field}") as err:
            run_raco_job(cfg)
        assert err.value.field == "resume"
        assert (out / "checkpoint.pt").read_bytes() == ckpt  # nothing lost


def test_an_objective_without_validation_pairs_reports_no_score_not_zero(
    tiny_base_dir: Path, toy_pairs_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows mined from a training split fall into training again (the split is by prompt hash):
    that objective has no validation pairs, and its held-out metrics are empty (None in the
    report, absent from the vector's scores, "no validation pairs" on the card), never 0.000."""
    import json
    import logging

    from prefvec.training.card import render_card
    from prefvec.training.dpo import prepare_pairs
    from prefvec.training.raco import run_raco_job
    from prefvec.vector_store import PreferenceVector

    rows = [json.dumps({"prompt": f"mined request {i}", "chosen": "yes yes", "rejected": "no no"})
            for i in range(40)]  # fmt: skip
    every = tmp_path / "every.jsonl"
    every.write_text("\n".join(rows) + "\n")
    probe = RacoJobConfig(val_fraction=0.25, seed=0)
    train, _, _ = prepare_pairs(probe, "b", [str(every)])
    kept = {p.messages[-1]["content"] for p in train}
    mined = tmp_path / "mined.jsonl"
    mined.write_text("\n".join(r for r in rows if json.loads(r)["prompt"] in kept) + "\n")
    saved = tmp_path / "v.safetensors"
    cfg = RacoJobConfig(
        base=str(tiny_base_dir), preferences=["a", "b"], mode="weighted_sum",
        data_per_preference=[f"a={toy_pairs_file}", f"b={mined}"], val_fraction=0.25,
        lora_targets=["q_proj", "v_proj"], lora_r=2, steps=2, batch_size=2, max_length=64,
        max_prompt_length=32, progress=False, device="cpu", no_store=True,
        output_dir=str(tmp_path / "run"), save_vector=str(saved),
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="prefvec.training.raco"):
        report = run_raco_job(cfg)
    assert "b: no validation pairs" in caplog.text
    per = report["eval"]["per_objective"]
    assert per["b"] == {"loss": None, "reward_accuracy": None, "reward_margin": None}
    assert per["a"]["reward_accuracy"] is not None
    scores = PreferenceVector.load(saved).metadata.eval_scores
    assert "val_reward_accuracy.a" in scores and "val_reward_accuracy.b" not in scores
    card = render_card(saved, config_path="c.yaml", root=tmp_path)
    assert "| b | 0 | no validation pairs | — | — |" in card


def test_prefix_tokens_score_only_the_opening_of_each_reply(tiny_base_dir: Path) -> None:
    """prefix_tokens [2, 0]: objective 0's DPO margin and NLL use each reply's first 2 tokens
    only (scored one sequence at a time here, policy and adapter-off reference), objective 1
    keeps the whole-reply loss."""
    cfg = RacoJobConfig(base=str(tiny_base_dir), lora_targets=["q_proj"], lora_r=4, device="cpu")
    model, tok, ref = build_policy(tiny_base_dir, cfg)
    kw = {"ref_model": None, "max_length": 64, "nll_weights": [0.5, 0.5], "beta": 0.3}
    whole = RacoTrainer(model, tok, [0.5, 0.5], **kw)  # type: ignore[arg-type]
    cut = RacoTrainer(model, tok, [0.5, 0.5], prefix_tokens=[2, 0], **kw)  # type: ignore[arg-type]
    pairs = [
        MultiPair([{"role": "user", "content": f"question {i}"}],
                  "sure thing, here it is", "I cannot help with that", (1 if i % 2 else -1, 1))
        for i in range(4)
    ]  # fmt: skip
    enc, labels = whole.encode(pairs)
    model.eval()
    with torch.no_grad():
        torch.manual_seed(3)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
        full_losses, full_margins = whole.losses(enc, labels)
        got, margins = cut.losses(enc, labels)

        def opening(prompt: list[int], reply: list[int], adapter: bool) -> torch.Tensor:
            return _reply_token_logps(model, prompt, reply, adapter)[:2]

        want_margins, dpo, nll, tokens = [], 0.0, 0.0, 0
        for e, lab in zip(enc, labels[0].tolist(), strict=True):
            pa, pb = opening(e.prompt, e.a, True), opening(e.prompt, e.b, True)
            ra, rb = opening(e.prompt, e.a, False), opening(e.prompt, e.b, False)
            m = 0.3 * float((pa.sum() - ra.sum()) - (pb.sum() - rb.sum()))
            want_margins.append(m)
            dpo += -float(torch.nn.functional.logsigmoid(torch.tensor(lab * m)))
            chosen = pa if lab > 0 else pb
            nll, tokens = nll - float(chosen.sum()), tokens + len(chosen)
    assert tokens == 2 * len(pairs)
    torch.testing.assert_close(margins[0], torch.tensor(want_margins), rtol=1e-4, atol=1e-5)
    want = dpo / len(pairs) + 0.5 * nll / tokens
    torch.testing.assert_close(got[0], torch.tensor(want), rtol=1e-4, atol=1e-5)
    assert abs(float(got[0]) - float(full_losses[0])) > 1e-3  # the cut changes objective 0
    torch.testing.assert_close(got[1], full_losses[1])
    torch.testing.assert_close(margins[1], full_margins[1])
    with pytest.raises(ValueError, match="prefix_tokens"):
        RacoTrainer(model, tok, [0.5, 0.5], ref_model=ref, prefix_tokens=[1])


def test_prefix_tokens_are_validated_and_shown_on_the_card() -> None:
    from prefvec.errors import ValidationError

    prefs = ["helpful", "harmless"]
    with pytest.raises(ValidationError, match="prefix_tokens"):
        RacoJobConfig(preferences=prefs, prefix_tokens=[3])
    with pytest.raises(ValidationError, match="prefix_tokens"):
        RacoJobConfig(preferences=prefs, prefix_tokens=[3, -1])
    with pytest.raises(ValidationError, match=r"`prefix_tokens` must be 0 for the anchors"):
        RacoJobConfig(preferences=prefs, anchors=["harmless"], prefix_tokens=[0, 3])
    assert RacoJobConfig(preferences=prefs, prefix_tokens=[3, 0]).prefix_tokens == [3, 0]


def test_card_of_a_prefix_job_says_what_is_scored(
    tiny_base_dir: Path, toy_pairs_file: Path, tmp_path: Path
) -> None:
    from prefvec.training.card import render_card
    from prefvec.training.raco import run_raco_job

    saved = tmp_path / "v.safetensors"
    cfg = RacoJobConfig(
        base=str(tiny_base_dir), preferences=["a", "b"], mode="weighted_sum",
        data_per_preference=[f"a={toy_pairs_file}", f"b={toy_pairs_file}"], prefix_tokens=[0, 2],
        lora_targets=["q_proj"], lora_r=2, batch_size=2, max_length=64, max_prompt_length=32,
        steps=1, progress=False, device="cpu", no_store=True, output_dir=str(tmp_path / "run"),
        save_vector=str(saved),
    )  # fmt: skip
    run_raco_job(cfg)
    card = render_card(saved)
    assert "`b` scored on the first 2 tokens of each reply only" in card
    assert "For `b` the reward is over each reply's first 2 tokens, as its loss." in card
    assert "| prefix_tokens | [0, 2] |" in card


def test_a_run_recorded_before_a_setting_existed_resumes_with_its_default() -> None:
    """Runs recorded before `prefix_tokens` existed were trained on whole replies (its
    default): they resume when it is left at its default and are refused when it is set."""
    from prefvec.errors import ValidationError
    from prefvec.training.config import check_resumable, setting_defaults

    defaults = setting_defaults(RacoJobConfig())
    assert defaults["prefix_tokens"] == [] and defaults["learning_rate"] == 5e-4
    old = {"learning_rate": 0.001}
    check_resumable(old, {"learning_rate": 0.001, "prefix_tokens": []}, "old run", defaults)
    with pytest.raises(ValidationError, match=r"`resume`.*prefix_tokens: \[\] -> \[3, 0\]"):
        check_resumable(old, {"learning_rate": 0.001, "prefix_tokens": [3, 0]}, "old run", defaults)
