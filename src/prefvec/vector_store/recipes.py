"""Recipes: named, versioned merge specs, stored in the store's SQLite DB (table ``recipes``).

A recipe's vector references are pinned to a version when it is saved (``"helpful"`` becomes
``"helpful@3"``), so a recipe version always means the same merge. ``recipe_refs`` indexes which
recipe versions use which vector versions; the store refuses to delete a vector a recipe uses.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from prefvec.errors import NotFoundError, ValidationError
from prefvec.merging.spec import MergeSpec
from prefvec.vector_store.format import check_name
from prefvec.vector_store.validation import format_ref, parse_ref

FALLBACK_METHODS = ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "magnitude")

RECIPE_SCHEMA = """
CREATE TABLE IF NOT EXISTS recipes (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS recipe_refs (
    recipe_name TEXT NOT NULL,
    recipe_version INTEGER NOT NULL,
    vector_name TEXT NOT NULL,
    vector_version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS recipe_refs_vector ON recipe_refs (vector_name, vector_version);
CREATE TABLE IF NOT EXISTS recipe_pins (
    holder TEXT NOT NULL,
    recipe_name TEXT NOT NULL,
    recipe_version INTEGER NOT NULL,
    PRIMARY KEY (holder, recipe_name, recipe_version)
);
"""


def known_methods() -> list[str]:
    """Merge method names of :func:`prefvec.merging.available_methods` (or a fallback list)."""
    try:
        from prefvec.merging import available_methods  # type: ignore[attr-defined]

        return list(available_methods())
    except Exception:  # merging not importable here: accept the standard names
        return list(FALLBACK_METHODS)


class Recipe(BaseModel):
    """A named, versioned merge recipe.

    Args:
        name: recipe name (same rules as vector names).
        version: assigned by the store on save.
        method: a registered merge method (``linear``, ``ties``, ``dare_linear``, ...).
        weights: ``{"vector" or "vector@version": weight}``; any finite real weight. Saved recipes
            have every reference pinned (``"vector@version"``).
        density: fraction kept by TIES / DARE / magnitude pruning, in (0, 1].
        seed: seed of DARE's random drop.
        description: free text.
        created_at: set by the store (ISO 8601, UTC).
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    version: int | None = Field(None, ge=1)
    method: str = "linear"
    weights: dict[str, float] = Field(default_factory=dict)
    density: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = 0
    description: str = ""
    created_at: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        check_name(v, "name")
        return v

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        methods = known_methods()
        if v not in methods:
            raise ValueError(f"unknown merge method {v!r}; known: {', '.join(sorted(methods))}")
        return v

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        for ref, w in v.items():
            parse_ref(ref, f"weights.{ref}")
            if not math.isfinite(w):
                raise ValueError(f"`weights.{ref}` must be finite, got {w}")
        return v

    @classmethod
    def parse(cls, data: Recipe | Mapping[str, Any]) -> Recipe:
        """Build a recipe, turning every pydantic problem into one prefvec ``ValidationError``."""
        if isinstance(data, Recipe):
            return data
        try:
            return cls.model_validate(dict(data))
        except pydantic.ValidationError as e:
            problems = [_describe(err) for err in e.errors()]
            raise ValidationError(
                "invalid recipe: " + "; ".join(problems), problems=problems
            ) from e

    @property
    def ref(self) -> str:
        return format_ref(self.name, self.version)

    @property
    def pinned(self) -> bool:
        """True when every vector reference names a version."""
        return all(parse_ref(r)[1] is not None for r in self.weights)

    def to_spec(self) -> MergeSpec:
        """The :class:`MergeSpec` of this (saved, pinned) recipe."""
        if not self.pinned:
            raise ValidationError(
                f"recipe {self.name!r} has unpinned vector references "
                f"{sorted(r for r in self.weights if '@' not in r)}; save it with put_recipe first",
                field="weights",
            )
        return MergeSpec(
            method=self.method,
            weights=tuple(self.weights.items()),
            density=self.density,
            seed=self.seed,
        )


def _describe(err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"`{loc}` {msg}, got {err.get('input')!r}" if loc else msg


# ----------------------------------------------------------------------------- table logic
# These functions take an open connection; the store calls them inside its transactions.

Resolver = Callable[[str, int | None], int]  # (vector name, version or None) -> pinned version


def pin_weights(weights: Mapping[str, float], resolve: Resolver) -> dict[str, float]:
    """Pin every reference to a version (``resolve`` raises NotFoundError when absent)."""
    pinned: dict[str, float] = {}
    origin: dict[str, str] = {}
    for ref, w in weights.items():
        name, version = parse_ref(ref, f"weights.{ref}")
        key = format_ref(name, resolve(name, version))
        if key in pinned:
            raise ValidationError(
                f"`weights` names {key!r} twice (as {origin[key]!r} and {ref!r})", field="weights"
            )
        pinned[key], origin[key] = float(w), ref
    return pinned


def insert_recipe(
    conn: sqlite3.Connection, recipe: Recipe, resolve: Resolver, version: int, created_at: str
) -> Recipe:
    """Pin and insert ``recipe`` as ``version`` (caller holds the write transaction)."""
    weights = pin_weights(recipe.weights, resolve)
    saved = recipe.model_copy(
        update={"weights": weights, "version": version, "created_at": created_at}
    )
    conn.execute(
        "INSERT INTO recipes (name, version, body, created_at) VALUES (?, ?, ?, ?)",
        (saved.name, version, saved.model_dump_json(), created_at),
    )
    for ref in weights:
        vname, vver = parse_ref(ref)
        conn.execute(
            "INSERT INTO recipe_refs VALUES (?, ?, ?, ?)", (saved.name, version, vname, vver)
        )
    return saved


def _from_row(row: tuple[str]) -> Recipe:
    return Recipe.model_validate(json.loads(row[0]))


def select_recipe(conn: sqlite3.Connection, ref: str) -> Recipe:
    """The recipe ``name``, ``name@latest`` or ``name@N``; NotFoundError naming it."""
    name, version = parse_ref(ref)
    if version is None:
        sql, args = "SELECT body FROM recipes WHERE name = ? ORDER BY version DESC LIMIT 1", (name,)
    else:
        sql, args = "SELECT body FROM recipes WHERE name = ? AND version = ?", (name, version)  # type: ignore[assignment]
    row = conn.execute(sql, args).fetchone()
    if row is None:
        raise NotFoundError(f"recipe {ref!r} not found", field="recipe")
    return _from_row(row)


def latest_recipes(conn: sqlite3.Connection) -> list[Recipe]:
    """The latest version of every recipe, by name."""
    rows = conn.execute(
        "SELECT body FROM recipes r WHERE version = "
        "(SELECT MAX(version) FROM recipes WHERE name = r.name) ORDER BY name"
    ).fetchall()
    return [_from_row(r) for r in rows]


def recipe_versions(conn: sqlite3.Connection, name: str) -> list[Recipe]:
    """Every version of recipe ``name``, oldest first (empty when there is none)."""
    check_name(name, "name")
    rows = conn.execute(
        "SELECT body FROM recipes WHERE name = ? ORDER BY version", (name,)
    ).fetchall()
    return [_from_row(r) for r in rows]


def delete_recipe_rows(conn: sqlite3.Connection, name: str, version: int | None) -> int:
    """Delete one or all versions of a recipe and their refs; NotFoundError when none."""
    where, args = (
        ("name = ?", (name,)) if version is None else ("name = ? AND version = ?", (name, version))
    )
    n = conn.execute(f"DELETE FROM recipes WHERE {where}", args).rowcount
    if n == 0:
        raise NotFoundError(f"recipe {format_ref(name, version)!r} not found", field="recipe")
    rwhere = where.replace("name", "recipe_name").replace("version", "recipe_version")
    conn.execute(f"DELETE FROM recipe_refs WHERE {rwhere}", args)
    return n


def recipes_using(conn: sqlite3.Connection, vector: str, version: int | None) -> list[str]:
    """``name@version`` of every recipe version that uses the vector (any version when None)."""
    sql = "SELECT DISTINCT recipe_name, recipe_version FROM recipe_refs WHERE vector_name = ?"
    args: tuple[Any, ...] = (vector,)
    if version is not None:
        sql, args = sql + " AND vector_version = ?", (vector, version)
    rows = conn.execute(sql + " ORDER BY recipe_name, recipe_version", args).fetchall()
    return [format_ref(n, v) for n, v in rows]


def insert_pins(conn: sqlite3.Connection, holder: str, refs: list[tuple[str, int]]) -> None:
    """Pin recipe versions for ``holder`` (e.g. ``experiment:ab1``); NotFoundError, and nothing
    pinned, when one of them does not exist (checked in the caller's transaction)."""
    for name, version in refs:
        found = conn.execute(
            "SELECT 1 FROM recipes WHERE name = ? AND version = ?", (name, version)
        ).fetchone()
        if found is None:
            raise NotFoundError(
                f"recipe {format_ref(name, version)!r} not found (deleted meanwhile?)",
                field="recipe",
            )
        conn.execute("INSERT OR IGNORE INTO recipe_pins VALUES (?, ?, ?)", (holder, name, version))


def pin_holders(conn: sqlite3.Connection, name: str, version: int | None) -> list[str]:
    """``holder (recipe@version)`` of every pin on the recipe (any version when None)."""
    sql = "SELECT holder, recipe_version FROM recipe_pins WHERE recipe_name = ?"
    args: tuple[Any, ...] = (name,)
    if version is not None:
        sql, args = sql + " AND recipe_version = ?", (name, version)
    rows = conn.execute(sql + " ORDER BY holder, recipe_version", args).fetchall()
    return [f"{holder} ({format_ref(name, v)})" for holder, v in rows]
