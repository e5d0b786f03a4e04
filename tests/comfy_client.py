"""The test client: talks to one running ComfyUI over loopback HTTP (and its websocket, comfy_websocket.py).

:class:`ComfyClient` queues API-format prompts, waits for them, and hands back a :class:`RunResult`
(the /history entry and the websocket frames); a prompt ComfyUI refuses raises :class:`PromptRejected`
with its HTTP 400 answer, and ``run(check=True)`` raises :class:`PromptFailed` for one that ran and failed.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from comfy_websocket import WsListener, WsMessage
from comfyui_process import LOOPBACK

if TYPE_CHECKING:
    from comfy_test_server import ComfyServer


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

    def queue(
        self,
        prompt: Mapping,
        *,
        client_id: str | None = None,
        extra_data: Mapping | None = None,
        prompt_id: str | None = None,
    ) -> str:
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

    def run(
        self,
        prompt: Mapping,
        *,
        timeout: float = 120.0,
        check: bool = True,
        extra_data: Mapping | None = None,
        listener: WsListener | None = None,
    ) -> RunResult:
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
            filename, subfolder, type = (
                filename["filename"],
                filename.get("subfolder", ""),
                filename.get("type", "output"),
            )
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
