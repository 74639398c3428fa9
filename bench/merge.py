"""Benchmark 1: dense merges against the memory-streaming bound, PEFT and mergekit.

* ``ModelMerger.apply`` of K = 1, 2, 3 dense vectors (every parameter) in bf16 and fp32, against
  the bound measured in the same run: K+1 in-place ``add_`` passes over the same tensors (the
  restore ``copy_`` plus K adds stream the same bytes). A fused alternative (restore and the first
  add in one ``torch.add(backup, δ_1, alpha=w_1, out=param)``, then ``torch._foreach_add_``) shows
  what a change in ``ModelMerger`` would gain.
* Low-rank: three rank-16 vectors merged into the weights by the engine's path (densify each
  ``B @ A``, then ``ModelMerger.apply``), by a bench-only alternative (exact rank concatenation,
  one ``addmm_`` per module), and by PEFT ``add_weighted_adapter(cat)`` + ``merge_adapter``.
* ``merge_dense`` linear / TIES of three dense vectors in bf16, and mergekit (separate venv at
  ``/tmp/mk``) doing task arithmetic / TIES of three synthetic fine-tunes saved as model folders.

Run: ``python bench/merge.py [--quick] [--device cuda] [--out results/merge.json]``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from bench.common import (
    Report,
    command_line,
    dtype_of,
    load,
    lowrank_vector,
    median,
    model_spec,
    parser,
    peft_wrap,
    random_dense,
    random_factors,
    setup,
    time_interleaved,
    time_once,
)

MERGEKIT = Path("/tmp/mk/bin/mergekit-yaml")


# ------------------------------------------------------------------ dense merge vs the bound


def add_passes(params: Sequence[torch.Tensor], deltas: Sequence[Mapping[str, Any]], n: int) -> Any:
    """The bound: ``n`` in-place add passes of the deltas over ``params`` (same bytes)."""
    names = list(deltas[0])

    @torch.no_grad()
    def run() -> None:
        for j in range(n):
            d = deltas[j % len(deltas)]
            torch._foreach_add_(list(params), [d[k] for k in names], alpha=1e-8)

    return run


class FusedMerger:
    """Bench-only alternative to ``ModelMerger.apply``: restore fused with the first add.

    ``param = backup + w_1·δ_1`` (one pass: read 2, write 1) replaces ``copy_`` + ``add_``
    (read 3, write 2), and the remaining adds go through ``torch._foreach_add_`` (one call for
    all tensors instead of one Python call per tensor).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.params = dict(model.named_parameters())
        self.backup = {n: p.detach().clone() for n, p in self.params.items()}

    @torch.no_grad()
    def apply(self, deltas_and_weights: Sequence[tuple[Mapping[str, torch.Tensor], float]]) -> None:
        (first, w1), rest = deltas_and_weights[0], deltas_and_weights[1:]
        names = list(first)
        for n in names:
            torch.add(self.backup[n], first[n], alpha=w1, out=self.params[n].data)
        params = [self.params[n].data for n in names]
        for delta, w in rest:
            torch._foreach_add_(params, [delta[n] for n in names], alpha=w)

    @torch.no_grad()
    def restore(self) -> None:
        for n, p in self.params.items():
            p.data.copy_(self.backup[n])


def bench_dense(
    rep: Report, spec: str, dtype_name: str, device: str, ks: Sequence[int], repeats: int
) -> None:
    """ModelMerger.apply / fused alternative vs K+1 add passes, per K, one dtype."""
    from prefvec.merging import ModelMerger

    dtype = dtype_of(dtype_name)
    loaded = load(spec, dtype, device)
    model = loaded.model
    merger = ModelMerger(model)
    fused = FusedMerger(model)
    deltas = [random_dense(model, seed=10 + k) for k in range(max(ks))]
    params = [p.data for _, p in model.named_parameters()]
    nbytes = sum(p.numel() * p.element_size() for p in params)
    for k in ks:
        dw = [(deltas[i], 0.5 + 0.25 * i) for i in range(k)]
        times = time_interleaved(
            {
                "merger": partial(merger.apply, dw),
                "fused": partial(fused.apply, dw),
                "bound": add_passes(params, deltas[:k], k + 1),
            },
            repeats,
            device=device,
        )
        merger.restore()
        t_m, t_f, t_b = (median(times[x]) for x in ("merger", "fused", "bound"))
        gbps = nbytes * 3 * (k + 1) / t_b / 1e9  # an add reads 2 and writes 1 tensor
        rep.row(
            f"K={k} {dtype_name}",
            section="dense merge vs streaming bound",
            ModelMerger_ms=t_m * 1e3,
            bound_K1_adds_ms=t_b * 1e3,
            ratio_to_bound=t_m / t_b,
            fused_alt_ms=t_f * 1e3,
            fused_ratio=t_f / t_b,
            stream_GBps=gbps,
            model_MB=nbytes / 1e6,
        )
        rep.target(
            f"dense K={k} {dtype_name}: ModelMerger / bound",
            t_m / t_b,
            "<= 1.25",
            t_m / t_b <= 1.25,
        )
    merger.restore()


# -------------------------------------------------------------------------- low-rank vs PEFT


def bench_lowrank(rep: Report, spec: str, device: str, repeats: int, tmp: Path) -> None:
    """Merging three rank-16 vectors into the weights: engine path, exact addmm, PEFT cat."""
    from prefvec.merging import ModelMerger, merge_lowrank

    loaded = load(spec, torch.float32, device)
    model = loaded.model
    facs = [random_factors(model, 16, seed=20 + i) for i in range(3)]
    facs_dev = [{m: (a.to(device), b.to(device)) for m, (a, b) in f.items()} for f in facs]
    weights = [0.8, -0.4, 0.3]
    vecs = [lowrank_vector(loaded.fingerprint, f"v{i}", f) for i, f in enumerate(facs)]
    merger = ModelMerger(model)
    modules = dict(model.named_modules())

    def engine_path() -> None:  # what Engine._dense_builder + ModelMerger.apply do
        dense = [{m + ".weight": b @ a for m, (a, b) in f.items()} for f in facs_dev]
        merger.apply(list(zip(dense, weights, strict=True)))

    @torch.no_grad()
    def addmm_path() -> None:  # exact rank concatenation, one GEMM per module
        merger.restore()
        for m, (a_cat, b_cat) in merge_lowrank(facs_dev, weights).items():
            w = merger._touch(m + ".weight")
            w.addmm_(b_cat, a_cat)  # (out, in) += (out, Σr) @ (Σr, in)

    times = time_interleaved({"engine": engine_path, "addmm": addmm_path}, repeats, device=device)
    merger.restore()
    del modules

    peft_loaded = load(spec, torch.float32, device)
    pm = peft_wrap(peft_loaded.model, vecs, tmp)
    lora = pm.base_model

    def peft_path() -> None:
        lora.add_weighted_adapter(["v0", "v1", "v2"], weights, "mix", combination_type="cat")
        lora.merge_adapter(["mix"])

    def peft_undo() -> None:
        lora.unmerge_adapter()
        lora.delete_adapter("mix")

    peft_times = []
    for i in range(repeats + 1):
        t = time_once(peft_path, device)
        peft_undo()
        if i:
            peft_times.append(t)
    t_e, t_a, t_p = median(times["engine"]), median(times["addmm"]), median(peft_times)
    rep.row(
        "3 vectors r16, fp32",
        section="low-rank vectors merged into the weights",
        engine_densify_apply_ms=t_e * 1e3,
        addmm_alt_ms=t_a * 1e3,
        peft_cat_merge_ms=t_p * 1e3,
        peft_over_engine=t_p / t_e,
        peft_over_addmm=t_p / t_a,
    )


# --------------------------------------------------------------------- merge_dense / mergekit


def bench_methods(rep: Report, spec: str, device: str, repeats: int) -> dict[str, float]:
    """``merge_dense`` (linear, ties) of three dense vectors in bf16 + apply, in process."""
    from prefvec.merging import ModelMerger, merge_dense

    loaded = load(spec, torch.bfloat16, device)
    model = loaded.model
    merger = ModelMerger(model)
    deltas = [random_dense(model, seed=30 + i) for i in range(3)]
    out: dict[str, float] = {}
    for method in ("linear", "ties"):

        def run(method: str = method) -> None:
            merged = merge_dense(deltas, [1.0, 0.5, 0.5], method, density=0.5, seed=0)
            merger.apply_merged(merged)

        ts = [time_once(run, device) for _ in range(repeats)]
        out[method] = median(ts)
    merger.restore()
    return out


def save_finetunes(spec: str, root: Path, n: int) -> tuple[Path, list[Path]]:
    """Base and ``n`` synthetic fine-tunes (base + random dense deltas) as bf16 model folders."""
    loaded = load(spec, torch.bfloat16, "cpu")
    base_dir = root / "base"
    loaded.model.save_pretrained(base_dir)
    loaded.tokenizer.save_pretrained(base_dir)
    dirs = []
    for i in range(n):
        with torch.no_grad():
            backup = {k: v.clone() for k, v in loaded.model.state_dict().items()}
            g = torch.Generator().manual_seed(40 + i)
            for p in loaded.model.parameters():
                p.add_(torch.randn(p.shape, generator=g).to(p.dtype) * 1e-3)
            d = root / f"ft{i}"
            loaded.model.save_pretrained(d)
            loaded.model.load_state_dict(backup)
        dirs.append(d)
    return base_dir, dirs


def mergekit_config(method: str, base: Path, fts: Sequence[Path]) -> str:
    weights = [1.0, 0.5, 0.5]
    lines = [f"merge_method: {method}", f"base_model: {base}", "dtype: bfloat16", "models:"]
    for ft, w in zip(fts, weights, strict=False):
        lines += [f"  - model: {ft}", "    parameters:", f"      weight: {w}"]
        if method == "ties":
            lines.append("      density: 0.5")
    lines += ["parameters:", "  normalize: false"]
    return "\n".join(lines) + "\n"


def bench_mergekit(rep: Report, spec: str, tmp: Path, ours: dict[str, float]) -> None:
    """mergekit-yaml task_arithmetic / ties on three fine-tunes (wall time, start-up apart)."""
    if not MERGEKIT.exists():
        rep.notes.append(f"mergekit: not measured ({MERGEKIT} missing: venv install failed)")
        return
    t0 = time.perf_counter()
    subprocess.run([str(MERGEKIT), "--help"], check=True, capture_output=True)
    startup = time.perf_counter() - t0
    base, fts = save_finetunes(spec, tmp / "mk", 3)
    for method, ours_key in (("task_arithmetic", "linear"), ("ties", "ties")):
        cfg = tmp / f"{method}.yml"
        cfg.write_text(mergekit_config(method, base, fts))
        out = tmp / f"out-{method}"
        t0 = time.perf_counter()
        proc = subprocess.run(
            [str(MERGEKIT), str(cfg), str(out), "--no-copy-tokenizer", "--lazy-unpickle"],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            rep.notes.append(f"mergekit {method} failed: {proc.stderr[-400:]}")
            continue
        ours_s = ours[ours_key]
        rep.row(
            f"3 fine-tunes, {method}, bf16",
            section="mergekit",
            mergekit_wall_s=wall,
            mergekit_startup_s=startup,
            mergekit_minus_startup_s=wall - startup,
            prefvec_merge_apply_s=ours_s,
            speedup_vs_mergekit_work=(wall - startup) / ours_s,
        )
        shutil.rmtree(out, ignore_errors=True)


# ---------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = parser("merge", __doc__.splitlines()[0])
    p.add_argument(
        "--parts",
        default="dense,lowrank,methods,mergekit",
        help="comma list of: dense, lowrank, methods, mergekit (mergekit needs methods)",
    )
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))
    machine = setup(args)
    rep = Report("merge", command_line("merge", argv), machine)
    repeats = args.repeats or (1 if args.quick else 5)
    spec = model_spec(args)
    tmp = Path(tempfile.mkdtemp(prefix="prefvec-bench-merge-"))
    try:
        if "dense" in parts:
            for dtype_name in ("bf16", "fp32"):
                bench_dense(rep, spec, dtype_name, args.device, (1, 2, 3), repeats)
            rep.write(args.out)  # partial results survive a later failure
        if "lowrank" in parts:
            bench_lowrank(rep, spec, args.device, repeats, tmp)
            rep.write(args.out)
        if "methods" in parts:
            ours = bench_methods(rep, spec, args.device, 1)
            rep.row(
                "3 dense vectors, bf16, in process",
                section="merge_dense + apply",
                linear_s=ours["linear"],
                ties_s=ours["ties"],
            )
            rep.write(args.out)
            if "mergekit" in parts and not args.quick:
                bench_mergekit(rep, spec, tmp, ours)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rep.notes.append(
        f"dense and low-rank rows: medians of {repeats} repeats (bound = K+1 `_foreach_add_` "
        "passes); merge_dense and mergekit rows: one run each"
    )
    return rep.write(args.out)


if __name__ == "__main__":
    main()
