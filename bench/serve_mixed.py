"""Benchmark 4b: a mixed workload -- long and short requests at random -- on static vs
iteration-level batching, in one run on the same model.

Two servers are started one after the other in this process (``batching = "static"``, then
``"continuous"``), each over the same store as ``bench/serve.py`` (three rank-16 low-rank
vectors). C closed-loop clients (C = 1, 8, 16) each send streaming completions, every request
its own weights over the low-rank vectors, long (``--long-tokens``) with probability
``--p-long`` else short (``--short-tokens``), the sequence drawn from a fixed seed so that both
servers see the same requests in the same order per client.

Reported per batching and level: time to first token (p50/p95: the first SSE event arrives with
the first generated token), latency p50/p95 of short and of long requests, completion tokens/s.
Targets (issue 12): at C = 8, continuous throughput >= 0.95× static and p95 time to first token
at least 3× lower.

Run: ``python bench/serve_mixed.py [--quick] [--out results/serve_mixed.json]``.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Report, command_line, model_spec, parser, percentile, setup
from bench.serve import PROMPTS, REFS, ServerThread, fill_store, free_port


def plan(client: int, n: int, p_long: float, seed: int) -> list[bool]:
    """Which of client ``client``'s ``n`` requests are long (same for every server)."""
    rng = random.Random(seed * 1000 + client)
    return [rng.random() < p_long for _ in range(n)]


def request_body(client: int, i: int, long: bool, args: Any) -> dict[str, Any]:
    rng = random.Random(client * 7919 + i)
    return {
        "prompt": PROMPTS[(client + i) % len(PROMPTS)],
        "max_tokens": args.long_tokens if long else args.short_tokens,
        "temperature": 0.0,
        "stream": True,
        "stop": None,
        "preferences": {r: round(rng.uniform(-1.0, 1.0), 3) for r in REFS},
    }


async def one(client: Any, body: dict[str, Any]) -> tuple[float, float, int]:
    """(time to first event, latency, completion tokens) of one streaming request."""
    t0 = time.perf_counter()
    ttft, pieces = None, 0
    async with client.stream("POST", "/v1/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if ttft is None:
                ttft = time.perf_counter() - t0
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            pieces += 1
    return float(ttft or 0.0), time.perf_counter() - t0, pieces


async def run_level(url: str, conc: int, rounds: int, args: Any) -> dict[str, Any]:
    import httpx

    ttft: list[float] = []
    lat = {True: [], False: []}  # type: dict[bool, list[float]]
    tokens = 0
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(base_url=url, timeout=900, limits=limits) as http:

        async def client(c: int) -> None:
            nonlocal tokens
            for i, long in enumerate(plan(c, rounds, args.p_long, args.seed)):
                body = request_body(c, i, long, args)
                first, total, _ = await one(http, body)
                ttft.append(first)
                lat[long].append(total)
                tokens += body["max_tokens"]  # stop=None; EOS may end some earlier (see usage)

        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(conc)))
        wall = time.perf_counter() - t0
    return {
        "requests": len(ttft),
        "long": len(lat[True]),
        "ttft_p50_s": percentile(ttft, 0.5),
        "ttft_p95_s": percentile(ttft, 0.95),
        "short_p50_s": percentile(lat[False], 0.5) if lat[False] else None,
        "short_p95_s": percentile(lat[False], 0.95) if lat[False] else None,
        "long_p50_s": percentile(lat[True], 0.5) if lat[True] else None,
        "long_p95_s": percentile(lat[True], 0.95) if lat[True] else None,
        "wall_s": wall,
    }


def start_server(batching: str, spec: str, store: Path, args: Any) -> ServerThread:
    from prefvec.server.settings import ServerSettings

    settings = ServerSettings(
        base=spec, store_dir=store, dtype=args.dtype, device=args.device, port=free_port(),
        max_batch_size=args.max_batch_size, max_queue=256, log_level="warning",
        batching=batching, max_tokens_limit=max(args.long_tokens, 16),
    )  # fmt: skip
    srv = ServerThread(settings)
    srv.start()
    asyncio.run(run_level(srv.url, 1, 1, args))  # warm-up
    return srv


def measure(srv: ServerThread, conc: int, args: Any) -> dict[str, Any]:
    """One level on one server; throughput from the backend's own decode-row counter."""
    backend = srv.app.state.prefvec.backend
    before = backend.stats()
    rounds = args.rounds if conc > 1 else max(args.rounds, 4)
    res = asyncio.run(run_level(srv.url, conc, rounds, args))
    after = backend.stats()
    rows = after["decode_rows"] - before["decode_rows"]
    steps = max(1, after["decode_steps"] - before["decode_steps"])
    res["tok_s"] = rows / res["wall_s"]  # every decode row is one generated token
    res["mean_batch"] = round(rows / steps, 2)
    return res


def serve_and_measure(
    spec: str, store: Path, args: Any, levels: Sequence[int]
) -> dict[str, dict[int, dict[str, Any]]]:
    """Both servers up at once; each level runs on static then on continuous batching, so a
    slow drift of a shared machine hits both alike."""
    servers = {b: start_server(b, spec, store, args) for b in ("static", "continuous")}
    out: dict[str, dict[int, dict[str, Any]]] = {b: {} for b in servers}
    try:
        for c in levels:
            for b, srv in servers.items():
                out[b][c] = measure(srv, c, args)
    finally:
        for srv in servers.values():
            srv.stop()
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = parser("serve_mixed", __doc__.splitlines()[0])
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    p.add_argument("--levels", default=None, help="concurrency levels (default 1,8,16)")
    p.add_argument("--rounds", type=int, default=3, help="requests per client and level")
    p.add_argument("--long-tokens", type=int, default=None)
    p.add_argument("--short-tokens", type=int, default=None)
    p.add_argument("--p-long", type=float, default=0.25)
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.long_tokens = args.long_tokens or (12 if args.quick else 128)
    args.short_tokens = args.short_tokens or (3 if args.quick else 8)
    machine = setup(args)
    rep = Report("serve_mixed", command_line("serve_mixed", argv), machine)
    levels = [int(x) for x in (args.levels or ("1,2" if args.quick else "1,8,16")).split(",")]
    spec = model_spec(args)
    root = Path(tempfile.mkdtemp(prefix="prefvec-bench-mixed-"))
    try:
        fill_store(root / "store", spec)
        res = serve_and_measure(spec, root / "store", args, levels)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    section = (f"mixed: {args.p_long:.0%} long ({args.long_tokens} tok) / short "
               f"({args.short_tokens} tok), {args.dtype}")  # fmt: skip
    for c in levels:
        for b in ("static", "continuous"):
            r = res[b][c]
            rep.row(f"{b}, C={c}", section=section, **{k: v for k, v in r.items() if k != "wall_s"})
    ref = max(c for c in levels if c <= 8)
    s, k = res["static"][ref], res["continuous"][ref]
    tput = k["tok_s"] / s["tok_s"]
    ttft = s["ttft_p95_s"] / max(k["ttft_p95_s"], 1e-9)
    rep.target(f"throughput continuous/static at C={ref}", tput, ">= 0.95", tput >= 0.95)
    rep.target(f"p95 TTFT static/continuous at C={ref}", ttft, ">= 3", ttft >= 3.0)
    return rep.write(args.out)


if __name__ == "__main__":
    main()
