"""The standard harness against a live prefvec server (issue 14): ``lm_eval --model
local-completions`` runs a local multiple-choice task (our TruthfulQA MC1 items, written by
:func:`prefvec.evaluation.lm_eval_task.write_task`) for the base and for a recipe
(``model=recipe:<name>``), and its ``acc`` equals our suite's ``accuracy`` on the same items.

Tolerance: the accuracies are equal (the same items answered the same way); per choice, the
harness' log-likelihood minus ours is one constant per item (the log-probability of the chat
template's trailing newline, which the harness moves into the continuation), to 2e-3 nats."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from prefvec.evaluation.lm_eval_task import task_name, write_task
from prefvec.evaluation.runner import RunContext, run_eval
from tests.server.conftest import OPERATOR_KEY, LiveServer, make_store, server_settings

pytest.importorskip("lm_eval", reason="lm-evaluation-harness is in the dev extra")

SUITE, LIMIT, MAX_LEN = "truthfulqa_mc1", 30, 500
WEIGHTS = {"helpful": 1.0, "concise": -0.5}
TOL = 2e-3


@pytest.fixture(scope="module")
def live(srv_base_dir: Path, vector_files: dict[str, Path], tmp_path_factory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("lm-eval")
    make_store(tmp / "store", srv_base_dir, vector_files)
    server = LiveServer(server_settings(tmp, srv_base_dir, max_prompt_tokens=2048)).start()
    recipe = {"name": "mixed", "weights": WEIGHTS}
    headers = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    assert httpx.post(server.url + "/v1/recipes", json=recipe, headers=headers).status_code == 201
    yield server
    server.stop()


def lm_eval_cli() -> list[str]:
    exe = Path(sys.executable).with_name("lm_eval")
    return [str(exe)] if exe.exists() else [shutil.which("lm_eval") or "lm_eval"]


def run_harness(url: str, model: str, tokenizer: Path, tasks: Path, out: Path) -> dict:  # type: ignore[type-arg]
    """``lm_eval`` as a user runs it; returns its results and per-document samples."""
    args = (
        f"base_url={url}/v1/completions,model={model},tokenizer_backend=huggingface,"
        f"tokenizer={tokenizer},max_length={MAX_LEN},num_concurrent=2,max_retries=1"
    )
    cmd = [*lm_eval_cli(), "--model", "local-completions", "--model_args", args,
           "--tasks", task_name(SUITE), "--include_path", str(tasks), "--apply_chat_template",
           "--batch_size", "8", "--output_path", str(out), "--log_samples"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_CACHE": str(out / "hf-datasets")}  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    (results,) = out.rglob("results_*.json")
    (samples,) = out.rglob(f"samples_{task_name(SUITE)}_*.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    return {"results": json.loads(results.read_text()), "samples": rows}


@pytest.mark.parametrize("model", ["base", "recipe:mixed"])
def test_lm_eval_accuracy_equals_our_suite(live, handle, srv_base_dir, tmp_path, model) -> None:  # type: ignore[no-untyped-def]
    tasks = write_task(SUITE, tmp_path / "tasks", limit=LIMIT, seed=3).parent
    got = run_harness(live.url, model, srv_base_dir, tasks, tmp_path / "out")
    acc = got["results"]["results"][task_name(SUITE)]["acc,none"]

    target = handle.target({} if model == "base" else WEIGHTS)
    target.max_length = MAX_LEN
    ours = run_eval(target, [SUITE], RunContext(limit=LIMIT, seed=3, progress=False))
    assert acc == ours.metric(SUITE).value
    assert len(got["samples"]) == LIMIT

    # the same sequences scored: per item, harness - ours is one constant over its choices
    by_id = {r["id"]: r["logprobs"] for r in ours.items[SUITE]}
    for sample in got["samples"]:
        theirs = [float(resp[0][0]) for resp in sample["resps"]]
        mine = by_id[sample["doc"]["id"]]
        shift = [a - b for a, b in zip(theirs, mine, strict=True)]
        assert max(shift) - min(shift) < TOL, (sample["doc"]["id"], shift)
        assert -20.0 < shift[0] < 0.0  # the newline's log-probability
