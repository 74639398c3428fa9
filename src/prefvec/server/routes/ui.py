"""``GET /ui``: the recipe arena page (static files; see :mod:`prefvec.server.ui`).

The page is public (it holds no data and no secret); what it shows comes from the ``/v1`` routes,
called from the browser with the key the user types. Every URL in it is relative to ``/ui``,
which is why ``/ui/`` redirects to ``../ui`` (a relative ``Location``, so a path prefix stripped
by a reverse proxy survives the redirect).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, Response

from prefvec.errors import NotFoundError
from prefvec.server.ui import ASSETS, CONTENT_SECURITY_POLICY, index_html, static_dir

router = APIRouter(tags=["ui"], include_in_schema=False)

_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@router.get("/ui", response_class=HTMLResponse)
async def ui_page() -> HTMLResponse:
    """The page."""
    return HTMLResponse(index_html(), headers=_HEADERS)


@router.get("/ui/")
async def ui_slash() -> Response:
    """``/ui/`` -> ``../ui`` (relative, so it keeps any path prefix)."""
    return Response(status_code=307, headers={"Location": "../ui"})


@router.get("/ui/assets/{name}")
async def ui_asset(name: str) -> FileResponse:
    """One of the page's files (:data:`prefvec.server.ui.ASSETS`; anything else is a 404)."""
    if name not in ASSETS:
        raise NotFoundError(f"no UI asset {name!r}; the page has {sorted(ASSETS)}", field="name")
    return FileResponse(static_dir() / name, media_type=ASSETS[name], headers=_HEADERS)
