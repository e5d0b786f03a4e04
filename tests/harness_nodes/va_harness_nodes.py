"""Test-only ComfyUI nodes the harness installs next to the pack (never shipped).

tests/comfy_test_server.py copies this file into the test server's ``custom_nodes/``, where ComfyUI
loads it as a custom node module (``NODE_CLASS_MAPPINGS``). ComfyUI's own modules are imported inside
``run`` so the test process, which has no ComfyUI on its path, can import the class too.
"""

from __future__ import annotations

import time
from typing import ClassVar

import torch
from PIL import Image


class HarnessSlowSteps:
    """Takes `steps` steps of `delay` seconds, with a progress update and a JPEG preview per step,
    checking for interrupts like a sampler does. Outputs a (1, size, size, 3) image filled with `value`."""

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802  (ComfyUI's name)
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
    def IS_CHANGED(cls, **kwargs):  # noqa: N802  (ComfyUI's name)
        return float("nan")  # never cached: every prompt really runs it

    def run(self, steps, delay, size, value):
        import comfy.model_management
        import comfy.utils

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


class HarnessOddImage:
    """An IMAGE no ordinary node makes: `batch` images (0 allowed) of `channels` channels, filled with `fill`,
    which may be NaN or infinite (API JSON cannot carry those, and the pack's prompt guard refuses them)."""

    FILLS: ClassVar[dict[str, float]] = {"0.5": 0.5, "nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802  (ComfyUI's name)
        return {
            "required": {
                "batch": ("INT", {"default": 1, "min": 0, "max": 16}),
                "size": ("INT", {"default": 64, "min": 1, "max": 1024}),
                "channels": ("INT", {"default": 3, "min": 1, "max": 4}),
                "fill": (list(cls.FILLS), {"default": "0.5"}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "testing/harness"

    def run(self, batch, size, channels, fill):
        return (torch.full((batch, size, size, channels), self.FILLS[fill]),)


NODE_CLASS_MAPPINGS = {"HarnessSlowSteps": HarnessSlowSteps, "HarnessOddImage": HarnessOddImage}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HarnessSlowSteps": "Harness: slow steps (test only)",
    "HarnessOddImage": "Harness: odd image (test only)",
}
