"""Start and stop a real ComfyUI server with the pack installed (standard library only).

Shared by the demo (``scripts/demo.py``) and the test harness
(``tests/comfy_server.py``): both run ``python main.py`` from a ComfyUI checkout
with a private ``--base-directory``, so nothing is written into the checkout::

    BASE/custom_nodes/comfyui-visual-anagrams -> this repository (symlink)
    BASE/input, BASE/temp, BASE/user (and the sqlite database), BASE/output, BASE/models

(ComfyUI 0.3.75 derives every folder it uses from the base directory;
``--output-directory`` moves the output folder elsewhere.)
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[2]
PACK_FOLDER_NAME = "comfyui-visual-anagrams"
LOOPBACK = "127.0.0.1"

#: What a server started here must not do: download models or phone home.
OFFLINE_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "PYTHONUNBUFFERED": "1",
    "NO_PROXY": f"{LOOPBACK},localhost",
    "no_proxy": f"{LOOPBACK},localhost",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def prepare_base_dir(base: Path) -> Path:
    """Create the folders of a private base directory and link the pack into custom_nodes.

    Returns the pack's path as ComfyUI sees it. Safe to call on an existing base directory.
    """
    for folder in ("custom_nodes", "input", "output", "temp", "user", "models/diffusers", "models/text_encoders"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_FOLDER_NAME
    if link.is_symlink() and link.resolve() != PACK_DIR:
        link.unlink()  # a base directory reused from another clone
    if not link.exists():
        link.symlink_to(PACK_DIR, target_is_directory=True)
    return link


class ComfyUIProcess:
    """One ``python main.py --cpu`` process on a loopback port, its output in ``log_path``."""

    def __init__(
        self,
        comfy_dir: Path,
        base_dir: Path,
        *,
        log_path: Path,
        port: int | None = None,
        python: str | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str | None] | None = None,
    ):
        self.comfy_dir = Path(comfy_dir)
        self.base_dir = Path(base_dir)
        self.log_path = Path(log_path)
        self.port = port or free_port()
        self.python = python or sys.executable
        self.extra_args = list(extra_args)
        # Changes to the offline environment (a value of None removes the variable), e.g. for a test that
        # points the Hub at an unreachable address.
        self.env_overrides = dict(env or {})
        self.process: subprocess.Popen | None = None
        self.boot_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def command(self) -> list[str]:
        return [
            self.python,
            "main.py",
            "--cpu",
            "--listen",
            LOOPBACK,
            "--port",
            str(self.port),
            "--disable-auto-launch",
            "--base-directory",
            str(self.base_dir),
            # The default database lives in COMFYUI_DIR/user; keep it ours.
            "--database-url",
            f"sqlite:///{self.base_dir / 'user' / 'comfyui.db'}",
            "--disable-api-nodes",  # no api.comfy.org nodes: faster boot, nothing remote
            *self.extra_args,
        ]

    def start(self, timeout: float = 180.0) -> None:
        """Start the server and wait until it answers; raises with the log's tail if it does not."""
        if not (self.comfy_dir / "main.py").is_file():
            raise FileNotFoundError(f"{self.comfy_dir} is not a ComfyUI checkout (it has no main.py)")
        env = dict(os.environ)
        env.update(OFFLINE_ENVIRONMENT)
        for name, value in self.env_overrides.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        started = time.monotonic()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.comfy_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        url = f"{self.url}/system_stats"
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {self.process.returncode} while starting\n{self.tail()}")
            try:
                with opener.open(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() - started > timeout:
                self.stop()
                raise TimeoutError(f"ComfyUI did not answer {url} within {timeout:.0f} s\n{self.tail()}")
            time.sleep(0.25)
        self.boot_seconds = time.monotonic() - started

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"ComfyUI died with code {self.process.returncode}\n{self.tail()}")

    def log_text(self, since: int = 0) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(since)
            return log.read().decode("utf-8", "replace")

    def tail(self, lines: int = 80) -> str:
        return "---- last ComfyUI log lines ----\n" + "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def extra_args_from_env() -> list[str]:
    """``COMFYUI_EXTRA_ARGS``: more ``main.py`` arguments, shell-split."""
    return shlex.split(os.environ.get("COMFYUI_EXTRA_ARGS", ""))
