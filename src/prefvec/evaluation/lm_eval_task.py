"""lm-evaluation-harness task files for our multiple-choice suites, so the standard harness scores
any recipe through a prefvec server on exactly our items.

``write_task("hhh_helpful", "out/lm_eval_tasks")`` writes ``prefvec_hhh_helpful.jsonl`` (one row
per item: ``prompt``, ``choices``, ``gold``) and ``prefvec_hhh_helpful.yaml`` (a
``multiple_choice`` task over that file, metric ``acc``). Run it with the chat template, as our
suite renders prompts::

    python -m prefvec.evaluation.lm_eval_task hhh_helpful out/lm_eval_tasks
    lm_eval --model local-completions --tasks prefvec_hhh_helpful \\
        --include_path out/lm_eval_tasks --apply_chat_template \\
        --model_args base_url=http://127.0.0.1:8000/v1/completions,model=recipe:<name>,\\
    tokenizer_backend=huggingface,tokenizer=<the base's folder>

With ``--apply_chat_template`` the harness renders the prompt as one user turn with the
generation prompt and appends each choice with no delimiter, the sequences our suite scores;
its ``acc`` (argmax of the summed log-likelihood) is our ``accuracy``. (The harness moves the
context's trailing whitespace -- ChatML's newline after ``assistant`` -- into the continuation, so
its log-likelihoods include that one token: the same amount for every choice of an item, so the
chosen answers do not change.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from prefvec.errors import ValidationError

SINGLE_ANSWER = ("mc",)


def task_name(suite: str) -> str:
    return f"prefvec_{suite}"


def _yaml(name: str, data: Path) -> str:
    # JSON is YAML: no YAML library needed, and every string is quoted safely
    lines = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "prompt",
        "doc_to_choice": "choices",
        "doc_to_target": "gold",
        "target_delimiter": "",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }
    return "\n".join(f"{k}: {json.dumps(v)}" for k, v in lines.items()) + "\n"


def write_task(
    suite: str,
    out_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> Path:
    """Write the task of a single-answer multiple-choice suite into ``out_dir``.

    Args:
        suite: a suite of kind ``mc`` (``hhh_helpful``, ``truthfulqa_mc1``, ...).
        out_dir: folder for the ``.yaml`` and ``.jsonl`` (pass it as ``--include_path``).
        data_dir / limit / seed: as for ``prefvec eval`` (the same items are drawn).

    Returns:
        The task's YAML file.

    Raises:
        ValidationError: an unknown suite, or one that is not single-answer multiple choice.
    """
    from prefvec.evaluation.data import eval_data_dir, subsample
    from prefvec.evaluation.suites import SUITES

    spec = SUITES.get(suite)
    if spec is None or spec.kind not in SINGLE_ANSWER:
        mc = sorted(n for n, s in SUITES.items() if s.kind in SINGLE_ANSWER)
        raise ValidationError(f"`suite` must be one of {mc}, got {suite!r}", field="suite")
    items = subsample(spec.load(eval_data_dir(data_dir)), limit, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = out / f"{task_name(suite)}.jsonl"
    rows = [
        {"id": it.id, "prompt": it.prompt, "choices": list(it.choices), "gold": it.labels.index(1)}
        for it in items
    ]
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    task = out / f"{task_name(suite)}.yaml"
    task.write_text(_yaml(task_name(suite), data))
    return task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m prefvec.evaluation.lm_eval_task",
        description="Write an lm-evaluation-harness task for one of our multiple-choice suites.",
    )
    parser.add_argument("suite", help="hhh_helpful, hhh_harmless, hhh_honest, truthfulqa_mc1")
    parser.add_argument("out_dir", help="folder to pass to lm_eval --include_path")
    parser.add_argument("--data-dir", default=None, help="eval data root (default: eval_data/)")
    parser.add_argument("--limit", type=int, default=None, help="items at most (seeded draw)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    task = write_task(
        args.suite, args.out_dir, data_dir=args.data_dir, limit=args.limit, seed=args.seed
    )
    print(f"{task}  (lm_eval --include_path {task.parent} --tasks {task_name(args.suite)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
