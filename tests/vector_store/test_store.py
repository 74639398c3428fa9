"""LocalStore: round trips, versions, integrity, crash safety and concurrent writers."""

from __future__ import annotations

import hashlib
import io
import multiprocessing as mp
import os
import sqlite3
import threading
from pathlib import Path

import pytest
import torch

from prefvec.errors import IntegrityError, NotFoundError, PayloadTooLargeError, ValidationError
from prefvec.vector_store import BaseSpec, LocalStore, PreferenceVector, parse_ref
from prefvec.vector_store import store as store_mod

from ._helpers import (
    assert_consistent,
    crash_worker,
    dense_vector,
    lowrank_vector,
    put_worker,
    snapshot,
)


@pytest.fixture(scope="module")
def base(tiny_base_dir: Path) -> BaseSpec:
    return BaseSpec.from_model_dir(tiny_base_dir)


@pytest.fixture(scope="module")
def dense(base: BaseSpec, tiny_pos_dir: Path, tiny_neg_dir: Path) -> PreferenceVector:
    return dense_vector(base, tiny_pos_dir, tiny_neg_dir)


@pytest.fixture
def store(tmp_path: Path, base: BaseSpec) -> LocalStore:
    return LocalStore(tmp_path / "store", base)


def _file(vec: PreferenceVector, tmp_path: Path, name: str = "v.safetensors") -> Path:
    return vec.save(tmp_path / name)


def _assert_same(a: PreferenceVector, b: PreferenceVector) -> None:
    assert a.tensors.keys() == b.tensors.keys()
    for k in a.tensors:
        assert torch.equal(a.tensors[k], b.tensors[k]), k


# ----------------------------------------------------------------------------- round trips


def test_round_trip_dense_and_lowrank(
    store: LocalStore, base: BaseSpec, dense: PreferenceVector
) -> None:
    low = lowrank_vector(base)
    rec_d, rec_l = store.put(dense), store.put(low)
    assert (rec_d.ref, rec_d.kind, rec_l.ref, rec_l.kind) == (
        "helpful@1",
        "dense",
        "concise@1",
        "lowrank",
    )
    got_d, got_l = store.get("helpful"), store.get("concise@1")
    _assert_same(got_d, dense)
    _assert_same(got_l, low)
    assert got_l.metadata.rank == 2 and got_l.kind == "lowrank"
    for got, rec in ((got_d, rec_d), (got_l, rec_l)):
        assert got.metadata.base_fingerprint == base.fingerprint
        assert got.metadata.version == rec.version and got.metadata.sha256 == rec.sha256
        assert got.metadata.created_at == rec.created_at
        assert hashlib.sha256(store.blob_path(rec.ref).read_bytes()).hexdigest() == rec.sha256
    assert [r.ref for r in store.list()] == ["concise@1", "helpful@1"]
    assert store.stats()["vector_versions"] == 2 and store.stats()["blobs"] == 2


def test_blob_keeps_uploaded_bytes(store: LocalStore, base: BaseSpec, tmp_path: Path) -> None:
    path = _file(lowrank_vector(base), tmp_path)
    rec = store.put(path, metadata={"description": "from a file"})
    assert store.blob_path(rec.ref).read_bytes() == path.read_bytes()
    assert rec.size_bytes == path.stat().st_size
    assert store.record("concise").metadata.description == "from a file"  # the DB row rules


def test_every_source_kind(store: LocalStore, base: BaseSpec, tmp_path: Path) -> None:
    path = _file(lowrank_vector(base), tmp_path)
    data = path.read_bytes()
    chunks = [data[i : i + 100] for i in range(0, len(data), 100)]
    with open(path, "rb") as fh:
        recs = [store.put(s) for s in (path, str(path), data, io.BytesIO(data), chunks, fh)]
    assert [r.version for r in recs] == [1, 2, 3, 4, 5, 6]
    assert len({r.sha256 for r in recs}) == 1 and store.stats()["blobs"] == 1
    with pytest.raises(NotFoundError, match=r"missing\.safetensors"):
        store.put(tmp_path / "missing.safetensors")


def test_versions_increment_and_latest(store: LocalStore, base: BaseSpec) -> None:
    vecs = [lowrank_vector(base, seed=s) for s in range(3)]
    assert [store.put(v).version for v in vecs] == [1, 2, 3]
    assert [r.version for r in store.versions("concise")] == [1, 2, 3]
    assert store.record("concise").version == store.record("concise@latest").version == 3
    for i, v in enumerate(vecs, start=1):
        _assert_same(store.get(f"concise@{i}"), v)
    _assert_same(store.get("concise"), vecs[2])
    # immutable: no overwrite, and a deleted version number is never reused
    assert not any(hasattr(store, m) for m in ("overwrite", "update", "replace"))
    store.delete("concise", 3)
    assert store.put(vecs[2]).version == 4
    _assert_same(store.get("concise@1"), vecs[0])


def test_not_found_names_the_ref(store: LocalStore, base: BaseSpec) -> None:
    store.put(lowrank_vector(base))
    with pytest.raises(NotFoundError, match=r"'nope' not found"):
        store.get("nope")
    with pytest.raises(NotFoundError, match=r"'concise@7' not found \(versions: 1\)"):
        store.get("concise@7")
    with pytest.raises(NotFoundError, match="'concise@2'"):
        store.delete("concise", 2)
    assert store.versions("nope") == []


@pytest.mark.parametrize("ref", ["a@x", "a@0", "a@-1", "../b", "a/b", "/etc/x", "a@1@2", "", "a@"])
def test_parse_ref_rejects_malformed(ref: str) -> None:
    with pytest.raises(ValidationError, match="ref"):
        parse_ref(ref)


def test_parse_ref() -> None:
    assert parse_ref("helpful") == ("helpful", None)
    assert parse_ref("helpful@latest") == ("helpful", None)
    assert parse_ref("helpful@12") == ("helpful", 12)


def test_integrity_failure_detected(store: LocalStore, base: BaseSpec) -> None:
    rec = store.put(lowrank_vector(base))
    blob = store.blob_path(rec.ref)
    data = bytearray(blob.read_bytes())
    data[-5] ^= 0x01  # one bit of one value
    blob.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=rf"concise@1.*recorded {rec.sha256}"):
        store.get("concise")
    blob.unlink()
    with pytest.raises(IntegrityError, match="missing"):
        store.get("concise")


def test_delete_removes_blob_only_when_unreferenced(
    store: LocalStore, base: BaseSpec, tmp_path: Path
) -> None:
    vec = lowrank_vector(base)
    path = _file(vec, tmp_path)  # (two saves may differ: safetensors orders header keys freely)
    r1, r2 = store.put(path), store.put(path)  # two versions, one blob
    assert r1.sha256 == r2.sha256
    blob = store.blob_path(r1.ref)
    assert [r.ref for r in store.delete("concise", 1)] == ["concise@1"]
    assert blob.exists()
    _assert_same(store.get("concise@2"), vec)
    store.delete("concise")
    assert not blob.exists() and store.list() == []
    with pytest.raises(NotFoundError):
        store.get(r2.ref)


def test_streamed_upload_stops_at_the_bound(tmp_path: Path, base: BaseSpec) -> None:
    store = LocalStore(tmp_path / "s", base, max_vector_bytes=1000)

    class Endless(io.RawIOBase):
        def __init__(self) -> None:
            self.served = 0

        def read(self, n: int = -1) -> bytes:
            self.served += n
            return b"\0" * n

    src = Endless()
    with pytest.raises(PayloadTooLargeError, match="more than 1000 bytes"):
        store.put(src)
    assert src.served == 1001
    with pytest.raises(PayloadTooLargeError, match="exceeds the bound of 1000"):
        store.put(b"x" * 1001)
    assert_consistent(store)


def test_connect_shares_the_db(store: LocalStore) -> None:
    with store.connect() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.execute("CREATE TABLE IF NOT EXISTS other (x INTEGER)")
    names = {r[0] for r in sqlite3.connect(store.db_path).execute("SELECT name FROM sqlite_master")}
    assert {"vectors", "recipes", "other"} <= names


# ----------------------------------------------------------------------------- crash safety


def _raise_at(stage: str):  # type: ignore[no-untyped-def]
    def hook(at: str) -> None:
        if at == stage:
            raise OSError(f"simulated crash at {at}")

    return hook


@pytest.mark.parametrize(
    "fault",
    ["after_tmp_write", "after_validate", "after_replace", "before_commit", "os.replace", "insert"],
)
def test_failed_put_leaves_store_unchanged(
    fault: str, tmp_path: Path, base: BaseSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "s", base)
    store.put(lowrank_vector(base, seed=0))
    before = snapshot(store)
    if fault == "os.replace":
        monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    elif fault == "insert":

        def boom(*a: object, **k: object) -> None:
            raise sqlite3.OperationalError("simulated insert failure")

        monkeypatch.setattr(LocalStore, "_insert_row", boom)
    else:
        monkeypatch.setattr(store_mod, "_fault_point", _raise_at(fault))
    with pytest.raises((OSError, sqlite3.Error)):
        store.put(lowrank_vector(base, seed=1))
    monkeypatch.undo()
    assert snapshot(store) == before
    assert_consistent(store)
    assert snapshot(LocalStore(store.root, base)) == before
    assert store.put(lowrank_vector(base, seed=1)).version == 2  # the store still works


@pytest.mark.parametrize("stage", ["after_tmp_write", "before_commit"])
def test_killed_writer_leaves_store_unchanged(stage: str, tmp_path: Path, base: BaseSpec) -> None:
    root = tmp_path / "s"
    store = LocalStore(root, base)
    store.put(lowrank_vector(base, seed=0))
    before = snapshot(store)
    path = lowrank_vector(base, seed=1).save(tmp_path / "new.safetensors")
    child = mp.get_context("spawn").Process(
        target=crash_worker, args=(str(root), base, str(path), stage)
    )
    child.start()
    child.join(120)
    assert child.exitcode == 17  # died mid-put
    leftovers = list(store.tmp_dir.iterdir()) + list(store.blobs_dir.iterdir())
    assert len(leftovers) == 2  # a dead writer's tmp file, or a blob without a row
    assert snapshot(store)["list"] == before["list"] and snapshot(store)["rows"] == before["rows"]
    reopened = LocalStore(root, base)
    assert snapshot(reopened) == before
    assert_consistent(reopened)
    assert reopened.put(path).version == 2


# ----------------------------------------------------------------------------- concurrency


def test_concurrent_puts_threads_and_processes(tmp_path: Path, base: BaseSpec) -> None:
    root = tmp_path / "s"
    store = LocalStore(root, base)
    files = [
        str(lowrank_vector(base, seed=s).save(tmp_path / f"v{s}.safetensors")) for s in range(6)
    ]
    ctx = mp.get_context("spawn")
    out, go = ctx.Queue(), ctx.Event()
    readies = [ctx.Event() for _ in range(2)]
    procs = [
        ctx.Process(
            target=put_worker, args=(str(root), base, files[3 * i : 3 * i + 3], readies[i], go, out)
        )
        for i in range(2)
    ]
    for p in procs:
        p.start()
    for r in readies:
        assert r.wait(120)
    thread_versions: list[int] = []
    lock = threading.Lock()

    def put_same() -> None:  # threads share one content: same blob, distinct versions
        for _ in range(2):
            v = store.put(files[0]).version
            with lock:
                thread_versions.append(v)

    threads = [threading.Thread(target=put_same) for _ in range(4)]
    go.set()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    proc_versions = [v for _ in procs for v in out.get(timeout=120)]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sorted(thread_versions + proc_versions) == list(range(1, 15))
    assert [r.version for r in store.versions("concise")] == list(range(1, 15))
    for rec in store.versions("concise"):
        store.get(rec.ref)  # every blob present and intact
    assert_consistent(store)
    assert store.stats()["blobs"] == 6


def test_busy_store_is_a_503_not_a_crash(tmp_path: Path) -> None:
    """A writer that cannot get SQLite's lock in time gets ServiceUnavailableError; nothing lost."""
    from prefvec.errors import ServiceUnavailableError
    from prefvec.vector_store import LocalStore

    store = LocalStore(tmp_path / "s", timeout=0.2)
    blocker = store.connect(autocommit=True)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        with pytest.raises(ServiceUnavailableError, match="busy"), store._write():
            pass
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    with store._write():  # free again
        pass
