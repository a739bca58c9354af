// ComfyUI-SSAE: the concept picker of the "SSAE Concepts" node (SSAEConceptVector).
//
// A DOM widget lists the concepts of the SSAE file chosen in the upstream "Load SSAE" node, grouped by
// category, each with a three-state toggle (add / off / remove) and a weight slider. It keeps no state
// of its own in the workflow (serialize: false): it writes the node's `concepts` string widget (plain
// JSON, see ssae/concepts.py) on every change and reads it back on configure, so the workflow file and
// the prompt carry exactly that string. The pure logic lives in ssae_concepts_model.js.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { addStyle, chain, el } from "./ssae_dom.js";
import {
  WEIGHT_MAX, WEIGHT_MIN, WEIGHT_STEP, categoryCounts, conceptsOf, dropConcept, emptyChoice, formatWeight,
  missingConcepts, normalizeChoice, parseValue, replacementSuggestions, serializeValue, setMode, setState,
  setWeight, stateOf, summary, weightOf,
} from "./ssae_concepts_model.js";

const NODE = "SSAEConceptVector";
const LOADER = "SSAELoader";
const NO_LOADER = "connect an SSAE Loader to list concepts";
const STATE_LABEL = { add: "+", off: "○", remove: "−" };
const STATE_TITLE = {
  add: "add this concept",
  off: "leave this concept alone",
  remove: "remove this concept (edit: the concept of the prompt it replaces)",
};

const CSS = `
.ssae-concepts { box-sizing: border-box; display: flex; flex-direction: column; overflow: hidden;
  font: 12px/1.35 system-ui, sans-serif; color: var(--input-text, #ddd);
  background: var(--comfy-input-bg, #222); border: 1px solid var(--border-color, #444); border-radius: 6px; }
.ssae-concepts * { box-sizing: border-box; }
.ssae-head { display: flex; align-items: center; gap: 4px; padding: 4px 6px;
  border-bottom: 1px solid var(--border-color, #444); }
.ssae-title { flex: 1; min-width: 0; white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
  color: var(--descrip-text, #999); }
.ssae-title b { color: var(--input-text, #ddd); font-weight: 600; }
.ssae-btn { font: inherit; font-size: 11px; line-height: 16px; padding: 0 6px; cursor: pointer; border-radius: 4px;
  color: var(--input-text, #ddd); background: var(--comfy-menu-bg, #353535); border: 1px solid var(--border-color, #555); }
.ssae-btn:hover:enabled { filter: brightness(1.3); }
.ssae-btn:disabled { opacity: 0.4; cursor: default; }
.ssae-btn.ssae-active { border-color: #6aa0e0; }
.ssae-body { flex: 1; min-height: 0; overflow-y: auto; padding: 2px 4px 4px; }
.ssae-msg { margin: 6px 4px; padding: 6px 8px; border-radius: 4px; white-space: pre-wrap; overflow-wrap: anywhere; }
.ssae-msg-info { color: var(--descrip-text, #999); border: 1px dashed var(--border-color, #555); }
.ssae-msg-error { color: #ffc9c4; background: rgba(200, 60, 50, 0.22); border: 1px solid rgba(230, 90, 80, 0.7); }
.ssae-msg-warn { color: #ffe3a8; background: rgba(200, 150, 40, 0.18); border: 1px solid rgba(220, 170, 60, 0.6); }
.ssae-cat { margin-top: 2px; }
.ssae-cat > summary { cursor: pointer; padding: 3px 2px 2px; font-weight: 600; user-select: none;
  color: var(--descrip-text, #aaa); text-transform: none; }
.ssae-count { font-weight: 400; margin-left: 6px; }
.ssae-count-add { color: #7fd49a; }
.ssae-count-remove { color: #f0948c; margin-left: 4px; }
.ssae-row { display: grid; grid-template-columns: auto minmax(0, 1fr) 84px 30px; align-items: center; gap: 6px;
  padding: 1px 4px; margin: 1px 0; border-radius: 4px; border-left: 3px solid transparent; }
.ssae-row:hover { background: rgba(255, 255, 255, 0.04); }
.ssae-row.ssae-state-add { background: rgba(70, 180, 100, 0.16); border-left-color: #46b464; }
.ssae-row.ssae-state-remove { background: rgba(220, 90, 80, 0.16); border-left-color: #dc5a50; }
.ssae-toggle { display: inline-flex; border: 1px solid var(--border-color, #555); border-radius: 4px; overflow: hidden; }
.ssae-toggle button { font: inherit; font-size: 12px; width: 20px; height: 18px; padding: 0; margin: 0; border: 0;
  cursor: pointer; color: var(--descrip-text, #999); background: transparent; }
.ssae-toggle button + button { border-left: 1px solid var(--border-color, #555); }
.ssae-toggle button:hover { background: rgba(255, 255, 255, 0.1); }
.ssae-toggle button.ssae-on[data-set="add"] { background: #3f9d5a; color: #fff; }
.ssae-toggle button.ssae-on[data-set="off"] { background: rgba(255, 255, 255, 0.14); color: var(--input-text, #ddd); }
.ssae-toggle button.ssae-on[data-set="remove"] { background: #c4524a; color: #fff; }
.ssae-name { min-width: 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.ssae-state-off .ssae-name { color: var(--descrip-text, #aaa); }
.ssae-slider { width: 100%; margin: 0; accent-color: #6aa0e0; }
.ssae-slider:disabled { opacity: 0.3; }
.ssae-weight { text-align: right; font-variant-numeric: tabular-nums; color: var(--descrip-text, #aaa); }
.ssae-state-off .ssae-weight { opacity: 0.4; }
.ssae-hint { display: flex; flex-wrap: wrap; align-items: center; gap: 4px; margin: 1px 0 3px 30px;
  font-size: 11px; color: var(--descrip-text, #aaa); }
.ssae-hint select { font: inherit; font-size: 11px; max-width: 220px; color: var(--input-text, #ddd);
  background: var(--comfy-menu-bg, #353535); border: 1px solid var(--border-color, #555); border-radius: 4px; }
.ssae-hint .ssae-suggest { border-color: rgba(220, 90, 80, 0.8); }
.ssae-dismiss { font: inherit; border: 0; background: none; color: var(--descrip-text, #999); cursor: pointer; padding: 0 2px; }
.ssae-missing .ssae-name { font-style: italic; }
.ssae-badge { font-size: 10px; padding: 0 4px; margin-left: 4px; border-radius: 3px; font-style: normal;
  color: #ffe3a8; border: 1px solid rgba(220, 170, 60, 0.7); }
.ssae-foot { padding: 3px 6px; border-top: 1px solid var(--border-color, #444); color: var(--descrip-text, #999);
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
`;

/** Live pickers; a loader's file combo, once seen, tells them all when it changes. */
const pickers = new Set();
const hookedWidgets = new WeakSet();

function hookLoaderWidget(widget) {
  if (!widget || hookedWidgets.has(widget)) return;
  hookedWidgets.add(widget);
  chain(widget, "callback", () => {
    for (const p of pickers) p.later(() => p.check());
  });
}

/** The SSAE file the node's `ssae` input comes from: {name} or {message} to show instead. */
export function upstreamSSAE(node) {
  try {
    const slot = node.inputs?.findIndex((i) => i.name === "ssae") ?? -1;
    if (slot < 0 || node.inputs[slot].link == null || !node.graph) return { message: NO_LOADER };
    let origin = node.getInputNode(slot);
    for (let hops = 0; origin && origin.type === "Reroute" && hops < 64; hops++) origin = origin.getInputNode(0);
    if (!origin) return { message: NO_LOADER };
    if ((origin.comfyClass ?? origin.type) !== LOADER) {
      return { message: `the SSAE comes from "${origin.title ?? origin.type}": ${NO_LOADER}` };
    }
    let widget;
    const linked = origin.inputs?.findIndex((i) => i.name === "ssae_name" && i.link != null) ?? -1;
    if (linked >= 0) widget = origin.getInputNode(linked)?.widgets?.[0]; // e.g. a primitive node
    else widget = origin.widgets?.find((w) => w.name === "ssae_name");
    const name = widget?.value;
    if (typeof name !== "string" || !name) {
      return { message: "choose an SSAE file in the SSAE Loader to list concepts", widget };
    }
    return { name, widget };
  } catch (e) {
    return { message: `${NO_LOADER} (${e.message})` };
  }
}

async function fetchConcepts(name, signal) {
  let res;
  try {
    res = await api.fetchApi(`/ssae/concepts?name=${encodeURIComponent(name)}`, { signal, cache: "no-store" });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    return { error: `could not reach the ComfyUI server to list the concepts of ${name}: ${e.message}` };
  }
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (!res.ok) {
    const why = body?.error ?? `${res.status} ${res.statusText}`.trim();
    const lead = { 404: "SSAE file not found", 400: "bad SSAE file name", 422: "cannot read this SSAE file" }[res.status]
      ?? `the server answered ${res.status}`;
    return { error: `${lead}: ${why}` };
  }
  if (!body || typeof body.categories !== "object" || body.categories === null) {
    return { error: `the server sent no concept list for ${name}` };
  }
  return { data: body };
}

class ConceptPicker {
  constructor(node) {
    this.node = node;
    this.textWidget = node.widgets?.find((w) => w.name === "concepts");
    this.modeWidget = node.widgets?.find((w) => w.name === "mode");
    this.source = null; // {name} | {message}
    this.sourceKey = undefined;
    this.vocab = { status: "none" }; // none | loading | ok | error
    this.lastText = undefined;
    this.folded = new Set();
    this.dismissed = new Set();
    this.abort = null;
    this.timers = new Set();
    this.disposed = false;
    addStyle("ssae-concepts-style", CSS);
    pickers.add(this);

    this.body = el("div", { class: "ssae-body" });
    this.title = el("div", { class: "ssae-title" });
    this.foot = el("div", { class: "ssae-foot" });
    this.jsonButton = el("button", {
      class: "ssae-btn", type: "button", title: "show or hide the raw JSON value",
      onclick: () => this.toggleRaw(),
    }, "{ }");
    const head = el("div", { class: "ssae-head" }, this.title,
      this.clearButton = el("button", {
        class: "ssae-btn", type: "button", title: "turn every concept off (missing ones are kept)",
        onclick: () => this.clearAll(),
      }, "clear"),
      el("button", { class: "ssae-btn", type: "button", title: "list the concepts again", onclick: () => this.reload() }, "↻"),
      this.jsonButton);
    this.root = el("div", { class: "ssae-concepts" }, head, this.body, this.foot);

    this.widget = node.addDOMWidget("concept_picker", "ssae_concepts", this.root, {
      serialize: false, // the `concepts` string widget carries the value
      hideOnZoom: true,
      getValue: () => undefined,
      setValue: () => {},
      getMinHeight: () => 140,
      onDraw: () => this.check(),
    });
    this.widget.serialize = false;

    if (this.textWidget) {
      // The front end lays out hidden DOM widgets too: give the hidden text box no height.
      const layout = this.textWidget.computeLayoutSize;
      if (typeof layout === "function") {
        this.textWidget.computeLayoutSize = function (...args) {
          return this.hidden ? { minHeight: 0, maxHeight: 0, minWidth: 0 } : layout.apply(this, args);
        };
      }
      this.setRawVisible(false);
      const picker = this;
      chain(this.textWidget, "callback", () => picker.check());
    }
    if (this.modeWidget) {
      const picker = this;
      chain(this.modeWidget, "callback", () => picker.onMode());
    }
    this.check();
  }

  // -- value ----------------------------------------------------------------------------------
  text() {
    const v = this.textWidget?.value;
    return typeof v === "string" ? v : v == null ? "" : JSON.stringify(v);
  }

  mode() {
    const m = this.modeWidget?.value;
    return m === "edit" || m === "compose" ? m : undefined;
  }

  parsed() {
    const { choice, error } = parseValue(this.text(), this.mode());
    const categories = this.vocab.status === "ok" ? this.vocab.data.categories : null;
    return { choice: categories ? normalizeChoice(choice, categories) : choice, error };
  }

  write(choice) {
    if (!this.textWidget) return;
    const text = serializeValue(setMode(choice, this.mode() ?? choice.mode));
    this.lastText = text;
    this.textWidget.value = text; // its callback runs check(), which sees nothing new
    this.node.setDirtyCanvas?.(true, true);
    this.node.graph?.change?.();
  }

  update(fn) {
    const { choice } = this.parsed();
    this.write(fn(choice));
    this.render();
  }

  onMode() {
    const { choice, error } = this.parsed();
    if (!error && this.text().trim()) this.write(choice);
    this.render();
  }

  clearAll() {
    const { choice } = this.parsed();
    if (this.vocab.status !== "ok") return; // without the concept list every name looks missing: keep them
    let c = emptyChoice(choice.mode);
    for (const m of missingConcepts(choice, this.vocab.data.categories)) c = setState(c, m.name, m.state, m.weight);
    this.write(c);
    this.render();
  }

  // -- raw text widget ------------------------------------------------------------------------
  setRawVisible(visible) {
    if (!this.textWidget) return;
    this.textWidget.hidden = !visible; // only hidden on screen: it still serializes
    this.jsonButton.classList.toggle("ssae-active", visible);
    this.node.setDirtyCanvas?.(true, true);
  }

  toggleRaw() {
    this.setRawVisible(!!this.textWidget?.hidden);
    this.node.setSize?.([this.node.size[0], Math.max(this.node.size[1], this.node.computeSize?.()[1] ?? 0)]);
  }

  // -- source and vocabulary -------------------------------------------------------------------
  /** Cheap; called on every draw and on every event that might have changed something. */
  check() {
    if (this.disposed) return;
    const source = upstreamSSAE(this.node);
    hookLoaderWidget(source.widget); // besides this check on every draw: a change while not drawn
    const key = source.name !== undefined ? `name:${source.name}` : `msg:${source.message}`;
    if (key !== this.sourceKey) {
      this.sourceKey = key;
      this.source = source;
      this.load();
      return;
    }
    const text = this.text();
    if (text !== this.lastText) {
      this.lastText = text;
      this.render();
    }
  }

  later(fn, ms = 0) {
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.disposed) fn();
    }, ms);
    this.timers.add(t);
  }

  reload() {
    this.sourceKey = undefined;
    this.check();
  }

  async load() {
    this.abort?.abort();
    this.abort = null;
    const source = this.source;
    if (source.name === undefined) {
      this.vocab = { status: "none", message: source.message };
      this.render();
      return;
    }
    const ctrl = new AbortController();
    this.abort = ctrl;
    this.vocab = { status: "loading", name: source.name };
    this.render();
    let result;
    try {
      result = await fetchConcepts(source.name, ctrl.signal);
    } catch (e) {
      if (e.name === "AbortError") return;
      result = { error: `could not list the concepts of ${source.name}: ${e.message}` };
    }
    if (this.disposed || this.abort !== ctrl) return;
    this.abort = null;
    this.vocab = result.error !== undefined
      ? { status: "error", name: source.name, error: result.error }
      : { status: "ok", name: source.name, data: result.data };
    this.render();
  }

  // -- view -----------------------------------------------------------------------------------
  render() {
    if (this.disposed) return;
    this.lastText = this.text();
    const scroll = this.body.scrollTop;
    const { choice, error } = this.parsed();
    const v = this.vocab;
    const parts = [];

    if (!this.textWidget) parts.push(this.message("error", "this node has no `concepts` widget: the picker cannot store a choice"));
    if (this.node.inputs?.some((i) => i.name === "concepts" && i.link != null)) {
      parts.push(this.message("warn", "the concepts input is linked: the node reads the link, not this picker"));
    }
    if (error) {
      parts.push(this.message("warn", `the concepts value cannot be read (${error}). Choosing a concept below replaces it; `
        + "the { } button shows the raw text."));
    }
    if (v.status === "none") parts.push(this.message("info", v.message));
    else if (v.status === "loading") parts.push(this.message("info", `listing the concepts of ${v.name}…`));
    else if (v.status === "error") parts.push(this.message("error", v.error));

    if (v.status === "ok") {
      const categories = v.data.categories;
      const suggestions = new Map(replacementSuggestions(choice, categories).map((s) => [s.category, s]));
      for (const [category, concepts] of Object.entries(categories)) {
        parts.push(this.category(category, concepts, choice, suggestions.get(category)));
      }
      const missing = missingConcepts(choice, categories);
      if (missing.length) parts.push(this.missing(missing, `not in ${v.name}`));
      this.title.replaceChildren("concepts of ", el("b", {}, v.name), ` · ${conceptsOf(categories).length}`);
    } else {
      // no vocabulary: still show what the value holds, so nothing looks lost
      const held = missingConcepts(choice, {});
      if (held.length) parts.push(this.missing(held, "in the value (no concept list to check them)", false));
      this.title.replaceChildren(v.name ? el("b", {}, v.name) : "concepts");
    }
    this.body.replaceChildren(...parts);
    this.body.scrollTop = scroll;
    this.clearButton.disabled = v.status !== "ok";
    this.foot.textContent = `${choice.mode}: ${summary(choice)}`;
    this.foot.title = this.foot.textContent;
  }

  message(kind, text) {
    return el("div", { class: `ssae-msg ssae-msg-${kind}`, role: kind === "error" ? "alert" : undefined }, text);
  }

  toggle(name, state) {
    return el("span", { class: "ssae-toggle", role: "radiogroup", "aria-label": name },
      ...["add", "off", "remove"].map((s) => el("button", {
        type: "button", title: STATE_TITLE[s], class: s === state ? "ssae-on" : undefined,
        "aria-checked": s === state ? "true" : "false", role: "radio", dataset: { set: s },
        onclick: (e) => {
          e.stopPropagation();
          this.dismissed.delete(name); // set again: offer its replacement again
          this.update((c) => setState(c, name, s));
        },
      }, STATE_LABEL[s])));
  }

  slider(name, state, weight) {
    const readout = el("span", { class: "ssae-weight" }, formatWeight(weight));
    const input = el("input", {
      class: "ssae-slider", type: "range", min: String(WEIGHT_MIN), max: String(Math.max(WEIGHT_MAX, weight)),
      step: String(WEIGHT_STEP), value: String(weight), disabled: state === "off",
      title: state === "off" ? "turn the concept on to set its weight" : "weight",
      oninput: (e) => {
        const w = Number(e.target.value);
        readout.textContent = formatWeight(w);
        const { choice } = this.parsed();
        this.write(setWeight(choice, name, w));
        this.foot.textContent = `${choice.mode}: ${summary(setWeight(choice, name, w))}`;
      },
    });
    input.addEventListener("pointerdown", (e) => e.stopPropagation());
    return [input, readout];
  }

  row(name, choice, extraClass, badge) {
    const state = stateOf(choice, name);
    const weight = weightOf(choice, name);
    return el("div", { class: `ssae-row ssae-state-${state} ${extraClass ?? ""}`.trim(), dataset: { concept: name, state } },
      this.toggle(name, state),
      el("span", { class: "ssae-name", title: name }, name, badge ?? null),
      ...this.slider(name, state, weight));
  }

  category(category, concepts, choice, suggestion) {
    const counts = categoryCounts(choice, concepts);
    const details = el("details", { class: "ssae-cat", dataset: { category } });
    details.open = !this.folded.has(category);
    details.addEventListener("toggle", () => {
      if (details.open) this.folded.delete(category);
      else this.folded.add(category);
    });
    details.append(el("summary", {}, category,
      counts.add ? el("span", { class: "ssae-count ssae-count-add" }, `+${counts.add}`) : null,
      counts.remove ? el("span", { class: "ssae-count ssae-count-remove" }, `−${counts.remove}`) : null));
    for (const name of concepts) {
      details.append(this.row(name, choice));
      if (suggestion && suggestion.added.at(-1) === name && !this.dismissed.has(name)) {
        details.append(this.hint(category, name, suggestion.candidates));
      }
    }
    return details;
  }

  /** "also remove X?" under an added concept: the prompt's concept it replaces (the paper's edit). */
  hint(category, added, candidates) {
    const remove = (name) => this.update((c) => setState(c, name, "remove"));
    const dismiss = el("button", {
      class: "ssae-dismiss", type: "button", title: "no, only add",
      onclick: () => { this.dismissed.add(added); this.render(); },
    }, "×");
    if (candidates.length === 1) {
      return el("div", { class: "ssae-hint", dataset: { category } }, "↳",
        el("button", { class: "ssae-btn ssae-suggest", type: "button", dataset: { suggest: candidates[0] },
          title: `"${added}" replaces "${candidates[0]}" of the prompt: remove it`, onclick: () => remove(candidates[0]) },
        `also remove "${candidates[0]}"?`), dismiss);
    }
    const select = el("select", {
      class: "ssae-suggest", title: `the concept of the prompt that "${added}" replaces`,
      onchange: (e) => e.target.value && remove(e.target.value),
    }, el("option", { value: "" }, `also remove the ${category} it replaces…`), ...candidates.map((c) => el("option", { value: c }, c)));
    return el("div", { class: "ssae-hint", dataset: { category } }, "↳", select, dismiss);
  }

  /** Stored concepts outside the concept list: shown with their weight and kept (`checked`: known to be missing). */
  missing(items, label, checked = true) {
    const details = el("details", { class: "ssae-cat ssae-missing-cat", open: true },
      el("summary", {}, label, el("span", { class: "ssae-count" }, String(items.length))));
    for (const m of items) {
      const choice = setState(emptyChoice(), m.name, m.state, m.weight);
      const why = !checked ? "no concept list to check it against"
        : m.ambiguous ? `ambiguous: matches ${m.ambiguous.join(", ")}` : "this SSAE has no such concept";
      const row = el("div", {
        class: `ssae-row ssae-missing ssae-state-${m.state}`,
        dataset: { concept: m.name, state: m.state, missing: checked ? "true" : "unknown" },
        title: `${m.name}: ${why}; kept in the value`,
      },
      el("span", { class: "ssae-toggle" }, el("button", {
        type: "button", title: "drop it from the value", dataset: { set: "drop" },
        onclick: () => this.update((c) => dropConcept(c, m.name)),
      }, "×")),
      el("span", { class: "ssae-name" }, `${m.state === "add" ? "+" : "−"} ${m.name}`,
        checked ? el("span", { class: "ssae-badge" }, m.ambiguous ? "ambiguous" : "missing") : null),
      ...this.slider(m.name, stateOf(choice, m.name), m.weight));
      details.append(row);
    }
    return details;
  }

  dispose() {
    this.disposed = true;
    pickers.delete(this);
    this.abort?.abort();
    this.abort = null;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.root.remove();
  }
}

app.registerExtension({
  name: "ssae.concepts",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;
    const proto = nodeType.prototype;

    chain(proto, "onNodeCreated", function () {
      try {
        this.ssaeConceptPicker = new ConceptPicker(this);
        const [w, h] = this.size;
        this.setSize([Math.max(w, 400), Math.max(h, 460)]);
      } catch (e) {
        console.error("[ssae_concepts] could not add the concept picker", e);
      }
    });
    chain(proto, "onConfigure", function () {
      const p = this.ssaeConceptPicker;
      if (!p) return;
      p.lastText = undefined; // a loaded value: show it
      p.check();
      p.later(() => p.check()); // the upstream loader may be configured after this node
    });
    chain(proto, "onConnectionsChange", function () {
      const p = this.ssaeConceptPicker;
      if (p) p.later(() => { p.check(); p.render(); });
    });
    chain(proto, "onRemoved", function () {
      this.ssaeConceptPicker?.dispose();
      this.ssaeConceptPicker = null;
    });
  },
});
