"""Builds the pack's example workflows (``scripts/build_workflows.py`` is its command line).

One concern per module, in the order the data flows:

    examples        what each example is: views, prompts, style, its picture, the paper's settings
    comfyui_nodes   ComfyUI and the pack imported in this process; a node's ``/object_info``
    node_schema     the frontend's reading of a node schema: sockets, widgets, their values
    graph           a workflow graph: nodes, links, execution order, where each node sits
    example_graphs  the graph of each example (which nodes, wired how, in which column)
    serialisation   a graph in UI format (what the frontend saves) and API format (``POST /prompt``)
    thumbnails      the picture the template browser shows for an example
    outputs         the files: what they should hold, and what ``--check`` finds wrong with them
    paths           the repository's folders it reads and writes
    repo_modules    the repository's code loaded from its file (tests/pack.py, demo/evaluate.py,
                    nodes/example_pictures.py)

It imports from the script's folder (Python puts it on ``sys.path`` when the script runs;
``tests/workflow_tools.py`` adds it in the child process that reads ComfyUI's node definitions).
The modules import each other relatively, as the pack's do.
"""
