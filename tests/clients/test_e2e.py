"""The client against the real server (uvicorn on loopback, a tiny model): every method once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

pytest.importorskip("prefvec.server.app")
pytest.importorskip("uvicorn")

from prefvec import errors
from prefvec.clients import AsyncPrefvecClient, PrefvecClient, chunk_text
from tests.server.conftest import (
    OPERATOR_KEY,
    LiveServer,
    server_settings,
    srv_base_dir,  # noqa: F401  (fixture)
    vector_files,  # noqa: F401  (fixture)
)

GREEDY = {"temperature": 0.0, "max_tokens": 8}


@pytest.fixture(scope="module")
def server(srv_base_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    live = LiveServer(server_settings(tmp_path_factory.mktemp("client-e2e"), srv_base_dir)).start()
    yield live
    live.stop()


def test_client_end_to_end(server: LiveServer, vector_files: dict[str, Path], tmp_path) -> None:  # noqa: F811
    with (
        PrefvecClient(server.url, api_key=OPERATOR_KEY, timeout=60) as op,
        PrefvecClient(server.url, timeout=60) as anon,
    ):
        assert op.health().status == "ok" and op.ready().ready
        # upload -> list -> download
        info = op.push_vector(
            vector_files["concise"], name="concise", metadata={"description": "d"}
        )
        assert (info.name, info.version, info.kind) == ("concise", 1, "lowrank")
        with pytest.raises(errors.AuthenticationError):
            anon.push_vector(vector_files["warm"].read_bytes(), name="warm")
        assert [v.name for v in op.list_vectors().data] == ["concise"]
        out = op.download_vector("concise@1", tmp_path / "c.safetensors")
        assert out.read_bytes() == vector_files["concise"].read_bytes()

        # per-request weights change the output, deterministically; streaming gives the same text
        base = op.chat("Tell me a story", **GREEDY).choices[0].message.content
        r = op.chat("Tell me a story", preferences={"concise": 0.8}, **GREEDY)
        text = r.choices[0].message.content
        assert text != base
        assert r.prefvec.vectors == {"concise": 1} and r.prefvec.path == "lowrank"
        streamed = op.chat_stream("Tell me a story", preferences={"concise": 0.8}, **GREEDY)
        assert "".join(chunk_text(c) for c in streamed) == text
        assert op.complete("Once", preferences={"concise": 0.8}, **GREEDY).choices[0].text

        # errors come back as the right exceptions and leave the server working
        with pytest.raises(errors.NotFoundError):
            op.chat("x", preferences={"nope": 1.0}, **GREEDY)
        with pytest.raises(errors.ValidationError):
            op.chat("x", preferences={"concise": 1e6}, **GREEDY)

        # recipes, compare, experiments, feedback
        op.create_recipe("short", {"concise": 0.8})
        op.create_recipe("long", {"concise": -0.8})
        assert {m.id for m in op.models().data} >= {"recipe:short", "recipe:long"}
        cmp = op.compare(["Hi"], ["short", "long"], max_tokens=4)
        assert len(cmp.rows) == 1 and len(cmp.rows[0].outputs) == 2
        op.create_experiment(
            "exp", [{"name": "a", "recipe": "short"}, {"name": "b", "recipe": "long"}]
        )
        arm = op.chat("Hi", experiment="exp", user="u1", **GREEDY).prefvec.arm
        assert arm in {"a", "b"}
        assert op.feedback("exp", user="u1", rating=4.0).arm == arm
        report = op.experiment_report("exp")
        assert {a.name: a.ratings for a in report.arms}[arm] == 1
        assert [e.name for e in op.list_experiments().data] == ["exp"]

        # a recipe a live experiment pins cannot go (issue 15); once the experiment is ended, it can
        with pytest.raises(errors.ConflictError):
            op.delete_recipe("short")
        auth = {"Authorization": f"Bearer {OPERATOR_KEY}"}
        assert httpx.post(f"{server.url}/v1/experiments/exp/end", headers=auth).status_code == 200
        # a vector a recipe uses cannot go; after the recipes go, it can
        with pytest.raises(errors.ConflictError):
            op.delete_vector("concise")
        op.delete_recipe("short")
        op.delete_recipe("long")
        op.delete_vector("concise")
        with pytest.raises(errors.NotFoundError):
            op.get_vector("concise")
        assert "prefvec_" in op.metrics()
        assert op.chat("Tell me a story", **GREEDY).choices[0].message.content == base

    async def run_async() -> str:
        async with AsyncPrefvecClient(server.url, timeout=60) as client:
            parts = [chunk_text(c) async for c in client.chat_stream("Tell me a story", **GREEDY)]
            whole = await client.chat("Tell me a story", **GREEDY)
            assert "".join(parts) == whole.choices[0].message.content
            return whole.choices[0].message.content

    assert asyncio.run(run_async()) == base
