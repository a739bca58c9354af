// Pure logic of the SSAE concept widget: no DOM, no ComfyUI imports (unit-tested in node, tests/js/).
//
// The single source of truth is the `concepts` string widget of SSAEConceptVector, plain JSON:
//   {"mode": "edit", "add": {"A blond girl": 1}, "remove": {"A brunette girl": 1}}
// which ssae/concepts.py ConceptChoice.parse reads. That parser also takes the short text form
// "blond, -brunette, hat:0.5" and name fragments; so does parseValue here, and normalizeChoice turns
// fragments into full concept names (what the widget writes back).
//
// A choice is a plain frozen object {mode, add: {name: weight}, remove: {name: weight}}; every function
// returns a new choice and never mutates its argument.

export const MODES = Object.freeze(["edit", "compose"]);
export const STATES = Object.freeze(["add", "off", "remove"]);
export const DEFAULT_WEIGHT = 1;
export const WEIGHT_MIN = 0;
export const WEIGHT_MAX = 2;
export const WEIGHT_STEP = 0.05;

function freeze(mode, add, remove) {
  return Object.freeze({ mode, add: Object.freeze({ ...add }), remove: Object.freeze({ ...remove }) });
}

export function emptyChoice(mode = "edit") {
  return freeze(MODES.includes(mode) ? mode : "edit", {}, {});
}

function describe(v) {
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s.length > 60 ? s.slice(0, 57) + "..." : s;
  } catch {
    return String(v);
  }
}

function toWeight(w, what) {
  if (typeof w === "number" && Number.isFinite(w)) return w;
  if (typeof w === "boolean") return w ? 1 : 0;
  if (typeof w === "string" && w.trim() !== "" && Number.isFinite(Number(w))) return Number(w);
  throw new Error(`'${what}' weights must be numbers, got ${describe(w)}`);
}

function weights(v, what) {
  if (v === undefined || v === null) return {};
  if (Array.isArray(v)) {
    if (!v.every((k) => typeof k === "string")) throw new Error(`'${what}' must list concept names, got ${describe(v)}`);
    return Object.fromEntries(v.map((k) => [k, DEFAULT_WEIGHT]));
  }
  if (typeof v !== "object") throw new Error(`'${what}' must map concept names to weights, got ${describe(v)}`);
  return Object.fromEntries(Object.entries(v).map(([k, w]) => [k, toWeight(w, what)]));
}

function parseText(text) {
  const add = {};
  const remove = {};
  for (const raw of text.replace(/\n/g, ",").split(",")) {
    const item = raw.trim();
    if (!item) continue;
    const colon = item.indexOf(":");
    const name = colon < 0 ? item : item.slice(0, colon);
    const w = colon < 0 ? "" : item.slice(colon + 1).trim();
    const target = name.startsWith("-") ? remove : add;
    const weight = w === "" ? DEFAULT_WEIGHT : Number(w);
    if (!Number.isFinite(weight)) throw new Error(`bad weight in '${item}': write name:0.5`);
    target[name.replace(/^-+/, "").trim()] = weight;
  }
  return { add, remove };
}

/**
 * The widget value (a string, or an already parsed object) as {choice, error}.
 * `mode` (the node's mode combo) overrides the value's own mode, as the node does.
 * Never throws: garbage gives an empty choice and an error message for the widget to show.
 */
export function parseValue(value, mode) {
  const fallback = emptyChoice(MODES.includes(mode) ? mode : "edit");
  try {
    let data = value;
    if (value === undefined || value === null) data = {};
    else if (typeof value === "string") {
      const text = value.trim();
      if (!text) data = {};
      else if (text[0] === "{" || text[0] === "[") {
        try {
          data = JSON.parse(text);
        } catch (e) {
          throw new Error(`not valid JSON (${e.message})`);
        }
      } else data = parseText(text);
    }
    if (typeof data !== "object" || data === null || Array.isArray(data)) {
      throw new Error(`a concept choice must be a JSON object like {"add": {"blond": 1}}, got ${describe(data)}`);
    }
    const m = mode || data.mode || "edit";
    if (!MODES.includes(m)) throw new Error(`unknown mode ${describe(m)}: use "edit" or "compose"`);
    return { choice: freeze(m, weights(data.add, "add"), weights(data.remove, "remove")), error: null };
  } catch (e) {
    return { choice: fallback, error: e.message };
  }
}

/** The JSON string the node reads (ConceptChoice.parse). */
export function serializeValue(choice) {
  return JSON.stringify({ mode: choice.mode, add: { ...choice.add }, remove: { ...choice.remove } });
}

const has = (o, k) => Object.prototype.hasOwnProperty.call(o, k);

/** "add", "remove" or "off" (a name in both sides counts as add, as the node then adds and removes it). */
export function stateOf(choice, name) {
  if (has(choice.add, name)) return "add";
  if (has(choice.remove, name)) return "remove";
  return "off";
}

/** The weight of a chosen concept, or the default for one that is off. */
export function weightOf(choice, name) {
  if (has(choice.add, name)) return choice.add[name];
  if (has(choice.remove, name)) return choice.remove[name];
  return DEFAULT_WEIGHT;
}

function without(o, name) {
  const r = { ...o };
  delete r[name];
  return r;
}

/** The choice with `name` set to add / remove / off; it keeps its weight unless one is given. */
export function setState(choice, name, state, weight) {
  if (!STATES.includes(state)) throw new Error(`unknown state ${describe(state)}: use add, remove or off`);
  const w = weight === undefined ? weightOf(choice, name) : toWeight(weight, state);
  const add = without(choice.add, name);
  const remove = without(choice.remove, name);
  if (state === "add") add[name] = w;
  if (state === "remove") remove[name] = w;
  return freeze(choice.mode, add, remove);
}

/** The next state of a one-button cycle: off -> add -> remove -> off. */
export function nextState(state) {
  return { off: "add", add: "remove", remove: "off" }[state] ?? "add";
}

/** Round a weight to the slider's precision (no 0.30000000000000004 in the stored value). */
export function roundWeight(w) {
  return Math.round(Number(w) * 1e4) / 1e4;
}

/** The choice with a new weight for a chosen concept; a concept that is off stays off (no change). */
export function setWeight(choice, name, weight) {
  const w = roundWeight(toWeight(weight, "weight"));
  const state = stateOf(choice, name);
  if (state === "off") return choice;
  const add = { ...choice.add };
  const remove = { ...choice.remove };
  if (state === "add") add[name] = w;
  else remove[name] = w;
  return freeze(choice.mode, add, remove);
}

export function setMode(choice, mode) {
  if (!MODES.includes(mode)) return choice;
  return freeze(mode, choice.add, choice.remove);
}

/** All concept names of a vocabulary {category: [concept, ...]}, in order. */
export function conceptsOf(categories) {
  return Object.values(categories || {}).flat();
}

export function categoryOf(name, categories) {
  for (const [cat, cs] of Object.entries(categories || {})) if (cs.includes(name)) return cat;
  return null;
}

/**
 * The concept a stored name means, as ssae.Vocabulary.resolve: the exact name, or a case-insensitive
 * fragment that matches exactly one concept. {name} on success, {name: null, matches} otherwise.
 */
export function resolveName(name, concepts) {
  if (concepts.includes(name)) return { name, matches: [name] };
  const frag = String(name).trim().toLowerCase();
  const matches = frag ? concepts.filter((c) => c.toLowerCase().includes(frag)) : [];
  return { name: matches.length === 1 ? matches[0] : null, matches };
}

/** The choice with fragments replaced by full concept names; names the vocabulary lacks are kept as they are. */
export function normalizeChoice(choice, categories) {
  const concepts = conceptsOf(categories);
  const rename = (side) => {
    const out = {};
    for (const [k, w] of Object.entries(side)) {
      const full = resolveName(k, concepts).name ?? k;
      out[full] = w;
    }
    return out;
  };
  return freeze(choice.mode, rename(choice.add), rename(choice.remove));
}

/**
 * Stored concepts the vocabulary does not have (unknown or ambiguous), with their state and weight:
 * the widget shows them as missing and keeps them in the value.
 */
export function missingConcepts(choice, categories) {
  const concepts = conceptsOf(categories);
  const out = [];
  for (const state of ["add", "remove"]) {
    for (const [name, weight] of Object.entries(choice[state])) {
      const r = resolveName(name, concepts);
      if (r.name === null) out.push({ name, state, weight, ambiguous: r.matches.length > 1 ? r.matches : null });
    }
  }
  return out;
}

/** The choice without one stored name (the widget's explicit "drop" of a missing concept). */
export function dropConcept(choice, name) {
  return freeze(choice.mode, without(choice.add, name), without(choice.remove, name));
}

/**
 * The paper's edit swaps a concept of the prompt for another of the same category (blond in, brunette out).
 * For each category where something is added and nothing is removed yet (edit mode only), the concepts
 * that could be the one it replaces: [{category, added: [...], candidates: [...]}].
 * A category with exactly one other concept gives exactly one candidate.
 */
export function replacementSuggestions(choice, categories) {
  if (choice.mode !== "edit") return [];
  const out = [];
  for (const [category, cs] of Object.entries(categories || {})) {
    const added = cs.filter((c) => stateOf(choice, c) === "add");
    if (!added.length || cs.some((c) => stateOf(choice, c) === "remove")) continue;
    const candidates = cs.filter((c) => stateOf(choice, c) === "off");
    if (candidates.length) out.push({ category, added, candidates });
  }
  return out;
}

/** Counts per category for a folded header: {add, remove}. */
export function categoryCounts(choice, concepts) {
  let add = 0;
  let remove = 0;
  for (const c of concepts) {
    const s = stateOf(choice, c);
    if (s === "add") add++;
    else if (s === "remove") remove++;
  }
  return { add, remove };
}

export function formatWeight(w) {
  const n = Number(w);
  return Number.isFinite(n) ? String(Math.round(n * 100) / 100) : "?";
}

/** One line for a user: "+A blond girl ×1, −A brunette girl ×0.5" (or "(no concepts)"). */
export function summary(choice) {
  const parts = [
    ...Object.entries(choice.add).map(([k, w]) => `+${k} ×${formatWeight(w)}`),
    ...Object.entries(choice.remove).map(([k, w]) => `−${k} ×${formatWeight(w)}`),
  ];
  return parts.length ? parts.join(", ") : "(no concepts)";
}
