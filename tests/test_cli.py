"""The local CLI: vectors add/list/show/rm, merge and generate on a tiny base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prefvec.cli import main
from prefvec.errors import ValidationError
from prefvec.weights import parse_weights


def test_parse_weights() -> None:
    assert parse_weights("helpful=1,harmless=-0.5") == {"helpful": 1.0, "harmless": -0.5}
    assert parse_weights("a=1, a=0.5") == {"a": 1.5}
    for bad in ("helpful", "helpful=nan", "x=abc", "=1"):
        with pytest.raises(ValidationError, match="weights"):
            parse_weights(bad)


@pytest.fixture()
def vec_file(tiny_base_dir: Path, tiny_pos_dir: Path, tiny_neg_dir: Path, tmp_path: Path) -> Path:
    from prefvec.vector_store.extract import contrast

    vec = contrast(tiny_pos_dir, tiny_neg_dir, name="helpful", base=tiny_base_dir)
    return vec.save(tmp_path / "helpful.safetensors")


def test_vectors_add_list_show_rm(
    tiny_base_dir: Path, vec_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--store", str(tmp_path / "store")]
    assert main(["vectors", "add", str(vec_file), *common, "--base", str(tiny_base_dir)]) == 0
    assert main(["vectors", "add", str(vec_file), *common, "--base", str(tiny_base_dir)]) == 0
    capsys.readouterr()
    assert main(["vectors", "list", "--json", *common]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["version"]) for r in listed] == [("helpful", 2)]
    assert main(["vectors", "show", "helpful@1", *common]) == 0
    assert json.loads(capsys.readouterr().out)["versions"] == [1, 2]
    assert main(["vectors", "rm", "helpful@2", *common]) == 0
    assert main(["vectors", "show", "helpful@2", *common]) == 2  # NotFound -> exit 2
    assert "helpful" in capsys.readouterr().err


def test_vectors_add_refuses_wrong_base(
    tiny_pos_dir: Path, vec_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(
        [
            "vectors",
            "add",
            str(vec_file),
            "--store",
            str(tmp_path / "s"),
            "--base",
            str(tiny_pos_dir),
        ]
    )
    assert rc == 2 and "fingerprint" in capsys.readouterr().err


def _assert_merged(
    out: Path, base_dir: Path, pos_dir: Path, neg_dir: Path, weight: float, atol: float
) -> None:
    """The merged model in ``out`` equals the oracle base + weight·(pos − neg), tensor by tensor."""
    from safetensors.torch import load_file

    merged = load_file(str(out / "model.safetensors"))
    base, pos, neg = (load_file(str(d / "model.safetensors")) for d in (base_dir, pos_dir, neg_dir))
    for k, b in base.items():
        assert torch.allclose(merged[k], b + weight * (pos[k] - neg[k]), atol=atol), k


def test_merge_writes_model_equal_to_oracle(
    tiny_base_dir: Path, tiny_pos_dir: Path, tiny_neg_dir: Path, vec_file: Path, tmp_path: Path
) -> None:
    store = ["--store", str(tmp_path / "store"), "--base", str(tiny_base_dir)]
    assert main(["vectors", "add", str(vec_file), *store]) == 0
    out = tmp_path / "merged"
    assert main(["merge", *store, "--weights", "helpful=0.5", "--out", str(out)]) == 0
    _assert_merged(out, tiny_base_dir, tiny_pos_dir, tiny_neg_dir, weight=0.5, atol=1e-6)
    card = json.loads((out / "prefvec_merge.json").read_text())
    assert card["vectors"] == {"helpful": 1} and card["recipe_key"] == "linear(helpful@1=0.5)"


def test_generate_changes_with_weights(
    tiny_base_dir: Path, vec_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ["--store", str(tmp_path / "store"), "--base", str(tiny_base_dir)]
    assert main(["vectors", "add", str(vec_file), *store]) == 0
    outs = []
    for w in ("helpful=0", "helpful=3", "helpful=3"):
        capsys.readouterr()
        assert main(["generate", *store, "--weights", w, "--max-tokens", "12", "--json", "hi"]) == 0
        outs.append(json.loads(capsys.readouterr().out))
    assert outs[1]["text"] == outs[2]["text"]  # deterministic
    assert outs[0]["text"] != outs[1]["text"]  # the weight changes the output
    assert main(["generate", *store, "--weights", "nope=1", "hi"]) == 2
    assert "nope" in capsys.readouterr().err


def test_cli_startup_imports_no_torch() -> None:
    """Building the parser (every subcommand) stays lean: no torch / transformers import."""
    import subprocess
    import sys

    code = (
        "import sys, prefvec.cli as c; c.build_parser(); "
        "bad = [m for m in ('torch', 'transformers', 'numpy') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_shared_names_have_one_torch_free_home() -> None:
    """The weights parser and the default base live in torch-free modules, and neither CLI
    imports the other's module at import time (no cycle)."""
    import subprocess
    import sys

    code = (
        "import sys; import prefvec.weights, prefvec.defaults, prefvec.clients.cli; "
        "assert 'torch' not in sys.modules; assert 'prefvec.cli' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_vectors_scale_sets_the_unit_of_the_weight(
    tiny_base_dir: Path, tiny_pos_dir: Path, tiny_neg_dir: Path, vec_file: Path, tmp_path: Path
) -> None:
    scaled = tmp_path / "scaled.safetensors"
    assert main(["vectors", "scale", str(vec_file), "--factor", "1.5", "--out", str(scaled)]) == 0
    zero = ["vectors", "scale", str(vec_file), "--factor", "0", "--out", str(tmp_path / "z")]
    assert main(zero) == 2
    assert not (tmp_path / "z").exists()
    store = ["--store", str(tmp_path / "store"), "--base", str(tiny_base_dir)]
    assert main(["vectors", "add", str(scaled), *store]) == 0
    out = tmp_path / "merged"
    assert main(["merge", *store, "--weights", "helpful=1", "--out", str(out)]) == 0
    # weight 1 on the scaled vector = weight 1.5 on the trained one
    _assert_merged(out, tiny_base_dir, tiny_pos_dir, tiny_neg_dir, weight=1.5, atol=1e-5)
