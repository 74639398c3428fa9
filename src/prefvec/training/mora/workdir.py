"""Crash-safe files of a MORA work folder: atomic JSON, resumable JSONL stages, stage metadata.

A JSONL stage writes, per finished *unit* (usually one prompt), its output lines and then the
unit's id to ``<name>.progress``, each with flush + fsync. On restart, lines of units missing from
the progress file (written just before a crash) and a truncated last line are dropped, and the
stage resumes at the first unfinished unit, so the final file equals an uninterrupted run's.

``<name>.meta.json`` records the stage's config hash and whether it completed: a complete stage
with the same hash is skipped; a different hash is a :class:`~prefvec.errors.ConflictError`
unless ``force`` (which clears the stage's files).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prefvec.errors import ConflictError
from prefvec.fileio import atomic_write_bytes

logger = logging.getLogger(__name__)
UnitCallback = Callable[[str, str], None]
"""Called as ``on_unit(stage, unit_id)`` after each unit is durably written (tests interrupt)."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`prefvec.fileio.atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def dumps_line(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True) + "\n"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete lines of a JSONL file; a last line without newline or not valid JSON is dropped."""
    if not path.is_file():
        return []
    out = []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        last = i == len(lines) - 1
        if last and not line.endswith("\n"):
            logger.warning("%s: dropping a truncated last line", path.name)
            break
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if last:
                logger.warning("%s: dropping an unreadable last line", path.name)
                break
            raise
    return out


def write_jsonl(path: Path, rows: Iterable[Any]) -> None:
    """Write all ``rows`` atomically."""
    atomic_write_text(path, "".join(dumps_line(r) for r in rows))


class Stage:
    """One stage's files in a work folder: ``<name>.jsonl`` (optional), progress and meta.

    Args:
        workdir: the run folder.
        name: the stage / file stem (``rollouts``, ``profiles_after``...).
        config_hash: :meth:`~prefvec.training.mora.config.MoraConfig.stage_hash` of the stage.
        force: clear the stage's files when its hash changed instead of raising.
        on_unit: callback after every finished unit.
    """

    def __init__(
        self,
        workdir: Path,
        name: str,
        config_hash: str,
        *,
        force: bool = False,
        on_unit: UnitCallback | None = None,
    ) -> None:
        self.workdir, self.name, self.hash = Path(workdir), name, config_hash
        self.force, self.on_unit = force, on_unit
        self.path = self.workdir / f"{name}.jsonl"
        self.progress_path = self.workdir / f"{name}.progress"
        self.meta_path = self.workdir / f"{name}.meta.json"

    # ----------------------------------------------------------------------- metadata
    def meta(self) -> dict[str, Any] | None:
        if not self.meta_path.is_file():
            return None
        return dict(json.loads(self.meta_path.read_text(encoding="utf-8")))

    def check(self) -> bool:
        """True when the stage is complete with this hash (skip it); raises on a changed hash."""
        meta = self.meta()
        if meta is None:
            self.clear()  # files without metadata: of unknown config, start again
            return False
        if meta.get("config_hash") != self.hash:
            if not self.force:
                raise ConflictError(
                    f"stage {self.name!r} in `workdir` {str(self.workdir)!r} was run with another "
                    f"config (hash {meta.get('config_hash')}, now {self.hash}): use a new "
                    "--workdir or pass --force to redo it",
                    field="workdir",
                )
            logger.warning("stage %s: config changed, --force: starting it again", self.name)
            self.clear()
            return False
        return bool(meta.get("complete"))

    def clear(self) -> None:
        for p in (self.path, self.progress_path, self.meta_path):
            p.unlink(missing_ok=True)

    def start(self) -> None:
        atomic_write_json(
            self.meta_path, {"stage": self.name, "config_hash": self.hash, "complete": False}
        )

    def finish(self, **info: Any) -> None:
        meta = {"stage": self.name, "config_hash": self.hash, "complete": True, **info}
        atomic_write_json(self.meta_path, meta)

    # ----------------------------------------------------------------------- units
    def done_units(self, unit_of: Callable[[dict[str, Any]], str]) -> set[str]:
        """Units already finished; output lines of unfinished units are removed from the file."""
        raw_progress = self.progress_path.read_text("utf-8") if self.progress_path.is_file() else ""
        done = list(dict.fromkeys(str(r["unit"]) for r in read_jsonl(self.progress_path)))
        progress = [{"unit": u} for u in done]
        if raw_progress != "".join(dumps_line(r) for r in progress):
            write_jsonl(self.progress_path, progress)
        rows = read_jsonl(self.path)
        done_set = set(done)
        keep = [r for r in rows if unit_of(r) in done_set]
        raw = self.path.read_text(encoding="utf-8") if self.path.is_file() else ""
        if raw != "".join(dumps_line(r) for r in keep):
            write_jsonl(self.path, keep)
        return done_set

    def run_units(
        self,
        units: list[tuple[str, Any]],
        process: Callable[[list[Any]], list[list[dict[str, Any]]]],
        unit_of: Callable[[dict[str, Any]], str],
        batch_size: int = 1,
        progress: Any = None,
    ) -> None:
        """Process pending ``(unit_id, item)`` pairs in batches, appending each unit's lines.

        Args:
            units: every unit in order.
            process: items -> one list of output lines per item.
            unit_of: the unit id an output line belongs to (for cleaning after a crash).
            batch_size: items per ``process`` call.
            progress: an optional tqdm bar (updated per unit).
        """
        done = self.done_units(unit_of)
        pending = [(u, it) for u, it in units if u not in done]
        if progress is not None:
            progress.update(len(units) - len(pending))
        self.workdir.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(pending), batch_size):
            chunk = pending[start : start + batch_size]
            results = process([it for _, it in chunk])
            for (unit, _), lines in zip(chunk, results, strict=True):
                self._append(self.path, lines)
                self._append(self.progress_path, [{"unit": unit}])
                if progress is not None:
                    progress.update(1)
                if self.on_unit is not None:
                    self.on_unit(self.name, unit)

    @staticmethod
    def _append(path: Path, rows: list[dict[str, Any]]) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write("".join(dumps_line(r) for r in rows))
            f.flush()
            os.fsync(f.fileno())

    def rows(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path)
