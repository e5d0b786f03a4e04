"""The pack in ComfyUI's canvas, in a real browser: the js/ extension and the example workflows.

Debian's chromium, driven by Playwright, loads the real frontend from a test server
(tests/comfy_server.py, tiny models installed) and does what a user does: searches and adds
nodes, opens the examples from the template browser, queues one with the Run button, plays
the illusion viewer, wires views to the prompt encoder. Screenshots go to
test-artifacts/browser/ (tests/browser.py has the fixtures and helpers).

The whole suite runs on ComfyUI 0.3.75's own frontend on the classic canvas (FULL_SUITE_UI); what
the pack adds to the canvas (socket colours, prompt pairing) and opening and running an example run on
every frontend of FRONTENDS in both modes too (``@on_every_ui``), the viewer's pixel check on the newest
frontend in Nodes 2.0 too. In Nodes 2.0 the
nodes are DOM: the tests read what the user sees there from the DOM (the text boxes, their labels and
marks, the warning banner, the sockets' dots) where on the classic canvas they read LiteGraph's state.
"""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch

from browser import (
    EXTENSION_NAME,
    EXTENSION_PATH,
    FULL_SUITE_UI,
    SLOT_DOT_COLOURS,
    STATE_TIMEOUT_MS,
    TEXT_BOXES,
    UIS,
    centre_on,
    fit_view,
    frontend_servers_fixture,  # noqa: F401 (fixtures tests/conftest.py does not import)
    load_workflow,
    mean_difference,
    next_frames,
    nodes_of,
    on_uis,
    orientation_picture,
    png,
    set_widgets,
    shoot,
    slot_dot_colours,
    text_boxes,
    ui_fixture,  # noqa: F401
)
from pack import import_submodule
from workflow_tools import TINY_MODELS, TINY_T5_FILES, api_workflow, ui_workflow, widget_inputs, workflow_names

PACK_PREFIX = "VisualAnagrams"
PREVIEW = "VisualAnagramsViewPreview"
ENCODER = "VisualAnagramsPromptEncoder"
OUR_COLOURS = {
    "VA_IF_STAGE_I",
    "VA_IF_STAGE_II",
    "VA_IF_STAGE_III",
    "VA_T5_ENCODER",
    "VA_CLIP",
    "VA_PROMPTS",
    "VA_VIEWS",
}
CORE_TYPES = ("MODEL", "CLIP", "VAE", "CONDITIONING", "LATENT", "IMAGE")
RUN_TIMEOUT_MS = 300_000

views_module = import_submodule("views")

#: The tests that must hold wherever a user works: on every frontend, in both modes.
on_every_ui = on_uis(*UIS)
#: The rest: on FULL_SUITE_UI only (named, so that every test of the module shares its page for that UI).
full_suite_only = on_uis(FULL_SUITE_UI)
#: The viewer draws the same way in every mode of a frontend (one DOM widget), so its pixel-exact check runs on
#: FULL_SUITE_UI and on the newest frontend in Nodes 2.0: the oldest and newest of both axes, at half the CI time.
on_oldest_and_newest_ui = on_uis(FULL_SUITE_UI, UIS[-1])


def shot(ui, name: str) -> str:
    """A screenshot's name: as it always was on FULL_SUITE_UI, in a folder per UI for the others."""
    return name if ui.ui == FULL_SUITE_UI else f"{ui.ui}/{name}"


def assert_no_console_errors_from_us(page, since: int = 0) -> None:
    ours = page.console.ours(since)
    assert not ours, "\n".join(f"{m.type}: {m.text} ({m.url})" for m in ours)


def viewer_state(page, node_id: int) -> dict:
    return page.evaluate("(id) => app.graph.getNodeById(id).vaViewer.state()", node_id)


def wait_for_viewer(page, node_id: int, timeout: float = RUN_TIMEOUT_MS) -> dict:
    """Until the preview node's viewer has results and its picture has loaded; returns the viewer's data."""
    page.wait_for_function(
        """(id) => {
            const viewer = app.graph.getNodeById(id)?.vaViewer;
            return viewer?.data && viewer.picture.complete && viewer.picture.naturalWidth > 0;
        }""",
        arg=node_id,
        timeout=timeout,
    )
    return page.evaluate("(id) => app.graph.getNodeById(id).vaViewer.data", node_id)


def wait_for_first_playthrough(page, node_id: int, timeout: float = RUN_TIMEOUT_MS) -> dict:
    """Until the preview node's viewer has results, has played into a view and its picture has loaded; returns
    what it saw: {"playing": on the first frame the results were there, "progress": the furthest into a view}.

    Looked at on every animation frame (Playwright polls on requestAnimationFrame), and the viewer advances at
    most 0.1 s of its timeline a frame, so no part of the playthrough slips between two looks however slowly a
    busy machine draws (a look after loading the picture could come after the playthrough had ended)."""
    handle = page.wait_for_function(
        """(id) => {
            const viewer = app.graph.getNodeById(id)?.vaViewer;
            if (!viewer?.data) return false;
            const state = viewer.state(), seen = (window.__vaFirstPlay ??= {});
            seen[id] ??= {playing: state.playing, progress: 0};
            seen[id].progress = Math.max(seen[id].progress, state.progress);
            const loaded = viewer.picture.complete && viewer.picture.naturalWidth > 0;
            return loaded && seen[id].progress > 0.2 ? seen[id] : false;
        }""",
        arg=node_id,
        timeout=timeout,
    )
    return handle.json_value()


def click_run(page) -> None:
    page.get_by_role("button", name="Run", exact=True).first.click()


# -- the page --------------------------------------------------------------------------------------


@on_every_ui
def test_page_loads_the_extension_without_errors_and_colours_our_sockets(fresh_page, ui):
    page = fresh_page
    page.wait_for_function("() => app.graph._nodes.length > 0", timeout=STATE_TIMEOUT_MS)  # the default workflow
    next_frames(page, 60)  # canvas frames over the default workflow: our draw hooks run on every one
    assert page.evaluate(f"() => app.extensions.some(e => e.name === {json.dumps(EXTENSION_NAME)})")
    served = {url.rsplit("/", 1)[-1]: status for url, status in page.console.responses if EXTENSION_PATH in url}
    assert served == {"visual_anagrams.js": 200, "viewer.js": 200, "pairing.js": 200, "colours.js": 200}

    # Our socket types have colours; the core ones keep the palette's.
    colours = page.evaluate(
        "(types) => Object.fromEntries(types.map(t => [t, [LGraphCanvas.link_type_colors[t], "
        "app.canvas.default_connection_color_byType[t]]]))",
        sorted(OUR_COLOURS) + list(CORE_TYPES),
    )
    ours = {colours[t][0] for t in OUR_COLOURS}
    assert all(colours[t][0] and colours[t][0] == colours[t][1] for t in OUR_COLOURS), colours
    assert len(ours) == len(OUR_COLOURS)  # one colour per type
    assert all(colours[t][0] and colours[t][0] not in ours for t in CORE_TYPES), colours
    shoot(page, shot(ui, "page-default-workflow"))
    if ui.vue:
        # Nodes 2.0 paints each socket's dot from a CSS variable per type: ours have our colours there too.
        encoder = page.evaluate(
            "(type) => { const n = LiteGraph.createNode(type); n.pos = [700, 100]; app.graph.add(n); return n.id; }",
            ENCODER,
        )
        expected = page.evaluate(
            """(id) => { const n = app.graph.getNodeById(id);
                return Object.fromEntries([...n.inputs, ...n.outputs].filter(slot => !slot.widget)
                    .map(slot => [slot.label || slot.name, LGraphCanvas.link_type_colors[slot.type]])); }""",
            encoder,
        )
        rgb = {name: "rgb({}, {}, {})".format(*bytes.fromhex(colour[1:])) for name, colour in expected.items()}
        page.wait_for_function(
            f"([id, names]) => names.every(name => name in ({SLOT_DOT_COLOURS})(id))",
            arg=[encoder, list(rgb)],
            timeout=STATE_TIMEOUT_MS,
        )
        dots = slot_dot_colours(page, encoder)
        assert {name: dots[name] for name in rgb} == rgb, dots
        centre_on(page, encoder)
        shoot(page, shot(ui, "page-sockets"))
    assert_no_console_errors_from_us(page)


# -- the nodes -------------------------------------------------------------------------------------


#: The node search's results, by display name (each option's first line; innerText ends it with a no-break space).
SEARCH_RESULTS = (
    "() => [...document.querySelectorAll('.p-autocomplete-option')].map(o => o.innerText.split('\\n')[0].trim())"
)


SEARCH_BOX = "Search Nodes..."

#: Counts, in the page, the canvas's recognised double-clicks on empty canvas and the pointer releases it has
#: finished handling (a task queued behind each release runs after every handler of it).
WATCH_DOUBLE_CLICKS = """() => {
    if (window.__vaClicks) return;
    window.__vaClicks = {double: 0, released: 0};
    window.addEventListener("litegraph:canvas", (e) => {
        if (e.detail?.subType === "empty-double-click") window.__vaClicks.double += 1;
    });
    document.addEventListener("pointerup", () => setTimeout(() => { window.__vaClicks.released += 1; }), true);
}"""


def open_node_search(page, clicks: int = 12) -> None:
    """Click the empty canvas until LiteGraph counts a double-click, as a user does to search for a node, and
    wait until the search box has the focus.

    LiteGraph counts two presses as a double-click when their event time stamps are more than 0 and less
    than Comfy.Pointer.DoubleClickTime apart. Playwright's ``dblclick`` sends both presses at once, and a
    busy browser can stamp them with the same time (seen here: all four events at 129964.8 ms): nothing opens,
    and a second ``dblclick`` pairs its first press with the last one and its second press lands on the
    search box's mask. So the presses go one at a time, each after the canvas has handled the one before,
    and the canvas's own "empty-double-click" event says when to stop: no clock decides anything here.
    """
    page.get_by_placeholder(SEARCH_BOX).wait_for(state="detached", timeout=STATE_TIMEOUT_MS)  # the last one has gone
    page.evaluate(WATCH_DOUBLE_CLICKS)
    page.mouse.move(800, 560)
    before = page.evaluate("() => ({...window.__vaClicks})")
    for click in range(1, clicks + 1):
        page.mouse.down()
        page.mouse.up()
        page.wait_for_function(
            "(n) => window.__vaClicks.released >= n", arg=before["released"] + click, timeout=STATE_TIMEOUT_MS
        )
        if page.evaluate("() => window.__vaClicks.double") > before["double"]:
            page.wait_for_function(
                f"() => document.activeElement?.placeholder === {json.dumps(SEARCH_BOX)}", timeout=STATE_TIMEOUT_MS
            )
            return
    shoot(page, "node-search-failed")
    raise AssertionError(f"{clicks} clicks on the empty canvas, and LiteGraph counted no two as a double-click")


@full_suite_only
def test_every_node_is_found_by_the_node_search_and_added_with_its_widgets(page, ui):
    info = ui.server.object_info()
    pack_nodes = sorted(name for name in info if name.startswith(PACK_PREFIX))
    assert len(pack_nodes) == 11 + len(views_module.VIEW_CLASSES)
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    failures = []
    for node_type in pack_nodes:
        page.evaluate("() => app.graph.clear()")
        display_name = info[node_type]["display_name"]
        # Typed in full, as a user who read the name would. (1.32's fuzzy search finds nothing
        # for complete names much longer than these, so display names stay short.)
        query = display_name
        open_node_search(page)
        page.keyboard.insert_text(query)
        try:
            page.wait_for_function(
                f"(name) => ({SEARCH_RESULTS})().includes(name)", arg=display_name, timeout=STATE_TIMEOUT_MS
            )
        except PlaywrightTimeoutError:
            options = page.evaluate(SEARCH_RESULTS)
            failures.append(f"searching {query!r} does not list {display_name!r}, only {options}")
            page.keyboard.press("Escape")
            page.get_by_placeholder(SEARCH_BOX).wait_for(state="detached", timeout=STATE_TIMEOUT_MS)
            continue
        options = page.evaluate(SEARCH_RESULTS)
        for _ in range(options.index(display_name)):  # pick it from the list
            page.keyboard.press("ArrowDown")
        if node_type == "VisualAnagramsView_jigsaw":
            shoot(page, "node-search")
        page.keyboard.press("Enter")
        page.wait_for_function("() => app.graph._nodes.length === 1", timeout=STATE_TIMEOUT_MS)
        # The next double-click goes to the canvas only once the search box has gone.
        page.get_by_placeholder(SEARCH_BOX).wait_for(state="detached", timeout=STATE_TIMEOUT_MS)
        added = page.evaluate(
            "() => { const n = app.graph._nodes[0];"
            " return {type: n.type, widgets: n.widgets?.map(w => w.name) ?? []}; }"
        )
        expected_widgets = [name for name, _ in widget_inputs(info[node_type])]
        if added["type"] != node_type:
            failures.append(f"searching {display_name!r} added {added['type']}")
        elif not set(expected_widgets) <= set(added["widgets"]):
            failures.append(f"{node_type} lacks widgets {sorted(set(expected_widgets) - set(added['widgets']))}")
    assert not failures, "\n".join(failures)
    assert_no_console_errors_from_us(page, page.console_mark)


# -- the example workflows ---------------------------------------------------------------------------


def serialized_nodes(page) -> dict:
    return page.evaluate(
        "() => Object.fromEntries(app.graph._nodes.map(n => { const s = n.serialize(); "
        "return [s.id, {type: s.type, widgets_values: s.widgets_values ?? []}]; }))"
    )


def prompt_boxes(page, node_id: int) -> list[str]:
    """Names of the encoder's prompt widgets whose text box the page shows (a real layout box)."""
    return [box["name"] for box in text_boxes(page, node_id) if box["name"].startswith("prompt_")]


def assert_prompt_boxes(page, node_id: int, expected: list[str]) -> None:
    """The page shows exactly these prompt boxes, once the frontend has laid them out (DOM widgets follow the
    canvas's draws, which come late on a busy machine; Nodes 2.0 re-renders on its own schedule)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    with contextlib.suppress(PlaywrightTimeoutError):  # the assertion below says what the page shows instead
        page.wait_for_function(
            f"""([id, expected]) => JSON.stringify(({TEXT_BOXES})(id).map(b => b.name)
                .filter(n => n.startsWith("prompt_"))) === JSON.stringify(expected)""",
            arg=[node_id, expected],
            timeout=STATE_TIMEOUT_MS,
        )
    assert prompt_boxes(page, node_id) == expected


def open_example_from_the_template_browser(page, name: str) -> dict:
    """Open an example from the template browser, as a user does, and check it opened whole: every node with
    its widget values, no dialog left, a prompt box per view. Returns its UI workflow."""
    from playwright.sync_api import expect

    workflow = ui_workflow(name)
    page.get_by_role("button", name="Templates").first.click()
    page.get_by_text("comfyui-visual-anagrams", exact=True).first.click()
    page.get_by_test_id(f"template-workflow-{name}").click()
    page.wait_for_function("(n) => app.graph._nodes.length === n", arg=len(workflow["nodes"]), timeout=STATE_TIMEOUT_MS)
    # No dialog left open: the template browser closed and no "missing nodes" dialog came up.
    expect(page.locator(".p-dialog:visible")).to_have_count(0, timeout=STATE_TIMEOUT_MS)
    loaded = serialized_nodes(page)  # by node id, as a string
    assert {key: node["type"] for key, node in loaded.items()} == {str(n["id"]): n["type"] for n in workflow["nodes"]}
    registered = page.evaluate(
        "(types) => types.filter(t => !LiteGraph.registered_node_types[t])",
        sorted({node["type"] for node in workflow["nodes"]}),
    )
    assert registered == [], f"node types the frontend does not know: {registered}"
    for node in workflow["nodes"]:
        values = loaded[str(node["id"])]["widgets_values"]
        assert values == node["widgets_values"], f"node {node['id']} ({node['type']}) widgets"
    # The prompt encoder shows one prompt box per view of the example (DOM widgets show only
    # while their node is on screen: the whole graph is, once fitted).
    fit_view(page)
    (encoder,) = nodes_of(page, ENCODER)
    views = sum(node["type"].startswith("VisualAnagramsView_") for node in workflow["nodes"])
    assert_prompt_boxes(page, encoder, [f"prompt_{k}" for k in range(1, views + 1)])
    return workflow


@full_suite_only
@pytest.mark.parametrize("name", workflow_names())
def test_example_opens_from_the_template_browser_with_every_node_and_widget(page, name):
    open_example_from_the_template_browser(page, name)
    shoot(page, f"example-{name}")
    assert_no_console_errors_from_us(page, page.console_mark)


@full_suite_only
@pytest.mark.parametrize("name", workflow_names())
def test_graph_to_prompt_turns_the_ui_example_into_its_api_twin(page, name):
    load_workflow(page, ui_workflow(name))
    prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
    assert prompt == api_workflow(name)
    assert_no_console_errors_from_us(page, page.console_mark)


# -- running from the UI --------------------------------------------------------------------------------


@on_every_ui
def test_the_flip_example_opened_from_the_templates_and_queued_shows_the_illusion_in_the_viewer(page, ui):
    workflow = open_example_from_the_template_browser(page, "flip")
    set_widgets(page, "VisualAnagramsLoadStageI", {"model": "tiny-IF-I"})
    set_widgets(page, "VisualAnagramsLoadStageII", {"model": "tiny-IF-II"})
    set_widgets(page, "VisualAnagramsLoadT5", {"encoder": "tiny-t5"})
    set_widgets(page, "VisualAnagramsStageI", {"steps": 1})
    set_widgets(page, "VisualAnagramsStageII", {"steps": 1})
    set_widgets(page, PREVIEW, {"frames_per_view": 4})
    (preview,) = nodes_of(page, PREVIEW)
    click_run(page)
    seen = wait_for_first_playthrough(page, preview)
    data = wait_for_viewer(page, preview)

    encoder = next(node for node in workflow["nodes"] if node["type"] == ENCODER)
    style, first, second = encoder["widgets_values"][:3]
    (stage_1,) = [n["inputs"] for n in api_workflow("flip").values() if n["class_type"] == "VisualAnagramsStageI"]
    candidates = stage_1["candidates"]
    assert [view["name"] for view in data["views"]] == ["identity", "flip"]
    assert [view["mode"] for view in data["views"]] == ["still", "css"]
    assert [view["caption"] for view in data["views"]] == [f"{style} {first}", f"{style} {second}"]
    assert len(data["images"]) == candidates
    assert page.evaluate("(id) => app.graph.getNodeById(id).vaViewer.picture.naturalWidth", preview) == 256
    # New results play by themselves, into the view.
    assert seen["playing"] is True and seen["progress"] > 0.2, seen
    ui.server.wait_idle(timeout=RUN_TIMEOUT_MS / 1000)
    # The savers downstream show their images too (the frontend keeps each node's last outputs).
    savers = nodes_of(page, "SaveImage") + nodes_of(page, "SaveAnimatedWEBP")
    page.wait_for_function(
        "(ids) => ids.every(id => app.nodeOutputs?.[String(id)]?.images?.length)", arg=savers, timeout=STATE_TIMEOUT_MS
    )
    # Once played through, the viewer rests on the picture.
    page.wait_for_function(
        "(id) => !app.graph.getNodeById(id).vaViewer.state().playing", arg=preview, timeout=STATE_TIMEOUT_MS
    )
    centre_on(page, preview)
    stage = page.locator(".va-stage").first
    picture = png(stage.screenshot())
    assert np.asarray(picture, dtype=np.float32).std() > 10  # a picture, not an empty white square
    shoot(page, shot(ui, "flip-run"))
    # The other candidate of the batch is one click away.
    page.locator(".va-next").first.click()
    assert viewer_state(page, preview)["image"] == 1
    assert_no_console_errors_from_us(page, page.console_mark)


@full_suite_only
def test_queueing_pick_best_from_the_ui_saves_the_best_two_with_their_scores(page, ui):
    """The Illusion Score on the canvas: the tiny CLIP ranks Stage I's 8 candidates, Stage II refines the best 2,
    and the savers show those 2 illusions and the 2 picks captioned with their scores."""
    load_workflow(page, ui_workflow("pick_best"))
    for (node_type, widget), tiny in TINY_MODELS.items():
        if nodes_of(page, node_type):
            set_widgets(page, node_type, {widget: tiny})
    set_widgets(page, "VisualAnagramsStageI", {"steps": 1})
    set_widgets(page, "VisualAnagramsStageII", {"steps": 1})
    set_widgets(page, PREVIEW, {"frames_per_view": 4})
    (preview,) = nodes_of(page, PREVIEW)
    click_run(page)
    data = wait_for_viewer(page, preview)
    assert len(data["images"]) == 2  # the picks, refined
    ui.server.wait_idle(timeout=RUN_TIMEOUT_MS / 1000)
    # Each saver by the node it saves, with the number of pictures the frontend shows on it.
    shown = page.evaluate(
        """(ids) => Object.fromEntries(ids.map(id => [
            app.graph.getNodeById(id).getInputNode(0).type, app.nodeOutputs?.[String(id)]?.images?.length ?? 0,
        ]))""",
        nodes_of(page, "SaveImage"),
    )
    assert shown == {"VisualAnagramsIllusionScore": 2, "VisualAnagramsStageII": 2, PREVIEW: 1}
    (score,) = nodes_of(page, "VisualAnagramsIllusionScore")
    centre_on(page, score)
    shoot(page, "pick-best-run")
    assert_no_console_errors_from_us(page, page.console_mark)


@full_suite_only
@pytest.mark.parametrize("variant", list(TINY_T5_FILES))
def test_a_single_file_t5_picked_on_the_canvas_drives_the_run(page, ui, variant):
    """Flux / SD3's T5 file, as a user with one would pick it: listed in the T5 loader's combo, chosen there, and
    the flip example runs through it to the viewer (fp16 from models/text_encoders, scaled fp8 from models/clip)."""
    name = TINY_T5_FILES[variant]
    load_workflow(page, ui_workflow("flip"))
    (loader,) = nodes_of(page, "VisualAnagramsLoadT5")
    options = page.evaluate(
        "(id) => app.graph.getNodeById(id).widgets.find(w => w.name === 'encoder').options.values", loader
    )
    assert name in options
    set_widgets(page, "VisualAnagramsLoadStageI", {"model": "tiny-IF-I"})
    set_widgets(page, "VisualAnagramsLoadStageII", {"model": "tiny-IF-II"})
    set_widgets(page, "VisualAnagramsLoadT5", {"encoder": name})
    set_widgets(page, "VisualAnagramsStageI", {"steps": 1})
    set_widgets(page, "VisualAnagramsStageII", {"steps": 1})
    set_widgets(page, PREVIEW, {"frames_per_view": 4})
    (preview,) = nodes_of(page, PREVIEW)
    mark = ui.server.log_mark()
    click_run(page)
    data = wait_for_viewer(page, preview)
    assert [view["name"] for view in data["views"]] == ["identity", "flip"] and data["images"]
    ui.server.wait_idle(timeout=RUN_TIMEOUT_MS / 1000)
    assert f"T5 Text Encoder Loader (IF): loaded '{name}'" in ui.server.log_text(since=mark)
    assert_no_console_errors_from_us(page, page.console_mark)


#: The embedded digits model's examples run from the canvas, and the Stage I settings each shows there.
DIGITS_RUNS = {
    "digits_mtl": {"rectify": True, "anti_segregation": True, "anti_segregation_step": 5.0},
    "digits_from_picture": {"rectify": False, "anti_segregation": False},
}


@full_suite_only
@pytest.mark.parametrize("name", list(DIGITS_RUNS))
def test_queueing_a_digits_example_from_the_ui_runs_it_on_the_embedded_model(page, ui, name):
    """The embedded digits model run from the canvas: with Anagram-MTL's rectify and anti-segregation on
    (digits_mtl), and from the handwritten 2 its LoadImage shows (digits_from_picture)."""
    load_workflow(page, ui_workflow(name))
    (sampler,) = nodes_of(page, "VisualAnagramsStageI")
    widgets = page.evaluate(
        "(id) => Object.fromEntries(app.graph.getNodeById(id).widgets.map(w => [w.name, w.value]))", sampler
    )
    assert {key: widgets[key] for key in DIGITS_RUNS[name]} == DIGITS_RUNS[name]
    for load in nodes_of(page, "LoadImage"):  # the picture the pack copied into the input folder, shown
        page.wait_for_function(
            "(id) => app.graph.getNodeById(id).imgs?.[0]?.naturalWidth === 64", arg=load, timeout=STATE_TIMEOUT_MS
        )
    # Two steps, so anti-segregation refines once; one candidate, to keep it quick on a CPU.
    set_widgets(page, "VisualAnagramsStageI", {"steps": 2, "candidates": 1})
    set_widgets(page, PREVIEW, {"frames_per_view": 4})
    (preview,) = nodes_of(page, PREVIEW)
    click_run(page)
    data = wait_for_viewer(page, preview)
    assert [view["name"] for view in data["views"]] == ["identity", "flip"]
    assert len(data["images"]) == 1
    ui.server.wait_idle(timeout=RUN_TIMEOUT_MS / 1000)
    assert_no_console_errors_from_us(page, page.console_mark)


# -- the viewer ------------------------------------------------------------------------------------------

VIEWER_VIEWS = ["identity", "flip", "rotate_cw", "negate", "jigsaw"]
VIEWER_PROMPTS = ["a sunny beach", "a red letter", "a green field", "a night sky", "a puzzle"]
VIEWER_STYLE = "a drawing of"


def build_viewer_graph(page, picture_name: str) -> dict:
    """LoadImage -> the view chain -> T5 (tiny) + prompt encoder -> the view preview; returns node ids."""
    return page.evaluate(
        """([picture, views, prompts, style]) => {
            const add = (type, x, y) => {
                const n = LiteGraph.createNode(type); n.pos = [x, y]; app.graph.add(n); return n;
            };
            // As a user sets them: through the widget's callback too, which Nodes 2.0 (1.32) shows values from.
            const set = (node, name, value) => {
                const widget = node.widgets.find(w => w.name === name);
                widget.value = value;
                widget.callback?.(value);
            };
            const image = add("LoadImage", 0, 0);
            set(image, "image", picture);
            let previous = null;
            const chain = views.map((name, i) => {
                const node = add(`VisualAnagramsView_${name}`, 0, 420 + 90 * i);
                if (previous) previous.connect(0, node, 0);
                previous = node;
                return node;
            });
            const t5 = add("VisualAnagramsLoadT5", 380, 0);
            set(t5, "encoder", "tiny-t5");
            const encoder = add("VisualAnagramsPromptEncoder", 380, 160);
            t5.connect(0, encoder, 0);
            previous.connect(0, encoder, 1);
            set(encoder, "style", style);
            prompts.forEach((text, i) => set(encoder, `prompt_${i + 1}`, text));
            const preview = add("VisualAnagramsViewPreview", 840, 0);
            image.connect(0, preview, 0);
            previous.connect(0, preview, 1);
            encoder.connect(0, preview, 2);
            set(preview, "frames_per_view", 8);
            set(preview, "hold_frames", 0);
            preview.setSize([400, 560]);
            app.canvas.setDirty(true, true);
            return {preview: preview.id, encoder: encoder.id, views: chain.map(n => n.id)};
        }""",
        [picture_name, VIEWER_VIEWS, VIEWER_PROMPTS, VIEWER_STYLE],
    )


def stage_picture(stage_png, fraction: float, size: int):
    """The picture's square in a screenshot of the viewer's stage, at ``size`` px."""
    from PIL import Image

    width, height = stage_png.size
    inset = (1 - fraction) / 2
    box = (round(width * inset), round(height * inset), round(width * (1 - inset)), round(height * (1 - inset)))
    return stage_png.crop(box).resize((size, size), Image.Resampling.BILINEAR)


def expected_view(picture, name: str):
    """What view ``name`` shows of a PIL picture, computed by the pack's own views."""
    from PIL import Image

    pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    shown = views_module.make_view(name).preview(pixels)[0].permute(1, 2, 0)
    return Image.fromarray(((shown.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy())


@on_oldest_and_newest_ui
def test_viewer_plays_each_view_exactly_and_captions_it_with_its_prompt(page, ui):
    picture = orientation_picture(256)
    picture.save(ui.server.input_dir / "va_orientation.png")
    ids = build_viewer_graph(page, "va_orientation.png")
    preview = ids["preview"]
    click_run(page)
    data = wait_for_viewer(page, preview)
    ui.server.wait_idle(timeout=RUN_TIMEOUT_MS / 1000)
    assert [view["mode"] for view in data["views"]] == ["still", "css", "css", "css", "frames"]
    (sprite,) = data["views"][4]["sprites"]
    assert sprite["frames"] == 8 and sprite["columns"] * sprite["rows"] >= 8
    centre_on(page, preview)
    if viewer_state(page, preview)["playing"]:
        page.locator(".va-play").first.click()  # pause the first play-through
    stage = page.locator(".va-stage").first
    chips = page.locator(".va-chip")
    assert chips.count() == len(VIEWER_VIEWS)
    fraction = data["picture_fraction"]
    captions = [f"{VIEWER_STYLE} {prompt}" for prompt in VIEWER_PROMPTS]

    def settle(view_index: int) -> dict:
        """Until the viewer rests on the view with every picture and sprite sheet loaded, and that is on screen."""
        page.wait_for_function(
            """([id, view]) => {
                const v = app.graph.getNodeById(id).vaViewer, s = v.state();
                const loaded = [v.picture, ...v.sheets.values()].every(i => i.complete && i.naturalWidth > 0);
                return !s.playing && s.view === view && loaded;
            }""",
            arg=[preview, view_index],
            timeout=STATE_TIMEOUT_MS,
        )
        page.evaluate("(id) => app.graph.getNodeById(id).vaViewer.render()", preview)
        next_frames(page)
        return viewer_state(page, preview)

    chips.nth(0).click()
    rest_state = settle(0)
    rest = png(stage.screenshot())
    shoot(page, shot(ui, "viewer-rest"), stage)
    assert rest_state["caption"] == captions[0]
    assert page.locator(".va-caption-text").first.inner_text() == captions[0]
    assert mean_difference(stage_picture(rest, fraction, 256), picture) < 12

    for index in range(1, len(VIEWER_VIEWS)):
        name = VIEWER_VIEWS[index]
        chips.nth(index).click()
        state = settle(index)
        shown = png(stage.screenshot())
        shoot(page, shot(ui, f"viewer-view-{index + 1}-{name}"), stage)
        assert state["caption"] == captions[index]
        assert page.locator(".va-caption-text").first.inner_text() == captions[index]
        seen, expected = stage_picture(shown, fraction, 256), expected_view(picture, name)
        # The end of the animation is the view itself, as the pack computes it (up to the browser's
        # resampling and the sprite sheet's lossy compression)...
        match, apart = mean_difference(seen, expected), mean_difference(expected, picture)
        assert match < 7 and match < apart / 5, (name, match, apart)
        # ...and differs from the start (the picture at rest).
        assert mean_difference(seen, stage_picture(rest, fraction, 256)) > apart / 2, name
        chips.nth(0).click()  # back to the picture
        settle(0)

    # On the way (a third of the transition: half-way, a card flip is edge-on), the picture
    # differs from both ends: a motion, not a cut.
    for index in (1, 4):  # a CSS motion (flip) and sprite frames (jigsaw)
        chips.nth(index).click()
        settle(index)
        end = png(stage.screenshot())
        page.evaluate(
            "([id, index]) => { const v = app.graph.getNodeById(id).vaViewer;"
            " const seg = v.segments.findIndex(s => s.index === index);"
            " v.pause(); v.time = seg * v.segmentLength + v.transition / 3; v.render(); }",
            [preview, index],
        )
        next_frames(page)
        middle = png(stage.screenshot())
        shoot(page, shot(ui, f"viewer-middle-{VIEWER_VIEWS[index]}"), stage)
        drawn = page.evaluate("() => getComputedStyle(document.querySelector('.va-frames')).visibility")
        assert drawn == ("visible" if data["views"][index]["mode"] == "frames" else "hidden")
        assert mean_difference(middle, rest) > 8 and mean_difference(middle, end) > 8, VIEWER_VIEWS[index]

    # Playing runs through the views by itself.
    chips.nth(0).click()
    settle(0)
    page.locator(".va-play").first.click()
    page.wait_for_function(
        "(id) => { const s = app.graph.getNodeById(id).vaViewer.state(); return s.playing && s.time > 0.5; }",
        arg=preview,
        timeout=STATE_TIMEOUT_MS,
    )
    shoot(page, shot(ui, "viewer-node"))

    # Removing the node stops the viewer: no animation frame left running.
    page.evaluate(
        "(id) => { const n = app.graph.getNodeById(id); window.__vaViewer = n.vaViewer; app.graph.remove(n); }", preview
    )
    stopped = page.evaluate(
        "() => { const v = window.__vaViewer;"
        " return {destroyed: v.destroyed, playing: v.playing, frame: v.frameRequest}; }"
    )
    assert stopped == {"destroyed": True, "playing": False, "frame": 0}
    assert_no_console_errors_from_us(page, page.console_mark)


# -- pairing on the prompt encoder -------------------------------------------------------------------


#: What the page shows of a node's text boxes, in a form to compare: [name, label (lower case), problem, outlined].
SHOWN_BOXES = f"(id) => ({TEXT_BOXES})(id).map(b => [b.name, b.label?.toLowerCase() ?? null, b.problem, b.outlined])"


def assert_boxes_shown(page, node_id: int, expected: list[tuple[str, str, str | None]]) -> None:
    """The page shows exactly these text boxes for the node, top to bottom: (widget, the label read over or in the
    box, the problem it is marked with, None for none), and outlines exactly the marked ones."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    wanted = [[name, label.lower(), problem, problem is not None] for name, label, problem in expected]
    with contextlib.suppress(PlaywrightTimeoutError):  # the assertion below says what the page shows instead
        page.wait_for_function(
            f"([id, wanted]) => JSON.stringify(({SHOWN_BOXES})(id)) === JSON.stringify(wanted)",
            arg=[node_id, wanted],
            timeout=STATE_TIMEOUT_MS,
        )
    assert page.evaluate(SHOWN_BOXES, node_id) == wanted


#: Nodes 2.0: the warning banner under a node's DOM, as the page shows it ("" when there is none).
SHOWN_WARNING = """(id) => {
    const banner = document.querySelector(`.lg-node[data-node-id="${id}"] > .va-pairing-warning`);
    return banner && banner.getBoundingClientRect().height > 0 ? banner.textContent : "";
}"""


def assert_warning_shown(page, ui, node_id: int, message: str) -> None:
    """The encoder warns with ``message`` ("" for no warning): the pairing's state, and in Nodes 2.0 the banner the
    page shows under the node (the classic canvas draws it with the node: see the screenshots)."""
    page.wait_for_function(
        "([id, message]) => app.graph.getNodeById(id).vaPairing.message === message",
        arg=[node_id, message],
        timeout=STATE_TIMEOUT_MS,
    )
    if ui.vue:
        shown = f"⚠ {message}" if message else ""
        page.wait_for_function(
            f"([id, shown]) => ({SHOWN_WARNING})(id) === shown", arg=[node_id, shown], timeout=STATE_TIMEOUT_MS
        )


NEGATIVE_BOX = ("negative", "negative prompt · every view", None)
#: Two views, both prompts filled: nothing marked.
PAIRED_BOXES = [("prompt_1", "view 1 · Identity", None), ("prompt_2", "view 2 · Flip upside down", None), NEGATIVE_BOX]


@on_every_ui
def test_prompt_encoder_shows_a_prompt_box_per_wired_view_and_marks_mismatches(page, ui):
    ids = page.evaluate(
        """() => {
            const add = (type, x, y) => {
                const n = LiteGraph.createNode(type); n.pos = [x, y]; app.graph.add(n); return n;
            };
            const identity = add("VisualAnagramsView_identity", 0, 0);
            const flip = add("VisualAnagramsView_flip", 0, 160);
            const encoder = add("VisualAnagramsPromptEncoder", 380, 0);
            identity.connect(0, flip, 0);
            flip.connect(0, encoder, 1);
            return {identity: identity.id, flip: flip.id, encoder: encoder.id};
        }"""
    )
    encoder = ids["encoder"]
    centre_on(page, encoder, margin=(520, 160))

    def pairing():
        return page.evaluate("(id) => app.graph.getNodeById(id).vaPairing", encoder)

    def box(k):
        return page.locator(f"textarea[data-va-label^='view {k} ·']").first

    # Two empty prompts for two views: each box says its view, both marked as still to fill.
    assert_boxes_shown(
        page,
        encoder,
        [("prompt_1", "view 1 · Identity", "empty"), ("prompt_2", "view 2 · Flip upside down", "empty"), NEGATIVE_BOX],
    )
    assert pairing()["labels"] == ["Identity", "Flip upside down"]
    assert_warning_shown(page, ui, encoder, "2 views wired: the prompts for views 1, 2 are empty")
    shoot(page, shot(ui, "pairing-empty"))

    # Typed into the boxes the page shows (Nodes 2.0 has text boxes of its own).
    box(1).click()
    page.keyboard.type("a campfire")
    box(2).click()
    page.keyboard.type("an old man")
    page.evaluate("() => document.activeElement.blur()")  # done typing: no focus ring around the box
    assert_boxes_shown(page, encoder, PAIRED_BOXES)
    assert_warning_shown(page, ui, encoder, "")
    assert pairing()["problems"] == []
    shoot(page, shot(ui, "pairing-ok"))

    # Wire one view only: prompt 2 has no view any more; it stays visible and is marked.
    page.evaluate("(ids) => app.graph.getNodeById(ids.identity).connect(0, app.graph.getNodeById(ids.encoder), 1)", ids)
    page.wait_for_function(
        "(id) => app.graph.getNodeById(id).vaPairing.count === 1", arg=encoder, timeout=STATE_TIMEOUT_MS
    )
    assert_boxes_shown(
        page,
        encoder,
        [
            ("prompt_1", "view 1 · Identity", None),
            ("prompt_2", "view 2 · not in the chain: clear this prompt or add a view", "extra"),
            NEGATIVE_BOX,
        ],
    )
    assert pairing()["problems"] == [{"k": 2, "problem": "extra"}]
    assert_warning_shown(page, ui, encoder, "1 view wired: prompt 2 has no view: clear it or add a view")
    next_frames(page)
    shoot(page, shot(ui, "pairing-mismatch"))

    # Three views: a third, empty box appears, marked; a bypassed view counts for nothing.
    page.evaluate(
        """(ids) => {
            const g = app.graph, encoder = g.getNodeById(ids.encoder);
            const rotate = LiteGraph.createNode("VisualAnagramsView_rotate_cw"); rotate.pos = [0, 320]; g.add(rotate);
            g.getNodeById(ids.flip).connect(0, rotate, 0);
            rotate.connect(0, encoder, 1);
            window.__vaRotate = rotate.id;
        }""",
        ids,
    )
    page.wait_for_function(
        "(id) => app.graph.getNodeById(id).vaPairing.count === 3", arg=encoder, timeout=STATE_TIMEOUT_MS
    )
    assert_boxes_shown(
        page,
        encoder,
        [
            ("prompt_1", "view 1 · Identity", None),
            ("prompt_2", "view 2 · Flip upside down", None),
            ("prompt_3", "view 3 · Rotate 90° clockwise", "empty"),
            NEGATIVE_BOX,
        ],
    )
    assert pairing()["problems"] == [{"k": 3, "problem": "empty"}]
    assert_warning_shown(page, ui, encoder, "3 views wired: the prompt for view 3 is empty")
    page.evaluate("() => { app.graph.getNodeById(window.__vaRotate).mode = 4; app.canvas.setDirty(true, true); }")
    page.wait_for_function(
        "(id) => app.graph.getNodeById(id).vaPairing.count === 2", arg=encoder, timeout=STATE_TIMEOUT_MS
    )
    assert_boxes_shown(page, encoder, PAIRED_BOXES)
    assert_warning_shown(page, ui, encoder, "")

    # Hidden boxes leave no holes: the negative prompt's box follows the last visible one.
    shown = {b["name"]: b for b in text_boxes(page, encoder)}
    gap = shown["negative"]["top"] - shown["prompt_2"]["bottom"]
    assert 0 <= gap < 24, gap
    # Hidden prompts still go into the prompt, empty, in their order.
    prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
    inputs = prompt[str(encoder)]["inputs"]
    assert [inputs[f"prompt_{k}"] for k in range(1, 9)] == ["a campfire", "an old man"] + [""] * 6
    assert_no_console_errors_from_us(page, page.console_mark)
