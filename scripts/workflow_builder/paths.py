"""The repository's folders the builder reads from and writes to (one home for each)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: UI-format workflows and their thumbnails: ComfyUI's template browser lists this folder.
UI_DIR = REPO / "example_workflows"
#: The API-format twins, for headless runs.
API_DIR = REPO / "api_workflows"
#: Where ``scripts/test.sh`` unpacks ComfyUI 0.3.75.
DEFAULT_COMFYUI_DIR = REPO / ".cache" / "comfyui"
#: The one home of "import the pack the way ComfyUI does".
PACK_LOADER = REPO / "tests" / "pack.py"
#: The demo model's own evaluation code: it loads and samples the embedded model through the pack.
DEMO_EVALUATE = REPO / "demo" / "evaluate.py"
#: The pack's example pictures and the names ComfyUI's input folder lists them under (importable without ComfyUI).
EXAMPLE_PICTURES = REPO / "nodes" / "example_pictures.py"
