"""Recipes in the store: versions, pinning of vector refs, and delete conflicts."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefvec.errors import ConflictError, NotFoundError, ValidationError
from prefvec.merging.spec import MergeSpec
from prefvec.vector_store import BaseSpec, LocalStore, Recipe
from prefvec.vector_store import recipes as recipes_mod

from ._helpers import lowrank_vector


@pytest.fixture(scope="module")
def base(tiny_base_dir: Path) -> BaseSpec:
    return BaseSpec.from_model_dir(tiny_base_dir)


@pytest.fixture
def store(tmp_path: Path, base: BaseSpec) -> LocalStore:
    s = LocalStore(tmp_path / "store", base)
    for seed in (0, 1):
        s.put(lowrank_vector(base, name="helpful", seed=seed))  # helpful@1, helpful@2
    s.put(lowrank_vector(base, name="harmless", seed=2))  # harmless@1
    return s


def test_put_pins_refs_and_versions(store: LocalStore) -> None:
    r1 = store.put_recipe({"name": "mix", "weights": {"helpful": 0.7, "harmless@1": -0.3}})
    assert (r1.ref, r1.weights) == ("mix@1", {"helpful@2": 0.7, "harmless@1": -0.3})
    assert r1.created_at and r1.pinned
    store.put(lowrank_vector(store.base, name="helpful", seed=5))  # helpful@3 appears ...
    assert store.get_recipe("mix").weights["helpful@2"] == 0.7  # ... the saved recipe keeps @2
    r2 = store.put_recipe(
        Recipe(name="mix", method="ties", weights={"helpful": 1.0}, density=0.5, seed=3)
    )
    assert (r2.version, r2.weights) == (2, {"helpful@3": 1.0})
    assert store.get_recipe("mix@1") == r1 and store.get_recipe("mix@latest") == r2
    assert [r.version for r in store.recipe_versions("mix")] == [1, 2]
    assert [r.ref for r in store.list_recipes()] == ["mix@2"]
    assert store.recipe_versions("none") == []


def test_to_spec(store: LocalStore) -> None:
    saved = store.put_recipe(
        {
            "name": "m",
            "method": "dare_linear",
            "weights": {"helpful@1": 0.5},
            "density": 0.3,
            "seed": 7,
        }
    )
    spec = saved.to_spec()
    assert spec == MergeSpec(method="dare_linear", weights={"helpful@1": 0.5}, density=0.3, seed=7)
    with pytest.raises(ValidationError, match=r"unpinned.*helpful"):
        Recipe(name="m", weights={"helpful": 1.0}).to_spec()


def test_unknown_vectors_refused(store: LocalStore) -> None:
    with pytest.raises(NotFoundError, match="'nope' not found"):
        store.put_recipe({"name": "r", "weights": {"nope": 1.0}})
    with pytest.raises(NotFoundError, match=r"'helpful@9' not found \(versions: 1, 2\)"):
        store.put_recipe({"name": "r", "weights": {"helpful@9": 1.0}})
    assert store.list_recipes() == []


def test_invalid_recipes_report_every_problem(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = {"name": "../r", "method": "avg", "weights": {"helpful": float("nan")}, "density": 0}
    with pytest.raises(ValidationError) as info:
        store.put_recipe(bad)
    msg = info.value.message
    for needle in (
        "`name`",
        "'../r'",
        "unknown merge method 'avg'",
        "must be finite, got nan",
        "`density`",
    ):
        assert needle in msg, needle
    assert len(info.value.problems) == 4
    with pytest.raises(ValidationError, match="'helpful@2' twice"):
        store.put_recipe({"name": "r", "weights": {"helpful": 1.0, "helpful@2": 1.0}})
    with pytest.raises(ValidationError, match="a@x"):
        store.put_recipe({"name": "r", "weights": {"a@x": 1.0}})
    # without prefvec.merging the standard names are still accepted, others refused
    monkeypatch.setattr(recipes_mod, "known_methods", lambda: list(recipes_mod.FALLBACK_METHODS))
    assert Recipe(name="r", method="magnitude").method == "magnitude"
    with pytest.raises(ValidationError, match="'avg'"):
        Recipe.parse({"name": "r", "method": "avg"})
    assert store.list_recipes() == []


def test_delete_vector_used_by_recipe_conflicts(store: LocalStore) -> None:
    store.put_recipe({"name": "mix", "weights": {"helpful@1": 1.0}})
    store.put_recipe({"name": "mix", "weights": {"helpful@1": 0.5, "harmless": 0.5}})
    store.put_recipe({"name": "other", "weights": {"helpful@1": 2.0}})
    with pytest.raises(
        ConflictError, match=r"'helpful@1' is used by recipe\(s\) mix@1, mix@2, other@1"
    ) as e:
        store.delete("helpful", 1)
    assert e.value.status_code == 409
    with pytest.raises(
        ConflictError, match=r"'helpful' is used by recipe\(s\) mix@1, mix@2, other@1"
    ):
        store.delete("helpful")
    store.delete("helpful", 2)  # a version no recipe uses
    assert [r.version for r in store.versions("helpful")] == [1]
    assert store.delete_recipe("mix", 1) == 1
    with pytest.raises(ConflictError, match=r"mix@2, other@1"):
        store.delete("helpful", 1)
    assert store.delete_recipe("mix") == 1 and store.delete_recipe("other") == 1
    with pytest.raises(NotFoundError, match="'mix'"):
        store.delete_recipe("mix")
    assert [r.ref for r in store.delete("helpful")] == ["helpful@1"]
    assert [r.ref for r in store.list()] == ["harmless@1"]


def test_recipe_versions_not_reused(store: LocalStore) -> None:
    store.put_recipe({"name": "mix", "weights": {"helpful": 1.0}})
    store.put_recipe({"name": "mix", "weights": {"helpful": 2.0}})
    store.delete_recipe("mix", 2)
    assert store.put_recipe({"name": "mix", "weights": {"helpful": 3.0}}).version == 3
    with pytest.raises(NotFoundError, match="'mix@2'"):
        store.get_recipe("mix@2")
    assert store.stats()["recipe_versions"] == 2
