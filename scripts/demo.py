#!/usr/bin/env python
"""Make a real illusion on this machine: start a headless ComfyUI with the pack, run the
digits demo workflow on the embedded demo model, copy nothing, print where the files are.

``bash scripts/demo.sh`` installs what this needs and runs it; run it directly with
the Python of a ComfyUI environment that has the pack's requirements::

    python scripts/demo.py [--comfyui DIR] [--output DIR] [--seed N] [--serve]

The embedded model (``demo/IF-I-digits``, a few MB, trained on scikit-learn's 8x8
handwritten digits) needs no download and no GPU. The workflow is
``api_workflows/digits_demo.json``, the API twin of the ``digits_demo`` template.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))
from comfyui_process import PACK_DIR, ComfyUIProcess, extra_args_from_env, prepare_base_dir  # noqa: E402

WORKFLOW = PACK_DIR / "api_workflows" / "digits_demo.json"
DEFAULT_COMFYUI_DIR = PACK_DIR / ".cache" / "comfyui"
DEFAULT_BASE_DIR = PACK_DIR / ".cache" / "demo-comfyui"
DEFAULT_OUTPUT_DIR = PACK_DIR / "demo-output"
RUN_TIMEOUT_SECONDS = 900
SEED_INPUT = ("VisualAnagramsStageI", "seed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--comfyui",
        type=Path,
        default=Path(os.environ.get("COMFYUI_DIR") or DEFAULT_COMFYUI_DIR),
        help="ComfyUI checkout to run (default: COMFYUI_DIR, else .cache/comfyui)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT_DIR,
        help="where ComfyUI writes the results (default: demo-output/)",
    )
    parser.add_argument("--seed", type=int, default=None, help="another seed for the sampler (default: the workflow's)")
    parser.add_argument("--port", type=int, default=None, help="port to serve on (default: a free one)")
    parser.add_argument(
        "--base-dir",
        type=Path,
        default=DEFAULT_BASE_DIR,
        help="ComfyUI's private base directory: custom_nodes, user, temp (default: .cache/demo-comfyui)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="keep the server running afterwards, to open the canvas in a browser (Ctrl+C stops it)",
    )
    args = parser.parse_args(argv)

    prompt = json.loads(WORKFLOW.read_text(encoding="utf-8"))
    if args.seed is not None:
        set_seed(prompt, args.seed)

    output_dir = args.output.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    base_dir = args.base_dir.resolve()
    prepare_base_dir(base_dir)
    server = ComfyUIProcess(
        args.comfyui.resolve(),
        base_dir,
        log_path=output_dir / "comfyui.log",
        port=args.port,
        extra_args=["--output-directory", str(output_dir), *extra_args_from_env()],
    )
    print(f"== starting ComfyUI ({server.comfy_dir}) on {server.url}; its log: {server.log_path}", flush=True)
    server.start()
    try:
        print(
            f"== ComfyUI answered after {server.boot_seconds:.0f} s; running {WORKFLOW.relative_to(PACK_DIR)}",
            flush=True,
        )
        started = time.monotonic()
        entry = run_prompt(server, prompt)
        print(f"== done in {time.monotonic() - started:.1f} s", flush=True)
        print_results(prompt, entry, output_dir)
        if args.serve:
            print(
                f"== serving on {server.url} (Templates -> comfyui-visual-anagrams -> digits_demo); Ctrl+C stops it",
                flush=True,
            )
            while True:
                server.check_alive()
                time.sleep(1)
    except KeyboardInterrupt:
        print()
    except DemoFailed as error:
        print(f"demo failed: {error}\n{server.tail(40)}", file=sys.stderr)
        return 1
    finally:
        server.stop()
        print("== ComfyUI stopped", flush=True)
    return 0


class DemoFailed(RuntimeError):
    pass


def set_seed(prompt: dict, seed: int) -> None:
    class_type, input_name = SEED_INPUT
    nodes = [node for node in prompt.values() if node["class_type"] == class_type]
    if not nodes:
        raise SystemExit(f"{WORKFLOW.name} has no {class_type} node to take --seed")
    for node in nodes:
        node["inputs"][input_name] = seed


def _open(server: ComfyUIProcess, path: str, body: dict | None = None):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(server.url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with opener.open(request, timeout=60) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", "replace")
        raise DemoFailed(f"{path}: HTTP {error.code}: {detail[:2000]}") from error


def run_prompt(server: ComfyUIProcess, prompt: dict) -> dict:
    """Queue the prompt and wait for its /history entry; raise DemoFailed unless it succeeded."""
    prompt_id = _open(server, "/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})["prompt_id"]
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while True:
        entry = _open(server, f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id)
        if entry is not None:
            break
        server.check_alive()
        if time.monotonic() > deadline:
            raise DemoFailed(f"the workflow did not finish within {RUN_TIMEOUT_SECONDS} s")
        time.sleep(0.5)
    status = entry.get("status", {})
    if status.get("status_str") != "success":
        errors = [data for kind, data in status.get("messages", []) if kind == "execution_error"]
        if errors:
            error = errors[0]
            raise DemoFailed(f"{error.get('node_type')} #{error.get('node_id')}: {error.get('exception_message')}")
        raise DemoFailed(f"the workflow ended with status {status.get('status_str')!r}")
    return entry


def node_order(node_id: str) -> tuple:
    """Sort key for API node ids, which are numeric strings ("10" sorts before "9" as text)."""
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def print_results(prompt: dict, entry: dict, output_dir: Path) -> None:
    print(f"== the illusion, its view grid and its animation are in {output_dir}:")
    for node_id, output in sorted(entry.get("outputs", {}).items(), key=lambda item: node_order(item[0])):
        files = [item for item in output.get("images", []) if item.get("type") == "output"]
        if not files:
            continue
        title = prompt.get(node_id, {}).get("_meta", {}).get("title", node_id)
        for item in files:
            path = output_dir / item.get("subfolder", "") / item["filename"]
            print(f"   {title:<28} {path}")


if __name__ == "__main__":
    sys.exit(main())
