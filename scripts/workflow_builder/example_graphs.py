"""The graph of each example: which nodes it holds, how they are wired and in which column each sits
(the data flows left to right: encoder, views and the start picture, prompts, models and the mask,
samplers (with the Illusion Score between the stages when an example picks its best candidates), outputs)."""

from __future__ import annotations

from typing import Any

from .examples import (
    ANIMATION,
    CLIP_LOADER,
    DEMO_MODEL,
    DEMO_STAGE_I,
    DEMO_UPSCALE,
    LOADER,
    PREVIEW,
    PREVIEW_SIZE,
    SCORE,
    STAGE_I,
    STAGE_I_MODEL,
    STAGE_II,
    STAGE_II_MODEL,
    T5_LOADER,
    WORKFLOWS,
    Illusion,
)
from .graph import Graph, Node
from .node_schema import NodeLayout, check_widget_value

VIEW_NODE_PREFIX = "VisualAnagramsView_"
REQUIRED_NODE_TYPES = (
    "VisualAnagramsLoadT5",
    "VisualAnagramsPromptEncoder",
    "VisualAnagramsLoadStageI",
    "VisualAnagramsLoadStageII",
    "VisualAnagramsStageI",
    "VisualAnagramsStageII",
    "VisualAnagramsViewPreview",
    "VisualAnagramsLoadCLIP",
    "VisualAnagramsIllusionScore",
    "SaveImage",
    "SaveAnimatedWEBP",
    "ImageScaleBy",
    "LoadImage",
    "SolidMask",
    "MaskComposite",
)
#: The inpainting mask's title: the example builds it from core nodes, a user paints their own.
MASK_TITLE = "Mask (paint your own: right-click Load Image > Open in MaskEditor)"
MASK_NODE_WIDTH = 540  # the whole title on one line (frontend 1.32.9)
#: LoadImage's size with room for its picture preview (as ComfyUI's own templates have it).
PICTURE_NODE_SIZE = (300, 320)


def node_types_used() -> list[str]:
    """Every node type the examples use: the schemas to read."""
    views = sorted({VIEW_NODE_PREFIX + view for illusion in WORKFLOWS for view, _ in illusion.views})
    return [*REQUIRED_NODE_TYPES, *views]


def illusion_graph(illusion: Illusion, layouts: dict[str, NodeLayout]) -> Graph:
    """DeepFloyd IF: Stage I at 64 px, Stage II to 256 px, the 256 px illusions saved and previewed; for an
    example that keeps its best candidates, CLIP scores Stage I's between the stages."""
    if illusion.demo:
        return demo_graph(illusion, layouts)
    graph = Graph(illusion.name, layouts)
    prefix = illusion.folder

    # Column 0: the text encoder, the view chain and the picture. Column 1: the prompts.
    views, prompts = add_views_and_prompts(graph, illusion, T5_LOADER, unload_encoder=True)
    # Column 2: the models (and the mask, the CLIP). Column 3: the samplers; when picking, Stage I above the
    # Illusion Score and the saver of its picks, then Stage II in column 4.
    stage_1_model = graph.add("VisualAnagramsLoadStageI", 2, {"model": STAGE_I_MODEL, **LOADER}, width=300)
    stage_2_model = graph.add("VisualAnagramsLoadStageII", 2, {"model": STAGE_II_MODEL, **LOADER}, width=300)
    pictures = add_picture(graph, illusion, picture_column=0, mask_column=2)
    stage_1_settings = {**STAGE_I, **illusion.stage_1_options}
    stage_2_settings = {**STAGE_II, **illusion.stage_2_options}
    stage_1 = add_sampler(
        graph,
        "VisualAnagramsStageI",
        3,
        stage_1_settings,
        stage_1_model,
        prompts,
        views,
        pictures=pictures if 1 in illusion.picture_stages else None,
    )
    stage_2_column, stage_2_image = 3, stage_1
    if illusion.keep_best:
        stage_2_column, stage_2_image = 4, add_scoring(graph, illusion, stage_1, views, prompts, column=3)
    stage_2 = add_sampler(
        graph,
        "VisualAnagramsStageII",
        stage_2_column,
        stage_2_settings,
        stage_2_model,
        prompts,
        views,
        image=stage_2_image,
        pictures=pictures if 2 in illusion.picture_stages else None,
    )
    # The next two columns: save and preview.
    saved = f"the best {illusion.keep_best}" if illusion.keep_best else "illusions"
    add_outputs(
        graph,
        stage_2,
        views,
        prompts,
        column=stage_2_column + 1,
        illusion_title=f"Save {saved} (256 px)",
        prefixes=(prefix, f"{prefix}_views", f"{prefix}_animation"),
    )
    return finish(graph)


def demo_graph(illusion: Illusion, layouts: dict[str, NodeLayout]) -> Graph:
    """The embedded digits model: T5 and Stage I from the pack itself, 64 px illusions upscaled 4x to be seen."""
    graph = Graph(illusion.name, layouts)
    views, prompts = add_views_and_prompts(graph, illusion, {**T5_LOADER, "encoder": DEMO_MODEL}, unload_encoder=False)
    model = graph.add("VisualAnagramsLoadStageI", 2, {"model": DEMO_MODEL, **LOADER}, width=300)
    pictures = add_picture(graph, illusion, picture_column=0, mask_column=2)
    stage_1 = add_sampler(
        graph,
        "VisualAnagramsStageI",
        2,
        {**DEMO_STAGE_I, **illusion.stage_1_options},
        model,
        prompts,
        views,
        pictures=pictures,
    )
    upscaled = graph.add(
        "ImageScaleBy", 2, DEMO_UPSCALE, {"image": (stage_1, 0)}, title="Upscale 4x (to see it)", width=300
    )
    add_outputs(
        graph,
        upscaled,
        views,
        prompts,
        column=3,
        illusion_title="Save illusions",
        prefixes=(f"{illusion.folder}/illusion", f"{illusion.folder}/views", f"{illusion.folder}/animation"),
    )
    return finish(graph)


def add_views_and_prompts(
    graph: Graph, illusion: Illusion, t5_values: dict[str, Any], *, unload_encoder: bool
) -> tuple[Node, Node]:
    """Column 0: the T5 loader, then the view chain (view k pairs with prompt k); column 1: the prompt
    encoder. Returns (last view, prompt encoder): what the samplers and the preview read."""
    t5 = graph.add("VisualAnagramsLoadT5", 0, t5_values, width=300)
    views = None
    for index, (view, params) in enumerate(illusion.views, start=1):
        class_type = VIEW_NODE_PREFIX + view
        label = graph.layouts[class_type].display_name.removeprefix("View: ")
        views = graph.add(
            class_type, 0, params, {"views": (views, 0)} if views else None, title=f"View {index}: {label}", width=300
        )
    prompts_values = {"style": illusion.style, "unload_encoder": unload_encoder}
    prompts_values.update({f"prompt_{k}": prompt for k, prompt in enumerate(illusion.prompts, start=1)})
    prompts = graph.add(
        "VisualAnagramsPromptEncoder", 1, prompts_values, {"text_encoder": (t5, 0), "views": (views, 0)}, width=400
    )
    return views, prompts


def add_picture(
    graph: Graph, illusion: Illusion, *, picture_column: int, mask_column: int
) -> dict[str, tuple[Node, int]]:
    """The example's picture (core LoadImage, in ``picture_column``) and, for inpainting, its mask (core
    nodes, in ``mask_column``): the sampler inputs they feed, by name. Empty for a text-to-image example."""
    picture = illusion.picture
    if picture is None:
        return {}
    if illusion.picture_input == "reference_image":
        view = illusion.stage_1_options["reference_view"]
        title = f"Reference picture (fixes view {view})"
    else:
        title = "Start picture"
    width, height = PICTURE_NODE_SIZE
    load = graph.add("LoadImage", picture_column, {"image": picture.name}, title=title, width=width, height=height)
    links = {illusion.picture_input: (load, 0)}
    if illusion.repaint_middle:
        # Nothing repainted, plus a repainted square half the picture's size added in its middle.
        keep = graph.add(
            "SolidMask",
            mask_column,
            {"value": 0.0, "width": picture.width, "height": picture.height},
            title="Keep the picture",
            width=300,
        )
        middle = graph.add(
            "SolidMask",
            mask_column,
            {"value": 1.0, "width": picture.width // 2, "height": picture.height // 2},
            title="Repaint a square half its size",
            width=300,
        )
        mask = graph.add(
            "MaskComposite",
            mask_column,
            {"x": picture.width // 4, "y": picture.height // 4, "operation": "add"},
            {"destination": (keep, 0), "source": (middle, 0)},
            title=MASK_TITLE,
            width=MASK_NODE_WIDTH,
        )
        links["mask"] = (mask, 0)
    return links


def add_scoring(graph: Graph, illusion: Illusion, candidates: Node, views: Node, prompts: Node, *, column: int) -> Node:
    """The CLIP loader (column 2, under the models), and in ``column`` (Stage I's, below it) the Illusion Score
    ranking Stage I's ``candidates`` with it, above the saver of its captioned picks (place, candidate,
    alignment, concealment). Returns the score node, whose output 0 is the best ``illusion.keep_best``, best
    first."""
    clip = graph.add("VisualAnagramsLoadCLIP", 2, CLIP_LOADER, width=300)
    score = graph.add(
        "VisualAnagramsIllusionScore",
        column,
        {**SCORE, "top_k": illusion.keep_best},
        {"clip": (clip, 0), "images": (candidates, 0), "views": (views, 0), "prompts": (prompts, 0)},
        title=f"Illusion Score: the best {illusion.keep_best} of {illusion.candidates}",
        width=300,
    )
    graph.add(
        "SaveImage",
        column,
        {"filename_prefix": f"{illusion.folder}_scored"},
        {"images": (score, score.layout.output_slot("scored"))},
        title="Save the picks with scores (64 px)",
        width=360,
        height=400,
    )
    return score


def add_sampler(
    graph: Graph,
    class_type: str,
    column: int,
    settings: dict[str, Any],
    model: Node,
    prompts: Node,
    views: Node,
    image: Node | None = None,
    pictures: dict[str, tuple[Node, int]] | None = None,
) -> Node:
    """A sampler in ``column``: each reads its model, the encoded prompts and the view chain; Stage II also
    the image it upscales; ``pictures``: the start picture, mask or reference it gets (:func:`add_picture`)."""
    links = {"model": (model, 0), "prompts": (prompts, 0), "views": (views, 0), **(pictures or {})}
    if image is not None:
        links["image"] = (image, 0)
    return graph.add(class_type, column, settings, links, width=300)


def add_outputs(
    graph: Graph,
    image: Node,
    views: Node,
    prompts: Node,
    *,
    column: int,
    illusion_title: str,
    prefixes: tuple[str, str, str],
) -> None:
    """Column ``column``: save the illusions, then the view preview (tall enough for its viewer, with
    nothing below it to overlap); the next column: save its grid and its animation."""
    illusion_prefix, grid_prefix, animation_prefix = prefixes
    graph.add(
        "SaveImage",
        column,
        {"filename_prefix": illusion_prefix},
        {"images": (image, 0)},
        title=illusion_title,
        width=360,
        height=400,
    )
    preview = graph.add(
        "VisualAnagramsViewPreview",
        column,
        PREVIEW,
        {"image": (image, 0), "views": (views, 0), "prompts": (prompts, 0)},
        width=PREVIEW_SIZE[0],
        height=PREVIEW_SIZE[1],
    )
    graph.add(
        "SaveImage",
        column + 1,
        {"filename_prefix": grid_prefix},
        {"images": (preview, 0)},
        title="Save view grid",
        width=440,
        height=400,
    )
    graph.add(
        "SaveAnimatedWEBP",
        column + 1,
        {"filename_prefix": animation_prefix, **ANIMATION},
        {"images": (preview, 1)},
        title="Save animation",
        width=380,
        height=420,
    )


def finish(graph: Graph) -> Graph:
    """Lay the graph out, number its execution order and check every widget value against the schema."""
    graph.arrange()
    graph.number_execution_order()
    for node in graph.nodes:
        for slot in node.layout.widgets:
            check_widget_value(node.layout.class_type, slot, node.values[slot.name])
    return graph
