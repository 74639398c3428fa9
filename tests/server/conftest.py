"""Server fixtures: a tiny base (byte vocabulary, so every token decodes to text), a store with a
dense and a low-rank vector, and a live uvicorn server on loopback."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

OPERATOR_KEY = "op-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def srv_base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny Llama whose vocabulary is exactly the tokenizer's (259 ids)."""
    from prefvec.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("srv-base"), seed=0, vocab_size=259)


@pytest.fixture(scope="session")
def vector_files(srv_base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A dense vector (θ+ − θ− of two seeded perturbations) and a low-rank one, as files."""
    from safetensors.torch import load_file

    from prefvec.testing import perturb_model
    from prefvec.vector_store import PreferenceVector, VectorMetadata, fingerprint_model_dir

    out = tmp_path_factory.mktemp("vectors")
    pos = load_file(str(perturb_model(srv_base_dir, out / "pos", 1, 0.1) / "model.safetensors"))
    neg = load_file(str(perturb_model(srv_base_dir, out / "neg", 2, 0.1) / "model.safetensors"))
    fp = fingerprint_model_dir(srv_base_dir)
    dense = PreferenceVector(
        VectorMetadata(name="helpful", kind="dense", base_fingerprint=fp),
        {k: pos[k] - neg[k] for k in pos},
    )
    g = torch.Generator().manual_seed(3)
    shapes = {"self_attn.q_proj": (32, 32), "self_attn.o_proj": (32, 32), "mlp.down_proj": (64, 32)}
    factors = {
        f"model.layers.{layer}.{m}": (
            torch.randn(4, i, generator=g) * 0.4,  # A (r, in)
            torch.randn(o, 4, generator=g) * 0.4,  # B (out, r)
        )
        for layer in range(2)
        for m, (i, o) in shapes.items()
    }
    low = PreferenceVector.from_factors(
        VectorMetadata(name="concise", kind="lowrank", base_fingerprint=fp), factors
    )
    g2 = torch.Generator().manual_seed(4)
    factors2 = {
        k: (torch.randn(a.shape, generator=g2) * 0.4, torch.randn(b.shape, generator=g2) * 0.4)
        for k, (a, b) in factors.items()
    }
    low2 = PreferenceVector.from_factors(
        VectorMetadata(name="warm", kind="lowrank", base_fingerprint=fp), factors2
    )
    return {
        "helpful": dense.save(out / "helpful.safetensors"),
        "concise": low.save(out / "concise.safetensors"),
        "warm": low2.save(out / "warm.safetensors"),
    }


def make_store(root: Path, base_dir: Path, files: dict[str, Path]):  # type: ignore[no-untyped-def]
    from prefvec.vector_store import BaseSpec, LocalStore

    store = LocalStore(root, base=BaseSpec.from_model_dir(base_dir))
    for path in files.values():
        store.put(path)
    return store


class LiveServer:
    """uvicorn serving ``create_app(settings)`` on 127.0.0.1 in a thread."""

    def __init__(self, settings) -> None:  # type: ignore[no-untyped-def]
        import uvicorn

        from prefvec.server.app import create_app

        self.app = create_app(settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def state(self):  # type: ignore[no-untyped-def]
        return self.app.state.prefvec

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def server_settings(tmp: Path, base_dir: Path, **kw):  # type: ignore[no-untyped-def]
    from prefvec.server.settings import ServerSettings

    defaults = dict(
        base=str(base_dir), home=tmp / "home", store_dir=tmp / "store", device="cpu",
        max_tokens_limit=64, default_max_tokens=16, max_prompt_tokens=256,
        max_body_bytes=16384, max_vectors_per_request=3, operator_keys=[OPERATOR_KEY],
    )  # fmt: skip
    defaults.update(kw)
    return ServerSettings(**defaults)


@pytest.fixture(scope="module")
def live(
    srv_base_dir: Path, vector_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("live")
    make_store(tmp / "store", srv_base_dir, vector_files)
    server = LiveServer(server_settings(tmp, srv_base_dir)).start()
    yield server
    server.stop()


def offline_merged_text(
    base_dir: Path, files: dict[str, Path], weights: dict[str, float], prompt: str, max_new: int
) -> str:
    """Oracle: merge θ = θ_base + Σ w·φ offline (fp32, low-rank densified as B @ A) and decode
    greedily with ``transformers``' own ``generate``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefvec.vector_store import PreferenceVector

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, w in weights.items():
            for key, delta in PreferenceVector.load(files[name]).to_dense().items():
                target = params[key] if key in params else params["model.embed_tokens.weight"]
                target.add_(delta, alpha=w)
    text = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    out = model.generate(
        ids, max_new_tokens=max_new, do_sample=False, eos_token_id=2, pad_token_id=0
    )
    return str(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
