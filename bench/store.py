"""Benchmark 5: the vector store: loading as a ratio of a raw read, upload + validation of 50 MB.

A synthetic low-rank vector of the base (q/k/v/o/gate/up/down, rank chosen so the file is about
``--mb`` MB; rank 41 ≈ 50 MB on the bundled model) is written once, then:

* raw read of the file (``read()`` into bytes, page cache warm) vs ``safetensors.load_file``,
  ``PreferenceVector.load`` and ``LocalStore.get`` (sha256 re-check + load) of the same file;
* ``LocalStore.put`` of the file (streamed copy + sha256 + fsync + validation against the base +
  atomic commit) and of a binary file object (the upload route's shape), next to
  ``validate_vector_file`` alone and a raw copy + fsync of the same bytes.

Run: ``python bench/store.py [--quick] [--mb 50] [--out results/store.json]``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from bench.common import (
    Report,
    command_line,
    linear_shapes,
    load,
    lowrank_vector,
    median,
    model_spec,
    parser,
    random_factors,
    setup,
    time_interleaved,
)


def rank_for(model: torch.nn.Module, mb: float) -> int:
    """The rank whose fp32 factors over the targeted modules take about ``mb`` MB."""
    per_rank = sum(n_in + n_out for n_in, n_out in linear_shapes(model).values()) * 4
    return max(1, round(mb * 1e6 / per_rank))


def raw_copy(src: Path, dst: Path) -> None:
    """Copy + fsync: the I/O floor of a put."""
    with open(src, "rb") as f, open(dst, "wb") as g:
        shutil.copyfileobj(f, g, 1 << 20)
        g.flush()
        os.fsync(g.fileno())
    dst.unlink()


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from safetensors.torch import load_file

    from prefvec.models import resolve_model_dir
    from prefvec.vector_store import BaseSpec, LocalStore
    from prefvec.vector_store.format import PreferenceVector
    from prefvec.vector_store.validation import validate_vector_file

    p = parser("store", __doc__.splitlines()[0])
    p.add_argument("--mb", type=float, default=50.0, help="vector size in MB (real run)")
    args = p.parse_args(argv)
    machine = setup(args)
    rep = Report("store", command_line("store", argv), machine)
    repeats = args.repeats or (1 if args.quick else 7)
    spec = model_spec(args)
    model = load(spec, torch.float32, "cpu").model
    base = BaseSpec.from_model_dir(resolve_model_dir(spec))
    rank = rank_for(model, 0.5 if args.quick else args.mb)
    tmp = Path(tempfile.mkdtemp(prefix="prefvec-bench-store-"))
    try:
        vec = lowrank_vector(base.fingerprint, "big", random_factors(model, rank, seed=80))
        path = vec.save(tmp / "big.safetensors")
        size = path.stat().st_size
        store = LocalStore(tmp / "store", base=base)
        ref = store.put(path).ref

        def raw() -> None:
            with open(path, "rb") as f:
                f.read()

        loads = time_interleaved(
            {
                "raw read": raw,
                "safetensors load_file": lambda: load_file(str(path)),
                "PreferenceVector.load": lambda: PreferenceVector.load(path),
                "LocalStore.get (sha256 + load)": lambda: store.get(ref),
            },
            repeats,
        )
        t_raw = median(loads["raw read"])
        for case, ts in loads.items():
            t = median(ts)
            rep.row(
                case,
                section=f"load a {size / 1e6:.1f} MB low-rank vector (rank {rank})",
                ms=t * 1e3,
                ratio_to_raw_read=t / t_raw,
                GBps=size / t / 1e9,
            )

        def put_file() -> None:
            with open(path, "rb") as f:
                store.put(f, metadata={"name": "upload"})

        puts = time_interleaved(
            {
                "raw copy + fsync": lambda: raw_copy(path, tmp / "copy.bin"),
                "validate_vector_file": lambda: validate_vector_file(path, base, load=False),
                "LocalStore.put(path)": lambda: store.put(path),
                "LocalStore.put(file object)": put_file,
            },
            repeats,
        )
        t_copy = median(puts["raw copy + fsync"])
        for case, ts in puts.items():
            t = median(ts)
            rep.row(
                case,
                section=f"upload + validation of {size / 1e6:.1f} MB",
                ms=t * 1e3,
                ratio_to_raw_copy=t / t_copy,
                GBps=size / t / 1e9,
            )
        rep.extra["vector_bytes"] = size
        rep.extra["rank"] = rank
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rep.notes.append(
        f"medians of {repeats} interleaved repeats; page cache warm; tmp on {tmp.parent}"
    )
    return rep.write(args.out)


if __name__ == "__main__":
    main()
