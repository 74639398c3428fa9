"""Client commands of the ``prefvec`` CLI: they talk to a running server over HTTP.

``register(subparsers)`` adds ``chat``, ``compare``, ``experiments`` and ``feedback`` to the main
parser; the main ``vectors`` command adds ``push`` with :func:`add_vectors_push_arguments` and
:func:`cmd_vectors_push`. Every command is a ``cmd_x(args) -> int`` raising
:class:`~prefvec.errors.PrefvecError` on failure (the main CLI prints it). Nothing heavy is imported
at parse time: the HTTP client is imported when a command runs, and torch never.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefvec.clients.client import PrefvecClient
    from prefvec.protocol import CompareSummary, PrefvecInfo


def _default_client(args: argparse.Namespace) -> PrefvecClient:
    from prefvec.clients.client import PrefvecClient

    return PrefvecClient(args.url, api_key=args.api_key, timeout=args.timeout)


# Tests replace this to run the commands against an httpx.MockTransport.
make_client: Callable[[argparse.Namespace], PrefvecClient] = _default_client


def _connect(args: argparse.Namespace) -> PrefvecClient:
    return make_client(args)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _json_arg(text: str | None, flag: str) -> dict[str, Any]:
    from prefvec.errors import ValidationError

    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValidationError(f"`{flag}` must be a JSON object, got {text!r}", field=flag) from exc
    if not isinstance(value, dict):
        raise ValidationError(f"`{flag}` must be a JSON object, got {text!r}", field=flag)
    return value


def _weights(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    from prefvec.weights import parse_weights

    return parse_weights(text)


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """``--url``, ``--api-key`` and ``--timeout`` (defaults from the environment)."""
    parser.add_argument(
        "--url", default=None, help="server URL (default $PREFVEC_URL or http://127.0.0.1:8000)"
    )
    parser.add_argument("--api-key", default=None, help="API key (default $PREFVEC_API_KEY)")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds allowed between bytes (300)"
    )


# ------------------------------------------------------------------------------------ chat


def _generation_options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "model": args.model,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "seed": args.seed,
        "preferences": _weights(args.preferences),
        "recipe": args.recipe,
        "experiment": args.experiment,
        "user": args.user,
    }
    if args.method or args.density is not None or args.merge_seed is not None:
        merge = {"method": args.method, "density": args.density, "seed": args.merge_seed}
        opts["merge"] = {k: v for k, v in merge.items() if v is not None}
    return {k: v for k, v in opts.items() if v is not None}


def _chat_messages(args: argparse.Namespace) -> list[dict[str, str]]:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    messages = [{"role": "system", "content": args.system}] if args.system else []
    return [*messages, {"role": "user", "content": prompt}]


def cmd_chat(args: argparse.Namespace) -> int:
    """Send one chat message; stream the answer to stdout (the recipe used goes to stderr)."""
    opts = _generation_options(args)
    info: PrefvecInfo | None
    with _connect(args) as client:
        if args.json:
            response = client.chat(_chat_messages(args), **opts)
            _print_json(response.model_dump(mode="json"))
            return 0
        if args.no_stream:
            response = client.chat(_chat_messages(args), **opts)
            print(response.choices[0].message.content)
            info = response.prefvec
        else:
            info = _stream_chat(client, _chat_messages(args), opts)
    if info is not None:
        arm = f", experiment {info.experiment} arm {info.arm}" if info.experiment else ""
        print(f"[{info.recipe_key} via {info.path}{arm}]", file=sys.stderr)
    return 0


def _stream_chat(
    client: PrefvecClient, messages: list[dict[str, str]], opts: dict[str, Any]
) -> PrefvecInfo | None:
    from prefvec.clients.client import chunk_text

    info: PrefvecInfo | None = None
    for chunk in client.chat_stream(messages, **opts):
        sys.stdout.write(chunk_text(chunk))
        sys.stdout.flush()
        info = chunk.prefvec or info
    sys.stdout.write("\n")
    return info


def _add_chat(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat with a running server, with preference weights")
    p.add_argument("prompt", help="the user message ('-' reads stdin)")
    p.add_argument("--system", default=None, help="a system message")
    p.add_argument("--model", default=None, help="model id or recipe:<name>")
    p.add_argument(
        "-p", "--preferences", default=None, help="weights, e.g. helpful=1,harmless=-0.5"
    )
    p.add_argument("--recipe", default=None, help="recipe name[@version]")
    p.add_argument(
        "--method", default=None, help="merge method for --preferences (linear, ties, ...)"
    )
    p.add_argument("--density", type=float, default=None, help="kept fraction for ties/dare")
    p.add_argument("--merge-seed", type=int, default=None, help="seed of DARE's random drop")
    p.add_argument("--experiment", default=None, help="route through this experiment")
    p.add_argument("--user", default=None, help="end-user id (sticky experiment arm)")
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None, help="0 is greedy")
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="sampling seed")
    p.add_argument("--no-stream", action="store_true", help="wait for the whole answer")
    p.add_argument("--json", action="store_true", help="print the full JSON response")
    add_connection_arguments(p)
    p.set_defaults(func=cmd_chat)


# --------------------------------------------------------------------------------- compare


def _compare_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompts_file:
        for line in Path(args.prompts_file).read_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                line = json.loads(line)["prompt"]
            if line:
                prompts.append(line)
    return prompts


def _compare_candidates(args: argparse.Namespace) -> list[dict[str, Any]]:
    candidates: list[dict[str, Any]] = [{"recipe": r} for r in args.recipe or []]
    for text in args.preferences or []:
        label, sep, weights = text.partition(":")
        if not sep or "=" in label:
            label, weights = "", text
        candidates.append({"label": label or None, "preferences": _weights(weights) or {}})
    if args.base:
        candidates.append({"label": "base"})
    return [{k: v for k, v in c.items() if v is not None} for c in candidates]


def cmd_compare(args: argparse.Namespace) -> int:
    """Outputs of prompts × candidates side by side, then mean scores and win rates."""
    with _connect(args) as client:
        response = client.compare(
            _compare_prompts(args),
            _compare_candidates(args),
            chat=not args.no_chat,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            seed=args.seed,
            scorers=args.scorer,
        )
    if args.json:
        _print_json(response.model_dump(mode="json"))
        return 0
    for i, row in enumerate(response.rows, 1):
        print(f"== prompt {i}: {row.prompt}")
        for out in row.outputs:
            scores = " ".join(f"{k}={v:.3g}" for k, v in out.scores.items())
            print(f"[{out.label}]{' (' + scores + ')' if scores else ''}\n{out.text}\n")
    _print_summary(response.summary)
    return 0


def _print_summary(summary: CompareSummary) -> None:
    if not summary.scorers:
        return
    print("== mean scores")
    print(f"{'LABEL':<28} " + " ".join(f"{s:>12}" for s in summary.scorers))
    for label, means in summary.mean_scores.items():
        cells = " ".join(f"{means.get(s, float('nan')):>12.4g}" for s in summary.scorers)
        print(f"{label:<28} {cells}")
    if summary.win_rates:
        print("== win rates (ties count half)")
    for w in summary.win_rates:
        print(
            f"{w.a} vs {w.b} on {w.scorer}: {w.rate:.3f} [{w.ci_low:.3f}, {w.ci_high:.3f}] "
            f"({w.wins}W/{w.losses}L/{w.ties}T)"
        )


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare recipes / preference sets side by side")
    p.add_argument("--prompt", action="append", help="a prompt (repeat for more)")
    p.add_argument("--prompts-file", default=None, help="one prompt per line, or JSONL {prompt}")
    p.add_argument("--recipe", action="append", help="a recipe candidate (repeat)")
    p.add_argument(
        "-p",
        "--preferences",
        action="append",
        help="a weights candidate, [label:]helpful=1,harmless=-0.5 (repeat)",
    )
    p.add_argument("--base", action="store_true", help="add the plain base as a candidate")
    p.add_argument("--scorer", action="append", help="scorer name (default: server's)")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-chat", action="store_true", help="send prompts as raw text")
    p.add_argument("--json", action="store_true", help="print the full JSON response")
    add_connection_arguments(p)
    p.set_defaults(func=cmd_compare)


# ----------------------------------------------------------------------------- vectors push


def add_vectors_push_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``prefvec vectors push FILE --name N [--metadata JSON]``."""
    parser.add_argument("file", help="safetensors vector file")
    parser.add_argument("--name", default=None, help="vector name (default: the file's metadata)")
    parser.add_argument("--metadata", default=None, help="JSON object of metadata fields to set")
    parser.add_argument("--json", action="store_true", help="print the stored record as JSON")
    add_connection_arguments(parser)


def cmd_vectors_push(args: argparse.Namespace) -> int:
    """Upload a vector file to the server (streamed) as a new version."""
    metadata = _json_arg(args.metadata, "--metadata")
    with _connect(args) as client:
        info = client.push_vector(Path(args.file), name=args.name, metadata=metadata or None)
    if args.json:
        _print_json(info.model_dump(mode="json"))
    else:
        print(f"pushed {info.name}@{info.version} ({info.kind}, sha256 {info.sha256[:12]})")
    return 0


# ----------------------------------------------------------------------------- experiments


def _parse_arm(text: str) -> dict[str, Any]:
    """``name=recipe[:traffic]`` -> an arm dict."""
    from prefvec.errors import ValidationError

    name, sep, rest = text.partition("=")
    recipe, _, traffic = rest.rpartition(":") if ":" in rest else (rest, "", "")
    try:
        share = float(traffic) if traffic else 1.0
    except ValueError:
        share = -1.0
    if not sep or not name or not recipe or share <= 0:
        raise ValidationError(
            f"`--arm` must be name=recipe[:traffic] with traffic > 0, got {text!r}", field="arm"
        )
    return {"name": name, "recipe": recipe, "traffic": share}


def cmd_experiments_create(args: argparse.Namespace) -> int:
    """Create an A/B(/n) experiment between recipes."""
    arms = [_parse_arm(a) for a in args.arm or []]
    with _connect(args) as client:
        info = client.create_experiment(args.name, arms, description=args.description)
    shares = ", ".join(f"{a.name}={a.recipe} ({a.traffic:g})" for a in info.arms)
    print(f"created experiment {info.name}: {shares}")
    return 0


def cmd_experiments_list(args: argparse.Namespace) -> int:
    """List experiments."""
    with _connect(args) as client:
        experiments = client.list_experiments()
    if args.json:
        _print_json(experiments.model_dump(mode="json")["data"])
        return 0
    print(f"{'NAME':<24} {'ARMS':<48} CREATED")
    for e in experiments.data:
        arms = ", ".join(f"{a.name}={a.recipe}" for a in e.arms)
        print(f"{e.name:<24} {arms:<48} {e.created_at or ''}")
    return 0


def cmd_experiments_show(args: argparse.Namespace) -> int:
    """Print one experiment and its per-arm statistics as JSON."""
    with _connect(args) as client:
        report = client.experiment_report(args.name)
    _print_json(report.model_dump(mode="json"))
    return 0


def _interval(mean: float | None, low: float | None, high: float | None) -> str:
    if mean is None:
        return "-"
    return (
        f"{mean:.3f} [{low:.3f}, {high:.3f}]"
        if low is not None and high is not None
        else f"{mean:.3f}"
    )


def cmd_experiments_report(args: argparse.Namespace) -> int:
    """Per-arm counts, mean rating and pairwise win rate with confidence intervals."""
    with _connect(args) as client:
        report = client.experiment_report(args.name)
    if args.json:
        _print_json(report.model_dump(mode="json"))
        return 0
    ci = f"{report.confidence:.0%} CI"
    print(f"experiment {report.name}" + (f": {report.description}" if report.description else ""))
    header = f"{'ARM':<16} {'RECIPE':<20} {'USERS':>6} {'REQS':>6} {'RATED':>6}"
    print(f"{header}  {'MEAN RATING (' + ci + ')':<30} PAIRWISE WIN RATE ({ci})")
    for a in report.arms:
        rating = _interval(a.mean_rating, a.ci_low, a.ci_high)
        pair = _interval(a.pairwise_win_rate, a.pairwise_ci_low, a.pairwise_ci_high)
        counts = f"{a.assignments:>6} {a.requests:>6} {a.ratings:>6}"
        print(f"{a.name:<16} {a.recipe:<20} {counts}  {rating:<30} {pair}")
    return 0


def _add_experiments(sub: argparse._SubParsersAction) -> None:
    exp = sub.add_parser("experiments", help="live A/B experiments between recipes")
    esub = exp.add_subparsers(dest="experiments_cmd", required=True)
    p = esub.add_parser("create", help="create an experiment")
    p.add_argument("name")
    p.add_argument("--arm", action="append", help="name=recipe[:traffic] (repeat, at least 2)")
    p.add_argument("--description", default="")
    add_connection_arguments(p)
    p.set_defaults(func=cmd_experiments_create)
    for name, func, text in (
        ("list", cmd_experiments_list, "list experiments"),
        ("show", cmd_experiments_show, "one experiment with its statistics, as JSON"),
        ("report", cmd_experiments_report, "per-arm statistics as a table"),
    ):
        p = esub.add_parser(name, help=text)
        if name != "list":
            p.add_argument("name")
        if name != "show":
            p.add_argument("--json", action="store_true")
        add_connection_arguments(p)
        p.set_defaults(func=func)


# -------------------------------------------------------------------------------- feedback


def cmd_feedback(args: argparse.Namespace) -> int:
    """Record a rating or a pairwise preference in an experiment."""
    with _connect(args) as client:
        result = client.feedback(
            args.experiment,
            user=args.user,
            arm=args.arm,
            rating=args.rating,
            preferred=args.preferred,
            rejected=args.rejected,
            completion_id=args.completion_id,
            comment=args.comment,
        )
    arm = f" (arm {result.arm})" if result.arm else ""
    print(f"recorded feedback #{result.id} in {result.experiment}{arm}")
    return 0


def _add_feedback(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("feedback", help="rate an experiment's output or prefer one arm")
    p.add_argument("experiment")
    p.add_argument("--user", default=None, help="user id (the rated arm is the user's arm)")
    p.add_argument("--arm", default=None, help="arm rated (default: the user's arm)")
    p.add_argument("--rating", type=float, default=None, help="a score, e.g. 1-5")
    p.add_argument("--preferred", default=None, help="pairwise: the winning arm")
    p.add_argument("--rejected", default=None, help="pairwise: the losing arm")
    p.add_argument("--completion-id", default=None)
    p.add_argument("--comment", default="")
    add_connection_arguments(p)
    p.set_defaults(func=cmd_feedback)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``chat``, ``compare``, ``experiments`` and ``feedback`` to the main CLI's subparsers."""
    _add_chat(subparsers)
    _add_compare(subparsers)
    _add_experiments(subparsers)
    _add_feedback(subparsers)
