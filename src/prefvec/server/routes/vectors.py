"""``GET/POST/DELETE /v1/vectors``: list, metadata, streamed upload, download, delete."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from prefvec.errors import ValidationError
from prefvec.protocol import NAME_PATTERN, REF_PATTERN, DeleteResponse, VectorInfo, VectorList
from prefvec.server.deps import Operator, Ready, User
from prefvec.server.errors import error_responses

router = APIRouter(prefix="/v1/vectors", tags=["vectors"])
VectorRef = Annotated[
    str, Path(pattern=REF_PATTERN, description="Vector `name`, `name@latest` or `name@<version>`.")
]
VectorName = Annotated[str, Path(pattern=NAME_PATTERN, description="Vector name.")]

UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "metadata": {"type": "string", "description": "JSON object"},
                    },
                }
            }
        },
    }
}


def vector_info(rec: Any) -> VectorInfo:
    return VectorInfo(
        name=rec.name, version=rec.version, kind=rec.kind, sha256=rec.sha256,
        size_bytes=rec.size_bytes, created_at=rec.created_at,
        metadata=rec.metadata.model_dump(mode="json"),
    )  # fmt: skip


@router.get("", response_model=VectorList, dependencies=[User])
async def list_vectors(state: Ready) -> VectorList:
    return VectorList(data=[vector_info(r) for r in await run_in_threadpool(state.store.list)])


@router.get(
    "/{ref}", response_model=VectorInfo, dependencies=[User], responses=error_responses(404)
)
async def get_vector(ref: VectorRef, state: Ready) -> VectorInfo:
    return vector_info(await run_in_threadpool(state.store.record, ref))


@router.get(
    "/{name}/versions", response_model=VectorList, dependencies=[User],
    responses=error_responses(404),
)  # fmt: skip
async def vector_versions(name: VectorName, state: Ready) -> VectorList:
    records = await run_in_threadpool(state.store.versions, name)
    if not records:
        await run_in_threadpool(state.store.record, name)  # raises NotFoundError naming it
    return VectorList(data=[vector_info(r) for r in records])


@router.get(
    "/{ref}/file", response_class=FileResponse, dependencies=[User],
    responses={200: {"content": {"application/octet-stream": {}}}, **error_responses(404, 500)},
)  # fmt: skip
async def download_vector(ref: VectorRef, state: Ready) -> FileResponse:
    rec = await run_in_threadpool(state.store.record, ref)
    path = await run_in_threadpool(state.store.blob_path, rec.ref)
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=f"{rec.name}@{rec.version}.safetensors",
    )


def _metadata(raw: Any) -> dict[str, Any] | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise ValidationError(
            "`metadata` must be a JSON string field, got a file", field="metadata"
        )
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"`metadata` must be a JSON object, got {raw[:80]!r} ({exc.msg})", field="metadata"
        ) from None
    if not isinstance(data, dict):
        raise ValidationError(
            f"`metadata` must be a JSON object, got {raw[:80]!r}", field="metadata"
        )
    return data


@router.post(
    "", response_model=VectorInfo, status_code=201, dependencies=[Operator],
    openapi_extra=UPLOAD_SCHEMA, responses=error_responses(400, 404),
)  # fmt: skip
async def upload_vector(request: Request, state: Ready) -> VectorInfo:
    """Multipart upload: ``file`` (safetensors, streamed to disk; or a zip/tar archive of a PEFT
    LoRA adapter folder, stored as its exact low-rank vector) and optional ``metadata`` JSON
    (``name`` required with an archive).

    The body is parsed only after the operator check, and its size is bounded while it streams.
    """
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ValidationError(
            f"upload must be multipart/form-data with a `file` field, got {ctype!r}", field="file"
        )
    form = await request.form(max_files=1, max_fields=4)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ValidationError("`file` is required (a safetensors file part)", field="file")
        meta = _metadata(form.get("metadata"))
        rec = await run_in_threadpool(_put_upload, state, upload.file, meta)
    finally:
        await form.close()
    return vector_info(rec)


def _put_upload(state: Any, file: Any, meta: dict[str, Any] | None) -> Any:
    """Store a safetensors upload as is, or a PEFT adapter archive as its exact low-rank vector."""
    from prefvec.vector_store.peft_archive import is_archive, vector_from_peft_archive

    head = file.read(262)
    file.seek(0)
    if not is_archive(head):
        return state.store.put(file, metadata=meta)
    vec = vector_from_peft_archive(
        file, base_fingerprint=state.store.base.fingerprint, metadata=meta,
        max_bytes=state.settings.max_upload_bytes,
    )  # fmt: skip
    return state.store.put(vec)


@router.delete(
    "/{ref}", response_model=DeleteResponse, dependencies=[Operator],
    responses=error_responses(404, 409),
)  # fmt: skip
async def delete_vector(ref: VectorRef, state: Ready) -> DeleteResponse:
    """Delete a version (``name@N``) or every version (``name``); 409 when a recipe uses it."""
    from prefvec.vector_store import parse_ref

    name, version = parse_ref(ref, "ref")
    await run_in_threadpool(state.store.delete, name, version)
    state.resolver.forget(name)
    state.backend.forget_vector(name)
    return DeleteResponse(object="vector", name=name, version=version)
