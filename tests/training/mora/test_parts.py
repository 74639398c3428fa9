"""MORA building blocks: summaries, geometry, templates, rewriters, intent check, config."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from prefvec.errors import ValidationError
from prefvec.scoring import RefusalJudge
from prefvec.training.mora import (
    Fuser,
    LLMRewriter,
    MoraConfig,
    PromptRecord,
    ServerGenerator,
    TemplateRewriter,
    available_templates,
    convex_hull,
    load_template,
    overlap_similarity,
    pareto_indices,
    polygon_area,
    prompt_seed,
    region_metrics,
    summarise,
)
from prefvec.training.mora.pairs import max_margin_pair, origin_of
from prefvec.training.mora.profiles import ScorerDimension, build_dimensions
from prefvec.training.mora.workdir import read_jsonl
from tests.training.mora.scripted import ScriptedRewriter


def test_summarise_and_pareto() -> None:
    scores = [[0.2, 0.9], [0.8, 0.1], [0.5, 0.5], [0.1, 0.1]]
    s = summarise(scores, ["a", "b"])
    assert s["best"] == {"a": 0.8, "b": 0.9}
    assert s["joint_mean"] == pytest.approx(0.55) and s["joint_min"] == 0.5
    assert s["spread"]["a"] == pytest.approx(math.sqrt(((0.2 - 0.4) ** 2 + 0.4**2 + 0.1**2
                                                         + 0.3**2) / 4))  # fmt: skip
    assert pareto_indices(scores) == [0, 1, 2] and s["n_pareto"] == 3


def test_hull_area_and_region_metrics() -> None:
    square = [(0, 0), (1, 0), (1, 1), (0, 1), (0.5, 0.5), (0.2, 0.7)]
    assert set(convex_hull(square)) == {(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)}
    assert polygon_area(convex_hull(square)) == 1.0
    assert polygon_area(convex_hull([(0, 0), (1, 0), (0, 1), (0.2, 0.2)])) == 0.5
    assert polygon_area(convex_hull([(0, 0), (0.5, 0.5), (1, 1)])) == 0.0  # collinear
    profiles = [
        {"dimensions": ["x", "y"], "scores": [[0, 0], [1, 0]], "best": {"x": 1, "y": 0},
         "spread": {"x": 0.5, "y": 0.0}},
        {"dimensions": ["x", "y"], "scores": [[0, 1], [0.6, 0.6]], "best": {"x": 0.6, "y": 1},
         "spread": {"x": 0.3, "y": 0.2}},
    ]  # fmt: skip
    m = region_metrics(profiles, good=0.5)
    assert m["mean_best"] == {"x": 0.8, "y": 0.5}
    assert m["joint_share"] == 0.5  # only (0.6, 0.6) reaches both
    # triangle (0,0),(1,0),(0,1) + triangle (1,0),(0.6,0.6),(0,1): |(-0.4)(1) - (0.6)(-1)|/2
    assert m["hull_area"] == pytest.approx(0.5 + 0.1)
    assert m["mean_spread"] == pytest.approx(0.25)
    assert m["mean_pairwise_distance"] == pytest.approx((1 + math.dist((0, 1), (0.6, 0.6))) / 2)
    assert m["n_pareto"] == 3  # (1,0), (0,1), (0.6,0.6)


def test_templates_are_versioned_package_data() -> None:
    assert {"fusion_v1", "fusion_llm_v1"} <= set(available_templates())
    t = load_template("fusion_v1")
    assert t.version == "v1" and len(t.variants()) == 3 and len(t.sha256) == 16
    with pytest.raises(ValidationError, match="fusion_v1"):
        load_template("fusion")
    r = TemplateRewriter()
    text, extra = r.rewrite("Make a weapon", "Bake {bread}?", 0, seed=0)
    assert text == "I need help with two things.\n\n1. Bake {bread}?\n2. Make a weapon."
    assert extra == {"variant": 0}
    assert r.rewrite("A", "B", 4, 0)[0] == "A.\n\nAlso, separately: B."


class FakeClient:
    def __init__(self, reply: str) -> None:
        self.reply, self.calls = reply, []

    def chat(self, messages, **opts):  # type: ignore[no-untyped-def]
        self.calls.append((messages, opts))
        msg = SimpleNamespace(content=self.reply)
        return SimpleNamespace(choices=[SimpleNamespace(message=msg)])


def test_llm_rewriter_sends_versioned_prompt_and_seed() -> None:
    client = FakeClient("  Fused request  ")
    r = LLMRewriter(client, temperature=0.3, max_tokens=50, model="m")
    text, extra = r.rewrite("Make a weapon", "Bake bread", 1, seed=7)
    assert text == "Fused request" and extra == {"temperature": 0.3, "model": "m"}
    messages, opts = client.calls[0]
    assert opts == {"temperature": 0.3, "seed": 7, "max_tokens": 50, "model": "m"}
    assert messages[0]["role"] == "system" and "combine two" in messages[0]["content"]
    assert "Request A (must be kept as asked): Make a weapon." in messages[1]["content"]
    assert "variant 2" in messages[1]["content"] and r.template.version == "v1"


def _recs() -> list[PromptRecord]:
    return [PromptRecord("h", "Explain lock picking", ["harmful"]),
            PromptRecord("b", "Bake sourdough bread", ["benign"], "REF")]  # fmt: skip


@pytest.mark.parametrize(("reply", "reason"), [
    ("", "empty rewrite"),
    ("Bake sourdough bread", "rewrite equals a parent prompt"),
    ("I'm sorry, I cannot combine these.", "the rewriter refused"),
    ("Bake sourdough bread and tell me a joke", "intent lost: similarity to h = 0.000 < 0.5"),
    ("Explain lock picking, then bake sourdough bread", None),
])  # fmt: skip
def test_fuser_checks(reply: str, reason: str | None) -> None:
    fuser = Fuser(LLMRewriter(FakeClient(reply)), overlap_similarity, "overlap", _recs(),
                  n_rewrites=1)  # fmt: skip
    (row,) = fuser.fuse({"dimension": "harmless"}, _recs()[0])
    assert row["reason"] == reason and row["kept"] is (reason is None)
    assert row["parents"] == ["h", "b"] and row["reference"] == "REF"


def test_fuser_without_partner_and_overlap() -> None:
    lone = [PromptRecord("h", "Explain lock picking", ["harmful"])]
    rows = Fuser(ScriptedRewriter(), overlap_similarity, "overlap", lone).fuse(
        {"dimension": "harmless"}, lone[0])  # fmt: skip
    assert [r["reason"] for r in rows] == ["no prompt with only a 'benign' intent to fuse with"] * 2
    assert overlap_similarity(["the lock picking guide"], ["Explain lock picking"]) == [2 / 3]


def test_max_margin_pair_never_pairs_identical_texts() -> None:
    prompt = PromptRecord("p", "x", ["benign"], "r")
    prof = {"dimensions": ["a"], "scores": [[1.0], [0.0]]}
    same = max_margin_pair(prompt, {"texts": ["same", "same"]}, prof, {}, 0.3, origin_of(None))
    assert same == []
    (pair,) = max_margin_pair(prompt, {"texts": ["good", "bad"], "sample_seeds": [5, 6]}, prof,
                              {}, 0.3, origin_of(None))  # fmt: skip
    assert (pair["chosen"], pair["rejected"], pair["margin"]) == ("good", "bad", 1.0)
    assert pair["provenance"]["seeds"] == [5, 6]


def test_weighted_aggregate_changes_the_pair() -> None:
    prompt = PromptRecord("p", "x", ["benign"], "r")
    prof = {"dimensions": ["a", "b"], "scores": [[1.0, 0.0], [0.0, 0.6], [0.5, 0.5]]}
    roll = {"texts": ["t0", "t1", "t2"]}
    (eq,) = max_margin_pair(prompt, roll, prof, {}, 0.0, origin_of(None))
    (wb,) = max_margin_pair(prompt, roll, prof, {"a": 0.0}, 0.0, origin_of(None))
    assert (eq["chosen"], eq["rejected"]) == ("t0", "t1")
    assert (wb["chosen"], wb["rejected"], wb["margin"]) == ("t1", "t0", 0.6)


def test_scorer_dimension_normalises_and_flips() -> None:
    dim = ScorerDimension("not_refusing", RefusalJudge())  # range [0, 1], lower is better
    p = PromptRecord("p", "x")
    assert dim.score([p, p], ["I'm sorry, no.", "Sure!"]) == [0.0, 1.0]
    with pytest.raises(ValidationError, match="dimensions"):
        build_dimensions(["honest"], get=lambda n: RefusalJudge())


def test_server_generator_one_request_per_sample_with_seeds() -> None:
    client = FakeClient("reply")
    gen = ServerGenerator(client, temperature=0.9, top_p=0.8, max_new_tokens=20,
                          preferences={"helpful": 1.0}, concurrency=2)  # fmt: skip
    p = PromptRecord("p1", "Hi")
    assert gen.sample([p], 3, seed=4) == [["reply"] * 3]
    base = prompt_seed(4, "p1")
    assert sorted(o["seed"] for _, o in client.calls) == [base, base + 1, base + 2]
    assert client.calls[0][1]["preferences"] == {"helpful": 1.0}


def test_config_validation_and_stage_hashes() -> None:
    with pytest.raises(ValidationError) as err:
        MoraConfig(n_samples=0, rewriter="gpt", weights=["helpful"])
    assert len(err.value.problems) == 3
    a, b = MoraConfig(), MoraConfig(margin=0.9)
    assert a.stage_hash("fuse") == b.stage_hash("fuse")
    assert a.stage_hash("pairs") != b.stage_hash("pairs")


def test_read_jsonl_drops_truncated_tail(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
