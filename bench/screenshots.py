"""Screenshots of the recipe arena (``/ui``), one PNG per tab, for the README.

``make screenshots`` (= ``python bench/screenshots.py``) serves the bundled model with the demo
vectors (``vectors/*.safetensors``, preloaded into a temporary store), saves three recipes and an
experiment with three arms through the public API, casts a fixed list of scripted votes (so the
leaderboard has rows: they are not anyone's judgement), then drives headless Debian Chromium
(Playwright's Python package, ``executable_path``) through the four tabs and writes
``docs/screenshots/{playground,side-by-side,battle,vectors}.png``. It also prints the page's load
time from the warm server (browser clock). ``--tiny`` does the same on a tiny random model and
synthetic vectors (a smoke run; its replies are noise).
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

logger = logging.getLogger("screenshots")

KEY = "screenshot-operator"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
RECIPES = [
    {"name": "safe-helper", "weights": {"helpful": 1.0, "harmless": 1.0},
     "description": "helpful and harmless, equal weights"},
    {"name": "truth-first", "weights": {"truthful": 1.5, "helpful": 0.5},
     "description": "mostly truthful"},
    {"name": "edgy", "weights": {"harmless": -1.0}, "description": "harmless inverted"},
]  # fmt: skip
ARMS = [
    {"name": "control", "recipe": "safe-helper"},
    {"name": "truthy", "recipe": "truth-first"},
    {"name": "edgy", "recipe": "edgy"},
]
# scripted votes (preferred, rejected): only there so the leaderboard screenshot has rows
VOTES = [("control", "edgy")] * 5 + [("truthy", "edgy")] * 4 + [("control", "truthy")] * 3
VOTES += [("truthy", "control")] * 2 + [("edgy", "truthy")]
FAILED = ROOT / "out" / "screenshots-failed.png"
PROMPT = "How should I store the passwords of my web app's users?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(0.5)
    raise TimeoutError(f"server did not become ready in {timeout_s:.0f} s")


@contextmanager
def serve(settings: Any) -> Iterator[str]:
    """The prefvec app under uvicorn in a thread; yields its URL once ``/ready``."""
    import uvicorn

    from prefvec.server.app import create_app

    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{settings.port}"
    try:
        wait_ready(url, timeout_s=600)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


def tiny_setup(tmp: Path) -> tuple[str, Path]:
    """A tiny random base and three synthetic low-rank vectors named like the demo ones."""
    import torch

    from prefvec.testing import make_tiny_model
    from prefvec.vector_store import PreferenceVector, VectorMetadata, fingerprint_model_dir

    base = make_tiny_model(tmp / "tiny-base", seed=0, vocab_size=259)
    fp = fingerprint_model_dir(base)
    out = tmp / "tiny-vectors"
    out.mkdir()
    shapes = {"self_attn.q_proj": (32, 32), "mlp.down_proj": (64, 32)}
    for seed, name in enumerate(["helpful", "harmless", "truthful"]):
        g = torch.Generator().manual_seed(seed)
        factors = {
            f"model.layers.{layer}.{m}": (torch.randn(4, i, generator=g) * 0.3,
                                          torch.randn(o, 4, generator=g) * 0.3)
            for layer in range(2) for m, (i, o) in shapes.items()
        }  # fmt: skip
        meta = VectorMetadata(name=name, kind="lowrank", base_fingerprint=fp,
                              description=f"synthetic {name} vector (smoke run)")  # fmt: skip
        PreferenceVector.from_factors(meta, factors).save(out / f"{name}.safetensors")
    return str(base), out


def seed_api(url: str) -> None:
    """Recipes, the experiment and the scripted votes, through the public API."""
    import httpx

    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=url, headers=auth, timeout=60) as client:
        for recipe in RECIPES:
            client.post("/v1/recipes", json=recipe).raise_for_status()
        exp = {"name": "arena-demo", "arms": ARMS, "description": "three recipes, blind battles"}
        client.post("/v1/experiments", json=exp).raise_for_status()
        for preferred, rejected in VOTES:
            vote = {"experiment": "arena-demo", "preferred": preferred, "rejected": rejected}
            client.post("/v1/feedback", json=vote).raise_for_status()


def open_tab(page: Any, url: str, tab: str) -> None:
    page.goto(f"{url}/ui#{tab}")
    page.wait_for_selector("body[data-ready='1']")


def load_timing(page: Any, url: str) -> dict[str, float]:
    """Navigation timing of ``/ui`` (ms, browser clock) on the warm server."""
    open_tab(page, url, "playground")
    return page.evaluate(
        "() => { const n = performance.getEntriesByType('navigation')[0];"
        " const r = performance.getEntriesByName('prefvec-ready')[0];"
        " return {dom: n.domContentLoadedEventEnd, load: n.loadEventEnd, ready: r.startTime}; }"
    )


def shoot_playground(page: Any, url: str, out: Path) -> None:
    open_tab(page, url, "playground")
    page.fill("#w-helpful", "1")
    page.fill("#w-harmless", "0.5")
    page.fill("#pg-temperature", "0")
    page.fill("#pg-prompt", PROMPT)
    page.click("#pg-send")
    page.wait_for_selector("#pg-reply[data-state=done]")
    page.fill("#pg-recipe-name", "helpful-mostly")
    page.screenshot(path=str(out / "playground.png"), full_page=True)


def shoot_side_by_side(page: Any, url: str, out: Path, max_tokens: int) -> None:
    open_tab(page, url, "sbs")
    page.fill("#sbs-max-tokens", str(max_tokens))
    page.select_option("#sbs-n", "3")
    for i, source in enumerate(["recipe:safe-helper", "recipe:edgy", "base"]):
        page.select_option(f"#sbs-src-{i}", source)
    page.fill("#sbs-prompt", PROMPT)
    page.click("#sbs-run")
    page.wait_for_selector("#sbs-cols[data-state=done]")
    page.screenshot(path=str(out / "side-by-side.png"), full_page=True)


def shoot_battle(page: Any, url: str, out: Path) -> None:
    open_tab(page, url, "battle")
    page.select_option("#bt-exp", "arena-demo")
    page.fill("#bt-prompt", PROMPT)
    page.click("#bt-go")
    page.wait_for_selector("#bt-vote-a:enabled")
    page.click("#bt-vote-a")
    page.wait_for_selector("#bt-msg.ok")
    page.screenshot(path=str(out / "battle.png"), full_page=True)


def shoot_vectors(page: Any, url: str, out: Path, tmp: Path) -> None:
    bad = tmp / "not-a-vector.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    open_tab(page, url, "vectors")
    page.set_input_files("#up-file", str(bad))
    page.click("#up-go")
    page.wait_for_selector("#up-msg.error")
    page.screenshot(path=str(out / "vectors.png"), full_page=True)


def take(
    url: str, out: Path, tmp: Path, chromium: str, width: int, max_tokens: int
) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": width, "height": 900})
        context.set_default_timeout(600_000)
        page = context.new_page()
        try:
            timing = shoot_all(page, url, out, tmp, max_tokens)
        except Exception:
            FAILED.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(FAILED), full_page=True)
            logger.error("failed; the page as it was: %s", FAILED)
            raise
        finally:
            browser.close()
    return timing


def shoot_all(page: Any, url: str, out: Path, tmp: Path, max_tokens: int) -> dict[str, float]:
    """Timing first (a fresh load), then the four tabs in one tab of the browser."""
    timing = load_timing(page, url)
    page.fill("#key", KEY)  # kept in the tab's sessionStorage for the next tabs
    page.click("#key-save")
    page.wait_for_selector("#status.ok >> text=key set")
    page.fill("#pg-max-tokens", str(max_tokens))
    shoot_playground(page, url, out)
    shoot_side_by_side(page, url, out, max_tokens)
    shoot_battle(page, url, out)
    shoot_vectors(page, url, out, tmp)
    return timing


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(prog="bench/screenshots.py", description=__doc__.split("\n")[0])
    p.add_argument("--base", default="bundled:smollm2-135m-instruct", help="base model spec")
    p.add_argument("--vectors-dir", type=Path, default=ROOT / "vectors")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--tiny", action="store_true", help="tiny random model (smoke run)")
    p.add_argument(
        "--threads", type=int, default=1,
        help="torch threads (1: on a shared, loaded CPU two spinning threads were 12x slower)",
    )  # fmt: skip
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    from prefvec.server.settings import ServerSettings

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        base, vectors = tiny_setup(tmp) if args.tiny else (args.base, args.vectors_dir)
        settings = ServerSettings(
            base=base, store_dir=tmp / "store", preload_vectors_dir=vectors, device="cpu",
            dtype="float32" if args.tiny else "bfloat16", port=free_port(),
            operator_keys=[KEY], scorers=["length", "refusal"],
            default_max_tokens=args.max_tokens, max_tokens_limit=max(args.max_tokens, 64),
            request_timeout_s=600,
        )  # fmt: skip
        with serve(settings) as url:
            seed_api(url)
            timing = take(url, args.out, tmp, args.chromium, args.width, args.max_tokens)
    logger.info(
        "/ui load (warm server): DOMContentLoaded %.0f ms, load %.0f ms, data shown %.0f ms",
        timing["dom"], timing["load"], timing["ready"],
    )  # fmt: skip
    logger.info("wrote %s", ", ".join(sorted(f.name for f in args.out.glob("*.png"))))
    return timing


if __name__ == "__main__":
    main()
