"""The test server: one real ComfyUI per test session, with the pack, the tiny models (IF, T5, CLIP) and the
harness nodes.

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
    from tiny_models import write_tiny_models
    from workflow_tools import TINY_CLIP

    prepare_base_dir(base)
    # A copy, not a link: ComfyUI names the module after the file it finds in custom_nodes/.
    shutil.copyfile(HARNESS_NODES_PATH, base / "custom_nodes" / HARNESS_NODES_FILE)

    diffusers_dir = base / "models" / "diffusers"
    paths = write_tiny_models(diffusers_dir)
    text_encoder = base / "models" / "text_encoders" / paths.text_encoder.name
    shutil.move(str(paths.text_encoder), str(text_encoder))
    write_tiny_clip(base / "models" / "clip_vision" / TINY_CLIP)
    return dataclasses.replace(paths, root=base / "models", text_encoder=text_encoder)


class ComfyServer(ComfyUIProcess):
    """The test server: a ComfyUIProcess whose base directory holds the tiny models."""

    def __init__(self, comfy_dir: Path, base_dir: Path, models, *, env=None):
        super().__init__(
            comfy_dir,
            base_dir,
            log_path=base_dir.parent / f"{base_dir.name}-server.log",
            python=os.environ.get("COMFYUI_PYTHON") or sys.executable,
            extra_args=extra_args_from_env(),
            env=env,
        )
        self.models = models
        self.pack_link = base_dir / "custom_nodes" / PACK_FOLDER_NAME


# One server per session, however many test modules import the fixture: each
# module that imports it holds its own session-scoped fixture definition, so
# they share the process through this module instead of booting one each.
_shared: dict[str, Any] = {"client": None, "server": None, "users": 0, "error": None}


def _stop_server_on_sigterm(signum, frame) -> None:
    """A terminated pytest (a CI timeout, a killed job) skips atexit; the server runs in
    its own session, so stop it here and then die the way SIGTERM would have."""
    if _shared["server"] is not None:
        _shared["server"].stop()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _acquire(tmp_path_factory) -> ComfyClient:
    if _shared["error"] is not None:
        raise _shared["error"]  # a failed boot is not retried for every module
    if _shared["client"] is None:
        base_dir = tmp_path_factory.mktemp("comfyui-base")
        server = ComfyServer(comfyui_dir(), base_dir, layout_base_dir(base_dir))
        atexit.register(server.stop)  # even if pytest never reaches the teardown
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _stop_server_on_sigterm)
        try:
            server.start(timeout=float(os.environ.get("COMFYUI_BOOT_TIMEOUT", "180")))
            client = ComfyClient(server)
        except BaseException as error:
            server.stop()
            _shared["error"] = error
            raise
        _shared.update(client=client, server=server)
    _shared["users"] += 1
    return _shared["client"]


def _release() -> None:
    _shared["users"] -= 1
    if _shared["users"] == 0:
        _shared["client"].close()
        _shared["server"].stop()
        _shared.update(client=None, server=None)


@pytest.fixture(scope="session", name="comfy_server")
def comfy_server_fixture(tmp_path_factory) -> Iterable[ComfyClient]:
    """A running ComfyUI (COMFYUI_DIR) with the pack and the tiny models installed.

    Started once per session; yields a ComfyClient. Skips when COMFYUI_DIR is
    unset or is not a ComfyUI; fails with the log's tail when it does not boot.
    """
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    client = _acquire(tmp_path_factory)
    try:
        yield client
    finally:
        _release()


@pytest.fixture(scope="session", name="comfyui_checkout")
def comfyui_checkout_fixture() -> Path:
    """The ComfyUI checkout (COMFYUI_DIR), for tests that start their own server or import ComfyUI in a
    child process; skips like ``comfy_server`` without one. Tests using it are marked ``comfyui``."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    return comfyui_dir()
