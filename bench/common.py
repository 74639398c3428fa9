"""Shared pieces of the prefvec benchmarks: arguments, models, timing, synthetic vectors, output.

Every benchmark script exposes ``main(argv) -> dict`` and runs as ``python bench/<name>.py``.
Figures are medians over repeats, and every ratio is taken between two figures measured in the
same run (these machines are shared and noisy). Results go to ``--out`` as JSON (with the machine
description) and to stdout as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/x.py` puts bench/ first, not the repo root
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

BUNDLED = "bundled:smollm2-135m-instruct"
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# ------------------------------------------------------------------------------- arguments


def parser(name: str, description: str) -> argparse.ArgumentParser:
    """The arguments every benchmark takes (``--device``, ``--quick``, ``--out``, ...)."""
    p = argparse.ArgumentParser(prog=f"bench/{name}.py", description=description)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="tiny model, 1 repeat (smoke test)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / f"{name}.json")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default per script)")
    p.add_argument("--base", default=BUNDLED, help="base model spec for the real run")
    p.add_argument(
        "--max-load", type=float, default=1.5, help="wait while the 1-min load is above this"
    )
    return p


def setup(args: argparse.Namespace) -> dict[str, Any]:
    """Set threads, wait for a quiet machine (real runs), and describe the machine."""
    if args.threads:
        torch.set_num_threads(args.threads)
    waited = 0.0 if args.quick else wait_for_quiet(args.max_load)
    info = machine_info(args.device)
    info["waited_for_load_s"] = waited
    return info


def wait_for_quiet(max_load: float, max_wait_s: float = 600.0, step_s: float = 60.0) -> float:
    """Sleep while the 1-minute load average is above ``max_load`` (at most ``max_wait_s``)."""
    start = time.monotonic()
    while os.getloadavg()[0] > max_load and time.monotonic() - start < max_wait_s:
        print(f"# load {os.getloadavg()[0]:.2f} > {max_load}: waiting {step_s:.0f} s", flush=True)
        time.sleep(step_s)
    return round(time.monotonic() - start, 1)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: str) -> dict[str, Any]:
    """torch version, threads, CPU model, cores, load, and the GPU when ``device`` is cuda."""
    import transformers

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "device": device,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# ---------------------------------------------------------------------------------- models


def tiny_model_dir(root: Path | None = None, **overrides: Any) -> Path:
    """A tiny Llama + tokenizer saved in a folder (the ``--quick`` model)."""
    from prefvec.testing import make_tiny_model

    root = root or Path(tempfile.mkdtemp(prefix="prefvec-bench-"))
    return make_tiny_model(root / "tiny", seed=0, **overrides)


def model_spec(args: argparse.Namespace) -> str:
    """The base to benchmark: the bundled model, or a tiny one under ``--quick``."""
    if args.quick:
        return str(tiny_model_dir())
    return str(args.base)


def load(spec: str, dtype: torch.dtype, device: str) -> Any:
    """``prefvec.models.load_base`` in eval mode."""
    from prefvec.models import load_base

    loaded = load_base(spec, dtype=dtype, device=device)
    loaded.model.eval()
    return loaded


def linear_shapes(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """``{module: (in, out)}`` of every LoRA-targeted linear layer (q/k/v/o/gate/up/down)."""
    return {
        name: (m.in_features, m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in LORA_MODULES
    }


def random_factors(
    model: torch.nn.Module, rank: int, seed: int, scale: float = 0.02
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Synthetic rank-``rank`` factors ``{module: (A (r, in), B (out, r))}`` in fp32 on CPU."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for module, (n_in, n_out) in linear_shapes(model).items():
        a = torch.randn(rank, n_in, generator=g) * scale  # (r, in)
        b = torch.randn(n_out, rank, generator=g) * scale  # (out, r)
        out[module] = (a, b)
    return out


def random_dense(
    model: torch.nn.Module, seed: int, dtype: torch.dtype | None = None, scale: float = 1e-3
) -> dict[str, torch.Tensor]:
    """A synthetic dense delta for every parameter (``named_parameters`` names)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, p in model.named_parameters():
        t = torch.randn(p.shape, generator=g, dtype=torch.float32) * scale
        out[name] = t.to(device=p.device, dtype=dtype or p.dtype)
    return out


def lowrank_vector(fingerprint: str, name: str, factors: Any, base_model: str = "") -> Any:
    """A :class:`PreferenceVector` of kind lowrank for ``fingerprint``."""
    from prefvec.vector_store.format import PreferenceVector, VectorMetadata

    meta = VectorMetadata(
        name=name, kind="lowrank", base_fingerprint=fingerprint, base_model=base_model
    )
    return PreferenceVector.from_factors(meta, factors)


# ---------------------------------------------------------------------------------- timing


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_once(fn: Callable[[], Any], device: str = "cpu") -> float:
    """Seconds one call of ``fn`` takes (device synchronised before and after)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def time_fn(
    fn: Callable[[], Any], repeats: int, warmup: int = 1, device: str = "cpu"
) -> list[float]:
    """``repeats`` timings of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    return [time_once(fn, device) for _ in range(repeats)]


def time_interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1, device: str = "cpu"
) -> dict[str, list[float]]:
    """Timings of several functions, interleaved round by round so drift hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            out[k].append(time_once(fn, device))
    return out


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def percentile(xs: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) by linear interpolation."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


# ---------------------------------------------------------------------------------- output


@dataclass
class Report:
    """Rows of one benchmark, its targets, and notes; written as JSON and a Markdown table."""

    name: str
    command: str
    machine: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self, case: str, section: str = "", **values: Any) -> dict[str, Any]:
        """Add one result row; rows of one ``section`` share a Markdown table."""
        r = {"section": section, "case": case, **{k: _round(v) for k, v in values.items()}}
        self.rows.append(r)
        return r

    def target(self, name: str, value: float, goal: str, met: bool, note: str = "") -> None:
        self.targets.append(
            {"target": name, "value": _round(value), "goal": goal, "met": bool(met), "note": note}
        )

    def to_dict(self) -> dict[str, Any]:
        self.machine["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
        return {
            "benchmark": self.name,
            "command": self.command,
            "machine": self.machine,
            "rows": self.rows,
            "targets": self.targets,
            "notes": self.notes,
            "extra": self.extra,
        }

    def markdown(self) -> str:
        lines = [f"### {self.name}", "", f"`{self.command}`", ""]
        for section in dict.fromkeys(r["section"] for r in self.rows):
            rows = [
                {k: v for k, v in r.items() if k != "section"}
                for r in self.rows
                if r["section"] == section
            ]
            lines += ([f"**{section}**", ""] if section else []) + table(rows) + [""]
        if self.targets:
            lines += ["**targets**", "", *table(self.targets), ""]
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines)

    def write(self, out: Path) -> dict[str, Any]:
        data = self.to_dict()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2, default=str) + "\n")
        print(self.markdown(), flush=True)
        print(f"\n# wrote {out}", flush=True)
        return data


def _round(v: Any) -> Any:
    if isinstance(v, float):
        return float(f"{v:.4g}")
    return v


def table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """A Markdown table over the union of the rows' keys (first-seen order)."""
    if not rows:
        return []
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |")
    return lines


def _cell(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def command_line(name: str, argv: Sequence[str] | None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python", f"bench/{name}.py", *args])


def dtype_of(name: str) -> torch.dtype:
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def peft_wrap(model: torch.nn.Module, vectors: Sequence[Any], root: Path) -> Any:
    """A PEFT ``PeftModel`` over ``model`` with the low-rank ``vectors`` as adapters v0, v1, ..."""
    from peft import PeftModel

    peft_model = None
    for i, vec in enumerate(vectors):
        folder = vec.export_peft(root / f"adapter{i}")
        if peft_model is None:
            peft_model = PeftModel.from_pretrained(model, str(folder), adapter_name=f"v{i}")
        else:
            peft_model.load_adapter(str(folder), adapter_name=f"v{i}")
    assert peft_model is not None
    peft_model.eval()
    return peft_model


def profile_summary(fn: Any, device: str = "cpu", rows: int = 12) -> str:
    """torch.profiler table (self CPU/CUDA time, top ``rows`` ops) of one call of ``fn``."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as prof:
        fn()
        sync(device)
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    return str(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=40))


def render(paths: Sequence[Path]) -> str:
    """The Markdown of several result JSON files (for BENCHMARKS.md)."""
    parts = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        rep = Report(data["benchmark"], data["command"], data["machine"])
        rep.rows, rep.targets, rep.notes = data["rows"], data["targets"], data["notes"]
        m = data["machine"]
        rep.notes.append(
            f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['threads']} threads, "
            f"load avg {m['load_avg_start']} → {m.get('load_avg_end')}"
        )
        parts.append(rep.markdown())
    return "\n\n".join(parts)


if __name__ == "__main__":  # python bench/common.py results/*.json  → Markdown
    print(render([Path(p) for p in sys.argv[1:]]))
