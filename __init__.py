"""Visual Anagrams for ComfyUI: multi-view optical illusions with DeepFloyd IF.

ComfyUI imports this package by its folder name. Everything inside is imported
relatively, and the ComfyUI-facing part (``nodes``) is imported only when ComfyUI
asks for the extension, so ``views`` and ``sampling`` stay importable without
ComfyUI (tests and scripts use them directly).
"""

WEB_DIRECTORY = "./js"


async def comfy_entrypoint():
    from .nodes import VisualAnagramsExtension

    return VisualAnagramsExtension()
