"""A real ComfyUI server with the pack installed, for end-to-end tests.

The session fixture ``comfy_server`` starts ``python main.py`` from
``COMFYUI_DIR`` once per test session and hands tests a :class:`ComfyClient`.
``scripts/test.sh`` provides ``COMFYUI_DIR`` (ComfyUI 0.3.75 unpacked to
``.cache/comfyui``, see ``scripts/lib/env.sh``); point it at your own checkout to
test against that. Without it, every test using the fixture is skipped.

Nothing is written into ``COMFYUI_DIR``: the server gets a private base
directory (``--base-directory BASE``) in pytest's tmp dir, from which ComfyUI
0.3.75 derives every folder it uses::

    BASE/custom_nodes/comfyui-visual-anagrams -> the pack (symlink)
    BASE/custom_nodes/va_harness_nodes.py      test-only helper nodes (below)
    BASE/models/diffusers/tiny-IF-I            tiny_models.write_tiny_models
    BASE/models/diffusers/tiny-IF-II
    BASE/models/text_encoders/tiny-t5          text_encoder/ + tokenizer/
    BASE/input, BASE/output, BASE/temp, BASE/user (and the sqlite database)

so ``COMFYUI_DIR/custom_nodes`` and ``COMFYUI_DIR/models`` are ignored (an
``extra_model_paths.yaml`` in ``COMFYUI_DIR`` is still read: ComfyUI always
loads it).

The fixture is named ``comfy_server``; a test module gets it with
``from comfy_server import comfy_server_fixture  # noqa: F401`` (or every module
does, with ``pytest_plugins = ["comfy_server"]`` in conftest.py)::

    def test_something(comfy_server):
        result = comfy_server.run({
            "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
        })
        image = comfy_server.open_image(result.images[0])
        assert result.messages_of("execution_success")

The helper nodes (``HarnessSlowSteps``) give tests a node that takes as long
as they ask, reports progress with a preview image per step and honours
interrupts, the way the pack's samplers do.

Environment knobs: ``COMFYUI_DIR`` (required), ``COMFYUI_PYTHON`` (the
interpreter for the server, default: the one running pytest),
``COMFYUI_EXTRA_ARGS`` (extra ``main.py`` arguments, shell-split),
``COMFYUI_BOOT_TIMEOUT`` (seconds, default 180).
"""

from __future__ import annotations

import atexit
import dataclasses
import io
import json
import os
import shutil
import signal
import struct
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "lib"))
from comfyui_process import (  # noqa: E402  (the launcher the demo uses too)
    LOOPBACK,
    PACK_DIR,  # noqa: F401  (re-exported for the tests)
    PACK_FOLDER_NAME,
    ComfyUIProcess,
    extra_args_from_env,
    prepare_base_dir,
)

HARNESS_NODES_FILE = "va_harness_nodes.py"

# Messages that end a prompt's execution on the websocket.
TERMINAL_MESSAGES = ("execution_success", "execution_error", "execution_interrupted")

# Binary websocket frames (ComfyUI's protocol.BinaryEventTypes).
PREVIEW_IMAGE = 1
UNENCODED_PREVIEW_IMAGE = 2
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4

HARNESS_NODES_SOURCE = '''\
"""Test-only nodes the harness installs next to the pack (never shipped)."""
import time

import torch
from PIL import Image

import comfy.model_management
import comfy.utils


class HarnessSlowSteps:
    """Takes `steps` steps of `delay` seconds, with a progress update and a
    JPEG preview per step, checking for interrupts like a sampler does.
    Outputs a (1, size, size, 3) image filled with `value`."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "steps": ("INT", {"default": 3, "min": 1, "max": 100000}),
                "delay": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 60.0, "step": 0.01}),
                "size": ("INT", {"default": 16, "min": 1, "max": 1024}),
                "value": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "testing/harness"

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # never cached: every prompt really runs it

    def run(self, steps, delay, size, value):
        bar = comfy.utils.ProgressBar(steps)
        for step in range(1, steps + 1):
            comfy.model_management.throw_exception_if_processing_interrupted()
            if delay:
                time.sleep(delay)
            shade = int(255 * step / steps)
            preview = Image.new("RGB", (size, size), (shade, 0, 255 - shade))
            bar.update_absolute(step, steps, ("JPEG", preview, 512))
        comfy.model_management.throw_exception_if_processing_interrupted()
        return (torch.full((1, size, size, 3), float(value)),)


NODE_CLASS_MAPPINGS = {"HarnessSlowSteps": HarnessSlowSteps}
NODE_DISPLAY_NAME_MAPPINGS = {"HarnessSlowSteps": "Harness: slow steps (test only)"}
'''


# --------------------------------------------------------------------------- errors


class PromptRejected(Exception):
    """POST /prompt answered HTTP 400: the prompt failed validation.

    ``body`` is ComfyUI's JSON answer: ``{"error": {"type", "message", "details",
    "extra_info"}, "node_errors": {node_id: {"errors": [...], "class_type": ...}}}``.
    """

    def __init__(self, status: int, body: Any):
        self.status = status
        self.body = body
        self.error = body.get("error", {}) if isinstance(body, dict) else {}
        self.node_errors = body.get("node_errors", {}) if isinstance(body, dict) else {}
        super().__init__(f"HTTP {status}: {json.dumps(body)[:2000]}")


class PromptFailed(AssertionError):
    """A prompt ran but did not succeed (``ComfyClient.run(check=True)``)."""


# --------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True)
class ImageRef:
    """An image a node reported in its UI output (what /view serves)."""

    filename: str
    subfolder: str
    type: str  # "output", "temp" or "input"
    node_id: str | None = None


@dataclasses.dataclass
class WsMessage:
    """One websocket frame.

    JSON frames: ``type`` is ComfyUI's message type ("status", "execution_start",
    "executing", "progress", "progress_state", "executed", "execution_cached",
    "execution_success", "execution_error", "execution_interrupted", ...) and
    ``data`` its payload. Binary frames: ``binary`` is true, ``event`` the frame
    type (1 preview, 3 text, 4 preview with metadata) and ``type`` is "preview"
    for both preview kinds (``image_bytes``/``image_format``, and ``data`` holds
    the metadata of kind 4) or "binary" otherwise (``payload``).

    ``prompt_id`` is the payload's prompt id, or for frames without one (kind 1
    previews) the prompt the stream was executing when the frame arrived.
    """

    type: str
    data: dict
    prompt_id: str | None
    binary: bool = False
    event: int | None = None
    image_format: str | None = None
    image_bytes: bytes | None = None
    payload: bytes | None = None
    received_at: float = dataclasses.field(default_factory=time.monotonic)

    def image(self):
        """The preview as a loaded PIL image."""
        from PIL import Image

        if self.image_bytes is None:
            raise ValueError(f"{self.type} frame carries no image")
        image = Image.open(io.BytesIO(self.image_bytes))
        image.load()
        return image


@dataclasses.dataclass
class RunResult:
    """What ``ComfyClient.run`` saw: the /history entry and the websocket frames."""

    prompt_id: str
    entry: dict  # GET /history/<id>[<id>]: prompt, outputs, status, meta
    messages: list[WsMessage]

    @property
    def status(self) -> str:
        return (self.entry.get("status") or {}).get("status_str", "")

    @property
    def ok(self) -> bool:
        return self.status == "success"

    @property
    def outputs(self) -> dict:
        return self.entry.get("outputs", {})

    @property
    def images(self) -> list[ImageRef]:
        return history_images(self.entry)

    def messages_of(self, *types: str) -> list[WsMessage]:
        return [m for m in self.messages if m.type in types]

    @property
    def previews(self) -> list[WsMessage]:
        return self.messages_of("preview")

    @property
    def status_messages(self) -> list[tuple[str, dict]]:
        """The history's own record: [(type, data)], e.g. ("execution_error", {...})."""
        return [tuple(m) for m in (self.entry.get("status") or {}).get("messages", [])]

    @property
    def error(self) -> dict | None:
        """The execution_error payload (exception_type, exception_message, traceback, node_id, ...)."""
        for kind, data in self.status_messages:
            if kind == "execution_error":
                return data
        return None


def history_images(entry: Mapping) -> list[ImageRef]:
    images = []
    for node_id, output in (entry.get("outputs") or {}).items():
        for item in output.get("images", []) or []:
            images.append(ImageRef(item["filename"], item.get("subfolder", ""), item.get("type", "output"), node_id))
    return images


# --------------------------------------------------------------------------- websocket


class WsListener:
    """A websocket client (``/ws?clientId=...``) collecting every frame in a thread.

    Progress, previews and execution messages go to the client id the prompt was
    queued with, so queue with ``client_id=listener.client_id`` (ComfyClient.queue
    uses its default listener's id). ``preview_metadata=True`` announces the
    ``supports_preview_metadata`` feature, as the current frontend does, and the
    server then sends kind-4 previews (with prompt and node ids) instead of kind 1.
    """

    def __init__(self, host: str, port: int, *, client_id: str | None = None, preview_metadata: bool = False):
        import websocket  # websocket-client

        self._websocket = websocket
        self.client_id = client_id or uuid.uuid4().hex
        self.url = f"ws://{host}:{port}/ws?clientId={self.client_id}"
        self.preview_metadata = preview_metadata
        self._messages: list[WsMessage] = []
        self._cond = threading.Condition()
        self._current_prompt: str | None = None
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._ws = self._connect()
        self._thread = threading.Thread(target=self._loop, name=f"comfy-ws-{self.client_id[:8]}", daemon=True)
        self._thread.start()

    # -- connection

    def _connect(self):
        ws = self._websocket.create_connection(self.url, timeout=10, http_no_proxy=[LOOPBACK, "localhost"])
        # The server greets with "status"; the feature flags must be the first
        # thing we send, and are negotiated before any prompt is queued.
        self._record(ws.recv_data())
        if self.preview_metadata:
            ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
            while not any(m.type == "feature_flags" for m in self._messages):
                self._record(ws.recv_data())
        ws.settimeout(0.25)
        return ws

    def _loop(self):
        websocket = self._websocket
        while not self._stop.is_set():
            try:
                frame = self._ws.recv_data()
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketConnectionClosedException, OSError) as exc:
                if self._stop.is_set():
                    return
                try:  # the server restarted or dropped us: reconnect with the same id
                    time.sleep(0.5)
                    self._ws = self._connect()
                    continue
                except Exception:
                    self.error = exc
                    return
            except Exception as exc:  # pragma: no cover - recorded for the test to see
                self.error = exc
                return
            self._record(frame)

    def close(self):
        self._stop.set()
        try:
            self._ws.close()
        except Exception:
            pass
        self._thread.join(timeout=5)

    # -- parsing

    def _record(self, frame):
        opcode, data = frame
        if opcode == self._websocket.ABNF.OPCODE_TEXT:
            payload = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
            body = payload.get("data") or {}
            prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
            message = WsMessage(type=payload.get("type", ""), data=body if isinstance(body, dict) else {"value": body}, prompt_id=prompt_id)
            if prompt_id:
                self._current_prompt = prompt_id
        elif opcode == self._websocket.ABNF.OPCODE_BINARY:
            message = self._parse_binary(bytes(data))
        else:
            return
        with self._cond:
            self._messages.append(message)
            self._cond.notify_all()

    def _parse_binary(self, data: bytes) -> WsMessage:
        (event,) = struct.unpack(">I", data[:4])
        body = data[4:]
        if event == PREVIEW_IMAGE:
            (kind,) = struct.unpack(">I", body[:4])
            return WsMessage(
                type="preview", data={}, prompt_id=self._current_prompt, binary=True, event=event,
                image_format={1: "JPEG", 2: "PNG"}.get(kind, str(kind)), image_bytes=body[4:],
            )
        if event == PREVIEW_IMAGE_WITH_METADATA:
            (length,) = struct.unpack(">I", body[:4])
            metadata = json.loads(body[4:4 + length].decode("utf-8"))
            mime = metadata.get("image_type", "")
            return WsMessage(
                type="preview", data=metadata, prompt_id=metadata.get("prompt_id") or self._current_prompt,
                binary=True, event=event, image_format="PNG" if mime == "image/png" else "JPEG",
                image_bytes=body[4 + length:],
            )
        return WsMessage(type="binary", data={}, prompt_id=self._current_prompt, binary=True, event=event, payload=body)

    # -- queries

    def messages(self, prompt_id: str | None = None, *types: str) -> list[WsMessage]:
        """Frames so far, optionally only a prompt's and only some types."""
        with self._cond:
            found = list(self._messages)
        if prompt_id is not None:
            found = [m for m in found if m.prompt_id == prompt_id]
        if types:
            found = [m for m in found if m.type in types]
        return found

    def wait_for(self, predicate: Callable[[WsMessage], bool], timeout: float = 30.0) -> WsMessage:
        """The first frame (already received or arriving within timeout) matching predicate."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for message in self._messages:
                    if predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.error is not None:
                    raise TimeoutError(f"no matching websocket message within {timeout} s (listener error: {self.error!r})")
                self._cond.wait(remaining)

    def wait_type(self, prompt_id: str, *types: str, timeout: float = 30.0) -> WsMessage:
        return self.wait_for(lambda m: m.prompt_id == prompt_id and m.type in types, timeout)

    def wait_done(self, prompt_id: str, timeout: float = 120.0) -> WsMessage:
        """The prompt's execution_success / execution_error / execution_interrupted frame."""
        return self.wait_type(prompt_id, *TERMINAL_MESSAGES, timeout=timeout)

    def wait_end(self, prompt_id: str, timeout: float = 120.0) -> WsMessage:
        """The ``executing`` frame with node None that ComfyUI sends after a prompt
        finished (after its terminal frame and its /history entry): once it is
        here, every frame of the prompt is."""
        return self.wait_for(
            lambda m: m.prompt_id == prompt_id and m.type == "executing" and m.data.get("node") is None, timeout
        )

    def clear(self):
        with self._cond:
            self._messages.clear()


# --------------------------------------------------------------------------- HTTP client


@dataclasses.dataclass
class HttpResponse:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self):
        return json.loads(self.body.decode("utf-8"))


class ComfyClient:
    """Talks to one running ComfyUI over loopback HTTP and websocket.

    Attributes: ``base_url``, ``host``, ``port``, ``comfy_dir`` (COMFYUI_DIR),
    ``base_dir`` (the private ``--base-directory``), ``output_dir``, ``input_dir``, ``temp_dir``,
    ``models_dir``, ``models`` (tiny_models.TinyModelPaths as laid out under
    models/), ``pack_dir`` (the pack as ComfyUI sees it, under custom_nodes/),
    ``log_path``, ``boot_seconds``, ``client_id`` and ``ws`` (the default WsListener).
    """

    def __init__(self, server: ComfyServer):
        self._server = server
        self.host = LOOPBACK
        self.port = server.port
        self.base_url = f"http://{LOOPBACK}:{server.port}"
        self.base_dir = server.base_dir
        self.comfy_dir = server.comfy_dir
        self.output_dir = server.base_dir / "output"
        self.input_dir = server.base_dir / "input"
        self.temp_dir = server.base_dir / "temp"
        self.models_dir = server.base_dir / "models"
        self.models = server.models
        self.pack_dir = server.pack_link
        self.log_path = server.log_path
        self.boot_seconds = server.boot_seconds
        # Loopback only: never let an http_proxy variable route us elsewhere.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.ws = WsListener(self.host, self.port)
        self.client_id = self.ws.client_id
        self._listeners = [self.ws]

    # -- plain HTTP

    def request(self, method: str, path: str, body: Any = None, timeout: float = 60.0) -> HttpResponse:
        """Any request; ``body`` is sent as JSON. Never raises for HTTP error statuses."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(req, timeout=timeout) as response:
                return HttpResponse(response.status, response.read(), dict(response.headers))
        except urllib.error.HTTPError as error:
            return HttpResponse(error.code, error.read(), dict(error.headers or {}))

    def get_json(self, path: str, timeout: float = 60.0):
        response = self.request("GET", path, timeout=timeout)
        if response.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {response.status}: {response.body[:2000]!r}")
        return response.json()

    def system_stats(self) -> dict:
        return self.get_json("/system_stats")

    def object_info(self, node_class: str | None = None) -> dict:
        """GET /object_info (all nodes) or /object_info/<class> ({class: info})."""
        path = "/object_info" if node_class is None else f"/object_info/{urllib.parse.quote(node_class)}"
        return self.get_json(path)

    def queue_state(self) -> dict:
        """GET /queue: {"queue_running": [...], "queue_pending": [...]}."""
        return self.get_json("/queue")

    # -- prompts

    def queue(self, prompt: Mapping, *, client_id: str | None = None, extra_data: Mapping | None = None,
              prompt_id: str | None = None) -> str:
        """POST /prompt; returns the prompt id. Raises PromptRejected on HTTP 400.

        ``prompt`` is API format: {node_id: {"class_type": ..., "inputs": {...}}}.
        ``extra_data`` is passed through (e.g. {"extra_pnginfo": {"workflow": {...}}},
        which SaveImage embeds in the PNG).
        """
        body: dict[str, Any] = {"prompt": prompt, "client_id": client_id or self.client_id}
        if extra_data is not None:
            body["extra_data"] = dict(extra_data)
        if prompt_id is not None:
            body["prompt_id"] = prompt_id
        response = self.request("POST", "/prompt", body)
        if response.status == 400:
            try:
                parsed = response.json()
            except ValueError:
                parsed = {"error": {"message": response.body.decode("utf-8", "replace")}}
            raise PromptRejected(response.status, parsed)
        if response.status != 200:
            raise RuntimeError(f"POST /prompt: HTTP {response.status}: {response.body[:2000]!r}\n{self.log_tail()}")
        return response.json()["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        """The /history entry of a finished prompt, or None while it is queued or running."""
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

    def wait(self, prompt_id: str, timeout: float = 120.0, poll: float = 0.1) -> dict:
        """Poll GET /history/<id> until the prompt has finished; returns its entry
        ({"prompt", "outputs", "status": {"status_str", "completed", "messages"}, "meta"}),
        whether it succeeded or not."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self.history(prompt_id)
            if entry is not None:
                return entry
            self._server.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"prompt {prompt_id} not finished after {timeout} s\n{self.log_tail()}")
            time.sleep(poll)

    def run(self, prompt: Mapping, *, timeout: float = 120.0, check: bool = True,
            extra_data: Mapping | None = None, listener: WsListener | None = None) -> RunResult:
        """Queue, wait for /history and for the websocket's end-of-prompt frame; returns a RunResult.
        With ``check`` (default) a prompt that did not succeed raises PromptFailed
        with the error, the traceback and the server log's tail."""
        listener = listener or self.ws
        prompt_id = self.queue(prompt, client_id=listener.client_id, extra_data=extra_data)
        entry = self.wait(prompt_id, timeout=timeout)
        try:  # the stream's last word on this prompt follows its /history entry
            listener.wait_end(prompt_id, timeout=15)
        except TimeoutError:
            pass  # then result.messages shows what did arrive
        result = RunResult(prompt_id, entry, listener.messages(prompt_id))
        if check and not result.ok:
            error = result.error or {}
            raise PromptFailed(
                f"prompt {prompt_id} ended with status {result.status!r}: "
                f"{error.get('node_type')} #{error.get('node_id')}: "
                f"{error.get('exception_type')}: {error.get('exception_message')}\n"
                + "".join(error.get("traceback", []))
                + f"\nstatus messages: {json.dumps(result.status_messages)[:3000]}\n{self.log_tail()}"
            )
        return result

    def interrupt(self, prompt_id: str | None = None) -> int:
        """POST /interrupt (global, or only if ``prompt_id`` is running); returns the HTTP status."""
        return self.request("POST", "/interrupt", {"prompt_id": prompt_id} if prompt_id else {}).status

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Until nothing is running or pending."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.queue_state()
            if not state["queue_running"] and not state["queue_pending"]:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"queue still busy after {timeout} s: {state}")
            time.sleep(0.1)

    # -- images

    def fetch_image(self, filename: str | ImageRef | Mapping, subfolder: str = "", type: str = "output") -> bytes:
        """GET /view: the file's bytes. Accepts an ImageRef or a history image dict too."""
        if isinstance(filename, ImageRef):
            filename, subfolder, type = filename.filename, filename.subfolder, filename.type
        elif isinstance(filename, Mapping):
            filename, subfolder, type = filename["filename"], filename.get("subfolder", ""), filename.get("type", "output")
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type})
        response = self.request("GET", f"/view?{query}")
        if response.status != 200:
            raise RuntimeError(f"GET /view?{query}: HTTP {response.status}")
        return response.body

    def open_image(self, filename: str | ImageRef | Mapping, subfolder: str = "", type: str = "output"):
        """fetch_image decoded as a loaded PIL image (PNG text chunks in ``.text``)."""
        from PIL import Image

        image = Image.open(io.BytesIO(self.fetch_image(filename, subfolder, type)))
        image.load()
        return image

    # -- websocket

    def new_listener(self, *, preview_metadata: bool = False) -> WsListener:
        """Another websocket client with its own client id (closed at session end)."""
        listener = WsListener(self.host, self.port, preview_metadata=preview_metadata)
        self._listeners.append(listener)
        return listener

    def messages(self, prompt_id: str, *types: str) -> list[WsMessage]:
        """The default listener's frames for a prompt."""
        return self.ws.messages(prompt_id, *types)

    # -- the server log

    def log_text(self, since: int = 0) -> str:
        """The server's stdout+stderr so far (from byte offset ``since``, see log_mark)."""
        return self._server.log_text(since)

    def log_mark(self) -> int:
        """The log's current size, to read only what a test caused: log_text(since=mark)."""
        return self.log_path.stat().st_size

    def log_tail(self, lines: int = 80) -> str:
        return "---- last ComfyUI log lines ----\n" + "\n".join(self.log_text().splitlines()[-lines:])

    def close(self):
        for listener in self._listeners:
            listener.close()


# --------------------------------------------------------------------------- server process


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
    from tiny_models import write_tiny_models

    prepare_base_dir(base)
    (base / "custom_nodes" / HARNESS_NODES_FILE).write_text(HARNESS_NODES_SOURCE)

    diffusers_dir = base / "models" / "diffusers"
    paths = write_tiny_models(diffusers_dir)
    text_encoder = base / "models" / "text_encoders" / paths.text_encoder.name
    shutil.move(str(paths.text_encoder), str(text_encoder))
    return dataclasses.replace(paths, root=base / "models", text_encoder=text_encoder)


class ComfyServer(ComfyUIProcess):
    """The test server: a ComfyUIProcess whose base directory holds the tiny models."""

    def __init__(self, comfy_dir: Path, base_dir: Path, models):
        super().__init__(
            comfy_dir,
            base_dir,
            log_path=base_dir.parent / f"{base_dir.name}-server.log",
            python=os.environ.get("COMFYUI_PYTHON") or sys.executable,
            extra_args=extra_args_from_env(),
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


# The same fixture under its own name, for ``from comfy_server import comfy_server``.
comfy_server = comfy_server_fixture
