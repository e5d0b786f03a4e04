#!/usr/bin/env python
"""Build the example workflows: UI format for ComfyUI's template browser, API format twins, thumbnails.

Each workflow is described once (``WORKFLOWS`` in ``workflow_builder/examples.py``,
the paper's settings). From that description and the *live* node schemas -- the
pack's nodes and ComfyUI's core nodes, read from a ComfyUI checkout exactly as its
``/object_info`` route reports them -- the script writes:

    example_workflows/<name>.json   UI format (what the frontend saves, version 0.4);
                                    ComfyUI lists these in its template browser
    example_workflows/<name>.jpg    the thumbnail the template browser shows
    api_workflows/<name>.json       API format (what ``app.graphToPrompt()`` sends
                                    to ``POST /prompt``), for headless runs

Widget order, sockets and slot types come from the schemas, so re-running the
script after a schema change rewrites the files (or fails, naming the input, when a
described value no longer fits).

    python scripts/build_workflows.py            # write the files
    python scripts/build_workflows.py --check    # exit 1 if the committed files differ

ComfyUI must be importable: ``--comfyui DIR``, else ``COMFYUI_DIR``, else
``.cache/comfyui`` (where ``scripts/test.sh`` unpacks ComfyUI 0.3.75). Run it with
the Python of that ComfyUI's environment (torch included).

``--check`` compares the JSON files byte for byte. Thumbnails are pictures whose
exact bytes depend on the installed Pillow and torch, so ``--check`` only verifies
that each exists, is a JPEG of the expected size and stays under the size budget.

This file is the command line; the builder itself is the package next to it,
``scripts/workflow_builder/`` (its ``__init__`` lists a module per concern).
"""

from __future__ import annotations

import argparse
import sys

# Python puts this script's folder first on sys.path, so the package next to it imports as is.
from workflow_builder.comfyui_nodes import ComfyUIUnavailable
from workflow_builder.examples import WORKFLOWS
from workflow_builder.outputs import build, problems, stale_files, write
from workflow_builder.paths import REPO


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed files differ")
    parser.add_argument("--comfyui", help="ComfyUI directory (default: $COMFYUI_DIR, else .cache/comfyui)")
    parser.add_argument("--no-thumbnails", action="store_true", help="write the JSON files only")
    args = parser.parse_args(argv)

    try:
        files = build(args.comfyui)
    except ComfyUIUnavailable as error:
        print(f"build_workflows: {error}", file=sys.stderr)
        return 2

    if args.check:
        found = problems(files)
        if found:
            print(
                "build_workflows --check: the workflow files are out of date (run python scripts/build_workflows.py):",
                file=sys.stderr,
            )
            for problem in found:
                print(f"  {problem}", file=sys.stderr)
            return 1
        print(f"build_workflows --check: {len(files)} workflow files and {len(WORKFLOWS)} thumbnails up to date")
        return 0

    written = write(files, thumbnails=not args.no_thumbnails)
    for path in stale_files():
        print(f"build_workflows: {path.relative_to(REPO)} is not produced by any workflow; delete it", file=sys.stderr)
    print(f"build_workflows: wrote {written} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
