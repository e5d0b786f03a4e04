// Pairing made visible on the Anagram Prompt Encoder: prompt k pairs with view k of the chain
// wired to its `views` input, so the node shows as many prompt boxes as there are views, says
// in each box which view it is for, and marks a mismatch before the workflow is queued (the
// node refuses one when it runs, with the same words).
//
// The classic canvas draws no label for multiline text widgets, so each prompt box gets a header
// line inside it ("VIEW 2 · FLIP UPSIDE DOWN"), drawn as a background image above a padded
// first line, which stays readable once the box is filled (a placeholder would vanish).
//
// Unused prompt boxes are hidden with `widget.hidden`, which LiteGraph honours when it sizes the
// node, draws, hit-tests and shows DOM widgets (isWidgetVisible), while the widget still
// serializes: `widgets_values` and graphToPrompt() are unchanged by hiding. One gap: 1.32 still
// gives hidden DOM widgets their minimum height when it arranges a node's widgets (only a widget
// of type "hidden" gets none), which would leave holes between the boxes; so each prompt widget's
// computeLayoutSize reports no height while it is hidden (see `collapseWhenHidden`).
//
// Nodes 2.0 (the Vue renderer, setting Comfy.VueNodes.Enabled) draws each node as DOM with text
// areas of its own instead of the widgets' elements, and calls no node draw hook; so the same
// marks are applied to the text areas it shows (`showInVueNode`), and the warning becomes a
// banner element under the node. Frontend 1.32's renderer reads a widget's label and hidden flag
// once, when the node is added, and shows the widget's name as its placeholder: there the boxes'
// rows are hidden and the header drawn by us too. Later renderers (1.58) follow `widget.hidden`
// and show `widget.label` above the box, so the label carries the header's text.

import { app } from "../../scripts/app.js";

export const ENCODER = "VisualAnagramsPromptEncoder";
export const VIEW_PREFIX = "VisualAnagramsView_";
// The encoder has one prompt_k input per view an illusion can have, so the server's schema
// (/object_info, from sampling/inputs.py MAX_VIEWS) is where the maximum comes from: the boxes are
// whatever prompt_k widgets the node was built with, never a count restated here.
const PROMPT_NAME = /^prompt_(\d+)$/;
const BYPASS = 4; // LiteGraph mode: the node passes its input through (a bypassed view adds no view)

const OK_COLOUR = "#8f98a8";
// A prompt without a view contradicts the chain: red. A view still without its prompt is work
// to do: amber. Either stops the run, which the node would refuse with the same words.
const PROBLEM_COLOUR = "#ff6b6b";
const EMPTY_COLOUR = "#f5b83d";
const PROBLEM_BANNER = "rgba(150, 28, 34, 0.95)";
const EMPTY_BANNER = "rgba(140, 96, 10, 0.95)";

function link(graph, id) {
  if (id == null || !graph) return null;
  return graph.getLink?.(id) ?? graph.links?.get?.(id) ?? graph.links?.[id] ?? null;
}

function upstream(node, inputName) {
  const slot = node.inputs?.find((input) => input.name === inputName);
  const found = link(node.graph, slot?.link);
  return found ? node.graph.getNodeById(found.origin_id) : null;
}

export function viewLabel(node) {
  const title = node.constructor?.nodeData?.display_name ?? node.constructor?.title ?? node.type;
  return String(title).replace(/^View:\s*/, "");
}

// The view chain feeding `encoder`, first view first: {wired, known, views: [{node, label}]}.
// `known` is false when the chain runs through a node that is not a view node (then its
// length cannot be read in the browser, and nothing is marked).
export function viewChain(encoder) {
  const views = [];
  let node = upstream(encoder, "views");
  const wired = node != null;
  const seen = new Set();
  while (node) {
    if (seen.has(node.id)) return { wired, known: false, views: [] }; // a cycle: refused by ComfyUI anyway
    seen.add(node.id);
    if (node.type?.startsWith(VIEW_PREFIX)) {
      if (node.mode !== BYPASS) views.push({ node, label: viewLabel(node) });
      node = upstream(node, "views");
    } else if (node.type === "Reroute") {
      const through = link(node.graph, node.inputs?.[0]?.link);
      node = through ? node.graph.getNodeById(through.origin_id) : null;
    } else {
      return { wired, known: false, views: [] };
    }
  }
  return { wired, known: wired, views: views.reverse() };
}

function chainSignature(encoder) {
  const chain = viewChain(encoder);
  const prompts = promptWidgets(encoder).map((w) => (String(w.value ?? "").trim() ? "1" : "0")).join("");
  return `${chain.wired}|${chain.known}|${chain.views.map((v) => `${v.node.id}:${v.node.type}`).join(",")}|${prompts}`;
}

// The prompt boxes in view order (prompt_1, prompt_2, ...): as many as the server's schema has.
function promptWidgets(node) {
  const number = (widget) => Number(PROMPT_NAME.exec(widget.name)[1]);
  return (node.widgets ?? []).filter((w) => PROMPT_NAME.test(w.name ?? "")).sort((a, b) => number(a) - number(b));
}

function textArea(widget) {
  const el = widget.element ?? widget.inputEl;
  return el instanceof HTMLTextAreaElement ? el : null;
}

function escapeXml(text) {
  return text.replace(/[<>&'"]/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", "'": "&apos;", '"': "&quot;" })[c]);
}

// Marks a text box with what it is for: `box` is {text, colour, problem, placeholder}. With
// `header`, the text is a header line inside the box: an SVG background image above 18 px of top
// padding. Only what differs is written, so the Vue renderer's own attributes stay untouched.
function markBox(area, box, header) {
  const svg =
    `<svg xmlns='http://www.w3.org/2000/svg' width='1000' height='14'>` +
    `<text x='0' y='10' font-family='Inter, Arial, sans-serif' font-size='9.5' font-weight='600' letter-spacing='0.6' fill='${box.colour}'>` +
    `${escapeXml(box.text.toUpperCase())}</text></svg>`;
  const style = {
    backgroundImage: header ? `url("data:image/svg+xml;utf8,${encodeURIComponent(svg)}")` : "",
    backgroundRepeat: header ? "no-repeat" : "",
    backgroundPosition: header ? "7px 4px" : "",
    paddingTop: header ? "19px" : "",
    outline: box.problem ? `2px solid ${box.colour}` : "",
    outlineOffset: box.problem ? "-2px" : "",
  };
  for (const [name, value] of Object.entries(style)) {
    if (area.style[name] !== value) area.style[name] = value;
  }
  if (area.dataset.vaLabel !== box.text) area.dataset.vaLabel = box.text;
  if (box.problem && area.dataset.vaProblem !== box.problem) area.dataset.vaProblem = box.problem;
  else if (!box.problem && "vaProblem" in area.dataset) delete area.dataset.vaProblem;
  area.classList.toggle("va-prompt-problem", Boolean(box.problem));
  if (box.placeholder != null && area.placeholder !== box.placeholder) area.placeholder = box.placeholder;
}

// Records what a widget's box shows, and shows it on the widget's own element (the classic canvas).
function labelBox(widget, box) {
  widget.vaBox = box;
  widget.label = box.text;
  const area = textArea(widget);
  if (area) markBox(area, box, true);
}

function negativeWidget(node) {
  return node.widgets?.find((w) => w.name === "negative");
}

function collapseWhenHidden(widget) {
  if (widget.vaCollapses || typeof widget.computeLayoutSize !== "function") return;
  const computeLayoutSize = widget.computeLayoutSize;
  widget.computeLayoutSize = function (...args) {
    return this.hidden ? { minHeight: 0, maxHeight: 0, minWidth: 0 } : computeLayoutSize.apply(this, args);
  };
  widget.vaCollapses = true;
}

function hasLink(node, widget) {
  return node.inputs?.some((input) => input.widget?.name === widget.name && input.link != null);
}

// Shows the prompt boxes the chain needs, labels them, marks what does not pair; returns the state.
export function updateEncoder(node) {
  const chain = viewChain(node);
  const widgets = promptWidgets(node);
  const count = chain.known ? chain.views.length : null;
  const filled = widgets.map((w) => String(w.value ?? "").trim() !== "");
  const lastFilled = filled.lastIndexOf(true) + 1;
  const problems = [];
  let changed = false;
  widgets.forEach((widget, i) => {
    const k = i + 1;
    let visible;
    let text;
    let problem = null;
    if (count == null) {
      // Not wired (or not readable): show what is filled, and at least two boxes.
      visible = k <= Math.max(2, lastFilled);
      text = `prompt for view ${k}`;
    } else if (k <= count) {
      visible = true;
      text = `view ${k} · ${chain.views[i].label}`;
      if (!filled[i]) problem = "empty";
    } else {
      visible = filled[i];
      text = `view ${k} · not in the chain: clear this prompt or add a view`;
      if (filled[i]) problem = "extra";
    }
    if (hasLink(node, widget)) visible = true; // a string wired in is always shown
    if (problem) problems.push({ k, problem });
    collapseWhenHidden(widget);
    if (Boolean(widget.hidden) === visible) {
      widget.hidden = !visible;
      changed = true;
    }
    labelBox(widget, {
      text,
      colour: { empty: EMPTY_COLOUR, extra: PROBLEM_COLOUR }[problem] ?? OK_COLOUR,
      problem,
      placeholder: count != null && k <= count ? `What the picture shows under view ${k} (${chain.views[i].label})` : "",
    });
  });
  const negative = negativeWidget(node);
  if (negative) labelBox(negative, { text: "negative prompt · every view", colour: OK_COLOUR, problem: null, placeholder: null });

  let message = "";
  if (count != null && problems.length) {
    const empty = problems.filter((p) => p.problem === "empty").map((p) => p.k);
    const extra = problems.filter((p) => p.problem === "extra").map((p) => p.k);
    const views = `${count} view${count === 1 ? "" : "s"} wired`;
    const parts = [];
    if (extra.length === 1) parts.push(`prompt ${extra[0]} has no view: clear it or add a view`);
    else if (extra.length) parts.push(`prompts ${extra.join(", ")} have no view: clear them or add views`);
    if (empty.length === 1) parts.push(`the prompt for view ${empty[0]} is empty`);
    else if (empty.length) parts.push(`the prompts for views ${empty.join(", ")} are empty`);
    message = `${views}: ${parts.join("; ")}`;
  }
  node.vaPairing = { wired: chain.wired, known: chain.known, count, labels: chain.views.map((v) => v.label), problems, message };
  node.vaSignature = chainSignature(node);
  if (changed) {
    // Keep the node at least as tall as its visible widgets need; room freed by hidden boxes
    // goes to the visible ones (the frontend shares spare height among DOM widgets).
    const needed = node.computeSize();
    if (node.size[1] < needed[1]) node.setSize([node.size[0], needed[1]]);
  }
  node.setDirtyCanvas?.(true, true);
  scheduleVueUpdate(node);
  return node.vaPairing;
}

function warningText(pairing) {
  return `⚠ ${pairing.message}`;
}

function warningBackground(pairing) {
  return pairing.problems.some((p) => p.problem === "extra") ? PROBLEM_BANNER : EMPTY_BANNER;
}

// Draws the mismatch warning just under the node, where it hides no widget and no badge.
export function drawPairingWarning(node, ctx) {
  const pairing = node.vaPairing;
  if (!pairing?.message || node.flags?.collapsed) return;
  const text = warningText(pairing);
  const top = node.size[1] + 6;
  ctx.save();
  ctx.font = "bold 12px Inter, Arial, sans-serif";
  const width = Math.min(ctx.measureText(text).width + 14, Math.max(node.size[0], 200) + 200);
  ctx.fillStyle = warningBackground(pairing);
  ctx.beginPath();
  if (ctx.roundRect) ctx.roundRect(0, top, width, 22, 5);
  else ctx.rect(0, top, width, 22);
  ctx.fill();
  ctx.fillStyle = "#fff";
  ctx.textBaseline = "middle";
  ctx.fillText(text, 7, top + 11);
  ctx.restore();
}

export function updateAllEncoders(graph) {
  for (const node of graph?._nodes ?? graph?.nodes ?? []) {
    if (node.type === ENCODER) updateEncoder(node);
  }
}

// Re-checks an encoder when anything its pairing depends on changed since the last check: the
// chain upstream (rewired, bypassed, removed view nodes) or which prompts are filled. Called
// when the node draws, so every way the graph can change is caught without hooking each one.
export function refreshIfChanged(node) {
  if (node.vaSignature !== chainSignature(node)) updateEncoder(node);
}

// -- Nodes 2.0 ---------------------------------------------------------------------------------

const BANNER_CLASS = "va-pairing-warning";
const BANNER_STYLE_ID = "visual-anagrams-pairing-style";
// The banner hangs under the node, as the canvas draws it: outside the node's box, hiding nothing.
const BANNER_STYLE = `
.${BANNER_CLASS} {
  position: absolute; left: 0; top: calc(100% + 6px); z-index: 1; pointer-events: none;
  height: 22px; padding: 0 7px; border-radius: 5px; white-space: nowrap;
  font: bold 12px/22px Inter, Arial, sans-serif; color: #fff;
}`;

// The element Nodes 2.0 renders for `node`, or null (the classic canvas, or not on screen).
function vueNodeElement(node) {
  if (node.graph !== (app.canvas?.graph ?? app.graph)) return null; // ids repeat across subgraphs
  return document.querySelector(`.lg-node[data-node-id="${CSS.escape(String(node.id))}"]`);
}

// The text area Nodes 2.0 shows for a widget: 1.58 names each widget's row, 1.32 labels the area
// with the widget's name for screen readers.
function vueTextArea(element, name) {
  const quoted = CSS.escape(name);
  return element.querySelector(`[data-widget-name="${quoted}"] textarea`) ?? element.querySelector(`textarea[aria-label="${quoted}"]`);
}

function showBanner(element, pairing) {
  let banner = element.querySelector(`:scope > .${BANNER_CLASS}`);
  if (!pairing?.message) {
    banner?.remove();
    return;
  }
  if (!document.getElementById(BANNER_STYLE_ID)) {
    const style = document.createElement("style");
    style.id = BANNER_STYLE_ID;
    style.textContent = BANNER_STYLE;
    document.head.appendChild(style);
  }
  if (!banner) {
    banner = document.createElement("div");
    banner.className = BANNER_CLASS;
    element.appendChild(banner);
  }
  const text = warningText(pairing);
  if (banner.textContent !== text) banner.textContent = text;
  const background = warningBackground(pairing);
  if (banner.style.background !== background) banner.style.background = background;
}

// Applies the pairing to the DOM Nodes 2.0 shows for the encoder: hides the rows of hidden boxes
// (1.32 renders every widget it saw when the node was added), marks each box, and shows the
// warning. Does nothing on the classic canvas.
export function showInVueNode(node) {
  const element = vueNodeElement(node);
  if (!element) return;
  watchVueNode(node, element);
  for (const widget of [...promptWidgets(node), negativeWidget(node)]) {
    if (!widget?.vaBox) continue;
    const area = vueTextArea(element, widget.name);
    if (!area) continue;
    const row = area.closest(".lg-node-widget") ?? area;
    const display = widget.hidden ? "none" : "";
    if (row.style.display !== display) row.style.display = display;
    // 1.58 shows the widget's label above its box; 1.32 shows none, so the header is drawn in it.
    markBox(area, widget.vaBox, !row.querySelector("label"));
  }
  showBanner(element, node.vaPairing);
}

function scheduleVueUpdate(node) {
  if (node.vaVueFrame) return;
  node.vaVueFrame = requestAnimationFrame(() => {
    node.vaVueFrame = 0;
    showInVueNode(node);
  });
}

// Nodes 2.0 re-renders a node's rows on its own schedule (a widget shown or hidden, the text area's
// component loaded, the node collapsed and expanded, zoomed past its level of detail): the marks go
// again onto whatever it renders. Our own writes only change what differs, so they settle at once.
function watchVueNode(node, element) {
  if (node.vaVueElement === element) return;
  node.vaVueObserver?.disconnect();
  node.vaVueObserver = new MutationObserver(() => scheduleVueUpdate(node));
  node.vaVueObserver.observe(element, { childList: true, subtree: true });
  node.vaVueElement = element;
}

export function forgetVueNode(node) {
  node.vaVueObserver?.disconnect();
  node.vaVueObserver = null;
  node.vaVueElement = null;
  cancelAnimationFrame(node.vaVueFrame ?? 0);
  node.vaVueFrame = 0;
}
