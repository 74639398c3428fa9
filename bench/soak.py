"""Benchmark 7: soak (issue 15): N concurrent streaming clients for a bounded time, disconnects
mixed in; does the server stay correct, fast and flat in memory?

The server runs in its own process (``prefvec.server.run.serve``, settings from the environment),
so its resident memory (``VmRSS`` of ``/proc/<pid>/status``) is the server's alone; the store is
``bench/serve.py``'s (three rank-16 low-rank vectors, a dense one and the recipe ``fixed``).
N = 16 asyncio clients (httpx) loop for ``--duration`` seconds, each request a streaming chat
completion with its own random weights over the low-rank vectors (one in eight the recipe
``fixed``, the dense path); a share ``--disconnect`` of them closes the stream after the first
content chunk (a client that leaves mid-stream).

Reported: requests completed and abandoned, p50/p95 latency of completed streams (request to
``[DONE]``) and of the first token, errors by kind (HTTP status, an error event in the stream, a
stream without ``[DONE]``, transport exceptions), RSS after warm-up (start) and at the end, its
peak, and the growth; a last request checks the server still answers. Target: RSS flat within
10 % from start to end; zero errors.

Run: ``python bench/soak.py [--quick] [--clients 16] [--duration 120] [--out FILE.json]``
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Report, command_line, model_spec, parser, percentile, setup
from bench.serve import PROMPTS, REFS, fill_store, free_port


@dataclass
class Tally:
    """What the clients saw."""

    latency: list[float] = field(default_factory=list)
    first_token: list[float] = field(default_factory=list)
    completed: int = 0
    abandoned: int = 0
    errors: Counter[str] = field(default_factory=Counter)


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def request_body(rng: random.Random, tokens: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
        "max_tokens": tokens,
        "temperature": 0.7,
        "seed": rng.randrange(2**32),
        "stream": True,
    }
    if rng.random() < 1 / 8:
        body["recipe"] = "fixed"
    else:
        body["preferences"] = {r: round(rng.uniform(-1.0, 1.0), 3) for r in REFS}
    return body


async def one_stream(client: Any, body: dict[str, Any], leave: bool, tally: Tally) -> None:
    """One streaming request; ``leave`` closes it after the first content chunk."""
    import httpx

    t0 = time.perf_counter()
    first = None
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                await resp.aread()
                tally.errors[f"http_{resp.status_code}"] += 1
                return
            done = False
            async for line in resp.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: ") :]
                if data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    tally.errors[f"stream_error_{chunk['error'].get('code')}"] += 1
                    continue
                if (
                    first is None
                    and chunk["choices"]
                    and chunk["choices"][0]["delta"].get("content")
                ):
                    first = time.perf_counter() - t0
                    tally.first_token.append(first)
                    if leave:
                        tally.abandoned += 1
                        return  # leaving the `async with` closes the connection mid-stream
            if not done:
                tally.errors["no_done"] += 1
                return
    except httpx.HTTPError as exc:
        tally.errors[type(exc).__name__] += 1
        return
    tally.completed += 1
    tally.latency.append(time.perf_counter() - t0)


async def soak(url: str, clients: int, duration: float, tokens: int, p_leave: float) -> Tally:
    """``clients`` workers, each looping over streaming requests until ``duration`` passes."""
    import httpx

    tally = Tally()
    deadline = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
            while time.perf_counter() < deadline:
                await one_stream(client, request_body(rng, tokens), rng.random() < p_leave, tally)

    await asyncio.gather(*(worker(i) for i in range(clients)))
    return tally


class ServerProcess:
    """``prefvec.server.run.serve`` in a child process (settings by environment)."""

    def __init__(self, spec: str, store: Path, device: str, threads: int | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PREFVEC_BASE": spec, "PREFVEC_STORE_DIR": str(store), "PREFVEC_DEVICE": device,
            "PREFVEC_PORT": str(self.port), "PREFVEC_LOG_LEVEL": "warning",
            "PREFVEC_MAX_QUEUE": "256", "PREFVEC_MAX_BATCH_SIZE": "16",
        }  # fmt: skip
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        code = "from prefvec.server.run import serve; serve()"
        self.proc = subprocess.Popen([sys.executable, "-c", code], env=env)

    def wait_ready(self, timeout: float = 600) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the server exited during start-up")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("server did not become ready")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = parser("soak", __doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=16, help="concurrent streaming clients")
    p.add_argument("--duration", type=float, default=None, help="seconds of load (default 120)")
    p.add_argument("--tokens", type=int, default=None, help="max_tokens per request")
    p.add_argument("--disconnect", type=float, default=0.2, help="share of clients that leave")
    p.add_argument("--warmup", type=float, default=None, help="seconds of load before RSS start")
    args = p.parse_args(argv)
    machine = setup(args)
    rep = Report("soak", command_line("soak", argv), machine)
    duration = args.duration or (6.0 if args.quick else 120.0)
    warmup = args.warmup if args.warmup is not None else (2.0 if args.quick else 20.0)
    tokens = args.tokens or (4 if args.quick else 24)
    spec = model_spec(args)
    root = Path(tempfile.mkdtemp(prefix="prefvec-bench-soak-"))
    fill_store(root / "store", spec)
    srv = ServerProcess(spec, root / "store", args.device, args.threads)
    try:
        srv.wait_ready()
        rss_ready = rss_mb(srv.proc.pid)
        asyncio.run(soak(srv.url, args.clients, warmup, tokens, args.disconnect))
        rss_start = rss_mb(srv.proc.pid)
        peak = [rss_start]

        async def run_and_sample() -> Tally:
            task = asyncio.ensure_future(
                soak(srv.url, args.clients, duration, tokens, args.disconnect)
            )
            while not task.done():
                await asyncio.sleep(1.0)
                peak.append(rss_mb(srv.proc.pid))
            return task.result()

        t0 = time.perf_counter()
        tally = asyncio.run(run_and_sample())
        wall = time.perf_counter() - t0
        rss_end = rss_mb(srv.proc.pid)
        healthy = _still_answers(srv.url)
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)
    _report(rep, args, tally, wall, tokens, (rss_ready, rss_start, max(peak), rss_end), healthy)
    return rep.write(args.out)


def _still_answers(url: str) -> bool:
    import httpx

    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=60).status_code == 200


def _report(
    rep: Report,
    args: Any,
    tally: Tally,
    wall: float,
    tokens: int,
    rss: tuple[float, float, float, float],
    healthy: bool,
) -> None:
    ready, start, peak, end = rss
    growth = end / start - 1
    errors = sum(tally.errors.values())
    rep.row(
        f"C={args.clients}", section="load", seconds=wall, completed=tally.completed,
        abandoned=tally.abandoned, errors=errors, req_s=tally.completed / wall,
        p50_s=percentile(tally.latency, 0.5), p95_s=percentile(tally.latency, 0.95),
        ttft_p50_s=percentile(tally.first_token, 0.5),
        ttft_p95_s=percentile(tally.first_token, 0.95),
    )  # fmt: skip
    rep.row(
        "server RSS", section="memory (MiB)", ready=ready, start=start, peak=peak, end=end,
        growth_pct=100 * growth,
    )  # fmt: skip
    for kind, n in sorted(tally.errors.items()):
        rep.row(kind, section="errors by kind", count=n)
    rep.target("RSS growth start -> end", 100 * growth, "<= 10 %", growth <= 0.10)
    rep.target("errors", float(errors), "== 0", errors == 0)
    rep.target("answers after the soak", 1.0 if healthy else 0.0, "== 1", healthy)
    rep.notes += [
        f"{args.clients} streaming clients, max_tokens {tokens}, temperature 0.7, "
        f"{100 * args.disconnect:.0f} % leave after the first content chunk",
        "RSS start is taken after the warm-up load (caches and allocator at steady state); "
        "'ready' is right after the model loaded",
        "server in its own process; clients and server share this machine's cores",
    ]


if __name__ == "__main__":
    main()
