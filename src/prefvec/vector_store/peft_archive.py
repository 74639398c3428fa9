"""A PEFT LoRA adapter folder, uploaded as one archive (zip or tar, optionally gzip/bz2/xz), turned
into an exact low-rank preference vector (``ΔW = s·B A`` per module, PEFT's scaling folded in).

The archive must hold ``adapter_config.json`` and ``adapter_model.safetensors``, at its top or in
one folder. Members are read without ever extracting by name (no path traversal, no links) and
their uncompressed size is bounded, so a zip bomb fails with a 413 before it fills the disk.
"""

from __future__ import annotations

import tarfile
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import IO, Any

from prefvec.errors import PayloadTooLargeError, ValidationError

NEEDED = ("adapter_config.json", "adapter_model.safetensors")


def is_archive(head: bytes) -> bool:
    """Whether a file starting with ``head`` (>= 262 bytes read) is a zip or tar archive."""
    return (
        head.startswith(b"PK\x03\x04")  # zip
        or head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00"))  # gzip / bz2 / xz (tar.*)
        or head[257:262] == b"ustar"  # plain tar
    )


def _pick(names: list[str]) -> dict[str, str]:
    """``{needed file: member name}``; the two files must sit side by side, once each."""
    found: dict[str, list[str]] = {n: [] for n in NEEDED}
    for name in names:
        path = PurePosixPath(name)
        if path.name in found and len(path.parts) <= 2 and ".." not in path.parts:
            found[path.name].append(name)
    problems = [
        f"the archive must hold one `{n}` (at its top or in one folder), found {len(m)}"
        for n, m in found.items()
        if len(m) != 1
    ]
    if not problems and len({str(PurePosixPath(m[0]).parent) for m in found.values()}) != 1:
        problems.append(f"`{NEEDED[0]}` and `{NEEDED[1]}` must be in the same folder")
    if problems:
        raise ValidationError("; ".join(problems), problems=problems, field="file")
    return {n: m[0] for n, m in found.items()}


def _copy_bounded(src: IO[bytes], dst: Path, left: int) -> int:
    size = 0
    with open(dst, "wb") as out:
        while chunk := src.read(1 << 20):
            size += len(chunk)
            if size > left:
                raise PayloadTooLargeError(
                    f"the adapter archive unpacks to more than {left} bytes", field="file"
                )
            out.write(chunk)
    return size


def _extract(fileobj: IO[bytes], folder: Path, max_bytes: int) -> None:
    """Write the two needed members into ``folder``."""
    head = fileobj.read(4)
    fileobj.seek(0)
    left = max_bytes
    try:
        if head.startswith(b"PK\x03\x04"):
            with zipfile.ZipFile(fileobj) as zf:
                picked = _pick([i.filename for i in zf.infolist() if not i.is_dir()])
                for need, member in picked.items():
                    with zf.open(member) as src:
                        left -= _copy_bounded(src, folder / need, left)
            return
        with tarfile.open(fileobj=fileobj, mode="r:*") as tf:
            regular = {m.name: m for m in tf.getmembers() if m.isfile()}
            for need, member in _pick(list(regular)).items():
                member_file = tf.extractfile(regular[member])
                assert member_file is not None  # a regular file
                left -= _copy_bounded(member_file, folder / need, left)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise ValidationError(
            f"`file` is not a readable zip/tar archive: {exc}", field="file"
        ) from None


def vector_from_peft_archive(
    fileobj: IO[bytes],
    *,
    base_fingerprint: str,
    metadata: Mapping[str, Any] | None,
    max_bytes: int,
) -> Any:
    """The low-rank :class:`~prefvec.vector_store.PreferenceVector` of a PEFT adapter archive.

    Args:
        fileobj: the archive (seekable).
        base_fingerprint: the store's base (the store then checks names and shapes against it).
        metadata: vector metadata; ``name`` is required (an adapter carries none of ours).
        max_bytes: bound on the unpacked size.

    Raises:
        ValidationError: not an archive, files missing, bad adapter, or no ``name``.
        PayloadTooLargeError: the archive unpacks past ``max_bytes``.
    """
    from prefvec.vector_store.extract import load_lora_factors
    from prefvec.vector_store.format import PreferenceVector, VectorMetadata

    meta = dict(metadata or {})
    if not meta.get("name"):
        raise ValidationError(
            "`metadata.name` is required with a PEFT adapter archive, got none", field="metadata"
        )
    meta.setdefault("method", "other")
    meta.setdefault("description", "uploaded PEFT LoRA adapter")
    with tempfile.TemporaryDirectory(prefix="prefvec-adapter-") as tmp:
        _extract(fileobj, Path(tmp), max_bytes)
        try:
            factors = load_lora_factors(tmp)
        except (KeyError, ValueError, OSError) as exc:
            if isinstance(exc, ValidationError):
                raise
            raise ValidationError(
                f"`file`: not a PEFT LoRA adapter ({exc})", field="file"
            ) from None
    try:
        vmeta = VectorMetadata(**{**meta, "kind": "lowrank", "base_fingerprint": base_fingerprint})
    except ValueError as exc:
        raise ValidationError(f"`metadata`: {exc}", field="metadata") from None
    return PreferenceVector.from_factors(vmeta, factors)
