"""The MORA flow over one work folder: each stage reads the previous stage's files.

Files (``<workdir>/``): ``config.json``, ``prompts.jsonl``, ``rollouts.jsonl``,
``profiles.jsonl``, ``mined.jsonl``, ``fused.jsonl``, ``rollouts_after.jsonl``,
``profiles_after.jsonl``, ``pairs.jsonl``, ``report.json``, ``report.png``; beside each,
``<stage>.meta.json`` (config hash, completion, counts) and ``<stage>.progress`` (finished units).
Calling a stage runs the unfinished stages before it; finished ones with the same config are
skipped (see :mod:`prefvec.training.mora.workdir` for resume and config-change rules).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prefvec.training.mora.config import MoraConfig
from prefvec.training.mora.fusion import Fuser, Rewriter, Similarity, fusion_counts, similarity_for
from prefvec.training.mora.generate import Generator, generator_from_config, rollout_rows
from prefvec.training.mora.mining import mine_row, mining_counts
from prefvec.training.mora.pairs import max_margin_pair, origin_of, pair_counts
from prefvec.training.mora.profiles import Dimension, ScorerGetter, build_dimensions, profile_rows
from prefvec.training.mora.prompts import PromptRecord, load_prompts
from prefvec.training.mora.report import build_report, plot_report
from prefvec.training.mora.workdir import (
    Stage,
    UnitCallback,
    atomic_write_json,
    read_jsonl,
    write_jsonl,
)

logger = logging.getLogger(__name__)
Row = dict[str, Any]


def _by_id(rows: Sequence[Row]) -> dict[str, Row]:
    return {r["id"]: r for r in rows}


class MoraPipeline:
    """Runs the MORA stages of ``cfg`` in ``cfg.workdir``.

    Args:
        cfg: the run configuration.
        generator: rollout sampler (default: from ``cfg``: server when ``url``, else in process).
        scorer_getter: ``name -> Scorer`` for the dimensions (default the registry).
        rewriter: the fusion rewriter (default from ``cfg.rewriter``).
        similarity: ``(method name, function)`` of the intent check (default from
            ``cfg.intent_check``).
        force: redo stages whose config changed instead of raising.
        on_unit: called after each durable unit (``(stage, unit)``).
        progress: show tqdm bars.
    """

    def __init__(
        self,
        cfg: MoraConfig,
        *,
        generator: Generator | None = None,
        scorer_getter: ScorerGetter | None = None,
        rewriter: Rewriter | None = None,
        similarity: tuple[str, Similarity] | None = None,
        force: bool = False,
        on_unit: UnitCallback | None = None,
        progress: bool = True,
    ) -> None:
        self.cfg, self.workdir = cfg, Path(cfg.workdir)
        self._generator, self._getter = generator, scorer_getter
        self._rewriter, self._similarity = rewriter, similarity
        self._dims: list[Dimension] | None = None
        self.force, self.on_unit, self.progress = force, on_unit, progress
        self.workdir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.workdir / "config.json", cfg.to_dict())

    # ------------------------------------------------------------------------- components
    def generator(self) -> Generator:
        if self._generator is None:
            self._generator = generator_from_config(self.cfg)
        return self._generator

    def dimensions(self) -> list[Dimension]:
        if self._dims is None:
            self._dims = build_dimensions(self.cfg.dimensions, self._getter)
        return self._dims

    def rewriter(self) -> Rewriter:
        if self._rewriter is None:
            from prefvec.training.mora.fusion import LLMRewriter, TemplateRewriter

            cfg = self.cfg
            if cfg.rewriter == "template":
                self._rewriter = TemplateRewriter(cfg.template)
            else:
                from prefvec.clients import PrefvecClient

                client = PrefvecClient(cfg.rewrite_url or cfg.url)
                self._rewriter = LLMRewriter(
                    client,
                    cfg.llm_template,
                    temperature=cfg.rewrite_temperature,
                    max_tokens=cfg.rewrite_max_tokens,
                    model=cfg.rewrite_model,
                )
        return self._rewriter

    def _stage(self, name: str, hash_of: str) -> Stage:
        return Stage(
            self.workdir, name, self.cfg.stage_hash(hash_of), force=self.force, on_unit=self.on_unit
        )

    def _bar(self, name: str, total: int) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=f"mora {name}", unit="prompt", disable=not self.progress)

    def _units(
        self,
        stage: Stage,
        units: list[tuple[str, Any]],
        process: Callable,
        unit_of: Callable[[Row], str],
        batch_size: int = 1,
    ) -> None:
        stage.start()
        with self._bar(stage.name, len(units)) as bar:
            stage.run_units(units, process, unit_of, batch_size, bar)

    # ----------------------------------------------------------------------------- stages
    def prompts(self) -> list[PromptRecord]:
        """``prompts.jsonl``: the run's original prompts (written atomically)."""
        stage = self._stage("prompts", "prompts")
        if not stage.check():
            c = self.cfg
            recs = load_prompts(c.sources, c.limit_per_source, c.seed, c.data_dir, c.eval_data_dir)
            write_jsonl(stage.path, [r.to_dict() for r in recs])
            stage.finish(prompts=len(recs))
            logger.info("prompts: %d from %s", len(recs), c.sources)
        return [PromptRecord.from_dict(r) for r in stage.rows()]

    def _rollouts(self, name: str, hash_of: str, prompts: list[PromptRecord]) -> list[Row]:
        stage = self._stage(name, hash_of)
        if not stage.check():
            c = self.cfg

            def process(batch: list[PromptRecord]) -> list[list[Row]]:
                return rollout_rows(self.generator(), batch, c.n_samples, c.seed)

            self._units(
                stage, [(p.id, p) for p in prompts], process, lambda r: r["id"], c.batch_size
            )
            stage.finish(prompts=len(prompts), samples=c.n_samples)
        return stage.rows()

    def _profiles(
        self, name: str, hash_of: str, prompts: list[PromptRecord], rollouts: list[Row]
    ) -> list[Row]:
        stage = self._stage(name, hash_of)
        if not stage.check():
            by_id = _by_id(rollouts)

            def process(batch: list[PromptRecord]) -> list[list[Row]]:
                return profile_rows(self.dimensions(), batch, [by_id[p.id] for p in batch])

            self._units(
                stage, [(p.id, p) for p in prompts], process, lambda r: r["id"], self.cfg.batch_size
            )
            stage.finish(prompts=len(prompts), dimensions=self.cfg.dimension_names())
        return stage.rows()

    def rollouts(self) -> list[Row]:
        """``rollouts.jsonl``: N samples per original prompt."""
        return self._rollouts("rollouts", "rollouts", self.prompts())

    def profiles(self) -> list[Row]:
        """``profiles.jsonl``: the score matrix and summary per original prompt."""
        rollouts = self.rollouts()
        return self._profiles("profiles", "profiles", self.prompts(), rollouts)

    def mine(self) -> list[Row]:
        """``mined.jsonl``: the single-reward prompts."""
        profiles = self.profiles()
        stage = self._stage("mined", "mine")
        if not stage.check():
            good, unreached = self.cfg.good, self.cfg.mine_unreached
            self._units(
                stage,
                [(p["id"], p) for p in profiles],
                lambda batch: [mine_row(p, good, unreached) for p in batch],
                lambda r: r["id"],
            )
            stage.finish(**mining_counts(profiles, good, unreached))
            logger.info("mined: %s", stage.meta())
        return stage.rows()

    def fuse(self) -> list[Row]:
        """``fused.jsonl``: every rewrite of every mined prompt, kept or rejected (with reason)."""
        mined = self.mine()
        prompts = self.prompts()
        stage = self._stage("fused", "fuse")
        if not stage.check():
            c = self.cfg
            method, sim = self._similarity or similarity_for(c.intent_check)
            fuser = Fuser(
                self.rewriter(),
                sim,
                method,
                prompts,
                n_rewrites=c.rewrites_per_prompt,
                min_sim=c.min_intent_sim,
                seed=c.seed,
            )
            by_id = {p.id: p for p in prompts}
            self._units(
                stage,
                [(m["id"], m) for m in mined],
                lambda batch: [fuser.fuse(m, by_id[m["id"]]) for m in batch],
                lambda r: r["unit"],
            )
            stage.finish(**fusion_counts(stage.rows()))
            logger.info("fused: %s", stage.meta())
        return stage.rows()

    def pairs(self) -> list[Row]:
        """``pairs.jsonl``: max-margin pairs from fresh rollouts of the kept rewrites."""
        fused = [r for r in self.fuse() if r["kept"]]
        fused_prompts = [PromptRecord.from_dict(r) for r in fused]
        roll = self._rollouts("rollouts_after", "fuse", fused_prompts)
        prof = self._profiles("profiles_after", "fuse", fused_prompts, roll)
        stage = self._stage("pairs", "pairs")
        if not stage.check():
            c = self.cfg
            cands = [
                (p, _by_id(roll)[p.id], _by_id(prof)[p.id], origin_of(r))
                for p, r in zip(fused_prompts, fused, strict=True)
            ]
            if c.include_original:
                o_roll, o_prof = _by_id(self.rollouts()), _by_id(self.profiles())
                cands += [(p, o_roll[p.id], o_prof[p.id], origin_of(None)) for p in self.prompts()]
            weights = c.reward_weight_map()

            def process(batch: list[tuple]) -> list[list[Row]]:
                return [max_margin_pair(p, ro, pr, weights, c.margin, o) for p, ro, pr, o in batch]

            self._units(
                stage,
                [(t[0].id, t) for t in cands],
                process,
                lambda r: r["provenance"]["prompt_id"],
            )
            stage.finish(**pair_counts(stage.rows(), len(cands)))
            logger.info("pairs: %s", stage.meta())
        return stage.rows()

    def report(self) -> dict[str, Any]:
        """``report.json`` (+ ``report.png``): the reachable region before vs after rewriting."""
        self.pairs()
        stage = self._stage("report", "report")
        path = self.workdir / "report.json"
        if stage.check() and path.is_file():
            return _read_json(path)
        counts = {
            name: {
                k: v
                for k, v in (self._stage(stem, name).meta() or {}).items()
                if k not in ("stage", "config_hash", "complete")
            }
            for stem, name in (("mined", "mine"), ("fused", "fuse"), ("pairs", "pairs"))
        }
        before = read_jsonl(self.workdir / "profiles.jsonl")
        after = read_jsonl(self.workdir / "profiles_after.jsonl")
        fused = read_jsonl(self.workdir / "fused.jsonl")
        parents = sorted({f["parents"][0] for f in fused if f.get("kept")})
        report = build_report(before, after, self.cfg.good, parent_ids=parents, **counts)
        atomic_write_json(path, report)
        png = self.workdir / "report.png"
        tmp = self.workdir / ".report.tmp.png"
        if plot_report(before, after, tmp) is not None:
            os.replace(tmp, png)
        stage.finish(png=png.is_file())
        return report

    def run(self) -> dict[str, Any]:
        """Every stage, in order (finished ones are skipped)."""
        return self.report()


def _read_json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))
