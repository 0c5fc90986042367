"""Headless Chromium for the tests that look at a page as a person would, and the directory
their screenshots go to.

Debian's ``chromium`` (``make apt-test`` installs it) is driven by Playwright through its
``executable_path``: Playwright's own browser downloads are never used. Each browser gets a
fresh, empty profile and none of Chromium's background traffic.

Screenshots are test artifacts (:mod:`tests.support.artifacts`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import BrowserContext, Page, async_playwright

from tests.support.artifacts import artifact_path

__all__ = ["CHROMIUM", "artifact_path", "chromium", "star_colours"]

CHROMIUM = Path("/usr/bin/chromium")
_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@asynccontextmanager
async def chromium(*, width: int = 1280, height: int = 800) -> AsyncIterator[BrowserContext]:
    """A browser context on a new headless Chromium with an empty profile."""
    if not CHROMIUM.exists():
        raise AssertionError(f"{CHROMIUM} is missing: install Debian's chromium (make apt-test)")
    with tempfile.TemporaryDirectory(prefix="pymesh-chromium-") as profile:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=list(_ARGS),
                viewport={"width": width, "height": height},
                # The page is served by the test: a proxy of the caller's shell is not on the
                # way to it.
                env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
            )
            try:
                yield context
            finally:
                await context.close()


async def star_colours(page: Page) -> list[tuple[str, str, float]]:
    """For each star on the page: its class (``glyphicon-star`` or ``-star-empty``), its
    computed colour and the width the browser gave its glyph (0 when nothing was drawn)."""
    result: list[list[object]] = await page.eval_on_selector_all(
        ".glyphicon",
        """els => els.map(e => [
            e.classList.contains('glyphicon-star-empty') ? 'glyphicon-star-empty'
                                                         : 'glyphicon-star',
            getComputedStyle(e).color,
            e.getBoundingClientRect().width])""",
    )
    return [(str(c), str(colour), float(str(w))) for c, colour, w in result]
