"""``/ui`` without a browser: the page and its assets are served, relative, and self-contained
(the browser tests in ``test_ui_browser.py`` check what the page does)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from prefvec.server.ui import ASSETS, static_dir


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    """The app without its lifespan: the page needs no model."""
    from prefvec.server.app import create_app
    from prefvec.server.settings import ServerSettings

    tmp = tmp_path_factory.mktemp("ui-routes")
    return TestClient(create_app(ServerSettings(home=tmp, store_dir=tmp / "store")))


def test_page_is_served_with_a_same_origin_policy(client: TestClient) -> None:
    r = client.get("/ui")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "<title>prefvec · recipe arena</title>" in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp


def test_trailing_slash_redirects_relatively(client: TestClient) -> None:
    r = client.get("/ui/", follow_redirects=False)
    assert r.status_code == 307
    assert r.headers["location"] == "../ui"  # relative: a stripped proxy prefix survives


@pytest.mark.parametrize("name", sorted(ASSETS))
def test_assets_are_served(client: TestClient, name: str) -> None:
    r = client.get(f"/ui/assets/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"] == ASSETS[name]
    assert r.content == (static_dir() / name).read_bytes()


def test_unknown_asset_is_a_404_naming_it(client: TestClient) -> None:
    r = client.get("/ui/assets/secret.py")
    assert r.status_code == 404
    assert "'secret.py'" in r.json()["error"]["message"]
    assert client.get("/ui/assets/..%2F__init__.py").status_code == 404


def test_every_url_of_the_page_is_relative() -> None:
    """Absolute paths or other hosts would break behind a path prefix or fetch from elsewhere."""
    html = (static_dir() / "index.html").read_text()
    refs = re.findall(r"""(?:href|src)="([^"]+)\"""", html)
    assert sorted(refs) == ["ui/assets/app.css", "ui/assets/app.js"]
    js = (static_dir() / "app.js").read_text()
    paths = re.findall(r"""["`](/?v1/[^"`]*)["`]""", js)
    assert paths and all(not p.startswith("/") for p in paths), paths
    for text in (html, js, (static_dir() / "app.css").read_text()):
        assert not re.search(r"https?://", text)  # no CDN, fonts or other host
        assert "@import" not in text and "url(" not in text


def test_static_files_are_package_data() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"prefvec.server.ui" = ["static/*"]' in pyproject
    assert {p.name for p in static_dir().iterdir()} >= {"index.html", *ASSETS}
