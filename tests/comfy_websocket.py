"""The test client's websocket side: one ``/ws?clientId=...`` connection collecting every frame.

ComfyUI streams a prompt's life to the client id it was queued with: JSON frames (status,
execution_start, executing, progress, executed, execution_success/error/interrupted, ...) and
binary frames (previews). :class:`WsListener` records them in a thread and lets tests wait on them.
"""

from __future__ import annotations

import dataclasses
import io
import json
import struct
import threading
import time
import uuid
from collections.abc import Callable

from comfyui_process import LOOPBACK

# Messages that end a prompt's execution on the websocket.
TERMINAL_MESSAGES = ("execution_success", "execution_error", "execution_interrupted")

# Binary websocket frames (ComfyUI's protocol.BinaryEventTypes).
PREVIEW_IMAGE = 1
UNENCODED_PREVIEW_IMAGE = 2
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4


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
                except Exception:  # noqa: BLE001  (recorded: waits raise with the first error)
                    self.error = exc
                    return
            except Exception as exc:  # noqa: BLE001  (recorded for the test to see)
                self.error = exc
                return
            self._record(frame)

    def close(self):
        self._stop.set()
        try:
            self._ws.close()
        except Exception:  # noqa: BLE001  (closing a dead connection: nothing left to do)
            pass
        self._thread.join(timeout=5)

    # -- parsing

    def _record(self, frame):
        opcode, data = frame
        if opcode == self._websocket.ABNF.OPCODE_TEXT:
            payload = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
            body = payload.get("data") or {}
            prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
            message = WsMessage(
                type=payload.get("type", ""),
                data=body if isinstance(body, dict) else {"value": body},
                prompt_id=prompt_id,
            )
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
                type="preview",
                data={},
                prompt_id=self._current_prompt,
                binary=True,
                event=event,
                image_format={1: "JPEG", 2: "PNG"}.get(kind, str(kind)),
                image_bytes=body[4:],
            )
        if event == PREVIEW_IMAGE_WITH_METADATA:
            (length,) = struct.unpack(">I", body[:4])
            metadata = json.loads(body[4 : 4 + length].decode("utf-8"))
            mime = metadata.get("image_type", "")
            return WsMessage(
                type="preview",
                data=metadata,
                prompt_id=metadata.get("prompt_id") or self._current_prompt,
                binary=True,
                event=event,
                image_format="PNG" if mime == "image/png" else "JPEG",
                image_bytes=body[4 + length :],
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
                    raise TimeoutError(
                        f"no matching websocket message within {timeout} s (listener error: {self.error!r})"
                    )
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
