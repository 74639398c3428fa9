"""The client CLI commands against a fake server (``make_client`` is patched to a MockTransport)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from prefvec import errors
from prefvec.clients import PrefvecClient
from prefvec.clients import cli as client_cli

from .conftest import (
    FakeServer,
    Pieces,
    chat_chunk,
    chat_response,
    compare_response,
    error,
    experiment_info,
    experiment_report,
    multipart_fields,
    sse,
    vector_info,
)


@pytest.fixture
def run(fake: FakeServer, monkeypatch: pytest.MonkeyPatch):
    """run(argv) -> exit code, through a parser holding the client commands."""
    seen: list[argparse.Namespace] = []

    def factory(args: argparse.Namespace) -> PrefvecClient:
        seen.append(args)
        url = args.url or "http://default.test"
        return PrefvecClient(url, api_key=args.api_key, transport=httpx.MockTransport(fake))

    monkeypatch.setattr(client_cli, "make_client", factory)
    parser = argparse.ArgumentParser(prog="prefvec")
    sub = parser.add_subparsers(dest="cmd", required=True)
    client_cli.register(sub)
    push = sub.add_parser("push")
    client_cli.add_vectors_push_arguments(push)
    push.set_defaults(func=client_cli.cmd_vectors_push)

    def _run(argv: list[str]) -> int:
        args = parser.parse_args(argv)
        return args.func(args)

    _run.seen = seen  # type: ignore[attr-defined]
    return _run


def test_chat_streams_text_and_reports_recipe(run, fake: FakeServer, capsys) -> None:
    body = sse([chat_chunk("Hel"), chat_chunk("lo"), chat_chunk(None, prefvec=True)])
    fake.on("POST", "/v1/chat/completions", lambda r: httpx.Response(200, stream=Pieces([body])))
    code = run(
        ["chat", "Hi", "-p", "helpful=1,harmless=-0.5", "--max-tokens", "5", "--api-key", "k"]
    )
    out = capsys.readouterr()
    assert code == 0
    assert out.out == "Hello\n"
    assert "[linear(helpful@2=0.5) via lowrank]" in out.err
    req = fake.last_json()
    assert req["preferences"] == {"helpful": 1.0, "harmless": -0.5}
    assert req["stream"] is True and req["max_tokens"] == 5
    assert req["messages"] == [{"role": "user", "content": "Hi"}]
    assert fake.last.headers["authorization"] == "Bearer k"


def test_chat_json_no_stream_with_merge_options(run, fake: FakeServer, capsys) -> None:
    fake.on("POST", "/v1/chat/completions", chat_response("answer"))
    argv = ["chat", "Hi", "--system", "Be kind", "--recipe", "r1", "--method", "ties"]
    assert run([*argv, "--density", "0.5", "--json", "--url", "http://x.test"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["choices"][0]["message"]["content"] == "answer"
    req = fake.last_json()
    assert req["recipe"] == "r1" and req["merge"] == {"method": "ties", "density": 0.5}
    assert req["messages"][0] == {"role": "system", "content": "Be kind"}
    assert "stream" not in req
    assert str(fake.last.url) == "http://x.test/v1/chat/completions"


def test_chat_no_stream_text(run, fake: FakeServer, capsys) -> None:
    fake.on("POST", "/v1/chat/completions", chat_response("plain answer"))
    assert run(["chat", "Hi", "--no-stream", "--experiment", "e", "--user", "u"]) == 0
    assert capsys.readouterr().out == "plain answer\n"
    assert fake.last_json()["experiment"] == "e" and fake.last_json()["user"] == "u"


def test_chat_error_propagates(run, fake: FakeServer) -> None:
    fake.on("POST", "/v1/chat/completions", error(404, "not_found", "vector 'x' not found"))
    with pytest.raises(errors.NotFoundError, match="vector 'x'"):
        run(["chat", "Hi", "-p", "x=1"])


def test_compare_table_and_candidates(run, fake: FakeServer, tmp_path: Path, capsys) -> None:
    fake.on("POST", "/v1/compare", compare_response())
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "From file"}\nplain line\n\n')
    argv = ["compare", "--prompt", "Hi", "--prompts-file", str(prompts), "--recipe", "r1"]
    argv += ["-p", "h:helpful=1", "-p", "harmless=0.5", "--base", "--max-tokens", "4"]
    assert run(argv) == 0
    out = capsys.readouterr().out
    assert "== prompt 1: Hi" in out and "[r1] (len=7)\nout-one" in out
    assert "r1 vs r2 on len: 1.000 [0.200, 1.000] (1W/0L/0T)" in out
    req = fake.last_json()
    assert req["prompts"] == ["Hi", "From file", "plain line"]
    assert req["candidates"] == [
        {"recipe": "r1"},
        {"label": "h", "preferences": {"helpful": 1.0}},
        {"preferences": {"harmless": 0.5}},
        {"label": "base"},
    ]
    assert req["max_tokens"] == 4 and req["chat"] is True


def test_vectors_push(run, fake: FakeServer, tmp_path: Path, capsys) -> None:
    fake.on("POST", "/v1/vectors", vector_info("helpful", 3))
    path = tmp_path / "h.safetensors"
    path.write_bytes(b"bytes-of-vector")
    assert run(["push", str(path), "--name", "helpful", "--metadata", '{"description": "d"}']) == 0
    assert capsys.readouterr().out.strip() == "pushed helpful@3 (lowrank, sha256 abababababab)"
    fields = multipart_fields(fake.last)
    assert fields["file"] == ("h.safetensors", b"bytes-of-vector")
    assert json.loads(fields["metadata"][1]) == {"description": "d", "name": "helpful"}


def test_vectors_push_bad_metadata(run, tmp_path: Path) -> None:
    with pytest.raises(errors.ValidationError, match="--metadata"):
        run(["push", str(tmp_path / "x"), "--metadata", "[1]"])


def test_experiments_commands(run, fake: FakeServer, capsys) -> None:
    fake.on("POST", "/v1/experiments", experiment_info())
    fake.on("GET", "/v1/experiments", {"data": [experiment_info()]})
    fake.on("GET", "/v1/experiments/exp1", experiment_report())
    assert run(["experiments", "create", "exp1", "--arm", "a=r1", "--arm", "b=r2@1:3"]) == 0
    assert fake.last_json()["arms"] == [
        {"name": "a", "recipe": "r1", "traffic": 1.0},
        {"name": "b", "recipe": "r2@1", "traffic": 3.0},
    ]
    assert "created experiment exp1" in capsys.readouterr().out
    assert run(["experiments", "list"]) == 0
    assert "a=r1@1, b=r2@1" in capsys.readouterr().out
    assert run(["experiments", "show", "exp1"]) == 0
    assert json.loads(capsys.readouterr().out)["arms"][0]["mean_rating"] == 4.5
    assert run(["experiments", "report", "exp1"]) == 0
    out = capsys.readouterr().out
    assert "4.500 [4.000, 5.000]" in out and "0.250" in out


@pytest.mark.parametrize("arm", ["a", "=r1", "a=", "a=r1:0", "a=r1:x"])
def test_experiments_bad_arm(run, arm: str) -> None:
    with pytest.raises(errors.ValidationError, match="--arm"):
        run(["experiments", "create", "e", "--arm", arm, "--arm", "b=r2"])


def test_feedback(run, fake: FakeServer, capsys) -> None:
    fake.on("POST", "/v1/feedback", {"object": "feedback", "id": 9, "experiment": "e", "arm": "a"})
    assert run(["feedback", "e", "--user", "u1", "--rating", "5"]) == 0
    assert fake.last_json() == {"experiment": "e", "user": "u1", "rating": 5.0}
    assert capsys.readouterr().out.strip() == "recorded feedback #9 in e (arm a)"
    assert run(["feedback", "e", "--preferred", "a", "--rejected", "b"]) == 0
    assert fake.last_json() == {"experiment": "e", "preferred": "a", "rejected": "b"}


def test_default_client_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFVEC_URL", "http://env.test:1")
    monkeypatch.setenv("PREFVEC_API_KEY", "sk-env")
    args = argparse.Namespace(url=None, api_key=None, timeout=12.0)
    with client_cli._default_client(args) as c:
        assert (c.base_url, c.api_key, c.timeout.read) == ("http://env.test:1", "sk-env", 12.0)
    args = argparse.Namespace(url="http://flag.test", api_key="sk-flag", timeout=1.0)
    with client_cli._default_client(args) as c:
        assert (c.base_url, c.api_key) == ("http://flag.test", "sk-flag")


def test_main_cli_wires_the_client_commands(fake: FakeServer, monkeypatch, capsys) -> None:
    """The lead's parser exposes chat / compare / experiments / feedback / vectors push."""
    main_cli = pytest.importorskip("prefvec.cli")
    fake.on("POST", "/v1/feedback", {"object": "feedback", "id": 1, "experiment": "e"})
    monkeypatch.setattr(
        client_cli,
        "make_client",
        lambda a: PrefvecClient(a.url, transport=httpx.MockTransport(fake)),
    )
    assert main_cli.main(["feedback", "e", "--rating", "1"]) == 0
    assert "recorded feedback #1" in capsys.readouterr().out
    parser = main_cli.build_parser()
    args = parser.parse_args(["vectors", "push", "f.safetensors", "--name", "n"])
    assert args.func is client_cli.cmd_vectors_push
    for argv in (["chat", "x"], ["compare"], ["experiments", "list"]):
        assert parser.parse_args(argv).func.__module__ == "prefvec.clients.cli"


def test_no_heavy_imports() -> None:
    """The client never imports torch/transformers/numpy; the CLI module not even httpx."""
    code = (
        "import sys, prefvec.clients.cli\n"
        "assert 'httpx' not in sys.modules, 'cli imported httpx at parse time'\n"
        "from prefvec.clients import PrefvecClient, AsyncPrefvecClient\n"
        "PrefvecClient('http://x').close()\n"
        "heavy = [m for m in ('torch', 'transformers', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
