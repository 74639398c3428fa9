"""Live A/B(/n) experiments between recipes, stored in the store's SQLite database (HTTP-free).

Assignment is sticky and stateless: ``u = sha256(experiment + "\\0" + user)`` read as a number in
[0, 1) picks the arm whose cumulative normalised traffic share first exceeds ``u``; the first
assignment is also recorded, so reports count distinct users per arm. Feedback is a rating of
one arm or a pairwise preference between two arms. Reports give per-arm counts, mean rating with
a 95% normal interval (t quantile for small n), and pairwise win rates with Wilson intervals.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from prefvec.errors import ConflictError, NotFoundError, ValidationError
from prefvec.protocol import (
    ArmReport,
    ExperimentArm,
    ExperimentCreate,
    ExperimentInfo,
    ExperimentReport,
    FeedbackRequest,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    name TEXT PRIMARY KEY, description TEXT NOT NULL, arms TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS experiment_assignments (
    experiment TEXT NOT NULL, user TEXT NOT NULL, arm TEXT NOT NULL, requests INTEGER NOT NULL,
    created_at TEXT NOT NULL, PRIMARY KEY (experiment, user)
);
CREATE TABLE IF NOT EXISTS experiment_feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, experiment TEXT NOT NULL, user TEXT, arm TEXT,
    rating REAL, preferred TEXT, rejected TEXT, completion_id TEXT, comment TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""
Z95 = 1.959963984540054
# two-sided 97.5% t quantiles for 1..30 degrees of freedom (normal beyond)
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042]  # fmt: skip


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (Wilson, 1927); (0, 1) when n == 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """Mean and 95% interval (t quantile) of ``values``; interval None below two values."""
    n = len(values)
    if n == 0:
        return None, None, None
    mean = sum(values) / n
    if n < 2:
        return mean, None, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    q = _T975[n - 2] if n - 1 <= len(_T975) else Z95
    half = q * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def assign_arm(experiment: str, user: str, arms: Sequence[ExperimentArm]) -> ExperimentArm:
    """The sticky arm of ``user``: a hash of (experiment, user) against the traffic split."""
    digest = hashlib.sha256(f"{experiment}\0{user}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    total = sum(a.traffic for a in arms)
    acc = 0.0
    for arm in arms:
        acc += arm.traffic / total
        if u < acc:
            return arm
    return arms[-1]


class ExperimentService:
    """Experiments over a :class:`prefvec.vector_store.LocalStore` (its SQLite DB and recipes)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._lock = threading.Lock()
        with self._conn() as conn:
            conn.executescript(SCHEMA)

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = self.store.connect()
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    # -- experiments ---------------------------------------------------------------------------

    def create(self, req: ExperimentCreate) -> ExperimentInfo:
        """Create an experiment; every arm's recipe is pinned to a version now.

        Raises:
            ValidationError: bad names, duplicate arm names.
            NotFoundError: an arm's recipe does not exist.
            ConflictError: the experiment name is taken.
        """
        from prefvec.vector_store import check_name

        check_name(req.name, "name")
        problems = []
        names = [a.name for a in req.arms]
        for i, arm in enumerate(req.arms):
            try:
                check_name(arm.name, f"arms[{i}].name")
            except ValidationError as exc:
                problems.append(exc.message)
        if len(set(names)) != len(names):
            problems.append(f"`arms` names must be unique, got {names}")
        if problems:
            raise ValidationError("; ".join(problems), problems=problems, field="arms")
        arms = []
        for arm in req.arms:
            rec = self.store.get_recipe(arm.recipe)
            arms.append(arm.model_copy(update={"recipe": f"{rec.name}@{rec.version}"}))
        info = ExperimentInfo(
            name=req.name, arms=arms, description=req.description, created_at=_now()
        )
        with self._conn() as conn:
            try:
                conn.execute(
                    "INSERT INTO experiments VALUES (?, ?, ?, ?)",
                    (
                        info.name,
                        info.description,
                        json.dumps([a.model_dump() for a in arms]),
                        info.created_at,
                    ),
                )
            except sqlite3.IntegrityError:
                raise ConflictError(
                    f"experiment {req.name!r} already exists", field="name"
                ) from None
        return info

    def get(self, name: str) -> ExperimentInfo:
        """Raises NotFoundError naming the experiment."""
        with self._conn() as conn:
            row = conn.execute(
                "SELECT name, description, arms, created_at FROM experiments WHERE name = ?",
                (name,),
            ).fetchone()
        if row is None:
            raise NotFoundError(f"experiment {name!r} not found", field="experiment")
        return self._info(row)

    @staticmethod
    def _info(row: tuple[Any, ...]) -> ExperimentInfo:
        arms = [ExperimentArm(**a) for a in json.loads(row[2])]
        return ExperimentInfo(name=row[0], description=row[1], arms=arms, created_at=row[3])

    def list(self) -> list[ExperimentInfo]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT name, description, arms, created_at FROM experiments ORDER BY name"
            ).fetchall()
        return [self._info(r) for r in rows]

    # -- routing -------------------------------------------------------------------------------

    def route(self, name: str, user: str | None) -> ExperimentArm:
        """The arm serving ``user`` in experiment ``name``; counts the request.

        Raises:
            ValidationError: no user id (assignment is by user).
            NotFoundError: unknown experiment.
        """
        if not user:
            raise ValidationError(
                f"`user` is required with `experiment` ({name!r}), got {user!r}", field="user"
            )
        info = self.get(name)
        arm = assign_arm(name, user, info.arms)
        with self._lock, self._conn() as conn:
            conn.execute(
                "INSERT INTO experiment_assignments VALUES (?, ?, ?, 1, ?) "
                "ON CONFLICT (experiment, user) DO UPDATE SET requests = requests + 1",
                (name, user, arm.name, _now()),
            )
        return arm

    # -- feedback and report ------------------------------------------------------------------

    def feedback(self, req: FeedbackRequest) -> tuple[int, str | None]:
        """Record a rating or a pairwise preference; returns (feedback id, arm rated).

        Raises:
            ValidationError: neither or both of rating / pairwise, unknown arm names, a
                non-finite rating, no arm and no user.
            NotFoundError: unknown experiment.
        """
        info = self.get(req.experiment)
        arm_names = [a.name for a in info.arms]
        problems: list[str] = []
        pairwise = req.preferred is not None or req.rejected is not None
        if (req.rating is None) == (not pairwise):
            problems.append(
                "give either `rating` or `preferred` + `rejected`, got "
                f"rating={req.rating!r}, preferred={req.preferred!r}, rejected={req.rejected!r}"
            )
        if req.rating is not None and not math.isfinite(req.rating):
            problems.append(f"`rating` must be finite, got {req.rating!r}")
        for field_name in ("arm", "preferred", "rejected"):
            value = getattr(req, field_name)
            if value is not None and value not in arm_names:
                problems.append(f"`{field_name}` must be one of {arm_names}, got {value!r}")
        if pairwise and (
            req.preferred is None or req.rejected is None or req.preferred == req.rejected
        ):
            problems.append(
                f"`preferred` and `rejected` must name two different arms, got "
                f"{req.preferred!r} and {req.rejected!r}"
            )
        arm = req.arm
        if req.rating is not None and arm is None:
            if not req.user:
                problems.append("a rating needs `arm` or `user`, got neither")
            else:
                arm = assign_arm(info.name, req.user, info.arms).name
        if problems:
            raise ValidationError("; ".join(problems), problems=problems, field="feedback")
        with self._conn() as conn:
            cur = conn.execute(
                "INSERT INTO experiment_feedback (experiment, user, arm, rating, preferred, "
                "rejected, completion_id, comment, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    info.name,
                    req.user,
                    arm,
                    req.rating,
                    req.preferred,
                    req.rejected,
                    req.completion_id,
                    req.comment,
                    _now(),
                ),
            )
            fid = int(cur.lastrowid or 0)
        return fid, arm

    def report(self, name: str) -> ExperimentReport:
        """Per-arm counts, mean rating with a 95% interval, pairwise win rates (Wilson)."""
        info = self.get(name)
        with self._conn() as conn:
            assigned = dict(
                conn.execute(
                    "SELECT arm, COUNT(*) FROM experiment_assignments WHERE experiment = ? "
                    "GROUP BY arm",
                    (name,),
                ).fetchall()
            )
            requests = dict(
                conn.execute(
                    "SELECT arm, SUM(requests) FROM experiment_assignments WHERE experiment = ? "
                    "GROUP BY arm",
                    (name,),
                ).fetchall()
            )
            ratings = conn.execute(
                "SELECT arm, rating FROM experiment_feedback WHERE experiment = ? "
                "AND rating IS NOT NULL",
                (name,),
            ).fetchall()
            pairs = conn.execute(
                "SELECT preferred, rejected FROM experiment_feedback WHERE experiment = ? "
                "AND preferred IS NOT NULL",
                (name,),
            ).fetchall()
        arms = []
        for arm in info.arms:
            values = [float(r) for a, r in ratings if a == arm.name]
            mean, lo, hi = mean_interval(values)
            wins = sum(1 for p, _ in pairs if p == arm.name)
            losses = sum(1 for _, r in pairs if r == arm.name)
            n = wins + losses
            plo, phi = wilson_interval(wins, n)
            arms.append(ArmReport(
                name=arm.name, recipe=arm.recipe, assignments=int(assigned.get(arm.name, 0)),
                requests=int(requests.get(arm.name, 0) or 0), ratings=len(values),
                mean_rating=mean, ci_low=lo, ci_high=hi, pairwise_wins=wins,
                pairwise_losses=losses, pairwise_win_rate=wins / n if n else None,
                pairwise_ci_low=plo if n else None, pairwise_ci_high=phi if n else None,
            ))  # fmt: skip
        return ExperimentReport(name=name, description=info.description, arms=arms)
