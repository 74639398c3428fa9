"""kill -9 of the server during concurrent uploads (issue 15): after a restart the store lists only
complete vectors whose sha256 checks pass, every upload that was answered 201 is there, and no
stray file is left (no tmp file, no blob without a row).

The server runs in a child process (``prefvec.server.run.serve``, settings from the environment).
Kill points: while an upload body is still arriving, and at each step of the store's put
(``after_tmp_write``, ``after_validate``, ``after_replace``, ``before_commit``): the child's
``_fault_point`` hook writes a marker file there and sleeps, and the test kills it then, while
the other uploads are wherever they are.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from tests.server.conftest import free_port, srv_base_dir  # noqa: F401

KEY = "crash-key"
DRIVER = """
import os, sys, time
from pathlib import Path
from prefvec.vector_store import store as store_mod

pause, marker = os.environ.get("CRASH_PAUSE_AT"), os.environ.get("CRASH_MARKER")
if pause:
    def point(stage):
        if stage == pause:
            Path(marker).write_text(stage)
            time.sleep(60)
    store_mod._fault_point = point

from prefvec.server.run import serve
serve()
"""
STAGES = ["mid_body", "after_tmp_write", "after_validate", "after_replace", "before_commit"]


def make_vectors(base_dir: Path, out: Path, n: int) -> list[Path]:
    """``n`` distinct low-rank vectors for the tiny base (different seeds)."""
    from prefvec.vector_store import PreferenceVector, VectorMetadata, fingerprint_model_dir

    fp = fingerprint_model_dir(base_dir)
    shapes = {"self_attn.q_proj": (32, 32), "mlp.down_proj": (64, 32)}
    files = []
    for i in range(n):
        g = torch.Generator().manual_seed(100 + i)
        factors = {
            f"model.layers.{layer}.{m}": (
                torch.randn(4, fan_in, generator=g), torch.randn(fan_out, 4, generator=g)
            )
            for layer in range(2)
            for m, (fan_in, fan_out) in shapes.items()
        }  # fmt: skip
        meta = VectorMetadata(name=f"v{i}", kind="lowrank", base_fingerprint=fp)
        files.append(PreferenceVector.from_factors(meta, factors).save(out / f"v{i}.safetensors"))
    return files


class Child:
    """The server in a child process on a free port."""

    def __init__(self, tmp: Path, base_dir: Path, pause_at: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.marker = tmp / "paused"
        self.marker.unlink(missing_ok=True)
        driver = tmp / "driver.py"
        driver.write_text(DRIVER)
        env = {
            **os.environ,
            "PREFVEC_BASE": str(base_dir), "PREFVEC_HOME": str(tmp / "home"),
            "PREFVEC_STORE_DIR": str(tmp / "store"), "PREFVEC_DEVICE": "cpu",
            "PREFVEC_PORT": str(self.port), "PREFVEC_OPERATOR_KEYS": KEY,
            "PREFVEC_LOG_LEVEL": "warning", "CRASH_MARKER": str(self.marker),
            "CRASH_PAUSE_AT": pause_at or "",
        }  # fmt: skip
        self.proc = subprocess.Popen([sys.executable, str(driver)], env=env)

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "the server exited during start-up"
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("server did not become ready")

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)


def upload(url: str, path: Path, results: dict[str, Any], slow: bool = False) -> None:
    """POST one vector file; record the status (or the error) under its name."""
    data = path.read_bytes()
    boundary = "crashtestboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    body = head + data + tail

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 4096):
            yield body[i : i + 4096]
            if slow:
                time.sleep(0.05)

    try:
        resp = httpx.post(
            url + "/v1/vectors",
            content=chunks(),
            headers={
                "Authorization": f"Bearer {KEY}",
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(len(body)),
            },
            timeout=60,
        )
        results[path.name] = resp.status_code
    except httpx.HTTPError as exc:
        results[path.name] = type(exc).__name__


def check_store(url: str, store_dir: Path) -> list[str]:
    """Every listed version downloads with its sha256; blobs = rows; no tmp files. Returns the
    listed ``name@version`` refs."""
    refs = []
    for latest in httpx.get(url + "/v1/vectors", timeout=10).json()["data"]:
        versions = httpx.get(url + f"/v1/vectors/{latest['name']}/versions", timeout=10).json()
        for rec in versions["data"]:
            ref = f"{rec['name']}@{rec['version']}"
            blob = httpx.get(url + f"/v1/vectors/{ref}/file", timeout=30).content
            assert hashlib.sha256(blob).hexdigest() == rec["sha256"], ref
            assert len(blob) == rec["size_bytes"], ref
            refs.append(ref)
    assert list((store_dir / "tmp").iterdir()) == []  # no stray tmp file
    blobs = {p.name.split(".")[0] for p in (store_dir / "blobs").iterdir()}
    listed = {
        rec["sha256"]
        for name in {r.split("@")[0] for r in refs}
        for rec in httpx.get(url + f"/v1/vectors/{name}/versions", timeout=10).json()["data"]
    }
    assert blobs == listed, (blobs, listed)  # no blob without a row, no row without a blob
    return refs


@pytest.mark.slow
def test_kill_9_during_concurrent_uploads(srv_base_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    files = make_vectors(srv_base_dir, tmp_path, 4 * len(STAGES))
    answered_201: set[str] = set()
    for round_, stage in enumerate(STAGES):
        server = Child(tmp_path, srv_base_dir, pause_at=None if stage == "mid_body" else stage)
        server.wait_ready()
        if round_:  # the store as the previous kill left it, after a restart
            refs = check_store(server.url, tmp_path / "store")
            assert answered_201 <= {r.split("@")[0] for r in refs}
        batch = files[4 * round_ : 4 * round_ + 4]
        results: dict[str, Any] = {}
        threads = [
            threading.Thread(target=upload, args=(server.url, f, results, i == 0))
            for i, f in enumerate(batch)
        ]
        for t in threads:
            t.start()
        if stage == "mid_body":
            time.sleep(0.3)  # the slow upload is mid-body; others may be done or mid-put
        else:
            deadline = time.monotonic() + 30
            while not server.marker.exists():
                assert time.monotonic() < deadline, f"no upload reached {stage}"
                time.sleep(0.01)
        server.kill9()
        for t in threads:
            t.join(60)
        answered_201 |= {
            name.removesuffix(".safetensors") for name, s in results.items() if s == 201
        }
        assert any(s != 201 for s in results.values()), (stage, results)  # the kill hit one
    final = Child(tmp_path, srv_base_dir)
    try:
        final.wait_ready()
        refs = check_store(final.url, tmp_path / "store")
        assert answered_201 <= {r.split("@")[0] for r in refs}
        # the store still takes uploads after all that
        results: dict[str, Any] = {}
        upload(final.url, files[0], results)
        assert results == {"v0.safetensors": 201}
    finally:
        final.proc.terminate()
        final.proc.wait(30)
