"""Data loaders on the bundled real files, the splits, and bad-row reporting."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from prefvec.errors import ValidationError
from prefvec.training.data import (
    data_hash,
    default_data_dir,
    load_alpaca_eval,
    load_halueval_qa,
    load_hh_rlhf,
    load_jsonl_pairs,
    load_preference_data,
    load_truthfulqa,
    parse_hh_dialogue,
    split_pairs,
    write_jsonl,
)

DATA = default_data_dir()


def test_hh_rlhf_counts_and_structure() -> None:
    pairs, report = load_hh_rlhf(DATA / "hh-rlhf/harmless-base/test.jsonl.gz")
    assert report.rows == 2312
    assert len(pairs) + len(report.bad) == 2312
    assert len(report.bad) == 9 and report.bad[0][0] == 87  # reported with its line number
    p = pairs[0]
    assert p.messages[0]["role"] == "user" and p.messages[-1]["role"] == "user"
    assert p.chosen != p.rejected and "Human:" not in p.chosen


def test_parse_hh_dialogue() -> None:
    msgs = parse_hh_dialogue("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye")
    assert msgs == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ]


def test_truthful_sources() -> None:
    tqa, rep = load_truthfulqa(DATA / "truthfulqa/TruthfulQA.csv")
    assert rep.rows == 790 and not rep.bad and len(tqa) == 3251
    first = [p for p in tqa if p.group == tqa[0].group]
    assert {p.chosen for p in first} == {"The watermelon seeds pass through your digestive system"}
    assert "You grow watermelons in your stomach" in {p.rejected for p in first}
    halu, rep2 = load_halueval_qa(DATA / "halueval/qa_one-turn_data.json")
    assert rep2.rows == 500 and len(halu) == 500
    assert halu[0].chosen == "Arthur's Magazine" and "Question:" in halu[0].messages[0]["content"]


def test_alpaca_eval_preference_direction() -> None:
    pairs, rep = load_alpaca_eval(DATA / "alpaca_eval/annotations.json.gz")
    assert rep.rows == 805 and len(pairs) == 804
    assert len(rep.bad) == 1 and "1.5" in rep.bad[0][1]  # the tie is reported, not used
    # item 1 has preference 2.0: output_2 (Mixtral, starts "1. James Dean") is chosen
    assert pairs[0].chosen.startswith("1. James Dean")
    assert pairs[0].rejected.startswith("Several famous actors")


def test_split_is_deterministic_grouped_and_order_free() -> None:
    pairs, _ = load_preference_data("truthful")
    train, val = split_pairs(pairs, 0.1, seed=0)
    assert len(train) + len(val) == len(pairs) and 0.05 < len(val) / len(pairs) < 0.15
    assert not {p.group for p in train} & {p.group for p in val}
    shuffled = pairs[:]
    random.Random(1).shuffle(shuffled)
    _, val2 = split_pairs(shuffled, 0.1, seed=0)
    assert {(p.group, p.rejected) for p in val} == {(p.group, p.rejected) for p in val2}
    _, val3 = split_pairs(pairs, 0.1, seed=1)
    assert {p.group for p in val3} != {p.group for p in val}


def test_jsonl_bad_rows_reported_with_lines(tmp_path: Path) -> None:
    lines = [
        json.dumps({"prompt": "q1", "chosen": "good", "rejected": "bad"}),
        "{not json",
        json.dumps({"prompt": "q2", "chosen": "", "rejected": "bad"}),
        "",
        json.dumps({"prompt": [{"role": "user", "content": "q3"}], "chosen": "a", "rejected": "b"}),
        json.dumps({"prompt": "q4", "chosen": "same", "rejected": "same"}),
        json.dumps([1, 2]),
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    pairs, report = load_jsonl_pairs(path)
    assert [p.messages[0]["content"] for p in pairs] == ["q1", "q3"]
    assert [n for n, _ in report.bad] == [2, 3, 6, 7]
    assert "invalid JSON" in report.bad[0][1] and "line 2" in report.summary()
    with pytest.raises(ValidationError) as err:
        load_preference_data("custom", [path], strict=True)
    assert len(err.value.problems) == 4


def test_roundtrip_swap_and_trl_format(tmp_path: Path) -> None:
    pairs, _ = load_preference_data("helpful")
    back, _ = load_jsonl_pairs(write_jsonl(pairs[:5], tmp_path / "x.jsonl"))
    assert data_hash(back) == data_hash(pairs[:5])
    s = pairs[0].swapped()
    assert (s.chosen, s.rejected) == (pairs[0].rejected, pairs[0].chosen)
    trl = pairs[0].to_trl()
    assert trl["chosen"] == [{"role": "assistant", "content": pairs[0].chosen}]
    assert trl["prompt"][-1]["role"] == "user"


def test_unknown_preference_without_data() -> None:
    with pytest.raises(ValidationError, match="preference"):
        load_preference_data("funny")


def test_cap_per_file_keeps_small_files_whole(tmp_path: Path) -> None:
    from prefvec.training.config import DPOJobConfig
    from prefvec.training.dpo import prepare_pairs

    def write(name: str, n: int) -> Path:
        path = tmp_path / name
        rows = [{"prompt": f"{name} q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"}
                for i in range(n)]  # fmt: skip
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    big, small = write("big.jsonl", 200), write("small.jsonl", 12)
    cfg = DPOJobConfig(data=[str(big), str(small)], val_fraction=0.0, max_train_pairs_per_file=10)
    train, _, _ = prepare_pairs(cfg, "custom")
    files = [p.source.split(":")[0] for p in train]
    assert files.count("big.jsonl") == 10 and files.count("small.jsonl") == 10
    cfg = DPOJobConfig(data=[str(big), str(small)], val_fraction=0.0, max_train_pairs_per_file=50)
    train, _, _ = prepare_pairs(cfg, "custom")
    files = [p.source.split(":")[0] for p in train]
    assert files.count("big.jsonl") == 50 and files.count("small.jsonl") == 12  # all 12 kept
