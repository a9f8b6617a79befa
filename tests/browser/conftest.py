"""Fixtures for the browser tests: one JupyterLab server and one headless Chromium for the test module, a fresh tab
per test. Everything is stopped at the end, also after a failure. Without Chromium or playwright the tests skip, except
under CI (the environment variable ``CI`` set, and not to 0/false), where that is a failure: CI installs both
(setup.sh).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_lab import JupyterLab, serve_copies
from lab_page import CHROMIUM, LabPage, RequestGuard, launch_chromium

ARTIFACTS = pytest.StashKey[Path]()
GUARD = pytest.StashKey[RequestGuard]()


def _missing_browser() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed; run: bash setup.sh"
    if not CHROMIUM.exists():
        return f"Chromium is not installed at {CHROMIUM}; run: bash setup.sh"
    return None


# Module scope, not session: playwright's sync API keeps its event loop marked as running while it is open, which
# would make asyncio code in the unit tests collected after these (e.g. the widgets' debouncing) see a loop that
# never runs.
@pytest.fixture(scope="module")
def browser(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """(Chromium context, its RequestGuard), with a fresh profile."""
    missing = _missing_browser()
    if missing and os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{missing} (CI must run the browser tests)")
    if missing:
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context, guard = launch_chromium(playwright, tmp_path_factory.mktemp("chromium-profile"))
        request.config.stash[GUARD] = guard
        try:
            yield context, guard
        finally:
            context.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    """JupyterLab serving copies of the course notebooks, with its own settings and state, all in temporary folders."""
    root = serve_copies(tmp_path_factory.mktemp("lab-root"))
    with JupyterLab(root, tmp_path_factory.mktemp("jupyter")) as server:
        yield server


@pytest.fixture
def lab_page(request: pytest.FixtureRequest, browser: tuple, lab: JupyterLab, artifacts: Path) -> Iterator[LabPage]:
    """A new tab on ``lab``; afterwards its last state is saved as <artifacts>/<test>.png (to see why a test
    failed), the tab is closed and the kernels it started are shut down."""
    context, guard = browser
    page = context.new_page()
    try:
        yield LabPage(page, lab, guard)
    finally:
        try:
            page.screenshot(path=artifacts / (re.sub(r"[^\w.-]+", "_", request.node.name) + ".png"))
        finally:
            page.close()
            lab.shutdown_kernels()


@pytest.fixture(scope="session")
def artifacts(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder for the screenshots; its path is printed at the end of the run."""
    folder = tmp_path_factory.mktemp("browser-artifacts", numbered=True)
    request.config.stash[ARTIFACTS] = folder
    return folder


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if ARTIFACTS in config.stash:
        terminalreporter.write_line(f"browser tests: screenshots in {config.stash[ARTIFACTS]}")
        for report in sorted(config.stash[ARTIFACTS].glob("*/click-seconds.txt")):
            terminalreporter.write_line(f"browser tests: {report.parent.name}, seconds from a click to the numbers")
            for line in report.read_text().splitlines():
                terminalreporter.write_line(f"    {line}")
    if GUARD in config.stash:
        blocked = Counter(config.stash[GUARD].blocked)
        terminalreporter.write_line(
            f"browser tests: {blocked.total()} request(s) to hosts other than 127.0.0.1 "
            "aborted" + "".join(f"\n    {n} x {url}" for url, n in blocked.items())
        )
