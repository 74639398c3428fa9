"""The ``prefvec`` command line.

Local commands work on the store and the base model in this process (``vectors``, ``merge``,
``generate``, ``serve``); client commands talk to a running server (``chat``, ``compare``,
``experiments``, ``feedback``, ``vectors push``). Heavy imports happen inside the commands so that
``prefvec --help`` and the client commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefvec.defaults import DEFAULT_BASE
from prefvec.weights import parse_weights


def _home(args: argparse.Namespace) -> Path:
    from prefvec.models import prefvec_home

    return prefvec_home(getattr(args, "home", None))


def _store(args: argparse.Namespace, need_base: bool = False):  # type: ignore[no-untyped-def]
    from prefvec.vector_store import BaseSpec, LocalStore

    root = Path(args.store) if args.store else _home(args) / "store"
    base = None
    if need_base:
        from prefvec.models import resolve_model_dir

        base = BaseSpec.from_model_dir(resolve_model_dir(args.base, getattr(args, "home", None)))
    return LocalStore(root, base=base)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


# ------------------------------------------------------------------------------------- vectors


def cmd_vectors_list(args: argparse.Namespace) -> int:
    records = _store(args).list()
    if args.json:
        _print_json([r.model_dump(mode="json") for r in records])
        return 0
    print(f"{'NAME':<24} {'VER':>4} {'KIND':<8} {'METHOD':<14} {'SIZE':>10}  CREATED")
    for r in records:
        size = f"{r.size_bytes / 1e6:.1f} MB"
        method = r.metadata.method
        print(f"{r.name:<24} {r.version:>4} {r.kind:<8} {method:<14} {size:>10}  {r.created_at}")
    return 0


def cmd_vectors_show(args: argparse.Namespace) -> int:
    store = _store(args)
    record = store.record(args.ref)
    out = record.model_dump(mode="json")
    out["versions"] = [r.version for r in store.versions(record.name)]
    _print_json(out)
    return 0


def cmd_vectors_add(args: argparse.Namespace) -> int:
    meta: dict[str, Any] = json.loads(args.metadata) if args.metadata else {}
    if args.name:
        meta["name"] = args.name
    record = _store(args, need_base=True).put(Path(args.file), metadata=meta or None)
    print(f"added {record.name}@{record.version} ({record.kind}, sha256 {record.sha256[:12]})")
    return 0


def cmd_vectors_rm(args: argparse.Namespace) -> int:
    from prefvec.vector_store import parse_ref

    name, version = parse_ref(args.ref)
    removed = _store(args).delete(name, version)
    for r in removed:
        print(f"removed {r.name}@{r.version}")
    return 0


def cmd_vectors_scale(args: argparse.Namespace) -> int:
    from prefvec.vector_store.format import PreferenceVector
    from prefvec.vector_store.store import sha256_file

    src = Path(args.file)
    vec = PreferenceVector.load(src)
    out = vec.scaled(args.factor, note=args.note)
    out.metadata.extra["scaled"].update(source=str(src), source_sha256=sha256_file(src))
    path = out.save(args.out)
    total = out.metadata.extra["scaled"]["total_factor"]
    print(f"wrote {path}: {vec.name} x {args.factor:g} (x {total:g} of the trained vector)")
    return 0


# ------------------------------------------------------------------------------ merge / generate


def _resolve(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from prefvec.merging.resolve import resolve_merge

    weights = parse_weights(args.weights) if args.weights else {}
    return resolve_merge(
        _store(args), weights, method=args.method, density=args.density, seed=args.seed
    )


def cmd_merge(args: argparse.Namespace) -> int:
    from prefvec.merging.resolve import apply_resolved
    from prefvec.models import load_base

    resolved = _resolve(args)
    base = load_base(args.base, dtype=args.dtype, device="cpu", home=args.home)
    apply_resolved(base.model, resolved)
    out = Path(args.out)
    base.model.save_pretrained(out)
    base.tokenizer.save_pretrained(out)
    (out / "prefvec_merge.json").write_text(json.dumps(resolved.describe(), indent=2))
    print(f"wrote {out} ({resolved.spec.key})")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Generate through the same serving service the server runs (so the text equals what the
    server returns for the same recipe, prompt and sampling), in this process."""
    import asyncio

    from prefvec.protocol import MergeOptions
    from prefvec.server.settings import ServerSettings
    from prefvec.server.state import local_state

    weights = parse_weights(args.weights) if args.weights else {}
    settings = ServerSettings(
        base=args.base, home=_home(args), store_dir=Path(args.store) if args.store else None,
        dtype=args.dtype, device=args.device, log_level="warning",
        max_tokens_limit=max(args.max_tokens, 1),
    )  # fmt: skip
    state = local_state(settings, store=_store(args, need_base=True))
    try:
        service = state.service
        merge = MergeOptions(method=args.method, density=args.density, seed=args.seed)
        resolved = service.resolve(preferences=weights, merge=merge)
        req = service.prepare(
            resolved, messages=[{"role": "user", "content": args.prompt}],
            max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
            seed=args.seed,
        )  # fmt: skip
        done = asyncio.run(service.complete(req))
    finally:
        state.backend.close()
    if args.json:
        _print_json({"text": done.text, "finish_reason": done.reason,
                     "usage": done.usage.model_dump(), **done.info.model_dump()})  # fmt: skip
    else:
        print(done.text)
        print(f"[{done.info.recipe_key}]", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from prefvec.server.run import serve
    from prefvec.server.settings import Settings

    overrides: dict[str, Any] = {"host": args.host, "port": args.port}
    for key in (
        "base_model", "store_dir", "dtype", "device", "preload_vectors_dir", "backend",
        "tensor_parallel_size", "max_loras", "max_lora_rank",
    ):  # fmt: skip
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    serve(Settings(**overrides))
    return 0


# ---------------------------------------------------------------------------------- the parser


def _local_options(p: argparse.ArgumentParser, base: bool = False) -> None:
    p.add_argument(
        "--home", default=None, help="cache root (default $PREFVEC_HOME or ~/.cache/prefvec)"
    )
    p.add_argument("--store", default=None, help="vector store folder (default <home>/store)")
    if base:
        p.add_argument("--base", default=os.environ.get("PREFVEC_BASE_MODEL", DEFAULT_BASE))


def _merge_options(p: argparse.ArgumentParser) -> None:
    _local_options(p, base=True)
    p.add_argument("--weights", default="", help="vector weights, e.g. helpful=1,harmless=-0.5")
    p.add_argument(
        "--method", default="linear", help="merge method (linear, ties, dare_linear, ...)"
    )
    p.add_argument("--density", type=float, default=1.0, help="kept fraction for ties/dare")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")


def _add_vectors(sub: argparse._SubParsersAction) -> None:
    vec = sub.add_parser("vectors", help="manage preference vectors in the local store")
    vsub = vec.add_subparsers(dest="vectors_cmd", required=True)
    p = vsub.add_parser("list", help="latest version of every vector")
    _local_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_vectors_list)
    p = vsub.add_parser("show", help="metadata of one vector (name or name@version)")
    _local_options(p)
    p.add_argument("ref")
    p.set_defaults(func=cmd_vectors_show)
    p = vsub.add_parser(
        "add", help="validate a safetensors vector file and add it as a new version"
    )
    _local_options(p, base=True)
    p.add_argument("file")
    p.add_argument("--name", default=None, help="vector name (default: from the file's metadata)")
    p.add_argument("--metadata", default=None, help="JSON of metadata fields to set")
    p.set_defaults(func=cmd_vectors_add)
    p = vsub.add_parser(
        "scale",
        help="write a vector file times a factor (set the unit of its weight: weight 1 on the "
        "result is weight FACTOR on the input)",
    )
    p.add_argument("file", help="input vector file (.safetensors)")
    p.add_argument("--factor", type=float, required=True, help="finite, non-zero")
    p.add_argument("--out", required=True, help="output vector file (written atomically)")
    p.add_argument("--note", default="", help="why; stored in the metadata (extra.scaled.note)")
    p.set_defaults(func=cmd_vectors_scale)
    p = vsub.add_parser("rm", help="delete a vector (all versions, or name@version)")
    _local_options(p)
    p.add_argument("ref")
    p.set_defaults(func=cmd_vectors_rm)
    try:
        from prefvec.clients.cli import add_vectors_push_arguments, cmd_vectors_push
    except ImportError:  # the client is optional at this layer
        return
    p = vsub.add_parser("push", help="upload a vector file to a running server")
    add_vectors_push_arguments(p)
    p.set_defaults(func=cmd_vectors_push)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prefvec", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="cmd", required=True)
    _add_vectors(sub)

    p = sub.add_parser("merge", help="merge vectors into the base and write a model folder")
    _merge_options(p)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("generate", help="generate locally with merged preference weights")
    _merge_options(p)
    p.add_argument("prompt")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print JSON with the recipe key")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("serve", help="start the inference server")
    p.add_argument("--host", default=os.environ.get("PREFVEC_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("PREFVEC_PORT", "8000")))
    p.add_argument("--base", dest="base_model", default=None)
    p.add_argument("--store", dest="store_dir", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--preload-vectors", dest="preload_vectors_dir", default=None)
    p.add_argument("--backend", default=None, help="transformers (default) | vllm")
    p.add_argument("--tensor-parallel-size", type=int, default=None, help="vLLM: GPUs per replica")
    p.add_argument("--max-loras", type=int, default=None, help="vLLM: adapters per batch")
    p.add_argument("--max-lora-rank", type=int, default=None, help="vLLM: largest recipe rank")
    p.set_defaults(func=cmd_serve)

    for module in (
        "prefvec.clients.cli",
        "prefvec.training.cli",
        "prefvec.evaluation.cli",
        "prefvec.training.mora.cli",
    ):
        try:
            register = importlib.import_module(module).register
        except (ImportError, AttributeError):  # a part not installed (or not written) yet
            logging.getLogger(__name__).debug("CLI commands of %s unavailable", module)
            continue
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``prefvec`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # one INFO line per HTTP request drowns the client commands' output
        logging.getLogger("httpx").setLevel(logging.WARNING)
    from prefvec.errors import PrefvecError

    try:
        return int(args.func(args) or 0)
    except PrefvecError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        for problem in exc.problems if len(exc.problems) > 1 else []:
            print(f"  - {problem}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
