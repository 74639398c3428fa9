"""Prometheus metrics of one server instance (own registry, so several apps can share a process)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _LiveCollector(Collector):
    """Values read at scrape time: queue depth, running rows, merge cache counters."""

    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self._state = state

    def collect(self) -> Iterator[Any]:
        s = self._state()
        yield GaugeMetricFamily(
            "prefvec_queue_depth", "Requests waiting for a batch.", value=s.get("queue_depth", 0)
        )
        yield GaugeMetricFamily(
            "prefvec_running_requests", "Requests in the running batch.", value=s.get("running", 0)
        )
        yield GaugeMetricFamily(
            "prefvec_model_ready", "1 once the base model is loaded.", value=s.get("ready", 0)
        )
        cache = s.get("cache", {})
        for name, doc in (
            ("hits", "Merged-weight cache hits."),
            ("misses", "Merged-weight cache misses."),
            ("evictions", "Merged-weight cache evictions."),
        ):
            yield CounterMetricFamily(f"prefvec_merge_cache_{name}", doc, value=cache.get(name, 0))
        yield GaugeMetricFamily(
            "prefvec_merge_cache_bytes",
            "Bytes held by the merged-weight cache.",
            value=cache.get("nbytes", 0),
        )
        for name, doc in (
            ("decode_steps", "Decode steps run (one token for every running row)."),
            ("decode_rows", "Rows summed over decode steps (mean batch = rows / steps)."),
            ("prefill_chunks", "Prefill chunks run."),
        ):
            if name in s:
                yield CounterMetricFamily(f"prefvec_{name}", doc, value=s[name])
        yield CounterMetricFamily(
            "prefvec_merges_built",
            "Dense merges built in place.",
            value=cache.get("merges_built", 0),
        )
        yield from _vllm_families(s)


def _vllm_families(s: dict[str, Any]) -> Iterator[Any]:
    """vLLM's scheduler figures and the LoRA adapter cache (the vLLM backend only)."""
    v, a = s.get("vllm"), s.get("adapters")
    if v is None or a is None:
        return
    for name, doc in (
        ("running", "Requests vLLM is running."),
        ("waiting", "Requests waiting in vLLM's scheduler."),
        ("kv_cache_usage", "Share of vLLM's KV cache in use (0..1)."),
        ("max_running_seen", "The largest batch vLLM has run."),
        ("running_loras", "LoRA requests in vLLM's running batch."),
    ):
        yield GaugeMetricFamily(f"prefvec_vllm_{name}", doc, value=v.get(name, 0))
    steps = v.get("steps", 0)
    yield CounterMetricFamily("prefvec_vllm_steps", "vLLM scheduler steps.", value=steps)
    for name, doc in (
        ("loaded", "Recipe adapters loaded in vLLM."),
        ("max_loras", "vLLM's adapter slots per batch (`max_loras`)."),
        ("max_cpu_loras", "Adapters vLLM keeps loaded (`max_cpu_loras`)."),
        ("nbytes", "Bytes of recipe adapter files."),
    ):
        yield GaugeMetricFamily(f"prefvec_lora_adapters_{name}", doc, value=a.get(name, 0))
    for name in ("hits", "misses", "evictions", "added", "removed"):
        yield CounterMetricFamily(
            f"prefvec_lora_adapter_{name}", f"Recipe adapter cache: {name}.", value=a.get(name, 0)
        )


class Metrics:
    """Counters and histograms the routes and the scheduler update.

    Args:
        state: returns the live values (see :class:`_LiveCollector`) at scrape time.
    """

    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "prefvec_requests", "HTTP requests.", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "prefvec_request_latency_seconds",
            "HTTP request latency.",
            ["route"],
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.prompt_tokens = Counter(
            "prefvec_prompt_tokens", "Prompt tokens processed.", ["path"], registry=r
        )
        self.completion_tokens = Counter(
            "prefvec_completion_tokens", "Tokens generated.", ["path"], registry=r
        )
        self.generations = Counter(
            "prefvec_generations", "Finished generations.", ["path", "finish_reason"], registry=r
        )
        self.stream_errors = Counter(
            "prefvec_stream_errors",
            "Streams ended by an error after their first byte.",
            ["code"],
            registry=r,
        )
        self.rejected = Counter(
            "prefvec_rejected",
            "Requests rejected by bounds or backpressure.",
            ["reason"],
            registry=r,
        )
        r.register(_LiveCollector(state))

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return bytes(generate_latest(self.registry))
