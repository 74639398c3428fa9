"""bench/decline_probe.py on a tiny model: the training job's validation split, one greedy reply
per prompt and weight setting, the judge's count; bad settings exit 2 with the field named."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_probe_counts_declines_on_the_jobs_validation_prompts(
    tiny_base_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import decline_probe
    from prefvec.scoring.refusal import is_refusal
    from prefvec.training.config import DPOJobConfig
    from prefvec.training.dpo import prepare_pairs

    rows = [
        {"prompt": f"request number {i}", "chosen": "Sure.", "rejected": "I can't help with that.",
         "kind": "benign_risky" if i % 2 else "harmful"}
        for i in range(40)
    ]  # fmt: skip
    data = _write_rows(tmp_path / "d.jsonl", rows)
    out = tmp_path / "probe.json"
    argv = ["--data", str(data), "--kinds", "benign_risky", "--base", str(tiny_base_dir),
            "--points", "base", "--val-fraction", "0.3", "--max-new-tokens", "4",
            "--out", str(out)]  # fmt: skip
    assert decline_probe.main(argv) == 0
    cfg = DPOJobConfig(val_fraction=0.3, max_val_pairs=120, seed=0)
    _, val, _ = prepare_pairs(cfg, "probe", [str(data)], ["benign_risky"])
    report = json.loads(out.read_text())
    (point,) = report["points"]
    assert point["n"] == len(val) > 0
    assert [r["prompt"] for r in point["replies"]] == [p.prompt for p in val]
    assert all(r["reply"] for r in point["replies"])
    assert point["declined"] == sum(is_refusal(r["reply"]) for r in point["replies"])
    assert (
        f"base: {point['declined']}/{len(val)} validation prompts declined"
        in capsys.readouterr().out
    )
    bad = [
        "--data",
        str(data),
        "--kinds",
        "nothing",
        "--base",
        str(tiny_base_dir),
        "--points",
        "base",
    ]
    assert decline_probe.main(bad) == 2
    assert "`data_kinds`" in capsys.readouterr().err


def test_save_declined_copies_the_data_rows_behind_the_declined_pairs(tmp_path: Path) -> None:
    from bench.decline_probe import save_declined

    from prefvec.training.config import DPOJobConfig
    from prefvec.training.dpo import prepare_pairs

    lines = [json.dumps({"prompt": f"q{i}", "chosen": f"a{i}", "rejected": "no", "kind": "k"})
             for i in range(12)]  # fmt: skip
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(lines) + "\n\n")  # a blank line at the end is not a row
    cfg = DPOJobConfig(val_fraction=0.25, max_val_pairs=120, seed=0)
    train, _, _ = prepare_pairs(cfg, "probe", [str(data)])
    declined = [i % 3 == 0 for i in range(len(train))]
    replies = [{"declined": d} for d in declined]
    out = tmp_path / "mined" / "m.jsonl"
    assert save_declined(str(data), train, replies, str(out)) == sum(declined)
    want = {p.messages[-1]["content"] for p, d in zip(train, declined, strict=True) if d}
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["prompt"] for r in got} == want
    assert all(json.dumps(r) in lines for r in got)  # the rows unchanged


def test_probe_mines_the_training_split_only(
    tiny_base_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from bench import decline_probe
    from prefvec.scoring import refusal
    from prefvec.training.config import DPOJobConfig
    from prefvec.training.dpo import prepare_pairs

    rows = [{"prompt": f"request number {i}", "chosen": "Sure.", "rejected": "I can't.",
             "kind": "benign_risky"} for i in range(20)]  # fmt: skip
    data = _write_rows(tmp_path / "d.jsonl", rows)
    mined = tmp_path / "mined.jsonl"
    common = ["--data", str(data), "--base", str(tiny_base_dir), "--points", "base",
              "--val-fraction", "0.3", "--max-new-tokens", "2"]  # fmt: skip
    # the validation split is never mined
    assert decline_probe.main([*common, "--save-declined", str(mined)]) == 2
    assert "--split train" in capsys.readouterr().err and not mined.exists()
    monkeypatch.setattr(refusal, "is_refusal", lambda reply: True)
    argv = [*common, "--split", "train", "--save-declined", str(mined)]
    assert decline_probe.main(argv) == 0
    train, val, _ = prepare_pairs(DPOJobConfig(val_fraction=0.3, seed=0), "probe", [str(data)])
    got = {json.loads(line)["prompt"] for line in mined.read_text().splitlines()}
    assert got == {p.messages[-1]["content"] for p in train}
    assert not got & {p.messages[-1]["content"] for p in val}
    assert f"base: {len(train)}/{len(train)} training prompts declined" in capsys.readouterr().out
    from prefvec.vector_store.store import sha256_file

    manifest = json.loads((tmp_path / "mined.manifest.json").read_text())
    assert manifest["sha256"] == sha256_file(mined)
    assert manifest["source"]["sha256"] == sha256_file(data)
    assert manifest["rows"] == manifest["probed"] == len(train)
    assert "--save-declined" in manifest["command"]


def test_score_pairs_matches_a_plain_forward_pass(tiny_base_dir: Path) -> None:
    """Σ log π of each reply and the first reply token's probability, against a direct
    computation on prompt + reply ids."""
    import torch
    from bench.decline_probe import score_pairs, summarize
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefvec.training.data import make_pair

    model = AutoModelForCausalLM.from_pretrained(str(tiny_base_dir), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(tiny_base_dir))
    msgs = [{"role": "user", "content": "kill time at the airport?"}]
    pair = make_pair(msgs, "Read a book or walk around.", "I cannot help with that.")
    (got,) = score_pairs(model, tok, [pair])

    def oracle(reply: str) -> tuple[float, float]:
        prompt = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True)
        full = tok.apply_chat_template(
            [*msgs, {"role": "assistant", "content": reply}], tokenize=True
        )
        prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
        full = list(full["input_ids"] if hasattr(full, "keys") else full)
        assert full[: len(prompt)] == prompt
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([full])).logits[0].float(), -1)
        reply_pos = range(len(prompt), len(full))
        total = sum(float(logp[i - 1, full[i]]) for i in reply_pos)
        return total, float(logp[len(prompt) - 1, full[len(prompt)]].exp())

    want_c, want_r = oracle(pair.chosen), oracle(pair.rejected)
    assert got["logp_chosen"] == pytest.approx(want_c[0], abs=1e-4)
    assert got["logp_rejected"] == pytest.approx(want_r[0], abs=1e-4)
    assert got["p_first_chosen"] == pytest.approx(want_c[1], abs=1e-6)
    assert got["p_first_rejected"] == pytest.approx(want_r[1], abs=1e-6)
    summary = summarize([got])
    assert summary["chosen_likelier"] == int(want_c[0] > want_r[0])
    assert summary["chosen_first_token_likelier"] == int(want_c[1] > want_r[1])


def test_save_anchor_writes_the_first_settings_own_declines(
    tiny_base_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """hh-rlhf dialogues: single-turn training prompts only, those too close to a held-out
    prompt dropped, and per declined prompt a new row (its own reply as chosen, the pair's
    rejected reply as rejected) that falls on the training side of the same split again."""
    import gzip

    from bench import decline_probe
    from prefvec.evaluation.data import eval_data_dir
    from prefvec.scoring import refusal
    from prefvec.training.config import DPOJobConfig
    from prefvec.training.dpo import prepare_pairs
    from prefvec.training.refusal.build import tidy
    from prefvec.training.refusal.templates import load_templates

    demo = load_templates().heldout_harmful[0]  # a demo prompt: must never be mined
    asks = [f"how would someone get away with prank number {i}?" for i in range(30)] + [demo]
    dialogues = [{"chosen": f"\n\nHuman: {q}\n\nAssistant: Please don't.",
                  "rejected": f"\n\nHuman: {q}\n\nAssistant: Here is how, step {i}."}
                 for i, q in enumerate(asks)]  # fmt: skip
    dialogues.append({"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: and?\n\nAssistant: no",
                      "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: and?\n\nAssistant: "
                                  "yes"})  # fmt: skip
    data = tmp_path / "hh-rlhf" / "harmless-base" / "test.jsonl.gz"
    data.parent.mkdir(parents=True)
    with gzip.open(data, "wt") as f:
        f.writelines(json.dumps(d) + "\n" for d in dialogues)
    # every reply counts as a decline (the "decline" itself is the tiny model's reply)
    monkeypatch.setattr(refusal, "is_refusal", lambda reply: True)
    anchor = tmp_path / "anchor.jsonl"
    common = ["--data", str(data), "--base", str(tiny_base_dir), "--points", "base",
              "--val-fraction", "0.3", "--max-new-tokens", "6", "--single-turn"]  # fmt: skip
    assert decline_probe.main([*common, "--save-anchor", str(anchor)]) == 2
    assert "`save_anchor`" in capsys.readouterr().err and not anchor.exists()
    out = tmp_path / "probe.json"
    argv = [*common, "--split", "train", "--save-anchor", str(anchor), "--out", str(out)]
    assert decline_probe.main(argv) == 0
    cfg = DPOJobConfig(val_fraction=0.3, seed=0)
    train, _, _ = prepare_pairs(cfg, "probe", [str(data)])
    single = [p for p in train if len(p.messages) == 1]
    want = [p for p in single if p.messages[0]["content"] != demo]
    rows = [json.loads(line) for line in anchor.read_text().splitlines()]
    replies = {r["prompt"][0]["content"]: r["reply"]
               for r in json.loads(out.read_text())["points"][0]["replies"]}  # fmt: skip
    assert rows and [r["prompt"][0]["content"] for r in rows] == [
        p.messages[0]["content"] for p in want
    ]
    for row, pair in zip(rows, want, strict=True):
        assert row["chosen"] == tidy(replies[pair.messages[0]["content"]])
        assert row["rejected"] == pair.rejected and row["kind"] == "harmful"
    # read back as training data, every row lands on the training side again
    mined_train, mined_val, _ = prepare_pairs(cfg, "probe", [str(anchor)], ["harmful"])
    assert len(mined_train) == len(rows) and not mined_val
    manifest = json.loads((tmp_path / "anchor.manifest.json").read_text())
    assert manifest["rows"] == len(rows) and manifest["single_turn"] is True
    assert "--save-anchor" in manifest["command"]
    # the held-out check on its own: a demo prompt and a HarmBench one go, a prank stays
    from prefvec.evaluation import data as D
    from prefvec.training.data import make_pair

    harmbench = D.load_harmbench(eval_data_dir(None))[0].prompt
    probe = [make_pair([{"role": "user", "content": q}], "no", "yes", source=f"x:{i}")
             for i, q in enumerate([demo, harmbench, asks[0]])]  # fmt: skip
    kept, dropped = decline_probe.drop_close_to_heldout(probe)
    assert [p.messages[0]["content"] for p in kept] == [asks[0]]
    assert {v["closest"] for v in dropped.values()} == {demo, harmbench}


def test_save_loops_pairs_a_clean_decline_with_a_later_settings_loop() -> None:
    """Only prompts the first setting declines without looping and a later setting loops on
    make a row: the clean reply (tidied) as chosen, the first looping later reply as rejected."""
    from bench import decline_probe
    from prefvec.training.data import make_pair
    from prefvec.training.refusal.build import tidy

    pairs = [make_pair([{"role": "user", "content": f"bad request {i}"}], "no", "yes",
                       source=f"d.jsonl:{i + 1}", kind="harmful") for i in range(4)]  # fmt: skip
    loop = "It could put people at risk. " * 6
    clean = "I cannot help with that. It could put people at risk. I'm happy to help"
    first = {"weights": {"harmless": 1.0}, "replies": [
        {"reply": clean, "declined": True},          # 0: loops at 1.25 -> row (rejected: 1.25's)
        {"reply": clean, "declined": True},          # 1: never loops -> none
        {"reply": "Sure, here you go.", "declined": False},  # 2: not declined -> none
        {"reply": loop, "declined": True},           # 3: already loops -> none
    ]}  # fmt: skip
    mid = {"weights": {"harmless": 1.25}, "replies": [
        {"reply": "I cannot help. " + loop}, {"reply": clean}, {"reply": loop}, {"reply": loop},
    ]}  # fmt: skip
    last = {"weights": {"harmless": 1.5}, "replies": [
        {"reply": loop}, {"reply": clean}, {"reply": loop}, {"reply": loop},
    ]}  # fmt: skip
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "loops.jsonl"
        assert decline_probe.save_loops(pairs, [first, mid, last], str(out)) == 1
        (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["prompt"] == pairs[0].messages and row["kind"] == "harmful"
    assert row["chosen"] == tidy(clean) and row["rejected"] == "I cannot help. " + loop
    assert row["group"] == pairs[0].group and "harmless=1.25" in row["provenance"]["rejected"]


def test_save_loops_from_the_command_line(
    tiny_base_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Refused with one setting or on the validation split; otherwise one row per training
    prompt whose first reply is clean and a later one loops, with a manifest beside it."""
    from bench import decline_probe
    from prefvec.scoring import refusal, text
    from prefvec.training.config import DPOJobConfig
    from prefvec.training.dpo import prepare_pairs

    rows = [{"prompt": f"bad request number {i}", "chosen": "No.", "rejected": "Sure.",
             "kind": "harmful"} for i in range(20)]  # fmt: skip
    data = _write_rows(tmp_path / "d.jsonl", rows)
    loops = tmp_path / "loops.jsonl"
    common = ["--data", str(data), "--base", str(tiny_base_dir), "--val-fraction", "0.3",
              "--max-new-tokens", "4", "--save-loops", str(loops)]  # fmt: skip
    assert decline_probe.main([*common, "--split", "train", "--points", "base"]) == 2
    assert "`points`" in capsys.readouterr().err and not loops.exists()
    assert decline_probe.main([*common, "--points", "base;base"]) == 2
    assert "`save_loops`" in capsys.readouterr().err and not loops.exists()
    monkeypatch.setattr(refusal, "is_refusal", lambda reply: True)
    calls = iter(range(10**6))  # per pair: the first reply is clean, the later one loops
    monkeypatch.setattr(text, "is_collapsed", lambda reply: next(calls) % 2 == 1)
    argv = [*common, "--split", "train", "--points", "base;base"]
    assert decline_probe.main(argv) == 0
    train, _, _ = prepare_pairs(DPOJobConfig(val_fraction=0.3, seed=0), "probe", [str(data)])
    mined = [json.loads(line) for line in loops.read_text().splitlines()]
    assert [m["prompt"] for m in mined] == [p.messages for p in train]
    manifest = json.loads((tmp_path / "loops.manifest.json").read_text())
    assert manifest["rows"] == len(train) and "--save-loops" in manifest["command"]
    assert "wrote" in capsys.readouterr().out
