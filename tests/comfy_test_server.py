"""The test server: one real ComfyUI per test session, with the pack, the tiny models (IF, T5 as a folder and as
single files, CLIP) and the harness nodes (and one more per other frontend the browser tests run on).

The session fixture ``comfy_server`` starts ``python main.py`` from ``COMFYUI_DIR`` once and hands
tests a :class:`~comfy_client.ComfyClient`. The process itself (command line, offline environment,
boot wait, stop) is scripts/lib/comfyui_process.py's, shared with the demo; this module lays out the
server's private base directory and shares one process between every test module that uses it.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from comfy_client import ComfyClient
from comfyui_process import PACK_FOLDER_NAME, ComfyUIProcess, extra_args_from_env, prepare_base_dir

#: The test-only nodes (a real module, loaded by ComfyUI from the server's custom_nodes/).
HARNESS_NODES_PATH = Path(__file__).resolve().parent / "harness_nodes" / "va_harness_nodes.py"
HARNESS_NODES_FILE = HARNESS_NODES_PATH.name


def comfyui_dir() -> Path | None:
    value = os.environ.get("COMFYUI_DIR")
    return Path(value).resolve() if value else None


def skip_reason() -> str | None:
    """Why the server tests cannot run here, or None."""
    directory = comfyui_dir()
    if directory is None:
        return "COMFYUI_DIR is not set (bash scripts/test.sh provides ComfyUI 0.3.75; or point it at a checkout)"
    if not (directory / "main.py").is_file():
        return f"COMFYUI_DIR={directory} has no main.py"
    try:
        import websocket  # noqa: F401
    except ImportError:
        return "websocket-client is not installed (tests/requirements.txt)"
    return None


def layout_base_dir(base: Path) -> Any:
    """Lay out a private ComfyUI base directory; returns the TinyModelPaths there."""
    from tiny_clip import write_tiny_clip
    from tiny_models import write_tiny_models, write_tiny_t5_files
    from workflow_tools import TINY_CLIP, TINY_T5_FILES

    prepare_base_dir(base)
    # A copy, not a link: ComfyUI names the module after the file it finds in custom_nodes/.
    shutil.copyfile(HARNESS_NODES_PATH, base / "custom_nodes" / HARNESS_NODES_FILE)

    diffusers_dir = base / "models" / "diffusers"
    paths = write_tiny_models(diffusers_dir)
    text_encoder = base / "models" / "text_encoders" / paths.text_encoder.name
    shutil.move(str(paths.text_encoder), str(text_encoder))
    write_tiny_clip(base / "models" / "clip_vision" / TINY_CLIP)
    # Single-file T5s, as Flux / SD3 users have them: fp16 in text_encoders, scaled fp8 in the legacy clip folder.
    t5_files = write_tiny_t5_files(base / "tiny-t5-files", comfyui_dir() / "comfy" / "text_encoders" / "t5_tokenizer")
    for (variant, name), folder in zip(TINY_T5_FILES.items(), ("text_encoders", "clip"), strict=True):
        (base / "models" / folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(t5_files.files[variant], base / "models" / folder / name)
    return dataclasses.replace(paths, root=base / "models", text_encoder=text_encoder)


class ComfyServer(ComfyUIProcess):
    """The test server: a ComfyUIProcess whose base directory holds the tiny models.

    ``front_end_root`` serves another frontend's static files (``--front-end-root``) instead of the one
    installed with ComfyUI's requirements (the browser tests run on several, tests/browser.py FRONTENDS)."""

    def __init__(self, comfy_dir: Path, base_dir: Path, models, *, env=None, front_end_root: Path | None = None):
        front_end_args = ["--front-end-root", str(front_end_root)] if front_end_root else []
        super().__init__(
            comfy_dir,
            base_dir,
            log_path=base_dir.parent / f"{base_dir.name}-server.log",
            python=os.environ.get("COMFYUI_PYTHON") or sys.executable,
            extra_args=[*extra_args_from_env(), *front_end_args],
            env=env,
        )
        self.models = models
        self.pack_link = base_dir / "custom_nodes" / PACK_FOLDER_NAME
        self.front_end_root = front_end_root


# One server per session and frontend, however many test modules import the fixture: each
# module that imports it holds its own session-scoped fixture definition, so they share
# the process through this module instead of booting one each. Keyed by the front-end
# root (None: the frontend of ComfyUI's requirements, the one the ``comfy_server`` fixture gives).
_shared: dict[Path | None, dict[str, Any]] = {}


def _stop_servers_on_sigterm(signum, frame) -> None:
    """A terminated pytest (a CI timeout, a killed job) skips atexit; the servers run in
    their own sessions, so stop them here and then die the way SIGTERM would have."""
    for entry in _shared.values():
        if entry["server"] is not None:
            entry["server"].stop()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def acquire_server(tmp_path_factory, front_end_root: Path | None = None) -> ComfyClient:
    """The shared server serving ``front_end_root`` (None: ComfyUI's own frontend), started on first use;
    hand it back with :func:`release_server`. Raises (with the log's tail) when it does not boot."""
    entry = _shared.setdefault(front_end_root, {"client": None, "server": None, "users": 0, "error": None})
    if entry["error"] is not None:
        raise entry["error"]  # a failed boot is not retried for every module
    if entry["client"] is None:
        base_dir = tmp_path_factory.mktemp("comfyui-base")
        server = ComfyServer(comfyui_dir(), base_dir, layout_base_dir(base_dir), front_end_root=front_end_root)
        atexit.register(server.stop)  # even if pytest never reaches the teardown
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _stop_servers_on_sigterm)
        try:
            server.start(timeout=float(os.environ.get("COMFYUI_BOOT_TIMEOUT", "180")))
            client = ComfyClient(server)
        except BaseException as error:
            server.stop()
            entry["error"] = error
            raise
        entry.update(client=client, server=server)
    entry["users"] += 1
    return entry["client"]


def release_server(front_end_root: Path | None = None) -> None:
    """Give back a server from :func:`acquire_server`; the last user stops it."""
    entry = _shared[front_end_root]
    entry["users"] -= 1
    if entry["users"] == 0:
        entry["client"].close()
        entry["server"].stop()
        entry.update(client=None, server=None)


@pytest.fixture(scope="session", name="comfy_server")
def comfy_server_fixture(tmp_path_factory) -> Iterable[ComfyClient]:
    """A running ComfyUI (COMFYUI_DIR) with the pack and the tiny models installed.

    Started once per session; yields a ComfyClient. Skips when COMFYUI_DIR is
    unset or is not a ComfyUI; fails with the log's tail when it does not boot.
    """
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    client = acquire_server(tmp_path_factory)
    try:
        yield client
    finally:
        release_server()


@pytest.fixture(scope="session", name="comfyui_checkout")
def comfyui_checkout_fixture() -> Path:
    """The ComfyUI checkout (COMFYUI_DIR), for tests that start their own server or import ComfyUI in a
    child process; skips like ``comfy_server`` without one. Tests using it are marked ``comfyui``."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    return comfyui_dir()
