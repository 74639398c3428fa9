"""Live A/B(/n) experiments between recipes, stored in the store's SQLite database (HTTP-free).

Assignment is sticky and stateless: ``u = sha256(experiment + "\\0" + user)`` read as a number in
[0, 1) picks the arm whose cumulative normalised traffic share first exceeds ``u``; the first
assignment is also recorded, so reports count distinct users per arm. Feedback is a rating of
one arm or a pairwise vote between two arms (a win, a tie or both bad). Reports give per-arm
counts, mean rating with a 95% interval (t quantile for small n), and pairwise win rates with
Wilson intervals; the leaderboard adds Bradley–Terry scores (:mod:`prefvec.server.leaderboard`).

Lifecycle: ``live`` → ``ended`` (no more traffic or feedback; the report stays) → ``archived``
(also left out of the list); ``delete`` removes the experiment with its assignments and feedback.
A live experiment pins its arms' recipe versions in the store (``recipe_pins``), so they cannot be
deleted under its users (409, like a vector used by a recipe).

Every number that enters is bounded (:class:`ExperimentLimits`): arm count, rating magnitude,
comment length; traffic shares are bounded by the wire model, so their sum is finite.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import math
import sqlite3
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from prefvec.errors import ConflictError, NotFoundError, ValidationError
from prefvec.evaluation.stats import Z95, wilson_interval
from prefvec.protocol import (
    ArmReport,
    ExperimentArm,
    ExperimentCreate,
    ExperimentInfo,
    ExperimentReport,
    FeedbackRequest,
    Leaderboard,
    LeaderboardArm,
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
# columns added after the first release (added in place to an existing database)
_MIGRATIONS = {
    "experiments": {"status": "TEXT NOT NULL DEFAULT 'live'", "ended_at": "TEXT"},
    "experiment_feedback": {"outcome": "TEXT"},
}
logger = logging.getLogger(__name__)
PIN_HOLDER = "experiment:"
"""Prefix of the ``recipe_pins`` holder of an experiment's pins."""
# two-sided 97.5% t quantiles for 1..30 degrees of freedom (normal beyond)
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042]  # fmt: skip

__all__ = [
    "Z95",
    "ExperimentLimits",
    "ExperimentService",
    "assign_arm",
    "mean_interval",
    "wilson_interval",
]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ExperimentLimits:
    """Bounds of what an experiment accepts (from the server settings).

    Args:
        max_arms: arms of one experiment at most.
        max_abs_rating: ``|rating|`` at most (finite; keeps every statistic finite).
        max_feedback_chars: characters of a feedback comment at most.
    """

    max_arms: int = 16
    max_abs_rating: float = 1e6
    max_feedback_chars: int = 4096

    @classmethod
    def from_settings(cls, settings: Any) -> ExperimentLimits:
        return cls(
            max_arms=settings.max_experiment_arms,
            max_abs_rating=settings.max_abs_rating,
            max_feedback_chars=settings.max_feedback_chars,
        )


def mean_interval(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """Mean and 95% interval (t quantile) of ``values``; interval None below two values.

    Finite for any finite input: the values are scaled by their largest magnitude first (so no
    square overflows), summed with ``math.fsum``, the variance taken about the mean, and bounds
    beyond the float range saturate at ±``sys.float_info.max``.
    """
    n = len(values)
    if n == 0:
        return None, None, None
    scale = max(abs(v) for v in values) or 1.0
    xs = [v / scale for v in values]
    mean = math.fsum(xs) / n
    if n < 2:
        return mean * scale, None, None
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    q = _T975[n - 2] if n - 1 <= len(_T975) else Z95
    half = q * sd / math.sqrt(n)
    top = sys.float_info.max  # an interval wider than the floats saturates instead of inf
    lo, hi = max(-top / scale, mean - half), min(top / scale, mean + half)
    return mean * scale, lo * scale, hi * scale


def assign_arm(experiment: str, user: str, arms: Sequence[ExperimentArm]) -> ExperimentArm:
    """The sticky arm of ``user``: a hash of (experiment, user) against the traffic split."""
    digest = hashlib.sha256(f"{experiment}\0{user}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    top = max(a.traffic for a in arms)
    shares = [a.traffic / top for a in arms]  # in (0, 1]: the sum is finite and > 0
    total = math.fsum(shares)
    acc = 0.0
    for arm, share in zip(arms, shares, strict=True):
        acc += share / total
        if u < acc:
            return arm
    return arms[-1]


class ExperimentService:
    """Experiments over a :class:`prefvec.vector_store.LocalStore` (its SQLite DB and recipes).

    Args:
        store: the local store (its database holds the experiment tables).
        limits: bounds of arms, ratings and comments.
    """

    def __init__(self, store: Any, limits: ExperimentLimits | None = None) -> None:
        self.store = store
        self.limits = limits or ExperimentLimits()
        self._lock = threading.Lock()
        with self._conn() as conn:
            conn.executescript(SCHEMA)
            _migrate(conn)
        self._repin_live()

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = self.store.connect()
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    def _repin_live(self) -> None:
        """Pin the recipes of live experiments made before pins existed (idempotent)."""
        for info in self.list(include_archived=False):
            if info.status != "live":
                continue
            try:
                self.store.pin_recipes(PIN_HOLDER + info.name, [a.recipe for a in info.arms])
            except NotFoundError as exc:  # deleted before pins existed: its users get 404s
                logger.warning("experiment %r: %s", info.name, exc.message)

    # -- experiments ---------------------------------------------------------------------------

    def create(self, req: ExperimentCreate) -> ExperimentInfo:
        """Create an experiment; every arm's recipe is pinned to a version now, and protected
        from deletion while the experiment is live.

        Raises:
            ValidationError: bad names, duplicate arm names, more arms than ``max_arms``.
            NotFoundError: an arm's recipe does not exist.
            ConflictError: the experiment name is taken.
        """
        self._check_create(req)
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
                    "INSERT INTO experiments (name, description, arms, created_at, status) "
                    "VALUES (?, ?, ?, ?, 'live')",
                    (info.name, info.description, _arms_json(arms), info.created_at),
                )
            except sqlite3.IntegrityError:
                raise ConflictError(
                    f"experiment {req.name!r} already exists", field="name"
                ) from None
            # same transaction: a recipe deleted since get_recipe() fails the whole create
            self.store.pin_recipes(PIN_HOLDER + info.name, [a.recipe for a in arms], conn=conn)
        return info

    def _check_create(self, req: ExperimentCreate) -> None:
        from prefvec.vector_store import check_name

        check_name(req.name, "name")
        problems = []
        if len(req.arms) > self.limits.max_arms:
            problems.append(
                f"`arms` takes at most `max_experiment_arms` = {self.limits.max_arms} arms, "
                f"got {len(req.arms)}"
            )
        names = [a.name for a in req.arms]
        for i, arm in enumerate(req.arms):
            try:
                check_name(arm.name, f"arms[{i}].name")
            except ValidationError as exc:
                problems.append(exc.message)
        if len(set(names)) != len(names):
            problems.append(f"`arms` names must be unique, got {names[:20]}")
        if problems:
            raise ValidationError("; ".join(problems), problems=problems, field="arms")

    def get(self, name: str) -> ExperimentInfo:
        """Raises NotFoundError naming the experiment."""
        with self._conn() as conn:
            row = conn.execute(
                "SELECT name, description, arms, created_at, status, ended_at FROM experiments "
                "WHERE name = ?",
                (name,),
            ).fetchone()
        if row is None:
            raise NotFoundError(f"experiment {name!r} not found", field="experiment")
        return self._info(row)

    @staticmethod
    def _info(row: tuple[Any, ...]) -> ExperimentInfo:
        arms = [ExperimentArm(**a) for a in json.loads(row[2])]
        return ExperimentInfo(
            name=row[0], description=row[1], arms=arms, created_at=row[3], status=row[4],
            ended_at=row[5],
        )  # fmt: skip

    def list(self, include_archived: bool = False) -> builtins.list[ExperimentInfo]:
        """Every experiment by name (archived ones only when asked for)."""
        where = "" if include_archived else " WHERE status != 'archived'"
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT name, description, arms, created_at, status, ended_at FROM experiments"
                f"{where} ORDER BY name"
            ).fetchall()
        return [self._info(r) for r in rows]

    # -- lifecycle -----------------------------------------------------------------------------

    def end(self, name: str) -> ExperimentInfo:
        """Stop routing traffic and taking feedback; the report stays; its recipes are unpinned.

        Raises:
            NotFoundError: unknown experiment.
            ConflictError: it is already ended or archived.
        """
        return self._transition(name, "ended", allowed_from=("live",))

    def archive(self, name: str) -> ExperimentInfo:
        """End (if live) and hide from the default list.

        Raises:
            NotFoundError: unknown experiment.
            ConflictError: it is already archived.
        """
        return self._transition(name, "archived", allowed_from=("live", "ended"))

    def _transition(self, name: str, status: str, allowed_from: tuple[str, ...]) -> ExperimentInfo:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT status, ended_at FROM experiments WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"experiment {name!r} not found", field="experiment")
            if row[0] not in allowed_from:
                raise ConflictError(
                    f"experiment {name!r} is {row[0]}; only a {' or '.join(allowed_from)} "
                    f"experiment can become {status}",
                    field="experiment",
                )
            conn.execute(
                "UPDATE experiments SET status = ?, ended_at = ? WHERE name = ?",
                (status, row[1] or _now(), name),
            )
            self.store.unpin_recipes(PIN_HOLDER + name, conn=conn)
        return self.get(name)

    def delete(self, name: str) -> None:
        """Delete an experiment with its assignments and feedback (and its recipe pins).

        Raises:
            NotFoundError: unknown experiment.
        """
        with self._conn() as conn:
            n = conn.execute("DELETE FROM experiments WHERE name = ?", (name,)).rowcount
            if n == 0:
                raise NotFoundError(f"experiment {name!r} not found", field="experiment")
            conn.execute("DELETE FROM experiment_assignments WHERE experiment = ?", (name,))
            conn.execute("DELETE FROM experiment_feedback WHERE experiment = ?", (name,))
            self.store.unpin_recipes(PIN_HOLDER + name, conn=conn)

    def _live(self, name: str) -> ExperimentInfo:
        info = self.get(name)
        if info.status != "live":
            raise ConflictError(
                f"experiment {name!r} is {info.status} (since {info.ended_at}): it no longer "
                "routes traffic or takes feedback",
                field="experiment",
            )
        return info

    # -- routing -------------------------------------------------------------------------------

    def route(self, name: str, user: str | None) -> ExperimentArm:
        """The arm serving ``user`` in experiment ``name``; counts the request.

        Raises:
            ValidationError: no user id (assignment is by user).
            NotFoundError: unknown experiment.
            ConflictError: the experiment is ended or archived.
        """
        if not user:
            raise ValidationError(
                f"`user` is required with `experiment` ({name!r}), got {user!r}", field="user"
            )
        info = self._live(name)
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
        """Record a rating or a pairwise vote; returns (feedback id, arm rated).

        Raises:
            ValidationError: neither or both of rating / pairwise, unknown arm names, a rating
                out of bounds, a comment too long, no arm and no user.
            NotFoundError: unknown experiment.
            ConflictError: the experiment is ended or archived.
        """
        info = self._live(req.experiment)
        problems = self._feedback_problems(req, [a.name for a in info.arms])
        arm = req.arm
        if req.rating is not None and arm is None:
            if not req.user:
                problems.append("a rating needs `arm` or `user`, got neither")
            else:
                arm = assign_arm(info.name, req.user, info.arms).name
        if problems:
            raise ValidationError("; ".join(problems), problems=problems, field="feedback")
        pairwise = req.preferred is not None
        with self._conn() as conn:
            cur = conn.execute(
                "INSERT INTO experiment_feedback (experiment, user, arm, rating, preferred, "
                "rejected, outcome, completion_id, comment, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    info.name, req.user, arm, req.rating, req.preferred, req.rejected,
                    (req.outcome or "win") if pairwise else None, req.completion_id, req.comment,
                    _now(),
                ),
            )  # fmt: skip
            fid = int(cur.lastrowid or 0)
        return fid, arm

    def _feedback_problems(
        self, req: FeedbackRequest, arm_names: builtins.list[str]
    ) -> builtins.list[str]:
        problems: builtins.list[str] = []
        pairwise = req.preferred is not None or req.rejected is not None
        if (req.rating is None) == (not pairwise):
            problems.append(
                "give either `rating` or `preferred` + `rejected`, got "
                f"rating={req.rating!r}, preferred={req.preferred!r}, rejected={req.rejected!r}"
            )
        bound = self.limits.max_abs_rating
        if req.rating is not None and not (math.isfinite(req.rating) and abs(req.rating) <= bound):
            problems.append(
                f"`rating` must be finite with |rating| <= `max_abs_rating` = {bound:g}, "
                f"got {req.rating!r}"
            )
        if req.outcome is not None and not pairwise:
            problems.append(f"`outcome` ({req.outcome!r}) goes with `preferred` + `rejected`")
        if len(req.comment) > self.limits.max_feedback_chars:
            problems.append(
                f"`comment` takes at most `max_feedback_chars` = {self.limits.max_feedback_chars}"
                f" characters, got {len(req.comment)}"
            )
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
        return problems

    def _votes(self, conn: sqlite3.Connection, name: str) -> builtins.list[tuple[str, str, str]]:
        rows = conn.execute(
            "SELECT preferred, rejected, COALESCE(outcome, 'win') FROM experiment_feedback "
            "WHERE experiment = ? AND preferred IS NOT NULL ORDER BY id",
            (name,),
        ).fetchall()
        return [(str(p), str(r), str(o)) for p, r, o in rows]

    def report(self, name: str) -> ExperimentReport:
        """Per-arm counts, mean rating with a 95% interval, pairwise win rates (Wilson)."""
        info = self.get(name)
        with self._conn() as conn:
            counts = conn.execute(
                "SELECT arm, COUNT(*), SUM(requests) FROM experiment_assignments "
                "WHERE experiment = ? GROUP BY arm",
                (name,),
            ).fetchall()
            ratings = conn.execute(
                "SELECT arm, rating FROM experiment_feedback WHERE experiment = ? "
                "AND rating IS NOT NULL",
                (name,),
            ).fetchall()
            votes = self._votes(conn, name)
        assigned = {a: (int(n), int(r or 0)) for a, n, r in counts}
        arms = [
            self._arm_report(arm, assigned.get(arm.name, (0, 0)), ratings, votes)
            for arm in info.arms
        ]
        return ExperimentReport(
            name=name, description=info.description, arms=arms, status=info.status
        )

    @staticmethod
    def _arm_report(
        arm: ExperimentArm,
        assigned: tuple[int, int],
        ratings: builtins.list[tuple[str, float]],
        votes: builtins.list[tuple[str, str, str]],
    ) -> ArmReport:
        values = [float(r) for a, r in ratings if a == arm.name]
        mean, lo, hi = mean_interval(values)
        mine = [(p, o) for p, r, o in votes if arm.name in (p, r)]
        ties = sum(1 for _, o in mine if o != "win")
        wins = sum(1 for p, o in mine if o == "win" and p == arm.name)
        losses = len(mine) - ties - wins
        n = len(mine)
        plo, phi = wilson_interval(wins + ties / 2, n)
        return ArmReport(
            name=arm.name, recipe=arm.recipe, assignments=assigned[0], requests=assigned[1],
            ratings=len(values), mean_rating=mean, ci_low=lo, ci_high=hi, pairwise_wins=wins,
            pairwise_losses=losses, pairwise_ties=ties,
            pairwise_win_rate=(wins + ties / 2) / n if n else None,
            pairwise_ci_low=plo if n else None, pairwise_ci_high=phi if n else None,
        )  # fmt: skip

    def leaderboard(self, name: str, seed: int = 0) -> Leaderboard:
        """Arms by Bradley–Terry score from the pairwise votes (bootstrap intervals, seeded,
        when there are more than two arms)."""
        from prefvec.server.leaderboard import Vote, standings

        info = self.get(name)
        with self._conn() as conn:
            votes = [Vote(p, r, o) for p, r, o in self._votes(conn, name)]
        recipes = {a.name: a.recipe for a in info.arms}
        rows = standings([a.name for a in info.arms], votes, seed=seed)
        rows.sort(key=lambda r: -math.inf if r.bt_score is None else r.bt_score, reverse=True)
        return Leaderboard(
            experiment=name,
            n_votes=len(votes),
            arms=[LeaderboardArm(recipe=recipes[r.arm], **vars(r)) for r in rows],
        )


def _arms_json(arms: Sequence[ExperimentArm]) -> str:
    return json.dumps([a.model_dump() for a in arms])


def _migrate(conn: sqlite3.Connection) -> None:
    """Add the columns of :data:`_MIGRATIONS` that an older database lacks."""
    for table, columns in _MIGRATIONS.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for column, decl in columns.items():
            if column not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
