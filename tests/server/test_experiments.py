"""Experiments hardening (issue 15) and the pairwise leaderboard route (issue 16), through the
HTTP app: bounded ratings/traffic/arms/comments, stable statistics, lifecycle, recipe pins."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.server.conftest import OPERATOR_KEY, make_store, server_settings

OP = {"Authorization": f"Bearer {OPERATOR_KEY}"}
LEADERBOARD_KEYS = {
    "arm", "recipe", "battles", "wins", "losses", "ties", "win_rate", "win_rate_ci_low",
    "win_rate_ci_high", "bt_score", "bt_ci_low", "bt_ci_high",
}  # fmt: skip


@pytest.fixture(scope="module")
def client(
    srv_base_dir: Path, vector_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    from prefvec.server.app import create_app

    tmp = tmp_path_factory.mktemp("experiments")
    make_store(tmp / "store", srv_base_dir, vector_files)
    settings = server_settings(tmp, srv_base_dir, max_experiment_arms=4, max_feedback_chars=100)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        deadline = time.monotonic() + 60
        while c.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for name, weights in {"r1": {"concise": 0.5}, "r2": {"warm": 0.5}, "r3": {}}.items():
            resp = c.post("/v1/recipes", json={"name": name, "weights": weights}, headers=OP)
            assert resp.status_code == 201, resp.text
        yield c


_counter = iter(range(10_000))


def make_experiment(client: TestClient, arms: int = 2, **arm_fields: Any) -> str:
    name = f"exp{next(_counter)}"
    recipes = ["r1", "r2", "r3"]
    body = {
        "name": name,
        "arms": [{"name": f"arm{i}", "recipe": recipes[i % 3], **arm_fields} for i in range(arms)],
    }
    resp = client.post("/v1/experiments", json=body, headers=OP)
    assert resp.status_code == 201, resp.text
    return name


def feedback(client: TestClient, **body: Any) -> Any:
    return client.post(
        "/v1/feedback",
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )


def chat(client: TestClient, **fields: Any) -> Any:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **fields}
    return client.post("/v1/chat/completions", json=body)


# ----------------------------------------------------------------------------- bounds


@pytest.mark.parametrize("rating", [1e308, -1e308, 1e7])
def test_huge_ratings_are_refused_and_the_report_stays_up(
    client: TestClient, rating: float
) -> None:
    """Was: ±1e308 accepted, then the report was a 500 for ever (mean_interval overflowed)."""
    name = make_experiment(client)
    resp = feedback(client, experiment=name, arm="arm0", rating=rating)
    assert resp.status_code == 422, resp.text
    assert "max_abs_rating" in resp.json()["error"]["message"]
    assert repr(rating) in resp.json()["error"]["message"]
    assert feedback(client, experiment=name, arm="arm0", rating=4.0).status_code == 201
    report = client.get(f"/v1/experiments/{name}")
    assert report.status_code == 200 and report.json()["arms"][0]["mean_rating"] == 4.0


def test_ratings_at_the_bound_give_finite_statistics(client: TestClient) -> None:
    name = make_experiment(client)
    for r in (1e6, -1e6, 1e6, 1e6):
        assert feedback(client, experiment=name, arm="arm0", rating=r).status_code == 201
    arm = client.get(f"/v1/experiments/{name}").json()["arms"][0]
    assert arm["mean_rating"] == pytest.approx(5e5)
    assert math.isfinite(arm["ci_low"]) and math.isfinite(arm["ci_high"])
    assert arm["ci_low"] < 5e5 < arm["ci_high"]


def test_mean_interval_is_stable_for_any_finite_input() -> None:
    from prefvec.server.experiments import mean_interval

    mean, lo, hi = mean_interval([1e308, 1e308, -1e308])
    assert mean is not None and lo is not None and hi is not None
    assert all(math.isfinite(x) for x in (mean, lo, hi)) and lo < mean < hi
    assert mean_interval([2.0, 4.0]) == pytest.approx((3.0, 3.0 - 12.706, 3.0 + 12.706))


@pytest.mark.parametrize("traffic", [1e308, 1e7, 0.0, -1.0, "1"])
def test_traffic_out_of_bounds_is_422(client: TestClient, traffic: Any) -> None:
    """Was: traffic 1e308 accepted; the shares summed to inf and everyone got the last arm."""
    body = {
        "name": "trafficbad",
        "arms": [{"name": "a", "recipe": "r1", "traffic": traffic}, {"name": "b", "recipe": "r2"}],
    }
    resp = client.post("/v1/experiments", json=body, headers=OP)
    assert resp.status_code == 422 and "traffic" in resp.json()["error"]["param"], resp.text


def test_large_equal_traffic_still_splits_users() -> None:
    from prefvec.protocol import ExperimentArm
    from prefvec.server.experiments import assign_arm

    arms = [ExperimentArm(name=n, recipe="r1@1", traffic=1e6) for n in ("a", "b")]
    got = [assign_arm("e", f"user{i}", arms).name for i in range(400)]
    assert 150 < got.count("a") < 250
    tiny = [ExperimentArm(name="a", recipe="r1@1", traffic=1e-300), arms[1]]
    assert {assign_arm("e", f"user{i}", tiny).name for i in range(200)} == {"b"}


def test_arms_bounded_by_the_setting(client: TestClient) -> None:
    """Was: 5,000 arms accepted. Now at most `max_experiment_arms` (4 here)."""
    body = {"name": "many", "arms": [{"name": f"a{i}", "recipe": "r1"} for i in range(5)]}
    resp = client.post("/v1/experiments", json=body, headers=OP)
    assert resp.status_code == 422 and "max_experiment_arms" in resp.text, resp.text
    huge = {"name": "huge", "arms": [{"name": f"a{i}", "recipe": "r1"} for i in range(5000)]}
    assert client.post("/v1/experiments", json=huge, headers=OP).status_code in (413, 422)


def test_feedback_text_bounded(client: TestClient) -> None:
    name = make_experiment(client)
    resp = feedback(client, experiment=name, arm="arm0", rating=1.0, comment="x" * 101)
    assert resp.status_code == 422 and "max_feedback_chars" in resp.text
    ok = feedback(client, experiment=name, arm="arm0", rating=1.0, comment="x" * 100)
    assert ok.status_code == 201


def test_rating_must_be_a_number(client: TestClient) -> None:
    name = make_experiment(client)
    assert feedback(client, experiment=name, arm="arm0", rating="5").status_code == 422
    assert feedback(client, experiment=name, arm="arm0", rating=True).status_code == 422


# -------------------------------------------------------------------------- lifecycle


def test_end_stops_traffic_and_feedback_but_keeps_the_report(client: TestClient) -> None:
    name = make_experiment(client)
    assert chat(client, experiment=name, user="u1").status_code == 200
    assert feedback(client, experiment=name, user="u1", rating=3.0).status_code == 201
    assert client.post(f"/v1/experiments/{name}/end").status_code == 401  # operator only
    ended = client.post(f"/v1/experiments/{name}/end", headers=OP)
    assert ended.status_code == 200 and ended.json()["status"] == "ended"
    assert ended.json()["ended_at"]
    refused = chat(client, experiment=name, user="u1")
    assert refused.status_code == 409 and "ended" in refused.json()["error"]["message"]
    assert feedback(client, experiment=name, user="u1", rating=3.0).status_code == 409
    report = client.get(f"/v1/experiments/{name}").json()
    assert report["status"] == "ended" and sum(a["ratings"] for a in report["arms"]) == 1
    again = client.post(f"/v1/experiments/{name}/end", headers=OP)
    assert again.status_code == 409


def test_archive_hides_and_delete_removes(client: TestClient) -> None:
    name = make_experiment(client)
    assert client.post(f"/v1/experiments/{name}/archive", headers=OP).json()["status"] == "archived"
    listed = [e["name"] for e in client.get("/v1/experiments").json()["data"]]
    assert name not in listed
    everything = client.get("/v1/experiments", params={"include_archived": "true"}).json()
    assert name in [e["name"] for e in everything["data"]]
    assert chat(client, experiment=name, user="u1").status_code == 409
    deleted = client.delete(f"/v1/experiments/{name}", headers=OP)
    assert deleted.status_code == 200 and deleted.json()["name"] == name
    assert client.get(f"/v1/experiments/{name}").status_code == 404
    assert client.delete(f"/v1/experiments/{name}", headers=OP).status_code == 404


def test_recipe_pinned_by_a_live_experiment_cannot_be_deleted(client: TestClient) -> None:
    """Was: deletable (the experiment's users then got 404s). Now 409 naming the experiment,
    like a vector used by a recipe; once the experiment ends, the recipe can go."""
    resp = client.post("/v1/recipes", json={"name": "pinme", "weights": {}}, headers=OP)
    assert resp.status_code == 201
    body = {"name": "pinning", "arms": [
        {"name": "a", "recipe": "pinme"}, {"name": "b", "recipe": "r1"},
    ]}  # fmt: skip
    assert client.post("/v1/experiments", json=body, headers=OP).status_code == 201
    for ref in ("pinme", "pinme@1"):
        refused = client.delete(f"/v1/recipes/{ref}", headers=OP)
        assert refused.status_code == 409, refused.text
        assert "experiment:pinning" in refused.json()["error"]["message"]
    assert chat(client, experiment="pinning", user="u9").status_code == 200
    assert client.post("/v1/experiments/pinning/end", headers=OP).status_code == 200
    assert client.delete("/v1/recipes/pinme", headers=OP).status_code == 200


def test_deleting_an_experiment_unpins_its_recipes(client: TestClient) -> None:
    assert (
        client.post("/v1/recipes", json={"name": "pin2", "weights": {}}, headers=OP).status_code
        == 201
    )
    body = {
        "name": "pin2exp",
        "arms": [{"name": "a", "recipe": "pin2"}, {"name": "b", "recipe": "r1"}],
    }
    assert client.post("/v1/experiments", json=body, headers=OP).status_code == 201
    assert client.delete("/v1/recipes/pin2", headers=OP).status_code == 409
    assert client.delete("/v1/experiments/pin2exp", headers=OP).status_code == 200
    assert client.delete("/v1/recipes/pin2", headers=OP).status_code == 200


def test_pins_survive_a_restart_and_old_experiments_get_pinned(tmp_path: Path) -> None:
    """An experiment made before pins existed (no pin rows) is pinned when the service opens."""
    from prefvec.protocol import ExperimentCreate
    from prefvec.server.experiments import ExperimentService
    from prefvec.vector_store import LocalStore

    store = LocalStore(tmp_path / "store")
    store.put_recipe({"name": "old", "weights": {}})
    store.put_recipe({"name": "other", "weights": {}})
    svc = ExperimentService(store)
    req = {"name": "e", "arms": [{"name": "a", "recipe": "old"}, {"name": "b", "recipe": "other"}]}
    svc.create(ExperimentCreate.model_validate(req))
    store.unpin_recipes("experiment:e")  # as if made by an older release
    ExperimentService(store)  # re-open
    from prefvec.errors import ConflictError

    with pytest.raises(ConflictError):
        store.delete_recipe("old")


# ------------------------------------------------------------------ pairwise + leaderboard


def test_pairwise_outcomes_and_leaderboard_contract(client: TestClient) -> None:
    name = make_experiment(client, arms=3)
    votes = [("arm0", "arm1", "win")] * 3 + [("arm1", "arm2", "win")] * 2
    votes += [("arm0", "arm2", "tie"), ("arm2", "arm1", "both_bad")]
    for preferred, rejected, outcome in votes:
        resp = feedback(
            client, experiment=name, preferred=preferred, rejected=rejected, outcome=outcome
        )
        assert resp.status_code == 201 and resp.json()["outcome"] == outcome
    default = feedback(client, experiment=name, preferred="arm0", rejected="arm2")
    assert default.json()["outcome"] == "win"
    board = client.get(f"/v1/experiments/{name}/leaderboard")
    assert board.status_code == 200, board.text
    data = board.json()
    assert set(data) == {"experiment", "n_votes", "arms"}
    assert data["experiment"] == name and data["n_votes"] == 8
    assert all(set(row) == LEADERBOARD_KEYS for row in data["arms"])
    rows = {row["arm"]: row for row in data["arms"]}
    assert (rows["arm0"]["wins"], rows["arm0"]["losses"], rows["arm0"]["ties"]) == (4, 0, 1)
    assert (rows["arm1"]["wins"], rows["arm1"]["losses"], rows["arm1"]["ties"]) == (2, 3, 1)
    assert rows["arm0"]["battles"] == 5 and rows["arm0"]["win_rate"] == pytest.approx(4.5 / 5)
    assert rows["arm0"]["recipe"] == "r1@1"
    assert data["arms"][0]["arm"] == "arm0"  # ranked by score
    for row in data["arms"]:  # three arms: bootstrap intervals around each score
        assert row["bt_ci_low"] <= row["bt_score"] <= row["bt_ci_high"]
    assert board.json() == client.get(f"/v1/experiments/{name}/leaderboard").json()  # seeded
    report = client.get(f"/v1/experiments/{name}").json()
    arm0 = next(a for a in report["arms"] if a["name"] == "arm0")
    assert (arm0["pairwise_wins"], arm0["pairwise_ties"]) == (4, 1)


def test_outcome_needs_a_pair_and_a_known_value(client: TestClient) -> None:
    name = make_experiment(client)
    resp = feedback(client, experiment=name, arm="arm0", rating=1.0, outcome="tie")
    assert resp.status_code == 422 and "outcome" in resp.text
    bad = feedback(client, experiment=name, preferred="arm0", rejected="arm1", outcome="draw")
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "outcome"


def test_leaderboard_of_unknown_experiment_is_404(client: TestClient) -> None:
    assert client.get("/v1/experiments/nope/leaderboard").status_code == 404
    empty = client.get(f"/v1/experiments/{make_experiment(client)}/leaderboard").json()
    assert empty["n_votes"] == 0 and all(r["win_rate"] is None for r in empty["arms"])
