"""Benchmark 4: the HTTP server under load on loopback (bounded in requests and time).

Starts the prefvec app with uvicorn in a background thread (same process), a store holding three
rank-16 low-rank vectors and one dense vector (q/o projections), and a recipe ``fixed`` over the
dense vector and one low-rank vector (dense path: one cached merge shared by every batch). A load
generator (httpx, asyncio) then keeps C requests in flight, C = 1, 4, 8, 16, against
``POST /v1/completions`` (greedy, fixed ``max_tokens``), in two workloads:

* ``distinct``: every request its own weights over the three low-rank vectors (low-rank mixing);
* ``recipe``: every request names the recipe ``fixed``.

Reported per level: completion tokens/s, requests/s, p50/p99 latency. Targets: throughput at C=8
≥ 3× C=1; HTTP + scheduling overhead at C=1 ≤ 5% of in-process generation (the same engine called
directly, ``Engine.generate``, same prompt, weights and token count).

``--backend vllm`` (issue 13; run it in ``.venv-vllm`` on CPU) serves the same store through vLLM
and runs the workloads ``base`` (no vectors), ``one`` (every request the same low-rank recipe) and
``distinct8`` (8 distinct low-rank recipes, cycled; each one exact LoRA adapter), C = 1, 8, 16 by
default; its overhead row compares HTTP with calling vLLM's ``AsyncLLM.generate`` directly with
the same prompt ids, sampling parameters and adapter (target <= 5 %). ``--workloads`` picks
workloads for either backend (``distinct`` and ``recipe`` are the transformers defaults; the
vLLM backend refuses ``recipe``, a dense merge).

Run: ``python bench/serve.py [--quick] [--device cuda] [--backend vllm] [--out FILE.json]``
"""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from bench.common import (
    Report,
    command_line,
    lowrank_vector,
    median,
    model_spec,
    parser,
    percentile,
    random_factors,
    setup,
    tiny_model_dir,
)

PROMPTS = [
    "Once upon a time, in a village by the sea,",
    "The history of the bicycle begins",
    "Here is a short story about a robot who",
    "The most important thing about cooking pasta is",
]
REFS = ("v0", "v1", "v2")
VLLM_TINY = dict(
    hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1
)


def fill_store(root: Path, spec: str) -> None:
    """Three low-rank vectors, one dense vector (q/o projections) and the recipe ``fixed``."""
    from bench.common import load

    from prefvec.models import resolve_model_dir
    from prefvec.vector_store import BaseSpec, LocalStore
    from prefvec.vector_store.format import PreferenceVector, VectorMetadata

    model_dir = resolve_model_dir(spec)
    base = BaseSpec.from_model_dir(model_dir)
    store = LocalStore(root, base=base)
    model = load(spec, torch.float32, "cpu").model
    for i, ref in enumerate(REFS):
        store.put(lowrank_vector(base.fingerprint, ref, random_factors(model, 16, seed=60 + i)))
    g = torch.Generator().manual_seed(70)
    dense = {
        n: torch.randn(p.shape, generator=g) * 1e-3
        for n, p in model.named_parameters()
        if n.endswith(("q_proj.weight", "o_proj.weight"))
    }
    meta = VectorMetadata(name="d0", kind="dense", base_fingerprint=base.fingerprint)
    store.put(PreferenceVector(meta, dense))
    store.put_recipe({"name": "fixed", "weights": {"d0": 1.0, "v0": 0.5}})


class ServerThread:
    """The prefvec app under uvicorn in a daemon thread, on a free loopback port."""

    def __init__(self, settings: Any) -> None:
        import uvicorn

        from prefvec.server.app import create_app

        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=settings.port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{settings.port}"

    def start(self, timeout: float = 300.0) -> None:
        import httpx

        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("server did not become ready")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def body(i: int, mode: str, tokens: int) -> dict[str, Any]:
    """Request ``i`` of a workload: distinct weights per request, or the recipe."""
    req: dict[str, Any] = {
        "prompt": PROMPTS[i % len(PROMPTS)],
        "max_tokens": tokens,
        "temperature": 0.0,
    }
    if mode == "recipe":
        req["recipe"] = "fixed"
    elif mode == "base":
        pass
    elif mode == "one":
        req["preferences"] = {"v0": 0.8, "v1": -0.4}
    elif mode == "distinct8":
        rng = random.Random(i % 8)
        req["preferences"] = {r: round(rng.uniform(-1.0, 1.0), 3) for r in REFS}
    else:
        rng = random.Random(i)
        req["preferences"] = {r: round(rng.uniform(-1.0, 1.0), 3) for r in REFS}
    return req


async def load_level(
    url: str, mode: str, conc: int, n_req: int, tokens: int, time_limit: float, first: int = 0
) -> dict[str, Any]:
    """Keep ``conc`` requests in flight until ``n_req`` are done or ``time_limit`` passes."""
    import httpx

    lat: list[float] = []
    produced = 0
    next_i = first
    n_req += first
    deadline = time.perf_counter() + time_limit
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def worker() -> None:
            nonlocal next_i, produced
            while next_i < n_req and time.perf_counter() < deadline:
                i, next_i = next_i, next_i + 1
                t0 = time.perf_counter()
                r = await client.post("/v1/completions", json=body(i, mode, tokens))
                r.raise_for_status()
                lat.append(time.perf_counter() - t0)
                produced += int(r.json()["usage"]["completion_tokens"])

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        wall = time.perf_counter() - t0
    return {
        "requests": len(lat),
        "tok_s": produced / wall,
        "req_s": len(lat) / wall,
        "p50_s": percentile(lat, 0.5),
        "p99_s": percentile(lat, 0.99),
        "tokens": produced,
    }


def paired_overhead(
    state: Any, url: str, mode: str, n: int, tokens: int, reference: Any = None
) -> dict[str, float]:
    """Request i in process (or through ``reference``), then the same request over HTTP,
    alternating, i = 0..n-1.

    Returns the median of the per-pair ratios HTTP / in-process − 1 (and of the differences in
    ms): pairing cancels the slow drifts of a shared machine that separate blocks pick up.
    """
    import httpx

    ratios, diffs = [], []
    with httpx.Client(base_url=url, timeout=600) as client:
        for i in range(n):
            t_in, _ = (reference or in_process)(state, mode, 1, tokens, first=i)
            t0 = time.perf_counter()
            client.post("/v1/completions", json=body(i, mode, tokens)).raise_for_status()
            t_http = time.perf_counter() - t0
            ratios.append(t_http / t_in)
            diffs.append((t_http - t_in) * 1e3)
    return {"paired_overhead": median(ratios) - 1.0, "paired_overhead_ms": median(diffs)}


def in_process(state: Any, mode: str, n: int, tokens: int, first: int = 0) -> tuple[float, int]:
    """Median seconds of the serving service without HTTP for requests 0..n-1 of C=1 (and
    tokens produced)."""
    service = state.service
    times, produced = [], 0
    for i in range(first, first + n):
        req = body(i, mode, tokens)
        t0 = time.perf_counter()
        resolved = service.resolve(preferences=req.get("preferences"), recipe=req.get("recipe"))
        greq = service.prepare(resolved, prompt=req["prompt"], max_tokens=tokens, temperature=0.0)
        done = run_on_backend_loop(state, service.complete(greq))
        times.append(time.perf_counter() - t0)
        produced += done.usage.completion_tokens
    return median(times), produced


def run_on_backend_loop(state: Any, coro: Any) -> Any:
    """Run ``coro`` to its end: in the server's own event loop for vLLM (its engine is bound to
    the loop it first served in), in a fresh loop otherwise."""
    loop = getattr(state.backend, "_loop", None)
    if state.backend.name != "vllm" or loop is None:
        return asyncio.run(coro)
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


def direct_vllm(state: Any, mode: str, n: int, tokens: int, first: int = 0) -> tuple[float, int]:
    """Median seconds of vLLM's ``AsyncLLM.generate`` called directly (no prefvec in between)
    with what prefvec would send: the same prompt ids, sampling parameters and adapter."""
    service, backend = state.service, state.backend
    times, produced = [], 0
    for i in range(first, first + n):
        req = body(i, mode, tokens)
        resolved = service.resolve(preferences=req.get("preferences"), recipe=req.get("recipe"))
        greq = service.prepare(resolved, prompt=req["prompt"], max_tokens=tokens, temperature=0.0)

        async def one(greq: Any = greq, resolved: Any = resolved) -> tuple[float, int]:
            entry = await backend._acquire(resolved)  # cached by the warm-up: a hit
            try:
                lora = backend._lora_request(entry) if entry is not None else None
                params = backend._sampling(greq)
                t0, count = time.perf_counter(), 0
                prompt = {"prompt_token_ids": list(greq.prompt_ids)}
                async for out in backend.engine.generate(
                    prompt, params, f"direct-{greq.id}", lora_request=lora
                ):
                    count += len(out.outputs[0].token_ids)
                return time.perf_counter() - t0, count
            finally:
                await backend._release(entry)

        dt, count = run_on_backend_loop(state, one())
        times.append(dt)
        produced += count
    return median(times), produced


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = parser("serve", __doc__.splitlines()[0])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--tokens", type=int, default=None, help="max_tokens per request")
    p.add_argument("--levels", default=None, help="concurrency levels, e.g. 1,4,8,16")
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds per level at most")
    p.add_argument("--rounds", type=int, default=2, help="requests per level = rounds × C (C>1)")
    p.add_argument(
        "--c1-requests", type=int, default=4, help="requests at C=1 (and in process, for overhead)"
    )
    p.add_argument(
        "--batching",
        default="continuous",
        choices=["continuous", "static"],
        help="transformers backend batching: continuous (iteration-level) or static",
    )
    p.add_argument("--backend", default="transformers", choices=["transformers", "vllm"])
    p.add_argument(
        "--workloads",
        default=None,
        help="comma list of distinct, recipe, base, one, distinct8 (default: distinct,recipe; "
        "vllm: base,one,distinct8)",
    )
    args = p.parse_args(argv)
    machine = setup(args)
    rep = Report("serve", command_line("serve", argv), machine)
    tokens = args.tokens or (4 if args.quick else 32)
    vllm = args.backend == "vllm"
    default_levels = "1,2" if args.quick else ("1,8,16" if vllm else "1,4,8,16")
    levels = [int(x) for x in (args.levels or default_levels).split(",")]
    # vLLM's CPU attention needs head size >= 32: the --quick model gets 2 heads of 32
    spec = str(tiny_model_dir(**VLLM_TINY)) if vllm and args.quick else model_spec(args)
    root = Path(tempfile.mkdtemp(prefix="prefvec-bench-serve-"))
    from prefvec.server.settings import ServerSettings

    fill_store(root / "store", spec)
    settings = ServerSettings(
        base=spec,
        store_dir=root / "store",
        dtype=args.dtype,
        device=args.device,
        port=free_port(),
        max_batch_size=8,
        max_queue=256,
        log_level="warning",
        batching=args.batching,
        backend=args.backend,
        max_loras=8,
        max_lora_rank=64,
        vllm_kv_cache_gib=2,
    )
    srv = ServerThread(settings)
    srv.start()
    try:
        run_levels(rep, srv, args, levels, tokens)
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)
    return rep.write(args.out)


def run_levels(rep: Report, srv: ServerThread, args: Any, levels: list[int], tokens: int) -> None:
    """Every workload at every concurrency level, then the C=1 overhead against in-process."""
    state = srv.app.state.prefvec
    n1 = 2 if args.quick else args.c1_requests
    vllm = state.backend.name == "vllm"
    default = "base,one,distinct8" if vllm else "distinct,recipe"
    workloads = (args.workloads or default).split(",")
    tok_s: dict[str, dict[int, float]] = {}
    for mode in workloads:
        for i in range(8 if mode == "distinct8" else 1):  # warm-up (distinct8: every adapter)
            asyncio.run(load_level(srv.url, mode, 1, 1, tokens, args.time_limit, first=i))
        base_s, base_tok = in_process(state, mode, n1, tokens)
        res: dict[int, dict[str, Any]] = {}
        for c in levels:
            n_req = n1 if c == 1 else args.rounds * c
            before = state.backend.stats()
            res[c] = asyncio.run(load_level(srv.url, mode, c, n_req, tokens, args.time_limit))
            after = state.backend.stats()
            if vllm:  # vLLM's own figures: the largest batch it ran so far
                res[c]["max_batch_seen"] = after["vllm"]["max_running_seen"]
            else:
                steps = after["decode_steps"] - before["decode_steps"]
                rows = after["decode_rows"] - before["decode_rows"]
                res[c]["decode_steps"] = steps
                res[c]["mean_batch"] = round(rows / max(1, steps), 2)
            rep.row(
                f"C={c}",
                section=f"workload: {mode} ({tokens} tokens/request, {args.dtype})",
                **res[c],
                speedup_vs_C1=res[c]["tok_s"] / res[1]["tok_s"],
            )
        tok_s[mode] = {c: r["tok_s"] for c, r in res.items()}
        block = res[1]["p50_s"] / base_s - 1.0
        reference = direct_vllm if vllm else in_process
        paired = paired_overhead(state, srv.url, mode, n1, tokens, reference)
        overhead = paired["paired_overhead"]
        rep.row(
            "AsyncLLM.generate directly (paired reference), C=1"
            if vllm
            else "in-process GenerationService.complete, C=1",
            section=f"workload: {mode} ({tokens} tokens/request, {args.dtype})",
            requests=n1,
            tok_s=base_tok / (base_s * n1),
            p50_s=base_s,
            http_overhead_blocks=block,
            http_overhead=overhead,
            http_overhead_ms=paired["paired_overhead_ms"],
        )
        rep.target(
            f"{mode}: HTTP+scheduling overhead at C=1", overhead, "<= 0.05", overhead <= 0.05
        )
        top = 8 if 8 in res else max(res)
        sp = res[top]["tok_s"] / res[1]["tok_s"]
        rep.target(f"{mode}: throughput C={top} / C=1", sp, ">= 3", sp >= 3.0)
    if "base" in tok_s:
        for mode in (m for m in tok_s if m != "base"):
            for c, value in tok_s[mode].items():
                ratio = value / tok_s["base"][c] if c in tok_s["base"] else float("nan")
                rep.row(f"{mode} / base, C={c}", section="throughput ratios", tok_s_ratio=ratio)
    stats = state.backend.stats()
    rep.extra["cache_stats"] = stats["adapters"] if vllm else stats["cache"]
    if vllm:
        rep.extra["vllm_stats"] = stats["vllm"]
    rep.notes.append(
        "server and load generator share one process (uvicorn in a thread, httpx.AsyncClient); "
        f"C=1 sends {n1} requests, C>1 sends {args.rounds}·C requests; greedy; mean_batch = "
        "rows per executed batch; http_overhead = median over request pairs (in process, then the "
        "same request over HTTP, alternating) of HTTP / in-process - 1; http_overhead_blocks = "
        "p50 of the C=1 level / median of a separate in-process block - 1 (drift-prone)"
    )


if __name__ == "__main__":
    main()
