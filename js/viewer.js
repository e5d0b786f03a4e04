// The illusion viewer: a DOM widget on the view preview node that plays the picture into each
// view and back, captioned with the prompt each view reveals.
//
// The node (nodes/viewer.py) sends, through its `ui` output, the picture(s) and one entry per
// view, each played one of three ways:
//   - "still": the identity, or a view seen in the picture at rest (a hybrid's fine detail up
//     close): nothing to play;
//   - "css": a whole-picture motion (flip, rotations) or recolouring (negate) given as CSS
//     `from` / `to` keyframes. The browser interpolates them (Web Animations API), and we seek
//     the paused animation to the eased progress, so the motion is smooth at any size and can
//     be scrubbed;
//   - "frames": anything else (permutations, jigsaw, hybrids...): the view's own animation
//     frames in one sprite sheet per picture, drawn on a canvas. The frames were rendered at
//     eased times, so stepping through them at an even pace plays the same easing.
// Which view maps to which CSS lives on the node side only; this file just plays what it gets.

import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";

// Frames per second at which the node's `frames_per_view` / `hold_frames` are played: the
// examples save the same frames as a 24 fps animated WEBP, so the viewer keeps that pace...
const FPS = 24;
// ...but never faster than these (seconds), so a preview rendered with few frames still
// reads as a motion, and every view stays long enough to be seen.
const MIN_TRANSITION = 0.7;
const MIN_HOLD = 0.9;
// The CSS animations are seeked in milliseconds over this nominal length.
const CSS_DURATION = 1000;
// The viewer's height at least (px), with results and before the first run. The classic canvas
// sizes the widget from these (getMinHeight); Nodes 2.0 lays the node out from its content, and
// 1.32's gives a DOM widget no height of its own, so the viewer also holds them as its min-height.
export const VIEWER_MIN_HEIGHT = 360;
export const VIEWER_EMPTY_HEIGHT = 56;

const STYLE_ID = "visual-anagrams-viewer-style";

const STYLE = `
.va-viewer {
  display: flex; flex-direction: column; gap: 6px; box-sizing: border-box;
  width: 100%; height: 100%; padding: 2px 2px 4px; overflow: hidden;
  font-family: Inter, Arial, sans-serif; color: var(--fg-color, #ddd);
}
.va-viewer .va-stage-wrap {
  flex: 1 1 auto; min-height: 0; position: relative; container-type: size;
  display: flex; align-items: center; justify-content: center;
}
.va-viewer .va-stage {
  position: relative; width: min(100cqw, 100cqh); height: min(100cqw, 100cqh);
  background: #fff; border-radius: 6px; overflow: hidden; perspective: 900px;
  box-shadow: 0 0 0 1px var(--border-color, #444); cursor: pointer;
}
.va-viewer .va-picture {
  position: absolute; object-fit: fill; user-select: none; pointer-events: none;
  backface-visibility: visible; transform-origin: 50% 50%;
}
.va-viewer .va-frames { position: absolute; inset: 0; width: 100%; height: 100%; pointer-events: none; }
.va-viewer .va-empty {
  display: flex; align-items: center; justify-content: center; text-align: center; height: 100%;
  padding: 6px 12px; box-sizing: border-box; border: 1px dashed var(--border-color, #555); border-radius: 6px;
  color: var(--descrip-text, #999); font-size: 12px; line-height: 1.4;
}
.va-viewer .va-caption { flex: 0 0 auto; min-height: 34px; text-align: center; transition: opacity 120ms linear; }
.va-viewer .va-caption-view {
  display: block; font-size: 10px; letter-spacing: 0.06em; text-transform: uppercase;
  color: var(--descrip-text, #999); white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
}
.va-viewer .va-caption-text {
  display: block; font-size: 13px; line-height: 1.3; max-height: 2.6em; overflow: hidden;
}
.va-viewer .va-controls { flex: 0 0 auto; display: flex; align-items: center; gap: 6px; min-width: 0; }
.va-viewer button {
  flex: 0 0 auto; height: 24px; min-width: 24px; padding: 0 7px; border-radius: 5px; cursor: pointer;
  border: 1px solid var(--border-color, #555); background: var(--comfy-input-bg, #222);
  color: var(--input-text, #ddd); font-size: 12px; line-height: 22px;
}
.va-viewer button:hover { filter: brightness(1.25); }
.va-viewer button.va-active { background: #4a7bd0; border-color: #6d98e3; color: #fff; }
.va-viewer .va-play { min-width: 30px; font-size: 12px; }
.va-viewer .va-scrub { flex: 1 1 auto; min-width: 40px; accent-color: #6d98e3; }
.va-viewer .va-chips, .va-viewer .va-batch { display: flex; gap: 3px; flex: 0 0 auto; align-items: center; }
.va-viewer .va-batch span { font-size: 11px; color: var(--descrip-text, #999); min-width: 28px; text-align: center; }
.va-viewer[data-state="empty"] .va-stage,
.va-viewer[data-state="empty"] .va-caption,
.va-viewer[data-state="empty"] .va-controls { display: none; }
.va-viewer:not([data-state="empty"]) .va-empty { display: none; }
`;

function injectStyle() {
  if (document.getElementById(STYLE_ID)) return;
  const style = document.createElement("style");
  style.id = STYLE_ID;
  style.textContent = STYLE;
  document.head.appendChild(style);
}

function element(tag, className, parent, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text != null) el.textContent = text;
  if (parent) parent.appendChild(el);
  return el;
}

function viewUrl(ref) {
  const query = new URLSearchParams({ filename: ref.filename, subfolder: ref.subfolder ?? "", type: ref.type ?? "temp" });
  return api.apiURL(`/view?${query}`); // the server's /view, wherever the frontend is served from
}

const ease = (u) => 0.5 - 0.5 * Math.cos(Math.PI * u);

export class IllusionViewer {
  constructor(node) {
    injectStyle();
    this.node = node;
    this.data = null;
    this.imageIndex = 0;
    this.time = 0;
    this.playing = false;
    this.stopAt = null;
    this.frameRequest = 0;
    this.lastTick = 0;
    this.cssAnimation = null;
    this.cssView = -1;
    this.sheets = new Map(); // url -> HTMLImageElement
    this.destroyed = false;

    const root = element("div", "va-viewer");
    root.dataset.state = "empty";
    root.style.minHeight = `${VIEWER_EMPTY_HEIGHT}px`;
    this.root = root;
    const wrap = element("div", "va-stage-wrap", root);
    this.stage = element("div", "va-stage", wrap);
    this.stage.title = "Click to play or pause";
    this.picture = element("img", "va-picture", this.stage);
    this.picture.alt = "the illusion";
    this.picture.draggable = false;
    this.picture.addEventListener("load", () => this.render());
    this.canvas = element("canvas", "va-frames", this.stage);
    element("div", "va-empty", wrap, "Run the workflow: the illusion plays here, into each view and back.");

    this.caption = element("div", "va-caption", root);
    this.captionView = element("span", "va-caption-view", this.caption);
    this.captionText = element("span", "va-caption-text", this.caption);

    const controls = element("div", "va-controls", root);
    this.playButton = element("button", "va-play", controls);
    this.scrub = element("input", "va-scrub", controls);
    Object.assign(this.scrub, { type: "range", min: "0", max: "1000", step: "1", value: "0" });
    this.scrub.title = "Scrub through the animation";
    this.chips = element("div", "va-chips", controls);
    this.batch = element("div", "va-batch", controls);

    this.playButton.addEventListener("click", () => (this.playing ? this.pause() : this.play()));
    this.stage.addEventListener("click", () => (this.playing ? this.pause() : this.play()));
    this.scrub.addEventListener("input", () => {
      this.pause();
      this.time = (Number(this.scrub.value) / 1000) * this.total;
      this.render();
    });
    // The canvas keeps zooming when the wheel turns over the viewer (it has nothing to scroll).
    root.addEventListener("wheel", (event) => forwardWheel(event), { passive: false });

    this.resizeObserver = new ResizeObserver(() => this.render());
    this.resizeObserver.observe(this.stage);
    this.updatePlayButton();
  }

  // -- data ---------------------------------------------------------------------------------

  setData(data) {
    if (!data || !Array.isArray(data.images) || !data.images.length || !Array.isArray(data.views)) return;
    this.pause();
    this.sheets.clear(); // the last run's sprite sheets
    this.data = data;
    this.imageIndex = Math.min(this.imageIndex, data.images.length - 1);
    const transition = Math.max(MIN_TRANSITION, (data.frames_per_view ?? 24) / FPS);
    const hold = Math.max(MIN_HOLD, (data.hold_frames ?? 8) / FPS);
    // One segment per view that moves: into the view, hold, back, hold on the picture.
    this.segments = data.views.map((view, index) => ({ view, index })).filter(({ view }) => view.mode !== "still");
    this.transition = transition;
    this.hold = hold;
    this.segmentLength = 2 * transition + 2 * hold;
    this.total = this.segments.length * this.segmentLength;
    this.restIndex = data.views.findIndex((view) => view.mode === "still");
    this.time = 0;
    this.resetCss();
    this.root.dataset.state = "ready";
    this.root.style.minHeight = `${VIEWER_MIN_HEIGHT}px`;
    this.buildChips();
    this.buildBatch();
    this.showImage(this.imageIndex);
    // New results play once through every view, then rest on the picture.
    if (this.total > 0) this.play({ once: true });
  }

  showImage(index) {
    this.imageIndex = index;
    const ref = this.data.images[index];
    const url = viewUrl(ref);
    if (this.picture.getAttribute("src") !== url) this.picture.src = url;
    // Load this picture's sprite sheets now, so they are ready when their view plays.
    for (const { view } of this.segments) {
      if (view.mode === "frames" && view.sprites?.[index]) this.sheet(view.sprites[index]);
    }
    this.buildBatch();
    this.render();
  }

  sheet(sprite) {
    const url = viewUrl(sprite);
    let image = this.sheets.get(url);
    if (!image) {
      image = new Image();
      image.addEventListener("load", () => this.render());
      image.src = url;
      this.sheets.set(url, image);
    }
    return image;
  }

  buildChips() {
    this.chips.replaceChildren();
    this.chipButtons = this.data.views.map((view, index) => {
      const chip = element("button", "va-chip", this.chips, String(index + 1));
      chip.title = `View ${index + 1}: ${view.label}${view.caption ? ` — ${view.caption}` : ""}`;
      chip.addEventListener("click", () => this.goToView(index));
      return chip;
    });
  }

  buildBatch() {
    const count = this.data?.images.length ?? 0;
    this.batch.replaceChildren();
    if (count < 2) return;
    const previous = element("button", "va-prev", this.batch, "‹");
    element("span", null, this.batch, `${this.imageIndex + 1}/${count}`);
    const next = element("button", "va-next", this.batch, "›");
    previous.title = "Previous image of the batch";
    next.title = "Next image of the batch";
    previous.addEventListener("click", () => this.showImage((this.imageIndex + count - 1) % count));
    next.addEventListener("click", () => this.showImage((this.imageIndex + 1) % count));
  }

  // -- timeline -------------------------------------------------------------------------------

  // Where the timeline is at `time`: the segment, its view, the linear progress `u` into the
  // view (0 = the picture, 1 = the view) and the eased progress `p`.
  stateAt(time) {
    if (!this.segments?.length) return null;
    const { transition: D, hold: H, segmentLength: L } = this;
    const segment = Math.min(Math.floor(time / L), this.segments.length - 1);
    const local = time - segment * L;
    let u;
    let phase;
    if (local < D) [u, phase] = [local / D, "there"];
    else if (local < D + H) [u, phase] = [1, "hold"];
    else if (local < 2 * D + H) [u, phase] = [1 - (local - D - H) / D, "back"];
    else [u, phase] = [0, "rest"];
    u = Math.min(1, Math.max(0, u));
    return { segment, start: segment * L, index: this.segments[segment].index, view: this.segments[segment].view, u, p: ease(u), phase };
  }

  play({ once = false } = {}) {
    if (!this.data || this.total <= 0 || this.destroyed) return;
    if (!once && this.time >= this.total) this.time = 0;
    this.stopAt = once ? this.total : null;
    this.playing = true;
    this.lastTick = performance.now();
    cancelAnimationFrame(this.frameRequest);
    this.frameRequest = requestAnimationFrame((now) => this.tick(now));
    this.updatePlayButton();
  }

  pause() {
    this.playing = false;
    this.stopAt = null;
    cancelAnimationFrame(this.frameRequest);
    this.frameRequest = 0;
    this.updatePlayButton();
  }

  tick(now) {
    if (!this.playing || this.destroyed) return;
    // Cap the step: after the tab was in the background, resume rather than leap.
    const dt = Math.min(0.1, Math.max(0, (now - this.lastTick) / 1000));
    this.lastTick = now;
    this.time += dt;
    if (this.stopAt != null && this.time >= this.stopAt) {
      this.time = this.stopAt >= this.total ? 0 : this.stopAt;
      this.render();
      this.pause();
      return;
    }
    if (this.time >= this.total) this.time -= this.total; // playing loops through every view
    this.render();
    this.frameRequest = requestAnimationFrame((t) => this.tick(t));
  }

  // Play into view `index` and hold there. A still view (the identity) plays back to the picture,
  // and so does the view's own chip clicked again while the viewer holds on it.
  goToView(index) {
    if (!this.data) return;
    const wasPlaying = this.playing;
    const state = this.stateAt(this.time);
    const segment = this.segments.findIndex((s) => s.index === index);
    const { transition: D, hold: H, segmentLength: L } = this;
    const onIt = state && state.segment === segment;
    if (segment < 0 || (onIt && state.phase === "hold" && !wasPlaying)) {
      if (!state || state.u === 0) {
        this.pause();
        return this.render();
      }
      // Back to the picture from where the current view is, at the same point of the motion.
      const start = state.start;
      if (state.phase !== "back") this.time = start + D + H + (1 - state.u) * D;
      this.playUntil(start + 2 * D + H);
      return;
    }
    const start = segment * L;
    if (!(onIt && (state.phase === "there" || state.phase === "hold"))) this.time = start;
    this.playUntil(start + D); // from the hold, this settles on the view at once
  }

  playUntil(time) {
    this.play();
    this.stopAt = time;
  }

  // -- drawing --------------------------------------------------------------------------------

  resetCss() {
    this.cssAnimation?.cancel();
    this.cssAnimation = null;
    this.cssView = -1;
  }

  render() {
    if (this.destroyed || !this.data) return;
    const state = this.stateAt(this.time);
    const size = this.stage.clientWidth;
    const fraction = this.data.picture_fraction ?? 2 / 3;
    const inset = ((1 - fraction) / 2) * 100;
    const side = `${fraction * 100}%`;
    Object.assign(this.picture.style, { left: `${inset}%`, top: `${inset}%`, width: side, height: side });

    let showFrames = false;
    if (state && state.view.mode === "css") {
      if (this.cssView !== state.index) {
        this.resetCss();
        const { from, to } = state.view.css;
        this.cssAnimation = this.picture.animate([from, to], { duration: CSS_DURATION, fill: "both", easing: "linear" });
        this.cssAnimation.pause();
        this.cssView = state.index;
      }
      this.cssAnimation.currentTime = state.p * CSS_DURATION;
    } else {
      this.resetCss();
      if (state && state.view.mode === "frames" && state.u > 0) showFrames = this.drawFrame(state, size);
    }
    this.canvas.style.visibility = showFrames ? "visible" : "hidden";
    this.picture.style.visibility = showFrames ? "hidden" : "visible";

    const shown = state && state.p >= 0.5 ? state.index : this.restIndex;
    const view = shown >= 0 ? this.data.views[shown] : null;
    const count = this.data.views.length;
    this.captionView.textContent = view ? `view ${shown + 1} of ${count} · ${view.label}` : "the picture";
    this.captionText.textContent = view ? view.caption || view.label : this.data.views.map((v) => v.caption).filter(Boolean).join(" / ");
    // The caption fades out and in as the picture passes half-way between two readings.
    this.caption.style.opacity = state ? String(Math.min(1, 0.25 + 3 * Math.abs(state.p - 0.5))) : "1";
    this.chipButtons?.forEach((chip, index) => chip.classList.toggle("va-active", index === shown));
    this.scrub.value = String(this.total > 0 ? Math.round((this.time / this.total) * 1000) : 0);
    this.scrub.disabled = this.total <= 0;

    Object.assign(this.root.dataset, {
      view: String(shown),
      progress: state ? state.p.toFixed(3) : "0",
      playing: String(this.playing),
    });
  }

  // Draws the sprite frame for `state`; false if the sheet is not loaded yet (the picture shows meanwhile).
  drawFrame(state, size) {
    const sprite = state.view.sprites?.[this.imageIndex];
    if (!sprite || !size) return false;
    const sheet = this.sheet(sprite);
    if (!sheet.complete || !sheet.naturalWidth) return false;
    const ratio = window.devicePixelRatio || 1;
    const pixels = Math.max(1, Math.round(size * ratio));
    if (this.canvas.width !== pixels || this.canvas.height !== pixels) {
      this.canvas.width = pixels;
      this.canvas.height = pixels;
    }
    const frame = Math.min(sprite.frames - 1, Math.round(state.u * (sprite.frames - 1)));
    const cell = sheet.naturalWidth / sprite.columns;
    const context = this.canvas.getContext("2d");
    context.imageSmoothingEnabled = true;
    context.imageSmoothingQuality = "high";
    context.drawImage(sheet, (frame % sprite.columns) * cell, Math.floor(frame / sprite.columns) * cell, cell, cell, 0, 0, pixels, pixels);
    return true;
  }

  updatePlayButton() {
    this.playButton.textContent = this.playing ? "❚❚" : "▶";
    this.playButton.title = this.playing ? "Pause" : "Play every view, into it and back";
    if (this.root) this.root.dataset.playing = String(this.playing);
  }

  state() {
    const state = this.stateAt(this.time);
    return {
      time: this.time,
      total: this.total ?? 0,
      playing: this.playing,
      view: state && state.p >= 0.5 ? state.index : this.restIndex,
      progress: state ? state.p : 0,
      image: this.imageIndex,
      caption: this.captionText.textContent,
    };
  }

  destroy() {
    this.destroyed = true;
    this.pause();
    this.resetCss();
    this.resizeObserver.disconnect();
    this.sheets.clear();
  }
}

// Hands a wheel event over the viewer to the graph canvas, so zooming works over the node too.
function forwardWheel(event) {
  const canvas = app.canvas?.canvas;
  if (!canvas) return;
  event.preventDefault();
  canvas.dispatchEvent(new WheelEvent(event.type, event));
}
