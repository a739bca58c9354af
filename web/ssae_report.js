// ComfyUI-SSAE: what an SSAE node reports when it runs (a prompt set's split and held-out pairs, what a save
// wrote, a loaded SSAE's site, vocabulary and metrics, a training's result), shown at the foot of the node.
// It is a view of the last run only: nothing of it is stored in the workflow or sent with a prompt.
import { app } from "../../scripts/app.js";
import { addStyle, chain, el } from "./ssae_dom.js";

const CSS = `
.ssae-report { box-sizing: border-box; margin: 0; padding: 4px 6px; overflow: auto; white-space: pre-wrap;
  overflow-wrap: anywhere; font: 11px/1.35 ui-monospace, monospace; color: var(--input-text, #ddd);
  background: var(--comfy-input-bg, #222); border: 1px solid var(--border-color, #444); border-radius: 6px; }
`;

/** The text a node's `ui.PreviewText` sends: its lines joined, or null when it sent none. */
export function reportText(output) {
  const text = output?.text;
  return Array.isArray(text) && text.length ? text.join("\n") : null;
}

function show(node, text) {
  if (!node.ssaeReport) {
    addStyle("ssae-report-style", CSS);
    const box = el("pre", { class: "ssae-report" });
    const widget = node.addDOMWidget("ssae_report", "ssae_report", box, {
      serialize: false, // a view of the last run: not part of the workflow
      hideOnZoom: true,
      getValue: () => undefined,
      setValue: () => {},
      getMinHeight: () => Math.min(24 + 15 * box.textContent.split("\n").length, 220),
    });
    widget.serialize = false;
    node.ssaeReport = { box, widget };
  }
  node.ssaeReport.box.textContent = text;
  const [w, h] = node.size;
  const [, need] = node.computeSize();
  node.setSize([w, Math.max(h, need)]);
  node.setDirtyCanvas(true, true);
}

app.registerExtension({
  name: "ssae.report",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.category !== "SSAE") return;
    chain(nodeType.prototype, "onExecuted", function (output) {
      const text = reportText(output);
      if (text !== null) show(this, text);
    });
    chain(nodeType.prototype, "onRemoved", function () {
      this.ssaeReport?.box.remove();
      this.ssaeReport = null;
    });
  },
});
