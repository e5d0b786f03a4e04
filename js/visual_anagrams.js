// Visual Anagrams in ComfyUI's canvas: the illusion viewer on the view preview node, prompt and
// view pairing on the prompt encoder, colours for the pack's socket types, and the inputs'
// display names. ComfyUI serves this folder as the pack's WEB_DIRECTORY.
import { app } from "../../scripts/app.js";
import { applySocketColours } from "./colours.js";
import {
  drawPairingWarning,
  ENCODER,
  forgetVueNode,
  refreshIfChanged,
  showInVueNode,
  updateAllEncoders,
  updateEncoder,
  VIEW_PREFIX,
} from "./pairing.js";
import { IllusionViewer, VIEWER_EMPTY_HEIGHT, VIEWER_MIN_HEIGHT } from "./viewer.js";

const PREVIEW = "VisualAnagramsViewPreview";
const PACK_PREFIX = "VisualAnagrams";
// The key under which the preview node's `ui` output carries the viewer's data (nodes/viewer.py).
const VIEWER_KEY = "visual_anagrams_viewer";
const VIEWER_MIN_WIDTH = 340;
const ENCODER_MIN_HEIGHT = 400;

// Runs `after` after a prototype method (ours or the frontend's), keeping the original's result.
function extend(prototype, name, after) {
  const original = prototype[name];
  prototype[name] = function (...args) {
    const result = original?.apply(this, args);
    after.apply(this, args);
    return result;
  };
}

let pending = 0;
function scheduleEncoderUpdate(graph) {
  cancelAnimationFrame(pending);
  pending = requestAnimationFrame(() => updateAllEncoders(graph ?? app.graph));
}

// Frontend 1.32 shows an input's name, not the display name the schema gives it ("views before
// this one", "prompt for view 2"): label our inputs with it, as the schema intends.
function applyDisplayNames(node, nodeData) {
  const specs = { ...(nodeData.input?.required ?? {}), ...(nodeData.input?.optional ?? {}) };
  for (const input of node.inputs ?? []) {
    const displayName = specs[input.name]?.[1]?.display_name;
    if (displayName && !input.label && !input.widget) input.label = displayName;
  }
  for (const widget of node.widgets ?? []) {
    const displayName = specs[widget.name]?.[1]?.display_name;
    if (displayName) widget.label = displayName;
  }
}

function installViewer(nodeType) {
  extend(nodeType.prototype, "onNodeCreated", function () {
    const viewer = new IllusionViewer(this);
    this.vaViewer = viewer;
    const widget = this.addDOMWidget("illusion_viewer", "va_viewer", viewer.root, {
      serialize: false, // not an input: never in widgets_values nor in the prompt
      hideOnZoom: false,
      getMinHeight: () => (viewer.data ? VIEWER_MIN_HEIGHT : VIEWER_EMPTY_HEIGHT),
    });
    widget.serialize = false;
    this.setSize([Math.max(this.size[0], VIEWER_MIN_WIDTH), this.computeSize()[1]]);
  });
  extend(nodeType.prototype, "onExecuted", function (output) {
    const data = output?.[VIEWER_KEY]?.[0];
    if (!data || !this.vaViewer) return;
    this.vaViewer.setData(data);
    // Room for the viewer: grow a node saved small (never shrink what the user sized).
    const needed = this.computeSize();
    if (this.size[0] < VIEWER_MIN_WIDTH || this.size[1] < needed[1]) {
      this.setSize([Math.max(this.size[0], VIEWER_MIN_WIDTH), Math.max(this.size[1], needed[1])]);
    }
    this.setDirtyCanvas?.(true, true);
  });
  extend(nodeType.prototype, "onRemoved", function () {
    this.vaViewer?.destroy();
  });
}

function installPairing(nodeType) {
  extend(nodeType.prototype, "onNodeCreated", function () {
    for (const widget of this.widgets ?? []) {
      if (!/^prompt_\d+$/.test(widget.name)) continue;
      // Typing in the canvas's text box fires its input event; Nodes 2.0 has text boxes of its
      // own and hands what is typed to the widget's callback, which setting a value (loading a
      // workflow too) also calls: checked on the next frame, once the whole graph is there.
      const area = widget.element ?? widget.inputEl;
      area?.addEventListener?.("input", () => updateEncoder(this));
      const node = this;
      const callback = widget.callback;
      widget.callback = function (...args) {
        const result = callback?.apply(this, args);
        scheduleEncoderUpdate(node.graph);
        return result;
      };
    }
    updateEncoder(this);
    // A new node is as tall as the prompt boxes it shows need, not all eight (a saved
    // workflow's size still wins: onConfigure comes after).
    this.setSize([this.size[0], Math.max(this.computeSize()[1], ENCODER_MIN_HEIGHT)]);
  });
  extend(nodeType.prototype, "onConnectionsChange", function () {
    scheduleEncoderUpdate(this.graph);
  });
  extend(nodeType.prototype, "onConfigure", function () {
    scheduleEncoderUpdate(this.graph);
  });
  extend(nodeType.prototype, "onDrawForeground", function (ctx) {
    refreshIfChanged(this);
    drawPairingWarning(this, ctx);
  });
  extend(nodeType.prototype, "onRemoved", function () {
    forgetVueNode(this);
  });
}

// Nodes 2.0 calls no node's draw hooks, but the canvas under its nodes still draws (links, the
// grid) whenever the graph changes: the encoders on screen are checked there, in either mode.
function watchEncodersOnCanvasDraws(canvas) {
  if (!canvas) return;
  const onDrawForeground = canvas.onDrawForeground;
  canvas.onDrawForeground = function (...args) {
    const result = onDrawForeground?.apply(this, args);
    for (const node of this.graph?._nodes ?? []) {
      if (node.type !== ENCODER) continue;
      refreshIfChanged(node);
      showInVueNode(node);
    }
    return result;
  };
}

function installViewNode(nodeType) {
  // A view node rewired or removed changes the chain of every encoder downstream.
  extend(nodeType.prototype, "onConnectionsChange", function () {
    scheduleEncoderUpdate(this.graph);
  });
  extend(nodeType.prototype, "onRemoved", function () {
    scheduleEncoderUpdate(this.graph);
  });
}

app.registerExtension({
  name: "visual_anagrams.canvas",
  async setup() {
    applySocketColours(app);
    watchEncodersOnCanvasDraws(app.canvas);
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith(PACK_PREFIX)) return;
    extend(nodeType.prototype, "onConfigure", function () {
      applyDisplayNames(this, nodeData); // a loaded workflow brings its own input slots
    });
    extend(nodeType.prototype, "onNodeCreated", function () {
      applyDisplayNames(this, nodeData);
      // Wide enough for the longer labels (a saved workflow's size still wins: onConfigure comes after).
      const needed = this.computeSize();
      if (this.size[0] < needed[0]) this.setSize([needed[0], this.size[1]]);
    });
    if (nodeData.name === PREVIEW) installViewer(nodeType);
    else if (nodeData.name === ENCODER) installPairing(nodeType);
    else if (nodeData.name.startsWith(VIEW_PREFIX)) installViewNode(nodeType);
  },
  async afterConfigureGraph() {
    updateAllEncoders(app.graph);
  },
});
