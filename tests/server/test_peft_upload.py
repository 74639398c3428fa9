"""Uploading a PEFT LoRA adapter folder as one archive (zip or tar.gz): stored as its exact
low-rank vector, served like the safetensors it came from; bad archives are a 4xx naming why."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import httpx
import pytest
import torch

from tests.server.conftest import OPERATOR_KEY, LiveServer

OP = {"Authorization": f"Bearer {OPERATOR_KEY}"}


def _adapter(vector_file: Path, tmp: Path, alpha_scale: float = 1.0) -> Path:
    """A PEFT adapter folder of ``vector_file``; with ``alpha_scale`` != 1 the LoRA scaling
    α/r is not 1 (B is divided by it, so ΔW is unchanged once PEFT's scaling is folded back)."""
    from safetensors.torch import load_file, save_file

    from prefvec.vector_store import PreferenceVector

    folder = PreferenceVector.load(vector_file).export_peft(tmp / "adapter")
    if alpha_scale != 1.0:
        config = json.loads((folder / "adapter_config.json").read_text())
        config["lora_alpha"] = config["r"] * alpha_scale
        (folder / "adapter_config.json").write_text(json.dumps(config))
        tensors = load_file(str(folder / "adapter_model.safetensors"))
        tensors = {k: (v / alpha_scale if "lora_B" in k else v) for k, v in tensors.items()}
        save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


def _zip(folder: Path, prefix: str = "adapter/") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in folder.iterdir():
            zf.write(f, prefix + f.name)
    return buf.getvalue()


def _targz(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for f in folder.iterdir():
            tf.add(f, arcname=f.name)
    return buf.getvalue()


def _chat(url: str, prefs: dict[str, float]) -> str:
    body = {"messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": 10,
            "temperature": 0, "preferences": prefs}  # fmt: skip
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["message"]["content"])


@pytest.mark.parametrize("pack", ["zip", "tar.gz"])
def test_adapter_archive_serves_like_its_vector(
    live: LiveServer, vector_files: dict[str, Path], tmp_path: Path, pack: str
) -> None:
    folder = _adapter(vector_files["warm"], tmp_path, alpha_scale=2.0)
    data = _zip(folder) if pack == "zip" else _targz(folder)
    name = f"warm-peft-{pack.replace('.', '')}"
    files = {"file": (f"adapter.{pack}", data, "application/octet-stream")}
    meta = {"metadata": json.dumps({"name": name})}
    r = httpx.post(live.url + "/v1/vectors", files=files, data=meta, headers=OP)
    assert r.status_code == 201, r.text
    assert r.json()["kind"] == "lowrank"
    assert _chat(live.url, {name: 1.0}) == _chat(live.url, {"warm": 1.0})
    from prefvec.vector_store import PreferenceVector

    stored = live.state.store.get(name)
    want = PreferenceVector.load(vector_files["warm"]).to_dense()
    for key, delta in stored.to_dense().items():
        torch.testing.assert_close(delta, want[key], rtol=1e-5, atol=1e-6)
    assert httpx.delete(live.url + f"/v1/vectors/{name}", headers=OP).status_code == 200


def test_bad_archives_are_4xx_naming_why(
    live: LiveServer, vector_files: dict[str, Path], tmp_path: Path
) -> None:
    folder = _adapter(vector_files["warm"], tmp_path)
    url = live.url + "/v1/vectors"

    def post(data: bytes, meta: dict | None = None) -> httpx.Response:  # type: ignore[type-arg]
        files = {"file": ("a.zip", data, "application/zip")}
        form = {"metadata": json.dumps(meta)} if meta is not None else {}
        return httpx.post(url, files=files, data=form, headers=OP)

    no_name = post(_zip(folder))
    assert no_name.status_code == 422 and "metadata.name" in no_name.text
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.write(folder / "adapter_config.json", "adapter_config.json")
        zf.writestr("../adapter_model.safetensors", b"x")  # outside: never read
    missing = post(buf.getvalue(), {"name": "x"})
    assert missing.status_code == 422 and "adapter_model.safetensors" in missing.text
    broken = post(b"PK\x03\x04" + b"\x00" * 300, {"name": "x"})
    assert broken.status_code == 422 and "archive" in broken.text
    assert "x" not in [v["name"] for v in httpx.get(live.url + "/v1/vectors").json()["data"]]
