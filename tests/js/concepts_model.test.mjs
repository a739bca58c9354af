// Unit tests of the concept widget's pure logic: `node --test tests/js/` (npm run test:js).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  DEFAULT_WEIGHT, categoryCounts, categoryOf, conceptsOf, dropConcept, emptyChoice, formatWeight, missingConcepts,
  nextState, normalizeChoice, parseValue, replacementSuggestions, resolveName, serializeValue, setMode, setState,
  setWeight, stateOf, summary, weightOf,
} from "../../web/ssae_concepts_model.js";

// The vocabulary the package ships (ssae/data/sd35_portraits.json), as GET /ssae/concepts returns it.
const PORTRAITS = JSON.parse(readFileSync(new URL("../../ssae/data/sd35_portraits.json", import.meta.url), "utf8"));
const SMALL = { hair: ["A blond girl", "A brunette girl"], hat: ["and a hat", "and a baseball cap", "and no hat"] };

const plain = (c) => ({ mode: c.mode, add: { ...c.add }, remove: { ...c.remove } });

test("the node's own value forms parse", () => {
  const { choice, error } = parseValue('{"mode": "edit", "add": {"A blond girl": 1.0}, "remove": {"A brunette girl": 0.5}}');
  assert.equal(error, null);
  assert.deepEqual(plain(choice), { mode: "edit", add: { "A blond girl": 1 }, remove: { "A brunette girl": 0.5 } });
  // the node's default value, lists for weight 1, an empty value
  assert.deepEqual(plain(parseValue('{"add": {}, "remove": {}}').choice), plain(emptyChoice()));
  assert.deepEqual(parseValue('{"add": ["a", "b"]}').choice.add, { a: 1, b: 1 });
  for (const empty of ["", "   ", undefined, null]) {
    const r = parseValue(empty);
    assert.equal(r.error, null);
    assert.deepEqual(plain(r.choice), plain(emptyChoice()));
  }
  // numeric strings and booleans are weights, as Python's float() takes them
  assert.deepEqual(parseValue('{"add": {"a": "0.25", "b": true}}').choice.add, { a: 0.25, b: 1 });
  // an already parsed object
  assert.deepEqual(parseValue({ add: { a: 2 } }).choice.add, { a: 2 });
});

test("the short text form parses as ConceptChoice.parse does", () => {
  const { choice, error } = parseValue("blond, -brunette, hat:0.5\nrain : 2");
  assert.equal(error, null);
  assert.deepEqual(plain(choice), { mode: "edit", add: { blond: 1, hat: 0.5, rain: 2 }, remove: { brunette: 1 } });
  assert.match(parseValue("hat:lots").error, /bad weight in 'hat:lots'/);
});

test("the mode combo overrides the value's own mode; a bad mode is an error", () => {
  assert.equal(parseValue('{"mode": "edit"}', "compose").choice.mode, "compose");
  assert.equal(parseValue('{"mode": "compose"}').choice.mode, "compose");
  assert.equal(parseValue("{}").choice.mode, "edit");
  assert.match(parseValue('{"mode": "mix"}').error, /unknown mode/);
});

test("serialisation round-trips, keeps order and writes plain JSON the node reads", () => {
  let c = emptyChoice("edit");
  c = setState(c, "A blond girl", "add");
  c = setState(c, "and a hat", "add", 0.5);
  c = setState(c, "A brunette girl", "remove", 1.25);
  const text = serializeValue(c);
  assert.deepEqual(JSON.parse(text), {
    mode: "edit", add: { "A blond girl": 1, "and a hat": 0.5 }, remove: { "A brunette girl": 1.25 },
  });
  assert.deepEqual(Object.keys(JSON.parse(text).add), ["A blond girl", "and a hat"]);
  const back = parseValue(text);
  assert.equal(back.error, null);
  assert.deepEqual(plain(back.choice), plain(c));
  assert.equal(serializeValue(back.choice), text);
  assert.deepEqual(JSON.parse(serializeValue(emptyChoice("compose"))), { mode: "compose", add: {}, remove: {} });
});

test("three-state toggles move a concept between add, remove and off, keeping its weight", () => {
  let c = emptyChoice();
  assert.equal(stateOf(c, "A blond girl"), "off");
  c = setState(c, "A blond girl", "add", 0.7);
  assert.equal(stateOf(c, "A blond girl"), "add");
  c = setState(c, "A blond girl", "remove");
  assert.equal(stateOf(c, "A blond girl"), "remove");
  assert.equal(weightOf(c, "A blond girl"), 0.7);
  assert.deepEqual(plain(c).add, {});
  c = setState(c, "A blond girl", "off");
  assert.deepEqual(plain(c), plain(emptyChoice()));
  assert.equal(weightOf(c, "A blond girl"), DEFAULT_WEIGHT);
  assert.throws(() => setState(c, "x", "maybe"), /unknown state/);
  assert.deepEqual(["off", "add", "remove"].map(nextState), ["add", "remove", "off"]);
});

test("choices are immutable values", () => {
  const c = emptyChoice();
  const d = setState(c, "a", "add");
  assert.deepEqual(plain(c), plain(emptyChoice()));
  assert.ok(Object.isFrozen(d) && Object.isFrozen(d.add));
  assert.equal(setState(d, "a", "add").add.a, 1);
});

test("weights: set on chosen concepts, rounded, ignored for concepts that are off", () => {
  let c = setState(setState(emptyChoice(), "a", "add"), "b", "remove");
  c = setWeight(c, "a", 0.1 + 0.2);
  c = setWeight(c, "b", "1.5");
  assert.deepEqual(plain(c), { mode: "edit", add: { a: 0.3 }, remove: { b: 1.5 } });
  assert.equal(setWeight(c, "c", 2), c);
  assert.throws(() => setWeight(c, "a", "heavy"), /must be numbers/);
  assert.equal(formatWeight(0.30000000000000004), "0.3");
  assert.equal(formatWeight(1), "1");
});

test("mode changes keep the concepts", () => {
  const c = setState(emptyChoice(), "a", "add");
  assert.deepEqual(plain(setMode(c, "compose")), { mode: "compose", add: { a: 1 }, remove: {} });
  assert.equal(setMode(c, "nonsense"), c);
});

test("fragments resolve like Vocabulary.resolve and are written back as full names", () => {
  const concepts = conceptsOf(PORTRAITS);
  assert.equal(concepts.length, 28);
  assert.equal(resolveName("A blond girl", concepts).name, "A blond girl");
  assert.equal(resolveName("BLOND", concepts).name, "A blond girl");
  assert.equal(resolveName("horseback", concepts).name, null); // ambiguous
  assert.deepEqual(resolveName("horseback", concepts).matches, ["on horseback in the forest", "on horseback across a plain"]);
  assert.equal(resolveName("dragon", concepts).name, null);
  assert.equal(resolveName("", concepts).name, null);
  const c = normalizeChoice(parseValue("blond:0.5, -brunette, dragon").choice, PORTRAITS);
  assert.deepEqual(plain(c), { mode: "edit", add: { "A blond girl": 0.5, dragon: 1 }, remove: { "A brunette girl": 1 } });
  assert.equal(categoryOf("and a hat", PORTRAITS), "hat");
  assert.equal(categoryOf("dragon", PORTRAITS), null);
});

test("concepts the SSAE lacks are reported as missing, with weight, and kept in the value", () => {
  const stored = '{"mode": "edit", "add": {"A blond girl": 1, "A purple dragon": 0.7}, "remove": {"horseback": 2}}';
  const c = normalizeChoice(parseValue(stored).choice, PORTRAITS);
  const missing = missingConcepts(c, PORTRAITS);
  assert.deepEqual(missing.map(({ name, state, weight }) => ({ name, state, weight })), [
    { name: "A purple dragon", state: "add", weight: 0.7 },
    { name: "horseback", state: "remove", weight: 2 },
  ]);
  assert.equal(missing[0].ambiguous, null);
  assert.equal(missing[1].ambiguous.length, 2);
  // toggling a known concept keeps the missing ones in the written value
  const after = JSON.parse(serializeValue(setState(c, "and a hat", "add")));
  assert.deepEqual(after.add, { "A blond girl": 1, "A purple dragon": 0.7, "and a hat": 1 });
  assert.deepEqual(after.remove, { horseback: 2 });
  // only an explicit drop removes one
  assert.deepEqual(plain(dropConcept(c, "A purple dragon")).add, { "A blond girl": 1 });
  // with no vocabulary at all, everything stored is listed (nothing looks lost)
  assert.equal(missingConcepts(c, {}).length, 3);
  assert.deepEqual(missingConcepts(emptyChoice(), PORTRAITS), []);
});

test("replacement suggestion: adding a concept offers the other concepts of its category", () => {
  let c = setState(emptyChoice(), "A blond girl", "add");
  assert.deepEqual(replacementSuggestions(c, SMALL), [
    { category: "hair", added: ["A blond girl"], candidates: ["A brunette girl"] }, // exactly one other
  ]);
  c = setState(c, "and a hat", "add");
  assert.deepEqual(replacementSuggestions(c, SMALL)[1],
    { category: "hat", added: ["and a hat"], candidates: ["and a baseball cap", "and no hat"] });
  // once the replaced concept is removed the category needs no suggestion
  c = setState(c, "A brunette girl", "remove");
  assert.deepEqual(replacementSuggestions(c, SMALL).map((s) => s.category), ["hat"]);
  // compose mode mixes concepts: nothing is replaced
  assert.deepEqual(replacementSuggestions(setMode(c, "compose"), SMALL), []);
  // all other concepts added too: no candidate left
  const all = setState(setState(emptyChoice(), "A blond girl", "add"), "A brunette girl", "add");
  assert.deepEqual(replacementSuggestions(all, SMALL), []);
  assert.deepEqual(replacementSuggestions(emptyChoice(), SMALL), []);
  // the paper's 11-concept category offers all ten others
  const s = replacementSuggestions(setState(emptyChoice(), "at the beach", "add"), PORTRAITS);
  assert.equal(s[0].category, "situration");
  assert.equal(s[0].candidates.length, 10);
  assert.ok(!s[0].candidates.includes("at the beach"));
});

test("garbage values give an empty choice and a message, never an exception", () => {
  const cases = [
    ["{oops", /not valid JSON/],
    ["[1, 2]", /must be a JSON object/],
    ['[{"add": {}}]', /must be a JSON object/],
    ["null", null], // not starting with { or [: the text form, a concept named "null", as the node reads it
    ["42", null],
    ['{"add": 5}', /'add' must map concept names/],
    ['{"add": [1, 2]}', /'add' must list concept names/],
    ['{"add": {"a": "heavy"}}', /'add' weights must be numbers/],
    ['{"remove": {"a": null}}', /'remove' weights must be numbers/],
    ['{"add": {"a": {"w": 1}}}', /'add' weights must be numbers/],
  ];
  for (const [value, pattern] of cases) {
    const r = parseValue(value, "edit");
    if (pattern === null) {
      assert.equal(r.error, null, value);
      continue;
    }
    assert.match(r.error, pattern, value);
    assert.deepEqual(plain(r.choice), plain(emptyChoice("edit")), value);
  }
  assert.deepEqual(parseValue(7).error.match(/must be a JSON object/)?.length, 1);
  assert.equal(parseValue("{oops", "compose").choice.mode, "compose");
});

test("counts and summary for the headers and the footer", () => {
  let c = setState(setState(emptyChoice(), "A blond girl", "add", 0.5), "A brunette girl", "remove");
  assert.deepEqual(categoryCounts(c, SMALL.hair), { add: 1, remove: 1 });
  assert.deepEqual(categoryCounts(c, SMALL.hat), { add: 0, remove: 0 });
  assert.equal(summary(c), "+A blond girl ×0.5, −A brunette girl ×1");
  c = setState(c, "A blond girl", "off");
  c = setState(c, "A brunette girl", "off");
  assert.equal(summary(c), "(no concepts)");
});
