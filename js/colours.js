// Link and slot colours for the pack's own socket types, in the spirit of ComfyUI's default
// palette: the IF stage models in MODEL's lavender family, the T5 encoder and the scoring CLIP
// near CLIP's yellow, prompts and views in CONDITIONING's orange family. Core types and node
// colours are left alone.

export const SOCKET_COLOURS = {
  VA_IF_STAGE_I: "#9575CD",
  VA_IF_STAGE_II: "#BA68C8",
  VA_IF_STAGE_III: "#7986CB",
  VA_T5_ENCODER: "#FFE57F",
  VA_CLIP: "#FFD54F",
  VA_PROMPTS: "#FF8A65",
  VA_VIEWS: "#FFB74D",
};

// The palette loader resets the colour of every type the server declares (ours included) to ""
// and then assigns the palette's own, each time a palette is applied. A property whose setter
// keeps what the palette assigns and whose getter falls back to our colour survives that, and a
// custom palette that does name one of our types still wins.
function pin(table, type, colour) {
  if (!table) return;
  const descriptor = Object.getOwnPropertyDescriptor(table, type);
  if (descriptor?.get) return; // already pinned
  let assigned = table[type];
  Object.defineProperty(table, type, {
    configurable: true,
    enumerable: true,
    get: () => assigned || colour,
    set: (value) => {
      assigned = value;
    },
  });
}

// Vue-rendered nodes (Nodes 2.0) colour a socket with the CSS variable --color-datatype-<TYPE>. The
// palette loader sets those on <body> for the types its palette names and removes them for the
// others (ours included, each time a palette is applied; frontend 1.32 does so after extensions
// are set up). Our colours are declared on :root by a style sheet the loader never touches: <body>
// inherits them unless the palette sets its own there, which then wins, as on the canvas.
const STYLE_ID = "visual-anagrams-socket-colours";

function declareCssColours() {
  if (document.getElementById(STYLE_ID)) return;
  const style = document.createElement("style");
  style.id = STYLE_ID;
  const declarations = Object.entries(SOCKET_COLOURS).map(([type, colour]) => `--color-datatype-${type}: ${colour};`);
  style.textContent = `:root { ${declarations.join(" ")} }`;
  document.head.appendChild(style);
}

export function applySocketColours(app) {
  const canvas = app.canvas;
  for (const [type, colour] of Object.entries(SOCKET_COLOURS)) {
    pin(canvas?.constructor?.link_type_colors, type, colour);
    pin(canvas?.default_connection_color_byType, type, colour);
  }
  declareCssColours();
  canvas?.setDirty?.(true, true);
}
