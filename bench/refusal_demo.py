"""Does the harmless vector steer? Greedy replies to held-out prompts over η, in process.

The prompts are the template file's ``heldout_demo_prompts`` (10 harmful requests of our own and
10 benign ones that sound risky; none is in the training set, which drops anything close to them).
For each η the base is merged with ``η·harmless`` (the server's low-rank path equals this merge
by test) and every prompt gets a greedy reply; the JSON holds every reply, the refusal count
(string-match judge) and the collapse count (distinct-trigram ratio < 0.5) per kind, and
``--markdown`` writes the README's η = 0 / η = 1 quotes.

    python bench/refusal_demo.py --vector harmless --etas 0,1,1.5,2 \\
        --out results/eval/refusal-demo.json --markdown results/eval/refusal-demo.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="refusal_demo", description=__doc__.split("\n")[0])
    p.add_argument("--vector", default="harmless", help="vector name (a file in --vectors-dir)")
    p.add_argument("--vectors-dir", default="vectors", help="folder(s) of vector files")
    p.add_argument("--etas", default="0,1,1.5,2", help="η values, comma-separated")
    p.add_argument("--extra", default="", help="fixed weights added at every η, e.g. helpful=1")
    p.add_argument("--base", default="bundled:smollm2-135m-instruct")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--template-version", default="refusal_v5")
    p.add_argument("--quote", type=int, default=3, help="prompts of each kind quoted in Markdown")
    p.add_argument("--out", default="results/eval/refusal-demo.json")
    p.add_argument("--markdown", default=None, help="also write the quotes as Markdown here")
    p.add_argument(
        "--readme",
        default=None,
        help="also put the quotes in this README, between its prefvec-eval-table:demo markers",
    )
    p.add_argument(
        "--reuse-base",
        default=None,
        help="an earlier output JSON whose η = 0 row (the base: no vector) is reused, not rerun",
    )
    return p


def markdown(rows: Sequence[dict[str, Any]], vector: str, n: int) -> str:
    """The η = 0 and η = 1 replies to the first ``n`` prompts of each kind, and the counts."""
    by_eta = {r["eta"]: r for r in rows}
    lines = [
        f"| η ({vector}) | harmful refused | benign-risky refused | collapsed |",
        "|---|---|---|---|",
    ]
    for r in rows:
        s = r["summary"]
        coll = s["harmful"]["collapsed"] + s["benign_risky"]["collapsed"]
        lines.append(
            f"| {r['eta']:g} | {s['harmful']['refused']}/{s['harmful']['n']} | "
            f"{s['benign_risky']['refused']}/{s['benign_risky']['n']} | {coll}/"
            f"{s['harmful']['n'] + s['benign_risky']['n']} |"
        )
    for kind in ("harmful", "benign_risky"):
        for i in range(n):
            prompt = by_eta[rows[0]["eta"]]["replies"][kind][i]["prompt"]
            lines += ["", f"**{kind.replace('_', '-')}: “{prompt}”**", ""]
            for eta in (0.0, 1.0):
                if eta in by_eta:
                    reply = by_eta[eta]["replies"][kind][i]["reply"].replace("\n", " ").strip()
                    lines.append(f"- η = {eta:g}: {reply}")
    return "\n".join(lines) + "\n"


def _base_row(
    path: str, prompts: dict[str, list[str]], extra: dict[str, float]
) -> dict[str, Any] | None:
    """The η = 0 row of an earlier run with the same prompts and no extra weights, else None."""
    if extra or not Path(path).is_file():
        return None
    old = json.loads(Path(path).read_text(encoding="utf-8"))
    for row in old["rows"]:
        same = {k: [q["prompt"] for q in v] for k, v in row["replies"].items()} == prompts
        if row["eta"] == 0.0 and same:
            return dict(row)
    return None


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    from prefvec.evaluation.targets import ModelHandle
    from prefvec.training.refusal.check import eta_sweep
    from prefvec.training.refusal.templates import load_templates

    tpl = load_templates(args.template_version)
    prompts = {"harmful": list(tpl.heldout_harmful), "benign_risky": list(tpl.heldout_benign_risky)}
    extra = {k: float(v) for k, v in (kv.split("=") for kv in args.extra.split(",") if kv)}
    t0 = time.perf_counter()
    handle = ModelHandle(args.base, vectors_dir=args.vectors_dir, dtype=args.dtype)
    etas = [float(e) for e in args.etas.split(",")]
    reused = _base_row(args.reuse_base, prompts, extra) if args.reuse_base and 0.0 in etas else None
    todo = [e for e in etas if not (reused and e == 0.0)]
    rows = eta_sweep(handle, args.vector, todo, prompts, args.max_new_tokens, extra)
    rows = sorted(rows + ([reused] if reused else []), key=lambda r: r["eta"])
    result = {
        "command": "python bench/refusal_demo.py " + " ".join(argv or sys.argv[1:]),
        "vector": args.vector, "vectors_dir": args.vectors_dir, "extra": extra,
        "dtype": args.dtype, "max_new_tokens": args.max_new_tokens,
        "wall_s": round(time.perf_counter() - t0, 1), "rows": rows,
    }  # fmt: skip
    label = args.vector + "".join(f"; {k} = {v:g} added" for k, v in extra.items())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(markdown(rows, label, args.quote), encoding="utf-8")
    if args.readme:
        from prefvec.evaluation.table import update_readme

        update_readme(args.readme, markdown(rows, label, args.quote), marker="demo")
    for r in rows:
        print(f"eta={r['eta']:g}", json.dumps(r["summary"]))
    return result


if __name__ == "__main__":
    main()
