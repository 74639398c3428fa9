"""``prefvec eval ...``: run suites, sweep weight grids, build the results table.

* ``prefvec eval run --weights harmless=1 --suites mc,refusal --limit 50 --out results/x``
  (in process; ``--url`` evaluates a running server instead: generation suites only).
* ``prefvec eval grid --vectors helpful,harmless --values -1,0,1 --suites ... --x A --y B``
* ``prefvec eval table results/*.json --out results/table.md [--readme README.md]``
* ``prefvec eval suites`` / ``prefvec eval scorers`` / ``prefvec eval judge-agreement``

Heavy imports (torch, transformers) happen inside the commands.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from prefvec.defaults import DEFAULT_BASE


def _parse_weights(text: str) -> dict[str, float]:
    from prefvec.weights import parse_weights

    return parse_weights(text) if text else {}


def _floats(text: str) -> list[float]:
    from prefvec.errors import ValidationError

    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise ValidationError(
            f"`--values` must be comma-separated numbers, got {text!r}", field="values"
        ) from exc


def _context(args: argparse.Namespace) -> Any:
    from prefvec.evaluation.runner import RunContext

    return RunContext(
        limit=args.limit, seed=args.seed, max_new_tokens=args.max_new_tokens,
        progress=not args.no_progress, data_dir=args.data_dir,
    )  # fmt: skip


def _handle(args: argparse.Namespace) -> Any:
    from prefvec.evaluation.targets import ModelHandle

    default = "vectors" if not args.store and Path("vectors").is_dir() else None
    vectors_dir = args.vectors_dir or default
    return ModelHandle(
        args.base, store_dir=args.store, vectors_dir=vectors_dir, dtype=args.dtype,
        device=args.device, home=args.home, batch_size=args.batch_size,
        max_length=args.max_length,
    )  # fmt: skip


def _server_target(args: argparse.Namespace, weights: dict[str, float]) -> Any:
    from prefvec.clients import PrefvecClient
    from prefvec.evaluation.targets import ServerTarget

    client = PrefvecClient(args.url, api_key=args.api_key, timeout=600)
    from prefvec.evaluation.grid import point_label

    label = args.label or point_label(weights)
    return ServerTarget(client, preferences=weights, recipe=args.recipe, label=label,
                        concurrency=args.batch_size)  # fmt: skip


def cmd_run(args: argparse.Namespace) -> int:
    from prefvec.evaluation.runner import run_eval

    weights = _parse_weights(args.weights)
    if args.url:
        target = _server_target(args, weights)
    else:
        if args.recipe:
            weights = _recipe_weights(args)
        target = _handle(args).target(weights, method=args.method, label=args.label)
    report = run_eval(target, args.suites.split(","), _context(args), label=args.label)
    jpath, cpath = report.write(args.out, args.stem)
    _print_summary(report)
    print(f"wrote {jpath} and {cpath} ({report.wall_s:.1f} s)")
    return 0


def _recipe_weights(args: argparse.Namespace) -> dict[str, float]:
    from prefvec.errors import ValidationError
    from prefvec.vector_store import LocalStore

    if not args.store:
        raise ValidationError("`--recipe` in process needs `--store`", field="recipe")
    recipe = LocalStore(args.store, base=None).get_recipe(args.recipe)
    args.method = recipe.method
    return dict(recipe.weights)


def _print_summary(report: Any) -> None:
    for m in report.metrics:
        print(f"{m.suite:<16} {m.metric:<18} {m.value:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}] "
              f"n={m.n}")  # fmt: skip
    for name, why in report.skipped.items():
        print(f"{name:<16} skipped: {why}")


def cmd_grid(args: argparse.Namespace) -> int:
    from prefvec.evaluation.grid import (
        folder_points,
        keep_earlier,
        parse_points,
        plot_pareto,
        run_grid,
        seed_points,
        weight_grid,
        write_grid_csv,
        write_grid_json,
    )

    if args.points:
        grid = parse_points(args.points)
    elif args.vectors:
        grid = weight_grid(args.vectors.split(","), _floats(args.values))
    else:
        from prefvec.errors import ValidationError

        raise ValidationError("give `--vectors` (with `--values`) or `--points`", field="vectors")
    out = Path(args.out)
    handle, ctx, suites = _handle(args), _context(args), args.suites.split(",")
    points = None if args.no_resume else out / "points"
    if points is not None:  # the committed grid.json's points are reused where still valid
        seed_points(out / "grid.json", points)
    reports = run_grid(handle, grid, suites, ctx, method=args.method, points_dir=points)
    if points is not None:  # points other processes added to the same folder join the files
        reports = folder_points(points, reports, handle, ctx, suites, args.method)
    reports = keep_earlier(out / "grid.json", reports, handle)  # other runs' points stay
    out.mkdir(parents=True, exist_ok=True)
    print(f"wrote {write_grid_csv(reports, out / 'grid.csv')} and "
          f"{write_grid_json(reports, out / 'grid.json')}")  # fmt: skip
    if args.x and args.y:
        png, front = plot_pareto(reports, args.x, args.y, out / "pareto.png")
        print(f"wrote {png}; Pareto front: {[reports[i].label for i in front]}")
    return 0


def _reports(files: list[str], rows: str | None, *, merge: bool) -> list[Any]:
    """The reports of ``files``: one per weight setting when ``merge``, only ``rows`` (in that
    order, ``;``-separated) when given."""
    from prefvec.evaluation.table import load_reports, merge_by_weights, select_rows

    reports = load_reports(files)
    if merge:
        reports = merge_by_weights(reports)
    return select_rows(reports, rows.split(";")) if rows else reports


def cmd_plot(args: argparse.Namespace) -> int:
    from prefvec.evaluation.grid import plot_pareto

    reports = _reports(args.files, args.rows, merge=bool(args.rows))
    png, front = plot_pareto(reports, args.x, args.y, args.out)
    print(f"wrote {png}; Pareto front: {[reports[i].label for i in front]}")
    return 0


def cmd_curve(args: argparse.Namespace) -> int:
    from prefvec.evaluation.grid import plot_curve
    from prefvec.evaluation.table import load_reports

    png = plot_curve(load_reports(args.files), args.vector, args.suites.split(","), args.out)
    print(f"wrote {png}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from prefvec.evaluation.table import markdown_table, update_readme, wall_line

    reports = _reports(args.files, args.rows, merge=args.merge or bool(args.rows))
    table = markdown_table(reports, digits=args.digits) + wall_line(reports)
    if args.out:
        Path(args.out).write_text(table)
    if args.readme:
        update_readme(args.readme, table, marker=args.marker)
    print(table, end="")
    return 0


def cmd_categories(args: argparse.Namespace) -> int:
    from prefvec.evaluation.data import eval_data_dir, harmbench_categories
    from prefvec.evaluation.table import category_table, update_readme

    reports = _reports(args.files, args.rows, merge=True)
    table = category_table(reports, "harmbench", harmbench_categories(eval_data_dir()))
    if args.readme:
        update_readme(args.readme, table, marker=args.marker)
    print(table, end="")
    return 0


def cmd_suites(args: argparse.Namespace) -> int:
    from prefvec.evaluation.suites import GROUPS, SUITES

    for s in SUITES.values():
        print(f"{s.name:<16} {s.kind:<13} {s.dimension:<9} {s.metric:<18} {s.description}")
    for g, names in GROUPS.items():
        print(f"group {g}: {','.join(names)}")
    return 0


def cmd_scorers(args: argparse.Namespace) -> int:
    from prefvec.scoring import available_scorers

    print("\n".join(available_scorers()))
    return 0


def cmd_agreement(args: argparse.Namespace) -> int:
    from prefvec.evaluation.data import eval_data_dir
    from prefvec.scoring.refusal import xstest_agreement

    root = eval_data_dir(args.data_dir) / "xstest"
    parts = [xstest_agreement(p) for p in sorted(root.glob("xstest_v2_completions_*.csv"))]
    n, agree = sum(a.n for a in parts), sum(a.agree for a in parts)
    rows: list[dict[str, Any]] = [a.to_dict() for a in parts]
    rows.append({"source": "all", "n": n, "agree": agree, "rate": agree / n if n else None})
    print(json.dumps(rows, indent=1))
    return 0


def _common(p: argparse.ArgumentParser, model: bool = True) -> None:
    p.add_argument("--suites", default="all", help="suite or group names, comma-separated")
    p.add_argument("--limit", type=int, default=None, help="items per suite (fixed-seed sample)")
    p.add_argument("--seed", type=int, default=0, help="subsample / bootstrap seed")
    p.add_argument("--max-new-tokens", type=int, default=64, help="reply length for refusals")
    p.add_argument("--data-dir", default=None, help="evaluation data (default: repo eval_data/)")
    p.add_argument("--out", default="results/eval", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--method", default="linear", help="merge method")
    if model:
        p.add_argument("--base", default=os.environ.get("PREFVEC_BASE_MODEL", DEFAULT_BASE))
        p.add_argument("--home", default=None, help="prefvec cache root")
        p.add_argument("--store", default=None, help="vector store folder")
        p.add_argument(
            "--vectors-dir",
            default=None,
            help="folder(s) of <name>.safetensors vectors, comma-separated, first match wins "
            "(default ./vectors without --store)",
        )
        p.add_argument("--dtype", default="float32")
        p.add_argument("--device", default="cpu")
        p.add_argument("--max-length", type=int, default=512, help="longest scored sequence")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``prefvec eval`` and its subcommands to the main parser."""
    ev = subparsers.add_parser("eval", help="evaluation suites, weight grids, results table")
    sub = ev.add_subparsers(dest="eval_cmd", required=True)

    p = sub.add_parser("run", help="run suites against merged weights (in process or a server)")
    _common(p)
    p.add_argument("--weights", default="", help="vector weights, e.g. helpful=1,harmless=-0.5")
    p.add_argument("--recipe", default=None, help="a stored recipe instead of --weights")
    p.add_argument("--url", default=None, help="evaluate a running server (generation suites)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--label", default=None, help="name of this run in the table")
    p.add_argument("--stem", default="eval", help="output file stem")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("grid", help="sweep weights over 2-3 vectors; CSV + Pareto PNG")
    _common(p)
    p.add_argument("--vectors", default=None, help="2-3 vector names, comma-separated")
    p.add_argument(
        "--points",
        default=None,
        help='explicit weight settings instead of a grid: "base;helpful=1;harmless=1,helpful=0.5"',
    )
    p.add_argument("--values", default="-1,0,1", help="weights tried per vector")
    p.add_argument("--x", default=None, help="suite on the x axis of the Pareto plot")
    p.add_argument("--y", default=None, help="suite on the y axis of the Pareto plot")
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="evaluate every point again (default: reuse OUT/points/<label>.json made with the "
        "same settings and vector files; each point is written there as it finishes)",
    )
    p.set_defaults(func=cmd_grid)

    p = sub.add_parser("plot", help="Pareto plot of eval/grid JSON files (no re-evaluation)")
    p.add_argument("files", nargs="+", help="eval.json / grid.json files")
    p.add_argument("--x", required=True, help="suite on the x axis")
    p.add_argument("--y", required=True, help="suite on the y axis")
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument(
        "--rows",
        default=None,
        help='plot these weight settings, merged across the files: "base;harmless=1"',
    )
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("curve", help="control curve (metric vs one vector's weight) of grid JSONs")
    p.add_argument("files", nargs="+", help="eval.json / grid.json files")
    p.add_argument("--vector", required=True, help="the vector whose weight is the x axis")
    p.add_argument("--suites", required=True, help="suites (or collapse), comma-separated")
    p.add_argument("--out", required=True, help="PNG path")
    p.set_defaults(func=cmd_curve)

    p = sub.add_parser("table", help="Markdown results table from eval JSON files")
    p.add_argument("files", nargs="+", help="eval.json / grid.json files")
    p.add_argument("--out", default=None, help="write the table here too")
    p.add_argument("--readme", default=None, help="replace the marked table in this README")
    p.add_argument("--digits", type=int, default=2)
    p.add_argument(
        "--merge",
        action="store_true",
        help="one row per weight setting across the files (suites measured in several runs)",
    )
    p.add_argument(
        "--rows",
        default=None,
        help='these weight settings only, in this order (implies --merge): "base;harmless=1"',
    )
    p.add_argument(
        "--marker",
        default=None,
        help="name of the marked block in the README (several tables in one file)",
    )
    p.set_defaults(func=cmd_table)

    p = sub.add_parser(
        "categories", help="HarmBench refusals by category (functional and semantic) per row"
    )
    p.add_argument("files", nargs="+", help="eval.json / grid.json files with harmbench items")
    p.add_argument("--rows", default=None, help='these weight settings only: "base;harmless=1"')
    p.add_argument("--readme", default=None, help="replace the marked table in this README")
    p.add_argument("--marker", default=None, help="name of the marked block in the README")
    p.set_defaults(func=cmd_categories)

    p = sub.add_parser("suites", help="list the suites and groups")
    p.set_defaults(func=cmd_suites)
    p = sub.add_parser("scorers", help="list the registered scorers")
    p.set_defaults(func=cmd_scorers)
    p = sub.add_parser("judge-agreement", help="refusal judge vs XSTest human labels")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_agreement)
    return ev
