"""A throw-away JupyterLab server for the browser tests: its own port, token, settings and state, all in a temporary
folder, so that neither the user's Jupyter settings nor a running Lab interfere, and nothing is left behind.

The settings keep everything on 127.0.0.1 (no news feed, no update check, no extension catalogue) and keep the
notebooks on disk untouched (no autosave; checkpoints go to the temporary folder), because the tests open the
course's own notebooks, run them and add cells to them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from run_notebooks import KERNEL_ENV, OFFLINE_ENV, course_notebooks

REPO = Path(__file__).resolve().parents[2]

SERVER_CONFIG = {
    # CI containers run as root; the server is reachable only from this machine, with a random token.
    "ServerApp": {"allow_root": True, "terminals_enabled": False},
    "LabApp": {
        "news_url": None,  # no announcements feed
        "check_for_updates_class": "jupyterlab.handlers.announcements.NeverCheckForUpdate",
        "extension_manager": "readonly",  # no extension catalogue look-ups
    },
}
"""Server settings, written as the fresh config dir's jupyter_server_config.json."""

USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    # The tests add cells and outputs to the course notebooks: these must never be written back.
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    # Every cell in the DOM (no virtual scrolling), so that the tests can read all prompts and outputs.
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}
"""JupyterLab user settings, one file per plugin, in the fresh config dir."""


def serve_copies(root_dir: Path) -> Path:
    """Copy the course notebooks into ``root_dir``/notebooks and return ``root_dir``: the server works on copies, so
    nothing a test runs or types in a notebook can reach the repository's files."""
    target = Path(root_dir) / "notebooks"
    target.mkdir(parents=True, exist_ok=True)
    for path in course_notebooks(REPO / "notebooks"):
        copy = target / path.relative_to(REPO / "notebooks")
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, copy)
    return Path(root_dir)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def kernel_env() -> dict[str, str]:
    """The course's kernel environment (notebooks/run_notebooks.py: no progress bars, two threads), offline."""
    return {**KERNEL_ENV, **OFFLINE_ENV}


class JupyterLab:
    """``with JupyterLab(root_dir, state_dir) as lab:`` a JupyterLab server serving ``root_dir``; stopped, with its
    kernels, on leaving the block (also on an exception). ``lab.url(path)`` opens a file in Lab."""

    def __init__(self, root_dir: Path, state_dir: Path, *, start_timeout_s: float = 120) -> None:
        self.root_dir = Path(root_dir)
        self.state_dir = Path(state_dir)
        self.start_timeout_s = start_timeout_s
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = self.state_dir / "jupyter-lab.log"
        self.process: subprocess.Popen | None = None

    def _write_settings(self) -> dict[str, str]:
        """Fresh Jupyter/IPython dirs with the settings above; returns the environment variables pointing at them."""
        dirs = {name: self.state_dir / name for name in ("config", "data", "runtime", "ipython", "checkpoints")}
        for folder in dirs.values():
            folder.mkdir(parents=True, exist_ok=True)
        config = {**SERVER_CONFIG, "FileCheckpoints": {"checkpoint_dir": str(dirs["checkpoints"])}}
        (dirs["config"] / "jupyter_server_config.json").write_text(json.dumps(config, indent=1))
        for plugin, settings in USER_SETTINGS.items():
            path = dirs["config"] / "lab" / "user-settings" / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(settings))
        return {
            "JUPYTER_CONFIG_DIR": str(dirs["config"]),
            "JUPYTER_DATA_DIR": str(dirs["data"]),
            "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
            "IPYTHONDIR": str(dirs["ipython"]),
        }

    def start(self) -> None:
        env = {**kernel_env(), **os.environ, **self._write_settings()}  # explicit values in the caller's env win
        command = [
            str(Path(sys.executable).parent / "jupyter"),
            "lab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
        ]
        with open(self.log_path, "wb") as log:
            # Own process group: stop() can end the server and every kernel it started in one signal.
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.api("GET", "status")
                return
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"JupyterLab did not answer within {self.start_timeout_s} s:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.5)

    def api(self, method: str, path: str, timeout: float = 10) -> object:
        """Call the server's REST API (``/api/<path>``) with the token; returns the decoded JSON (None if empty)."""
        request = urllib.request.Request(
            f"{self.base}/api/{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def url(self, path: str) -> str:
        """Lab with the file ``path`` (relative to root_dir) open in a fresh layout (``reset``: no earlier tabs)."""
        return f"{self.base}/lab/tree/{path}?reset&token={self.token}"

    def shutdown_kernels(self) -> None:
        """Shut down every session and kernel of this server (each test frees the memory its notebook took)."""
        for session in self.api("GET", "sessions"):
            self.api("DELETE", f"sessions/{session['id']}", timeout=60)
        for kernel in self.api("GET", "kernels"):
            self.api("DELETE", f"kernels/{kernel['id']}", timeout=60)

    def stop(self) -> None:
        """Shut down kernels and server through the API; whatever is left of the process group is terminated."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.shutdown_kernels()
            self.api("POST", "shutdown")
            self.process.wait(timeout=30)
        except Exception:  # noqa: BLE001 - a server that does not answer is ended by signal below
            pass
        # On SIGTERM the server still shuts its kernels down (they run in sessions of their own, not in this group).
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is not None:
                break
            os.killpg(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> JupyterLab:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
