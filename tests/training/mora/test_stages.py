"""Each MORA stage on known inputs (scripted generator, scorers and rewriter): exact outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from prefvec.training.data import load_jsonl_pairs
from prefvec.training.mora.fusion import partner_pool
from prefvec.training.mora.prompts import PromptRecord
from tests.training.mora.scripted import PARTIAL, PROMPTS, REFUSE, make_config, pipeline


@pytest.fixture()
def done(tmp_path: Path) -> Path:
    cfg = make_config(tmp_path)
    pipeline(cfg).run()
    return Path(cfg.workdir)


def _rows(workdir: Path, name: str) -> list[dict]:
    return [json.loads(x) for x in (workdir / f"{name}.jsonl").read_text().splitlines()]


def test_rollouts_record_texts_and_seeds(done: Path) -> None:
    rows = _rows(done, "rollouts")
    assert [r["id"] for r in rows] == [p["id"] for p in PROMPTS]
    h1 = rows[0]
    assert h1["texts"] == [REFUSE, "Sure, here is the plan.", REFUSE, "Sure, here is the plan."]
    assert h1["sample_seeds"] == [0, 1, 2, 3] and h1["backend"] == "scripted"
    assert isinstance(h1["prompt_seed"], int)


def test_profiles_exact(done: Path) -> None:
    prof = {r["id"]: r for r in _rows(done, "profiles")}
    h1 = prof["h1"]
    assert h1["dimensions"] == ["harmless", "helpful"]
    assert h1["scores"] == [[1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]
    assert h1["best"] == {"harmless": 1.0, "helpful": 0.0}
    assert (h1["joint_mean"], h1["joint_min"]) == (0.5, 0.0)
    assert h1["spread"] == {"harmless": 0.5, "helpful": 0.0}
    assert h1["n_pareto"] == 2
    assert prof["h2"]["best"] == {"harmless": 0.0, "helpful": 0.0} and prof["h2"]["n_pareto"] == 4
    b1 = prof["b1"]
    assert b1["scores"] == [[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 0.0]]
    assert (b1["joint_mean"], b1["joint_min"], b1["n_pareto"]) == (1.0, 1.0, 2)
    assert prof["b2"]["best"] == {"harmless": 1.0, "helpful": 0.0}


def test_mining_exact(done: Path) -> None:
    mined = _rows(done, "mined")
    assert [(m["id"], m["dimension"]) for m in mined] == [("h1", "harmless"), ("b2", "harmless")]
    meta = json.loads((done / "mined.meta.json").read_text())
    assert meta["mined_per_dimension"] == {"harmless": 2}
    assert meta["prompts_by_dimensions_reached"] == {"0": 1, "1": 2, "2": 2}


def test_fusion_partners_and_rejections(done: Path) -> None:
    fused = _rows(done, "fused")
    assert [f["id"] for f in fused] == ["h1~fused0", "h1~fused1", "b2~fused0", "b2~fused1"]
    assert [f["kept"] for f in fused] == [True, False, True, False]
    recs = [PromptRecord.from_dict(p) for p in PROMPTS]
    benign_ids = {p.id for p in partner_pool(recs, "benign")}
    h1a, h1b, b2a, b2b = fused
    assert h1a["parents"][0] == "h1" and h1a["parents"][1] in benign_ids
    assert h1a["parents"][1] != h1b["parents"][1]  # distinct partners
    assert b2a["parents"][0] == "b2" and b2a["parents"][1] in {"h1", "h2"}
    assert h1a["intent_sim"] == {"h1": 1.0, h1a["parents"][1]: 1.0}
    assert h1b["reason"] == "intent lost: similarity to h1 = 0.000 < 0.5"
    assert b2b["reason"] == f"intent lost: similarity to {b2b['parents'][1]} = 0.000 < 0.5"
    assert b2a["reference"] == "REF-qcd" and b2a["intents"] == ["benign", "harmful"]
    assert h1a["template"] == "fusion_v1" and h1a["template_version"] == "v1"
    assert h1a["rewriter"] == "scripted" and h1a["mined_dimension"] == "harmless"
    meta = json.loads((done / "fused.meta.json").read_text())
    assert (meta["kept"], meta["rejected"], meta["rejected_by_reason"]) == (
        2, 2, {"intent lost": 2})  # fmt: skip


def test_pairs_max_margin_and_loadable(done: Path) -> None:
    pairs = _rows(done, "pairs")
    assert [p["provenance"]["prompt_id"] for p in pairs] == ["h1~fused0", "b2~fused0"]
    b2 = pairs[1]
    assert b2["chosen"] == PARTIAL.format(ref="REF-qcd") and b2["rejected"] == REFUSE
    assert b2["margin"] == 0.5
    prov = b2["provenance"]
    assert (prov["chosen_index"], prov["rejected_index"], prov["seeds"]) == (1, 0, [1, 0])
    assert prov["scores"] == {"chosen": {"harmless": 1.0, "helpful": 1.0},
                              "rejected": {"harmless": 1.0, "helpful": 0.0}}  # fmt: skip
    assert prov["original"] is False and prov["parents"][0] == "b2"
    loaded, report = load_jsonl_pairs(done / "pairs.jsonl")
    assert len(loaded) == 2 and not report.bad
    assert loaded[1].prompt[0]["content"] == _rows(done, "fused")[2]["text"]


def test_profiles_after_exact(done: Path) -> None:
    after = _rows(done, "profiles_after")[0]
    assert after["scores"] == [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]]
    assert after["spread"]["harmless"] == pytest.approx(math.sqrt(0.1875))
    assert (after["joint_mean"], after["joint_min"], after["n_pareto"]) == (1.0, 1.0, 1)


def test_report_exact(done: Path) -> None:
    rep = json.loads((done / "report.json").read_text())
    b, a = rep["before"], rep["after"]
    assert b["mean_best"] == {"harmless": pytest.approx(0.8), "helpful": pytest.approx(0.4)}
    assert (b["joint_share"], a["joint_share"]) == (pytest.approx(0.4), 1.0)
    assert (b["hull_area"], a["hull_area"]) == (0.5, 0.5)
    assert b["mean_pairwise_distance"] == pytest.approx(0.4)
    assert a["mean_pairwise_distance"] == pytest.approx((3 + 2 * math.sqrt(2)) / 6)
    assert b["mean_spread"] == pytest.approx(0.15)
    assert (b["n_pareto"], b["distinct_points"]) == (1, 3)
    assert rep["pairs"]["pairs"] == 2 and rep["pairs"]["margin_min"] == 0.5
    bp = rep["before_parents"]  # h1 and b2, the prompts whose rewrites were kept
    assert (bp["prompts"], bp["joint_share"]) == (2, 0.0)  # mined: one dimension at most
    assert rep["mine"]["mined"] == 2 and rep["fuse"]["kept"] == 2
    assert (done / "report.png").stat().st_size > 1000


def test_include_original_and_margin_rule(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, include_original=True)
    pairs = pipeline(cfg).pairs()
    orig = [p for p in pairs if p["provenance"]["original"]]
    assert [p["provenance"]["prompt_id"] for p in orig] == ["h1", "b1", "b3"]
    assert orig[0]["chosen"] == REFUSE and orig[0]["rejected"] == "Sure, here is the plan."
    strict = pipeline(make_config(tmp_path, workdir="strict", margin=0.6)).pairs()
    assert strict == []  # every gap is 0.5
    for p in pairs:
        assert p["margin"] >= cfg.margin and p["chosen"] != p["rejected"]


def test_mining_unreached_prompts_on_request(done: Path) -> None:
    from prefvec.training.mora.mining import mine_row, mining_counts

    profiles = _rows(done, "profiles")
    h2 = next(p for p in profiles if p["id"] == "h2")  # never refused: reaches no dimension
    assert mine_row(h2, 0.5) == []
    assert mine_row(h2, 0.5, include_unreached=True)[0]["dimension"] == "none"
    counts = mining_counts(profiles, 0.5, include_unreached=True)
    assert counts["mined_per_dimension"] == {"harmless": 2, "none": 1}
