"""The recipe arena: a static page served at ``/ui`` (playground, side by side, blind battle,
vectors), package data of :mod:`prefvec.server.ui`.

Why a small static page and not Gradio (the ecosystem's usual tool; ``gradio==6.31.0`` installs
from PyPI here without moving torch or fastapi, and bundles its fonts):

* **The page calls only public routes, from the browser.** A Gradio app runs its handlers in the
  server process; to go through the public API they would have to call this server over HTTP again
  (httpx's in-process ASGI transport buffers whole bodies, so that would be a loopback socket
  whose address the app cannot know behind a proxy), and every key would travel through Gradio's
  queue. Here ``fetch`` calls ``/v1/...`` itself with ``Authorization: Bearer <key>``; the key lives
  in the tab's ``sessionStorage`` and nowhere else.
* **Any path prefix, with no setting.** Every URL in the page is relative to the page, so a reverse
  proxy that strips ``/prefix`` works as is; Gradio builds absolute URLs from ``root_path`` and the
  forwarded headers, which must then be configured to match the proxy.
* **Streaming is the API's own SSE stream** (``stream: true``), read with ``fetch`` and a
  ``ReadableStream``: the page shows what an API client sees, the ``prefvec`` block included.
* **Nothing more to install or import in the server**: three files (HTML, JS, CSS), no build step,
  no network at run time (the page's Content-Security-Policy allows its own origin only), about
  40 kB against Gradio's 31 MB wheel plus pandas and pillow on the server's import path.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: Files the page is made of, by the name it asks for them and their media type.
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}

#: Own origin only: no CDN, no fonts, no inline script; API calls go to the same origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def static_dir() -> Path:
    """The folder holding ``index.html`` and the assets (installed as package data)."""
    return Path(str(resources.files(__name__) / "static"))


def index_html() -> str:
    """The page itself (read once per request; it is small and may be edited while serving)."""
    return (static_dir() / "index.html").read_text(encoding="utf-8")


__all__ = ["ASSETS", "CONTENT_SECURITY_POLICY", "index_html", "static_dir"]
