"""Drive one JupyterLab tab as a learner would (menus, clicks, typed cells) and record what went wrong in the page:
JavaScript errors, widgets that failed to render, and requests that tried to leave 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from jupyter_lab import JupyterLab

if TYPE_CHECKING:  # playwright is imported only where it is installed (see conftest.py)
    from playwright.sync_api import BrowserContext, ConsoleMessage, Locator, Page, Playwright, Route

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
EXPECTED_EXTERNAL = {COLAB_BADGE}
"""Requests to other hosts that are aborted like all others but are no failure: the "Open in Colab" badge image at
the top of every notebook (for learners on Colab; here it shows as a broken image)."""
PROBE = Path(__file__).with_name("kernel_probe.py")
PROBE_MARKER = "KERNEL_PROBE "

BENIGN_CONSOLE_ERRORS: list[re.Pattern[str]] = [
    # Chromium logs each aborted request; the Colab badge's (EXPECTED_EXTERNAL) is expected. Add a pattern only with
    # the reason why that error is harmless.
    re.compile(r"^Failed to load resource: net::ERR_FAILED \(" + re.escape(COLAB_BADGE) + ":"),
]
"""Console errors that are not failures. Everything else fails the test."""

WIDGET_ERRORS = [
    ".jupyter-widgets-error-widget",  # ipywidgets' placeholder for a widget whose model or view failed
    ".jp-OutputArea-output:has-text('Error displaying widget')",
    ".jp-OutputArea-output:has-text('Failed to load model class')",
    ".jp-OutputArea-output:has-text('Failed to load view class')",
    ".jp-OutputArea-output:has-text('Failed to create view for')",
    # A widget's Output area that caught a traceback or a warning on stderr.
    ".jupyter-widgets [data-mime-type='application/vnd.jupyter.stderr']",
    # helpers.widgets shows an exception raised by a button's callback in this colour (_error_html).
    ".jupyter-widgets span[style*='#b00020']",
]
"""Selectors of a widget that shows an error instead of rendering."""

PROMPT_STATE_JS = """panel => [...panel.querySelectorAll('.jp-CodeCell')].map(cell => ({
    prompt: cell.querySelector('.jp-InputPrompt')?.textContent.trim() ?? '',
    empty: (cell.querySelector('.cm-content')?.textContent ?? '').trim() === '',
}))"""
"""For every code cell of a notebook panel: its input prompt ("[ ]:", "[*]:", "[3]:") and whether it has no code."""


CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
"""The system Chromium (Playwright's own browser downloads are not used), without any traffic of its own."""


def launch_chromium(playwright: Playwright, user_data_dir: Path) -> tuple[BrowserContext, RequestGuard]:
    """Headless Chromium with a fresh profile in ``user_data_dir``, and the ``RequestGuard`` every request of it
    goes through."""
    context = playwright.chromium.launch_persistent_context(
        str(user_data_dir),
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 1000},
        service_workers="block",
    )  # workers' requests would bypass routing
    guard = RequestGuard()
    context.route("**/*", guard)
    return context, guard


class RequestGuard:
    """Context-wide route handler: lets requests to 127.0.0.1/localhost through, aborts and records all others."""

    def __init__(self) -> None:
        self.blocked: list[str] = []

    def __call__(self, route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()


class LabPage:
    """One browser tab on ``lab``: opens and runs notebooks through the UI; ``problems()`` lists what went wrong."""

    def __init__(self, page: Page, lab: JupyterLab, guard: RequestGuard) -> None:
        self.page = page
        self.lab = lab
        self.guard = guard
        self._blocked_before = len(guard.blocked)  # the guard serves the whole browser: count from here on
        self.path: str | None = None
        self.console_errors: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.console_errors.append(f"uncaught: {error}"))

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        text = f"{message.text} ({message.location.get('url', '')}:{message.location.get('lineNumber', '')})"
        if not any(pattern.search(text) for pattern in BENIGN_CONSOLE_ERRORS):
            self.console_errors.append(text)

    @property
    def notebook(self) -> Locator:
        """The panel of the notebook opened last."""
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")

    def kernel_state(self) -> str | None:
        """The server's view of the notebook's kernel: "starting", "idle", "busy", ... (None: no session yet)."""
        for session in self.lab.api("GET", "sessions"):
            if session["path"] == self.path and session.get("kernel"):
                return session["kernel"]["execution_state"]
        return None

    def open(self, path: str, *, timeout_s: float = 300) -> None:
        """Open the notebook ``path`` (relative to the server's root) in a fresh layout; wait until its kernel is idle
        and connected."""
        self.path = path
        self.page.goto(self.lab.url(path), timeout=timeout_s * 1000)
        self.notebook.wait_for(timeout=timeout_s * 1000)
        self.wait(lambda: self.kernel_state() == "idle", timeout_s, f"the kernel of {path} to start")
        kernel_name = self.notebook.locator(".jp-Toolbar-kernelName")
        self.wait(
            lambda: kernel_name.inner_text().strip() not in ("", "No Kernel"),
            timeout_s,
            "the notebook to connect to its kernel",
        )

    def menu(self, menu: str, command: str) -> None:
        """Click ``menu`` in the menu bar, then the item with the JupyterLab command id ``command``."""
        self.page.get_by_role("menuitem", name=menu, exact=True).click()
        self.page.locator(f"li.lm-Menu-item[data-command='{command}']").click()

    def run_all(self, *, timeout_s: float = 1800) -> None:
        """Clear all outputs, run all cells (Run menu), wait until every code cell ran; fail on the first cell
        that raised (Run All stops there)."""
        self.menu("Edit", "editmenu:clear-all")
        self.menu("Run", "runmenu:run-all")
        deadline = time.monotonic() + timeout_s
        stopped_polls = 0
        while True:
            cells = self.notebook.evaluate(PROMPT_STATE_JS)
            ran = [bool(re.fullmatch(r"\[\d+\]:", cell["prompt"])) for cell in cells]
            busy = any("*" in cell["prompt"] for cell in cells)
            if not busy and self.kernel_state() == "idle":
                not_run = [i for i, (cell, done) in enumerate(zip(cells, ran)) if not done and not cell["empty"]]
                if not not_run:
                    return
                # Some cells ran and the kernel is idle with others left: Run All stopped at an error (checked twice,
                # so that the moment between clicking and the first cell being queued is not taken for it).
                stopped_polls = stopped_polls + 1 if any(ran) else 0
                if stopped_polls >= 2:
                    raise AssertionError(
                        f"Run All stopped before code cell {not_run[0]} of {self.path}:\n{self.error_outputs()}"
                    )
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.path} still running after {timeout_s} s")
            self.pause(0.5)

    def error_outputs(self) -> str:
        """Text of the notebook's stderr/traceback outputs."""
        outputs = self.notebook.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        return "\n".join(outputs.all_inner_texts())

    def run_cell(self, code: str, *, timeout_s: float = 900) -> str:
        """Append a code cell at the end (the notebook's "click to add a cell" footer), type ``code`` (one line),
        run it with Shift+Enter and return its output text."""
        cells_before = self.notebook.locator(".jp-CodeCell").count()
        self.notebook.locator(".jp-Notebook-footer").click()
        cell = self.notebook.locator(".jp-CodeCell").nth(cells_before)
        cell.locator(".cm-content").click()  # the new cell's editor gets the keyboard focus only later by itself
        self.page.keyboard.insert_text(code)
        self.page.keyboard.press("Shift+Enter")
        prompt = cell.locator(".jp-InputPrompt")
        self.wait(
            lambda: (
                re.fullmatch(r"\[\d+\]:", prompt.inner_text().strip()) is not None and self.kernel_state() == "idle"
            ),
            timeout_s,
            "the typed cell to run",
        )
        return "\n".join(cell.locator(".jp-OutputArea-output").all_inner_texts())

    def run_probe(self, selections: list[list[int]]) -> dict:
        """Type and run a cell that prints ``kernel_probe.report(selections)`` from the notebook's kernel; return it."""
        output = self.run_cell(
            f"import json, runpy; print({PROBE_MARKER!r} + json.dumps(runpy.run_path("
            f"{str(PROBE)!r})['report']({selections!r})))"
        )
        lines = [line for line in output.splitlines() if line.startswith(PROBE_MARKER)]
        if not lines:
            raise AssertionError(f"the kernel probe printed no report:\n{output}")
        return json.loads(lines[-1].removeprefix(PROBE_MARKER))

    def widget_errors(self) -> list[str]:
        """Texts of the widgets in the notebook that show an error instead of rendering."""
        found = []
        for selector in WIDGET_ERRORS:
            found += [f"{selector}: {text[:500]}" for text in self.notebook.locator(selector).all_inner_texts()]
        return found

    def problems(self) -> list[str]:
        """JavaScript errors, widgets showing errors, and requests to other hosts, since this page was opened."""
        return (
            [f"JavaScript error: {error}" for error in self.console_errors]
            + [f"widget error: {error}" for error in self.widget_errors()]
            + [
                f"request to another host (aborted): {url}"
                for url in self.guard.blocked[self._blocked_before :]
                if url not in EXPECTED_EXTERNAL
            ]
        )

    def wait(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout_s`` seconds."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
            self.pause(0.25)

    def pause(self, seconds: float) -> None:
        """Wait inside playwright, never with time.sleep: the sync API runs the request guard (and every other
        event handler) only while a playwright call waits, so a page's requests would hang during a plain sleep."""
        self.page.wait_for_timeout(seconds * 1000)
