"""A real ComfyUI server with the pack installed, for end-to-end tests: the harness's public names.

The harness is split by concern; this module gathers what tests import:

    comfy_test_server.py   the server: base-directory layout, ComfyServer, one process per session (and
                           per other frontend: acquire_server), the ``comfy_server`` and
                           ``comfyui_checkout`` fixtures
    comfy_client.py        ComfyClient (HTTP), RunResult, ImageRef, PromptRejected, PromptFailed
    comfy_websocket.py     WsListener and WsMessage (the websocket stream)
    harness_nodes/va_harness_nodes.py   test-only ComfyUI nodes (HarnessSlowSteps)
    ../scripts/lib/comfyui_process.py   starting and stopping ``python main.py`` (shared with the demo)

The session fixture ``comfy_server`` starts ``python main.py`` from ``COMFYUI_DIR`` once per test
session and hands tests a :class:`ComfyClient`. ``scripts/test.sh`` provides ``COMFYUI_DIR``
(ComfyUI 0.3.75 unpacked to ``.cache/comfyui``, see ``scripts/lib/env.sh``); point it at your own
checkout to test against that. Without it, every test using the fixture is skipped. tests/conftest.py
makes the fixture available to every test module and marks the tests using it ``comfyui``.

Nothing is written into ``COMFYUI_DIR``: the server gets a private base directory
(``--base-directory BASE``) in pytest's tmp dir, from which ComfyUI 0.3.75 derives every folder it uses::

    BASE/custom_nodes/comfyui-visual-anagrams -> the pack (symlink)
    BASE/custom_nodes/va_harness_nodes.py      test-only helper nodes (a copy of harness_nodes/)
    BASE/models/diffusers/tiny-IF-I            tiny_models.write_tiny_models
    BASE/models/diffusers/tiny-IF-II
    BASE/models/text_encoders/tiny-t5          text_encoder/ + tokenizer/
    BASE/input, BASE/output, BASE/temp, BASE/user (and the sqlite database)

so ``COMFYUI_DIR/custom_nodes`` and ``COMFYUI_DIR/models`` are ignored (an ``extra_model_paths.yaml``
in ``COMFYUI_DIR`` is still read: ComfyUI always loads it)::

    def test_something(comfy_server):
        result = comfy_server.run({
            "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
        })
        image = comfy_server.open_image(result.images[0])
        assert result.messages_of("execution_success")

The helper nodes (``HarnessSlowSteps``) give tests a node that takes as long as they ask, reports
progress with a preview image per step and honours interrupts, the way the pack's samplers do.

Environment knobs: ``COMFYUI_DIR`` (required), ``COMFYUI_PYTHON`` (the interpreter for the server,
default: the one running pytest), ``COMFYUI_EXTRA_ARGS`` (extra ``main.py`` arguments, shell-split),
``COMFYUI_BOOT_TIMEOUT`` (seconds, default 180).
"""

from __future__ import annotations

from comfy_client import (
    ComfyClient,
    HttpResponse,
    ImageRef,
    PromptFailed,
    PromptRejected,
    RunResult,
    history_images,
)
from comfy_test_server import (
    HARNESS_NODES_FILE,
    HARNESS_NODES_PATH,
    ComfyServer,
    acquire_server,
    comfy_server_fixture,
    comfyui_checkout_fixture,
    comfyui_dir,
    layout_base_dir,
    release_server,
    skip_reason,
)
from comfy_websocket import (
    PREVIEW_IMAGE,
    PREVIEW_IMAGE_WITH_METADATA,
    TERMINAL_MESSAGES,
    TEXT,
    UNENCODED_PREVIEW_IMAGE,
    WsListener,
    WsMessage,
)
from comfyui_process import (
    LOOPBACK,
    PACK_DIR,
    PACK_FOLDER_NAME,
    ComfyUIProcess,
    extra_args_from_env,
    free_port,
    prepare_base_dir,
)
from harness_nodes.va_harness_nodes import HarnessSlowSteps

# The fixtures under their own names too, for ``from comfy_server import comfy_server``.
comfy_server = comfy_server_fixture
comfyui_checkout = comfyui_checkout_fixture

__all__ = [
    "HARNESS_NODES_FILE",
    "HARNESS_NODES_PATH",
    "LOOPBACK",
    "PACK_DIR",
    "PACK_FOLDER_NAME",
    "PREVIEW_IMAGE",
    "PREVIEW_IMAGE_WITH_METADATA",
    "TERMINAL_MESSAGES",
    "TEXT",
    "UNENCODED_PREVIEW_IMAGE",
    "ComfyClient",
    "ComfyServer",
    "ComfyUIProcess",
    "HarnessSlowSteps",
    "HttpResponse",
    "ImageRef",
    "PromptFailed",
    "PromptRejected",
    "RunResult",
    "WsListener",
    "WsMessage",
    "acquire_server",
    "comfy_server",
    "comfy_server_fixture",
    "comfyui_checkout",
    "comfyui_checkout_fixture",
    "comfyui_dir",
    "extra_args_from_env",
    "free_port",
    "history_images",
    "layout_base_dir",
    "prepare_base_dir",
    "release_server",
    "skip_reason",
]
