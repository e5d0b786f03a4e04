"""A real browser on the real ComfyUI frontend, for the canvas tests (tests/test_browser.py).

Playwright (Python) drives Debian's ``chromium`` (``scripts/lib/env.sh`` installs it; Playwright's
own browser download cannot run where the tests run) against a ComfyUI test server
(tests/comfy_test_server.py)::

    def test_something(page):              # the frontend, loaded, with an empty graph
        page.evaluate("() => app.graph._nodes.length")
        shoot(page, "something")            # test-artifacts/browser/something.png

Which frontend, and how it draws nodes, is the module-scoped ``ui`` fixture: :data:`FULL_SUITE_UI` unless
a test asks for others with ``@on_uis(*UIS)`` (indirect parametrization). :data:`FRONTENDS` lists the
frontends, :data:`MODES` the two ways of drawing nodes (the classic canvas, and Nodes 2.0, which renders
each node as DOM); each frontend has a server of its own (``frontend_servers``), the mode is a user setting
posted before a page opens. ``ui.server`` is that server's :class:`~comfy_client.ComfyClient`.

Fixtures: ``browser`` (one chromium per session), ``frontend_servers`` (the servers of the module's
frontends), ``ui`` (see above), ``comfy_page`` (one page per module and ui, reused: the frontend takes
seconds to load), ``page`` (that page, reset for each test: empty graph, no dialog, console messages of
this test only in ``page.console``) and ``fresh_page`` (a page of its own, in a new browser context, for
tests about loading). tests/conftest.py makes most of them available to every test module; tests/test_browser.py
imports ``ui`` and ``frontend_servers`` itself.

Every test here skips, saying why, when ``playwright`` is not installed or no chromium is found
(``VA_CHROMIUM`` names another binary), and a test on another frontend when that frontend is not
installed. CI installs all of them, so there they run. tests/conftest.py marks every test using the
``browser`` fixture ``browser`` (and ``comfyui``: the page comes from the test server).

Waiting: CI runs on a busy 2-core machine, where the frontend can take many seconds to react. Tests
wait on state (``wait_for_function``, locator waits, ``expect``, :func:`next_frames`) with generous
timeouts that return as soon as the state is there, never on a fixed clock.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from comfy_client import ComfyClient

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "browser"
PACK_FOLDER_NAME = "comfyui-visual-anagrams"
#: Where the frontend loads the pack's js/ from: a console message from our code names it.
EXTENSION_PATH = f"/extensions/{PACK_FOLDER_NAME}/"
EXTENSION_NAME = "visual_anagrams.canvas"
VIEWPORT = {"width": 1920, "height": 1080}

#: How long the frontend may take to react to something a test did (a click, a key, a graph change) on a
#: busy machine. Waits return as soon as the state is there: this is the bound for a failure, not a delay.
STATE_TIMEOUT_MS = 60_000
#: How long loading the frontend (its app, graph and our extension) may take.
LOAD_TIMEOUT_MS = 120_000

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # root in a container: chromium's sandbox needs namespaces it may not get
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: Frontend settings for the test user: no first-run template dialog over the canvas (1.32's template browser,
#: 1.58's templates and tour), no minimap, and a double-click window (default 300 ms between the two presses'
#: time stamps) a busy machine can keep to.
TEST_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False, "Comfy.Pointer.DoubleClickTime": 1000}

#: Where scripts/lib/env.sh installs the frontends that do not come with ComfyUI (.cache is git-ignored).
FRONTENDS_DIR = REPO / ".cache" / "frontends"
#: The frontends the browser tests run on. None: the one ComfyUI's requirements pin, installed with them into the
#: virtualenv (ComfyUI 0.3.75: 1.32.9). Any other key is a comfyui-frontend-package version that
#: scripts/lib/env.sh installs on its own (pip install --no-deps --target) into the folder given; its test server
#: serves that folder's comfyui_frontend_package/static (--front-end-root). 1.58.1 is the newest on PyPI.
FRONTENDS: dict[str, Path | None] = {
    "pinned-by-comfyui-0.3.75": None,
    "1.58.1": FRONTENDS_DIR / "comfyui-frontend-package-1.58.1",
}
#: How the frontend draws nodes: LiteGraph on the canvas, or Nodes 2.0 (Vue components, each node DOM over the
#: canvas). A user setting, so one server serves both: it is posted before a page opens.
MODES = {"classic": False, "vue": True}
VUE_NODES_SETTING = "Comfy.VueNodes.Enabled"


@dataclass(frozen=True)
class UI:
    """A frontend (a key of :data:`FRONTENDS`) drawing nodes one way (a key of :data:`MODES`)."""

    frontend: str
    mode: str

    def __str__(self) -> str:  # the test id
        return f"{self.frontend}-{self.mode}"

    @property
    def vue(self) -> bool:
        return MODES[self.mode]


#: Every frontend in every mode; tests that must hold in each take ``@on_uis(*UIS)``.
UIS = [UI(frontend, mode) for frontend in FRONTENDS for mode in MODES]
#: Where the whole suite runs (the rest runs the focused tests only: CI time). ComfyUI 0.3.75 with the frontend its
#: requirements pin, on the classic canvas: what a user of the ComfyUI the tests pin sees by default (Nodes 2.0 is
#: off by default in both frontends), and a matched pair: 1.58.1 expects server routes 0.3.75 lacks (/api/jobs,
#: so its queue panel cannot load), an artificial pairing no user of either gets. First in UIS, so pytest's
#: grouping of the module's tests by ``ui`` puts its tests together with the focused tests' first group.
FULL_SUITE_UI = UIS[0]


def on_uis(*uis: UI):
    """Run the test on each of these UIs (default: :data:`FULL_SUITE_UI` only)."""
    return pytest.mark.parametrize("ui", uis, indirect=True, ids=str)


def front_end_root(frontend: str) -> Path | None:
    """The static folder a test server serves for ``frontend`` (None: ComfyUI's own); skips when not installed."""
    folder = FRONTENDS[frontend]
    if folder is None:
        return None
    static = folder / "comfyui_frontend_package" / "static"
    if not (static / "index.html").is_file():
        pytest.skip(
            f"frontend {frontend} is not installed at {static} (bash scripts/test.sh installs it: "
            f"pip install --no-deps --target {folder} comfyui-frontend-package=={frontend})"
        )
    return static


def chromium_path() -> str | None:
    """Debian's chromium (or ``VA_CHROMIUM``), or None."""
    candidates = [
        os.environ.get("VA_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def browser_skip_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (tests/requirements.txt; bash scripts/test.sh installs it)"
    if chromium_path() is None:
        return (
            "no chromium found at /usr/bin/chromium (bash scripts/test.sh installs Debian's chromium; "
            "VA_CHROMIUM points at another one)"
        )
    return None


# --------------------------------------------------------------------------- console


@dataclass
class ConsoleMessage:
    type: str  # "error", "warning", "log", ... or "pageerror" for an uncaught exception
    text: str
    url: str = ""


@dataclass
class Console:
    """Every console message and uncaught exception of a page, and every response it got."""

    messages: list[ConsoleMessage] = field(default_factory=list)
    responses: list[tuple[str, int]] = field(default_factory=list)  # (url, HTTP status)

    def attach(self, page) -> None:
        page.on("response", lambda r: self.responses.append((r.url, r.status)))
        page.on("console", lambda m: self.messages.append(ConsoleMessage(m.type, m.text, m.location.get("url", ""))))
        # An uncaught exception's stack names the files it went through.
        page.on(
            "pageerror",
            lambda e: self.messages.append(ConsoleMessage("pageerror", f"{e}\n{getattr(e, 'stack', '') or ''}")),
        )

    def mark(self) -> int:
        return len(self.messages)

    def ours(self, since: int = 0, kinds=("error", "warning", "pageerror")) -> list[ConsoleMessage]:
        """Errors and warnings from the pack's own code since ``since``.

        Filtered by source, not by wording: the frontend logs errors of its own that have
        nothing to do with us (1.32.9's loadGraphData logs a TypeError from its settings store;
        its node-info lookups on api.comfy.org, blocked by the page's content security policy,
        log errors naming our node types; a fresh user has no user.css, a 404). A message is ours
        when it comes from, or its stack runs through, a file the frontend loaded from the
        pack's js/ folder (``/extensions/comfyui-visual-anagrams/...``).
        """
        return [
            m
            for m in self.messages[since:]
            if m.type in kinds and (EXTENSION_PATH in m.url or EXTENSION_PATH in m.text)
        ]


# --------------------------------------------------------------------------- screenshots


def shoot(page, name: str, element=None) -> Path:
    """A screenshot (of the page, or of one element or locator) kept in test-artifacts/browser/ (``name`` may
    name a folder there too)."""
    path = ARTIFACTS / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    (element or page).screenshot(path=str(path))
    return path


def png(data: bytes):
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


def mean_difference(a, b) -> float:
    """Mean absolute difference of two same-size RGB images, in 0..255."""
    import numpy as np

    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean())


# --------------------------------------------------------------------------- the frontend


def open_frontend(browser, base_url: str, vue: bool = False):
    """A new context and page on the frontend, drawing nodes with Nodes 2.0 when ``vue`` (a user setting, posted
    first), once its app and graph exist; returns (context, page, console)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    post_settings(base_url, {VUE_NODES_SETTING: vue})
    context = browser.new_context(viewport=VIEWPORT)
    # Every locator action and wait without a timeout of its own (clicks, screenshots, expect) gets this one.
    context.set_default_timeout(STATE_TIMEOUT_MS)
    page = context.new_page()
    console = Console()
    console.attach(page)
    page.goto(base_url, timeout=LOAD_TIMEOUT_MS)
    page.wait_for_function(
        "() => window.app && window.app.graph && window.app.canvas && window.app.vueAppReady", timeout=LOAD_TIMEOUT_MS
    )
    # Extensions are registered before the graph loads; wait for ours (or time out and let the test say so).
    with contextlib.suppress(PlaywrightTimeoutError):
        page.wait_for_function(
            f"() => app.extensions.some(e => e.name === {json.dumps(EXTENSION_NAME)})", timeout=STATE_TIMEOUT_MS
        )
    # The renderer follows the setting once the page has read it: never a Nodes 2.0 test on the classic canvas.
    page.wait_for_function("(vue) => LiteGraph.vueNodesMode === vue", arg=vue, timeout=STATE_TIMEOUT_MS)
    page.console = console
    return context, page, console


def next_frames(page, count: int = 3) -> None:
    """Until the page has drawn ``count`` more animation frames, the canvas redrawn on each: what a change
    needs to reach the screen (LiteGraph draws on the next frame, and DOM widgets follow its draw). Counted
    in frames, not milliseconds: on a busy machine frames come later, and this waits for them."""
    page.evaluate(
        """(count) => new Promise((done) => {
            const step = (left) => {
                if (!left) return done();
                app.canvas.setDirty(true, true);
                requestAnimationFrame(() => step(left - 1));
            };
            step(count);
        })""",
        count,
    )


def reset(page) -> None:
    """An empty graph at 100 % with nothing over the canvas and no outputs of earlier runs
    (the frontend keeps them by node id, so a new graph's nodes would show them)."""
    page.keyboard.press("Escape")
    page.evaluate("""() => {
        app.clean();
        app.graph.clear();
        app.canvas.ds.scale = 1;
        app.canvas.ds.offset = [0, 0];
        app.canvas.setDirty(true, true);
    }""")


def load_workflow(page, workflow: dict) -> None:
    """Load a UI-format workflow the way opening its file does."""
    page.evaluate("async (wf) => { await app.loadGraphData(wf); }", workflow)
    page.wait_for_function("(n) => app.graph._nodes.length === n", arg=len(workflow["nodes"]), timeout=STATE_TIMEOUT_MS)


def nodes_of(page, node_type: str) -> list[int]:
    return page.evaluate("(t) => app.graph._nodes.filter(n => n.type === t).map(n => n.id)", node_type)


def set_widgets(page, node_type: str, values: dict) -> None:
    """Set widget values on every node of a type, as a user would pick them."""
    page.evaluate(
        """([type, values]) => {
            for (const node of app.graph._nodes.filter(n => n.type === type)) {
                for (const [name, value] of Object.entries(values)) {
                    const widget = node.widgets.find(w => w.name === name);
                    if (!widget) throw new Error(`${type} has no widget ${name}`);
                    widget.value = value;
                    widget.callback?.(value);
                }
            }
            app.canvas.setDirty(true, true);
        }""",
        [node_type, values],
    )


def centre_on(page, node_id: int, margin=(360, 180)) -> None:
    """Scroll the canvas so the node's top-left corner sits at ``margin`` px in the page, at 100 %."""
    page.evaluate(
        """([id, margin]) => {
            const node = app.graph.getNodeById(id);
            app.canvas.ds.scale = 1;
            app.canvas.ds.offset = [margin[0] - node.pos[0], margin[1] - node.pos[1]];
            app.canvas.setDirty(true, true);
        }""",
        [node_id, list(margin)],
    )
    next_frames(page)  # DOM widgets follow the canvas on its next draw


#: The text boxes a node shows, as the page lays them out: on the classic canvas its widgets' own elements, in
#: Nodes 2.0 the text areas of the node's DOM (1.58 names each widget's row, 1.32 labels the area with the widget's
#: name). Each with the widget's name, the label the user reads above or in it (1.58's Nodes 2.0 shows the widget's
#: label over the box; elsewhere the pack draws a header line inside the box, an SVG background read back here),
#: the problem it is marked with, whether it is outlined, and where it is.
TEXT_BOXES = r"""(id) => {
    const node = app.graph.getNodeById(id);
    const element = document.querySelector(`.lg-node[data-node-id="${id}"]`);
    const boxes = element
        ? [...element.querySelectorAll("textarea")].map(area =>
            [area.closest("[data-widget-name]")?.dataset.widgetName ?? area.getAttribute("aria-label"), area])
        : node.widgets.map(w => [w.name, w.element ?? w.inputEl])
            .filter(([, area]) => area instanceof HTMLTextAreaElement);
    const header = (area) => {
        const svg = /^url\("data:image\/svg\+xml;utf8,(.*)"\)$/.exec(area.style.backgroundImage)?.[1];
        if (!svg) return null;
        const parsed = new DOMParser().parseFromString(decodeURIComponent(svg), "image/svg+xml");
        return parsed.querySelector("text").textContent;
    };
    return boxes
        .filter(([, area]) => area.isConnected && area.offsetParent !== null && area.getBoundingClientRect().height > 0)
        .map(([name, area]) => {
            const rect = area.getBoundingClientRect(), style = getComputedStyle(area);
            const label = area.closest(".lg-node-widget")?.querySelector("label")?.textContent.trim() ?? header(area);
            return {
                name, label, problem: area.dataset.vaProblem ?? null,
                outlined: style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0,
                top: rect.top, bottom: rect.bottom,
            };
        });
}"""


def text_boxes(page, node_id: int) -> list[dict]:
    """The text boxes the page shows for a node (see :data:`TEXT_BOXES`), top to bottom."""
    return page.evaluate(TEXT_BOXES, node_id)


#: Nodes 2.0: each named socket of a node's DOM, with the colour its dot is painted (computed, "rgb(...)").
SLOT_DOT_COLOURS = """(id) => Object.fromEntries(
    [...document.querySelectorAll(`.lg-node[data-node-id="${id}"] .lg-slot`)]
    .map(slot => [slot.textContent.trim(), slot.querySelector(".slot-dot")])
    .filter(([name, dot]) => name && dot)
    .map(([name, dot]) => [name, getComputedStyle(dot).backgroundColor]))"""


def slot_dot_colours(page, node_id: int) -> dict[str, str]:
    return page.evaluate(SLOT_DOT_COLOURS, node_id)


def post_settings(base_url: str, settings: dict) -> None:
    import urllib.request

    request = urllib.request.Request(
        f"{base_url}/api/settings",
        data=json.dumps(settings).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        assert response.status == 200


# --------------------------------------------------------------------------- a test picture


def orientation_picture(size: int = 256):
    """A picture whose orientation and colours read at a glance: a sky-to-sand gradient, a sun
    top left, a big letter R (as the example thumbnails use) and a coloured bar."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    for y in range(size):
        t = y / (size - 1)
        draw.line([(0, y), (size, y)], fill=(int(90 + 150 * t), int(160 + 60 * t), int(235 - 130 * t)))
    s = size / 256
    draw.ellipse([18 * s, 18 * s, 74 * s, 74 * s], fill=(255, 208, 40))
    draw.rectangle([0, 226 * s, size, size], fill=(40, 120, 60))
    try:
        font = ImageFont.load_default(size=int(170 * s))
    except TypeError:  # Pillow < 10.1: the fixed bitmap font only
        font = ImageFont.load_default()
    draw.text((size * 0.56, size * 0.55), "R", fill=(160, 24, 40), font=font, anchor="mm")
    return image


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session", name="browser")
def browser_fixture() -> Iterator:
    reason = browser_skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # launch() gives every context a fresh temporary profile.
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class FrontendServers:
    """The test servers of a module's browser tests, one per frontend: ComfyUI's own frontend is the session's
    ``comfy_server``; the others start on first use and stop at the module's end."""

    def __init__(self, tmp_path_factory, comfy_server):
        self.tmp_path_factory = tmp_path_factory
        self.clients = {None: comfy_server}
        post_settings(comfy_server.base_url, TEST_SETTINGS)

    def server(self, frontend: str):
        root = front_end_root(frontend)
        if root not in self.clients:
            from comfy_test_server import acquire_server

            self.clients[root] = acquire_server(self.tmp_path_factory, root)
            post_settings(self.clients[root].base_url, TEST_SETTINGS)
        return self.clients[root]

    def close(self) -> None:
        from comfy_test_server import release_server

        for root in self.clients:
            if root is not None:
                release_server(root)
        self.clients = {}


@pytest.fixture(scope="module", name="frontend_servers")
def frontend_servers_fixture(tmp_path_factory, comfy_server) -> Iterator[FrontendServers]:
    servers = FrontendServers(tmp_path_factory, comfy_server)
    try:
        yield servers
    finally:
        servers.close()


@dataclass(frozen=True)
class FrontendUI:
    """What the ``ui`` fixture gives a test: the UI and the ComfyClient of the server that serves its frontend."""

    ui: UI
    server: ComfyClient

    @property
    def vue(self) -> bool:
        return self.ui.vue


@pytest.fixture(scope="module", name="ui")
def ui_fixture(request, frontend_servers) -> FrontendUI:
    ui = getattr(request, "param", FULL_SUITE_UI)
    return FrontendUI(ui, frontend_servers.server(ui.frontend))


@pytest.fixture(scope="module", name="frontend_url")
def frontend_url_fixture(ui) -> str:
    """The URL of the module's frontend (its server's)."""
    return ui.server.base_url


@pytest.fixture(scope="module", name="comfy_page")
def comfy_page_fixture(browser, ui, frontend_url):
    context, page, _ = open_frontend(browser, frontend_url, ui.vue)
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(name="page")
def page_fixture(comfy_page):
    """The module's page with an empty graph; ``page.console_mark`` is where this test's messages start."""
    reset(comfy_page)
    comfy_page.console_mark = comfy_page.console.mark()
    yield comfy_page


@pytest.fixture(name="fresh_page")
def fresh_page_fixture(browser, ui, frontend_url):
    context, page, _ = open_frontend(browser, frontend_url, ui.vue)
    try:
        yield page
    finally:
        context.close()


def fit_view(page, padding: int = 40) -> None:
    """Zoom and scroll the canvas so every node shows, for screenshots: at most 100 %, and at least
    65 %, below which LiteGraph draws nodes without their text (the example graphs fit at 1920 px)."""
    page.evaluate(
        """(padding) => {
            const nodes = app.graph._nodes;
            if (!nodes.length) return;
            const title = LiteGraph.NODE_TITLE_HEIGHT;
            const x0 = Math.min(...nodes.map(n => n.pos[0])), y0 = Math.min(...nodes.map(n => n.pos[1] - title));
            const x1 = Math.max(...nodes.map(n => n.pos[0] + n.size[0]));
            const y1 = Math.max(...nodes.map(n => n.pos[1] + n.size[1]));
            const rect = app.canvas.canvas.getBoundingClientRect();
            const left = 70, top = 90;  // the sidebar and the top bars
            const fit = Math.min((rect.width - left - 2 * padding) / (x1 - x0),
                                 (rect.height - top - 2 * padding) / (y1 - y0));
            const scale = Math.max(0.65, Math.min(1, fit));
            app.canvas.ds.scale = scale;
            app.canvas.ds.offset = [(left + padding) / scale - x0, (top + padding) / scale - y0];
            app.canvas.setDirty(true, true);
        }""",
        padding,
    )
    next_frames(page)
