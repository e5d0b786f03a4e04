"""Visual Anagrams for ComfyUI: multi-view optical illusions with DeepFloyd IF.

ComfyUI imports this package by its folder name. Everything inside is imported
relatively, and the ComfyUI-facing part (``nodes``) is imported only when ComfyUI
asks for the extension, so ``views`` and ``sampling`` stay importable without
ComfyUI (tests and scripts use them directly).
"""

WEB_DIRECTORY = "./js"


async def comfy_entrypoint():
    from .nodes import VisualAnagramsExtension

    extension = VisualAnagramsExtension()
    # ComfyUI 0.3.75 never calls on_load (later versions may); it is safe to call twice.
    await extension.on_load()
    return extension
