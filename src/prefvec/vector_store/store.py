"""A local, crash-safe store of versioned preference vectors (files + one SQLite index).

Layout under ``root``::

    index.sqlite                 vectors, recipes, recipe_refs, sequences (WAL mode)
    blobs/<sha256>.safetensors   the uploaded bytes, unchanged, content-addressed
    tmp/<pid>-<uuid>.part        uploads in flight

``put`` streams the upload into ``tmp/`` (hashing and bounding its size as it goes), fsyncs,
validates, then — holding SQLite's write lock (``BEGIN IMMEDIATE``) — ``os.replace``s the file into
``blobs/`` and inserts the row with the next version, and commits. Every blob is created or removed
only under that lock, so concurrent writers (threads or processes) never race on a blob, and a
crash at any point leaves either the whole version or nothing visible: at worst a tmp file of a
dead writer or a blob without a row, both removed at the next open. The row's metadata is the
metadata of record; the blob keeps the uploaded bytes, so its sha256 is the recorded one.

Versions only grow: a deleted version number is never reused (table ``sequences``), so
``name@N`` always means the same bytes.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import logging
import os
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel

from prefvec.errors import (
    ConflictError,
    FingerprintMismatchError,
    IntegrityError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    ValidationError,
)
from prefvec.vector_store.base_spec import BaseSpec
from prefvec.vector_store.format import PreferenceVector, VectorKind, VectorMetadata, check_name
from prefvec.vector_store.recipes import (
    RECIPE_SCHEMA,
    Recipe,
    delete_recipe_rows,
    insert_pins,
    insert_recipe,
    latest_recipes,
    pin_holders,
    recipe_versions,
    recipes_using,
    select_recipe,
)
from prefvec.vector_store.validation import check_size, format_ref, parse_ref, validate_vector_file

logger = logging.getLogger(__name__)

DEFAULT_MAX_VECTOR_BYTES = 2 * 1024**3
CHUNK_BYTES = 1 << 20
BLOB_SUFFIX = ".safetensors"

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS vectors (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    kind TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    metadata TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX IF NOT EXISTS vectors_sha256 ON vectors (sha256);
CREATE TABLE IF NOT EXISTS sequences (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    last INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
);
"""
    + RECIPE_SCHEMA
)

Source = (
    PreferenceVector | str | Path | bytes | bytearray | memoryview | IO[bytes] | Iterable[bytes]
)


def _fault_point(stage: str) -> None:
    """Crash-test hook, called at each step of :meth:`LocalStore.put`; a no-op.

    Stages: ``after_tmp_write``, ``after_validate``, ``after_replace``, ``before_commit``.
    """


def _utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def _bounded_reads(read: Any, bound: int) -> Iterator[bytes]:
    """Chunks of ``read(n)`` that never ask for more than one byte past ``bound`` in total."""
    total = 0
    while total <= bound:
        chunk = read(min(CHUNK_BYTES, bound + 1 - total))
        if not chunk:
            return
        total += len(chunk)
        yield chunk


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class VectorRecord(BaseModel):
    """One stored vector version, as the index records it."""

    name: str
    version: int
    kind: VectorKind
    sha256: str
    size_bytes: int
    created_at: str
    metadata: VectorMetadata

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


_RECORD_COLS = "name, version, kind, sha256, size_bytes, created_at, metadata"


def _record(row: tuple[Any, ...]) -> VectorRecord:
    name, version, kind, sha, size, created, meta = row
    return VectorRecord(
        name=name,
        version=version,
        kind=kind,
        sha256=sha,
        size_bytes=size,
        created_at=created,
        metadata=VectorMetadata.model_validate_json(meta),
    )


class LocalStore:
    """Versioned preference vectors and recipes in a folder.

    Args:
        root: the store folder (created if missing).
        base: the base every vector must match (fingerprint, names, shapes); None skips those
            checks (a base-agnostic store).
        max_vector_bytes: size bound of one vector file, enforced while streaming.
        timeout: seconds a writer waits for SQLite's write lock before failing.
    """

    def __init__(
        self,
        root: str | Path,
        base: BaseSpec | None = None,
        max_vector_bytes: int = DEFAULT_MAX_VECTOR_BYTES,
        *,
        timeout: float = 60.0,
    ) -> None:
        self.root = Path(root)
        self.base = base
        self.max_vector_bytes = int(max_vector_bytes)
        self.timeout = float(timeout)
        self.blobs_dir = self.root / "blobs"
        self.tmp_dir = self.root / "tmp"
        self.db_path = self.root / "index.sqlite"
        for d in (self.root, self.blobs_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._init_db()
        self.gc()

    # ------------------------------------------------------------------ connections

    def connect(self, *, autocommit: bool = False) -> sqlite3.Connection:
        """A new connection to the store's SQLite DB (WAL, busy timeout) for other tables.

        Args:
            autocommit: ``isolation_level=None`` (explicit ``BEGIN`` only) instead of Python's
                implicit transactions.
        """
        conn = sqlite3.connect(
            self.db_path, timeout=self.timeout, isolation_level=None if autocommit else "DEFERRED"
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = self.connect(autocommit=True)
        try:
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding SQLite's write lock from the start."""
        with self._read() as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:  # busy past the timeout: the caller may retry
                raise ServiceUnavailableError(
                    f"the vector store at {self.root} is busy ({exc}); retry shortly"
                ) from exc
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _init_db(self) -> None:
        with self._read() as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(SCHEMA)

    # ------------------------------------------------------------------ put

    def put(self, source: Source, *, metadata: Mapping[str, Any] | None = None) -> VectorRecord:
        """Validate and store one vector as the next version of its name.

        Args:
            source: a :class:`PreferenceVector`, a path to a safetensors file, its bytes, a binary
                file object or an iterable of byte chunks (streamed; never read past the bound).
            metadata: fields that override or fill the file's header metadata (a file without a
                ``prefvec`` header needs at least ``{"name": ...}``).

        Returns:
            The stored :class:`VectorRecord` (version, sha256, size and created_at assigned).

        Raises:
            PayloadTooLargeError: the file exceeds ``max_vector_bytes``.
            ValidationError / FingerprintMismatchError: every problem of the file, at once.
        """
        if metadata is not None and not isinstance(metadata, Mapping):
            raise ValidationError(
                f"`metadata` must be a JSON object, got {type(metadata).__name__}",
                field="metadata",
            )
        tmp = self.tmp_dir / f"{os.getpid()}-{uuid.uuid4().hex}.part"
        try:
            sha, size, label = self._write_tmp(source, tmp)
            _fault_point("after_tmp_write")
            vec = validate_vector_file(
                tmp, self.base, self.max_vector_bytes, metadata, load=False, label=label
            )
            _fault_point("after_validate")
            record = self._commit(tmp, vec.metadata, sha, size)
        finally:
            tmp.unlink(missing_ok=True)
        logger.info("stored vector %s (%s, %d bytes)", record.ref, record.kind, size)
        return record

    def _write_tmp(self, source: Source, tmp: Path) -> tuple[str, int, str]:
        """Write ``source`` to ``tmp`` (fsynced); returns (sha256, size, label for messages)."""
        if isinstance(source, PreferenceVector):
            source.save(tmp)
            check_size(tmp.stat().st_size, self.max_vector_bytes, repr(source.name))
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            return sha256_file(tmp), tmp.stat().st_size, source.name
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                raise NotFoundError(f"vector file {str(path)!r} not found", field="source")
            check_size(path.stat().st_size, self.max_vector_bytes, repr(path.name))
            with open(path, "rb") as f:
                return (*self._stream(iter(lambda: f.read(CHUNK_BYTES), b""), tmp), path.name)
        if isinstance(source, (bytes, bytearray, memoryview)):
            check_size(len(source), self.max_vector_bytes, "'upload'")
            return (*self._stream([bytes(source)], tmp), "upload")
        if hasattr(source, "read"):
            chunks = _bounded_reads(source.read, self.max_vector_bytes)  # type: ignore[union-attr]
            return (*self._stream(chunks, tmp), "upload")
        if isinstance(source, Iterable):
            return (*self._stream(source, tmp), "upload")
        raise ValidationError(
            "`source` must be a PreferenceVector, a path, bytes, a binary file or byte chunks, "
            f"got {type(source).__name__}",
            field="source",
        )

    def _stream(self, chunks: Iterable[bytes], tmp: Path) -> tuple[str, int]:
        """Copy chunks to ``tmp``, hashing; stop as soon as the size bound is passed."""
        h, size = hashlib.sha256(), 0
        with open(tmp, "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > self.max_vector_bytes:
                    raise PayloadTooLargeError(
                        f"vector upload is too large: more than {self.max_vector_bytes} bytes "
                        f"(the bound; stopped reading at {size})",
                        field="file",
                    )
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        return h.hexdigest(), size

    def _commit(self, tmp: Path, meta: VectorMetadata, sha: str, size: int) -> VectorRecord:
        """Move the blob in and insert its row, both under the write lock."""
        blob = self._blob(sha)
        try:
            with self._write() as conn:
                os.replace(tmp, blob)  # same bytes => same name: harmless if it existed
                _fsync_dir(self.blobs_dir)
                _fault_point("after_replace")
                record = self._insert_row(conn, meta, sha, size)
                _fault_point("before_commit")
        except BaseException:
            try:
                self._remove_orphans([sha])
            except Exception:  # the original error matters more; gc() retries at next open
                logger.exception("could not remove the orphan blob %s", sha)
            raise
        return record

    def _insert_row(
        self, conn: sqlite3.Connection, meta: VectorMetadata, sha: str, size: int
    ) -> VectorRecord:
        version = self._next_version(conn, "vector", meta.name)
        meta = meta.model_copy(
            update={"version": version, "sha256": sha, "size_bytes": size, "created_at": _utcnow()}
        )
        row = (meta.name, version, meta.kind, sha, size, meta.created_at, meta.model_dump_json())
        conn.execute(f"INSERT INTO vectors ({_RECORD_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)", row)
        return _record(row)

    @staticmethod
    def _next_version(conn: sqlite3.Connection, kind: str, name: str) -> int:
        """One more than any version ``name`` ever had (deleted ones included)."""
        table = "vectors" if kind == "vector" else "recipes"
        (current,) = conn.execute(
            f"SELECT MAX(version) FROM {table} WHERE name = ?", (name,)
        ).fetchone()
        seq = conn.execute(
            "SELECT last FROM sequences WHERE kind = ? AND name = ?", (kind, name)
        ).fetchone()
        version = max(int(current or 0), int(seq[0]) if seq else 0) + 1
        conn.execute(
            "INSERT OR REPLACE INTO sequences (kind, name, last) VALUES (?, ?, ?)",
            (kind, name, version),
        )
        return version

    # ------------------------------------------------------------------ read

    def _blob(self, sha: str) -> Path:
        return self.blobs_dir / f"{sha}{BLOB_SUFFIX}"

    def record(self, ref: str) -> VectorRecord:
        """The record of ``name``, ``name@latest`` or ``name@N``.

        Raises:
            NotFoundError: no such vector or version (the message names it).
        """
        name, version = parse_ref(ref)
        with self._read() as conn:
            if version is None:
                row = conn.execute(
                    f"SELECT {_RECORD_COLS} FROM vectors WHERE name = ? "
                    "ORDER BY version DESC LIMIT 1",
                    (name,),
                ).fetchone()
            else:
                row = conn.execute(
                    f"SELECT {_RECORD_COLS} FROM vectors WHERE name = ? AND version = ?",
                    (name, version),
                ).fetchone()
            if row is None:
                raise NotFoundError(self._not_found(conn, name, version), field="vector")
        return _record(row)

    @staticmethod
    def _not_found(conn: sqlite3.Connection, name: str, version: int | None) -> str:
        rows = conn.execute("SELECT version FROM vectors WHERE name = ? ORDER BY version", (name,))
        have = [str(v) for (v,) in rows]
        if not have:
            return f"vector {name!r} not found"
        return f"vector {format_ref(name, version)!r} not found (versions: {', '.join(have)})"

    def resolve(self, ref: str) -> str:
        """Pin a reference: ``"helpful"`` -> ``"helpful@3"`` (NotFoundError when absent)."""
        return self.record(ref).ref

    def blob_path(self, ref: str) -> Path:
        """Path of the blob holding ``ref`` (its bytes are exactly what was uploaded)."""
        return self._blob(self.record(ref).sha256)

    def get(self, ref: str) -> PreferenceVector:
        """Load a vector; its blob is re-hashed against the recorded sha256.

        Raises:
            NotFoundError: unknown name or version.
            IntegrityError: the blob is missing or its bytes changed.
            FingerprintMismatchError: the vector belongs to another base than the store's.
        """
        from safetensors.torch import load_file

        rec = self.record(ref)
        path = self._blob(rec.sha256)
        if not path.is_file():
            raise IntegrityError(f"blob of vector {rec.ref!r} is missing: {path}")
        actual = sha256_file(path)
        if actual != rec.sha256:
            raise IntegrityError(
                f"vector {rec.ref!r} failed its integrity check: blob sha256 {actual} != "
                f"recorded {rec.sha256}"
            )
        fp = rec.metadata.base_fingerprint
        if self.base is not None and fp != self.base.fingerprint:
            raise FingerprintMismatchError(
                f"vector {rec.ref!r} is for base {fp}, not this store's {self.base.fingerprint}"
            )
        return PreferenceVector(rec.metadata, load_file(str(path)))

    def list(self) -> builtins.list[VectorRecord]:
        """The latest version of every vector, by name."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_RECORD_COLS} FROM vectors v WHERE version = "
                "(SELECT MAX(version) FROM vectors WHERE name = v.name) ORDER BY name"
            ).fetchall()
        return [_record(r) for r in rows]

    def versions(self, name: str) -> builtins.list[VectorRecord]:
        """Every version of ``name``, oldest first (empty when there is none)."""
        check_name(name, "name")
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_RECORD_COLS} FROM vectors WHERE name = ? ORDER BY version", (name,)
            ).fetchall()
        return [_record(r) for r in rows]

    # ------------------------------------------------------------------ delete, gc, stats

    def delete(self, name: str, version: int | None = None) -> builtins.list[VectorRecord]:
        """Delete one version of a vector, or all of them (``version=None``).

        A blob is removed once no row references it.

        Raises:
            NotFoundError: nothing to delete.
            ConflictError: a recipe uses the vector (the message names the recipe versions).
        """
        check_name(name, "name")
        ref = format_ref(name, version)
        where, args = (
            ("name = ?", (name,))
            if version is None
            else ("name = ? AND version = ?", (name, version))
        )
        with self._write() as conn:
            rows = conn.execute(
                f"SELECT {_RECORD_COLS} FROM vectors WHERE {where}", args
            ).fetchall()
            if not rows:
                raise NotFoundError(self._not_found(conn, name, version), field="vector")
            users = recipes_using(conn, name, version)
            if users:
                raise ConflictError(
                    f"vector {ref!r} is used by recipe(s) {', '.join(users)}; delete them first",
                    field="vector",
                )
            conn.execute(f"DELETE FROM vectors WHERE {where}", args)
        records = [_record(r) for r in rows]
        self._remove_orphans([r.sha256 for r in records])
        logger.info("deleted vector %s (%d versions)", ref, len(records))
        return records

    def _remove_orphans(self, shas: Iterable[str]) -> builtins.list[str]:
        """Remove the blobs of ``shas`` that no row references (under the write lock)."""
        removed = []
        with self._write() as conn:
            for sha in set(shas):
                used = conn.execute("SELECT 1 FROM vectors WHERE sha256 = ? LIMIT 1", (sha,))
                if used.fetchone() is None and self._blob(sha).exists():
                    self._blob(sha).unlink()
                    removed.append(sha)
        return removed

    def gc(self) -> dict[str, int]:
        """Remove tmp files of dead writers and blobs no row references (runs at open)."""
        tmp_removed = 0
        for f in self.tmp_dir.iterdir():
            pid = f.name.split("-", 1)[0]
            if not pid.isdigit() or not _pid_alive(int(pid)):
                f.unlink(missing_ok=True)
                tmp_removed += 1
        shas = [p.name[: -len(BLOB_SUFFIX)] for p in self.blobs_dir.glob(f"*{BLOB_SUFFIX}")]
        removed = self._remove_orphans(shas) if shas else []
        if tmp_removed or removed:
            logger.warning(
                "gc: removed %d stale tmp files, %d orphan blobs", tmp_removed, len(removed)
            )
        return {"tmp_files": tmp_removed, "orphan_blobs": len(removed)}

    def stats(self) -> dict[str, Any]:
        """Counts and sizes: names, versions, recipes, blobs and their bytes."""
        with self._read() as conn:
            names, versions = conn.execute(
                "SELECT COUNT(DISTINCT name), COUNT(*) FROM vectors"
            ).fetchone()
            recipes, recipe_versions_n = conn.execute(
                "SELECT COUNT(DISTINCT name), COUNT(*) FROM recipes"
            ).fetchone()
        blobs = list(self.blobs_dir.glob(f"*{BLOB_SUFFIX}"))
        return {
            "vectors": names,
            "vector_versions": versions,
            "recipes": recipes,
            "recipe_versions": recipe_versions_n,
            "blobs": len(blobs),
            "blob_bytes": sum(b.stat().st_size for b in blobs),
            "db_path": str(self.db_path),
        }

    # ------------------------------------------------------------------ recipes

    def put_recipe(self, recipe: Recipe | Mapping[str, Any]) -> Recipe:
        """Save a recipe as the next version of its name, every vector ref pinned.

        Unpinned refs (``"helpful"``) resolve to the latest version; pinned ones must exist.

        Raises:
            ValidationError: invalid recipe fields (all problems at once).
            NotFoundError: a referenced vector or version does not exist.
        """
        recipe = Recipe.parse(recipe)
        with self._write() as conn:

            def resolve(name: str, version: int | None) -> int:
                sql = "SELECT MAX(version) FROM vectors WHERE name = ?"
                args: tuple[Any, ...] = (name,)
                if version is not None:
                    sql, args = sql + " AND version = ?", (name, version)
                (found,) = conn.execute(sql, args).fetchone()
                if found is None:
                    raise NotFoundError(
                        f"recipe {recipe.name!r}: {self._not_found(conn, name, version)}",
                        field="weights",
                    )
                return int(found)

            version = self._next_version(conn, "recipe", recipe.name)
            saved = insert_recipe(conn, recipe, resolve, version, _utcnow())
        logger.info("stored recipe %s", saved.ref)
        return saved

    def get_recipe(self, ref: str) -> Recipe:
        """The recipe ``name``, ``name@latest`` or ``name@N`` (NotFoundError naming it)."""
        with self._read() as conn:
            return select_recipe(conn, ref)

    def list_recipes(self) -> builtins.list[Recipe]:
        """The latest version of every recipe, by name."""
        with self._read() as conn:
            return latest_recipes(conn)

    def recipe_versions(self, name: str) -> builtins.list[Recipe]:
        """Every version of recipe ``name``, oldest first."""
        with self._read() as conn:
            return recipe_versions(conn, name)

    def delete_recipe(self, name: str, version: int | None = None) -> int:
        """Delete one version of a recipe or all of them; returns how many were deleted.

        Raises:
            NotFoundError: no such recipe (version).
            ConflictError: a holder (a live experiment) pins it; the message names the holders.
        """
        check_name(name, "name")
        with self._write() as conn:
            holders = pin_holders(conn, name, version)
            if holders:
                raise ConflictError(
                    f"recipe {format_ref(name, version)!r} is pinned by {', '.join(holders)}; "
                    "end or delete those first",
                    field="ref",
                )
            return delete_recipe_rows(conn, name, version)

    def pin_recipes(
        self, holder: str, refs: Iterable[str], *, conn: sqlite3.Connection | None = None
    ) -> None:
        """Protect recipe versions (``name@N``) from deletion while ``holder`` needs them.

        Args:
            holder: who pins them, e.g. ``experiment:<name>``.
            refs: pinned refs ``name@version``.
            conn: the caller's open transaction (the pins commit or roll back with it).

        Raises:
            NotFoundError: a recipe version does not exist (nothing is pinned).
        """
        pairs = []
        for ref in refs:
            rname, rversion = parse_ref(ref, "recipe")
            if rversion is None:
                raise ValidationError(f"a pin needs `name@version`, got {ref!r}", field="recipe")
            pairs.append((rname, rversion))
        if conn is not None:
            insert_pins(conn, holder, pairs)
            return
        with self._write() as own:
            insert_pins(own, holder, pairs)

    def unpin_recipes(self, holder: str, *, conn: sqlite3.Connection | None = None) -> None:
        """Drop every pin of ``holder`` (in ``conn``'s transaction when given)."""
        if conn is not None:
            conn.execute("DELETE FROM recipe_pins WHERE holder = ?", (holder,))
            return
        with self._write() as own:
            own.execute("DELETE FROM recipe_pins WHERE holder = ?", (holder,))
