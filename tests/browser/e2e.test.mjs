// End-to-end test of the concept widget in a real ComfyUI front end, driven by headless Chromium.
//
//   COMFYUI_PATH=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/venv/bin/python node --test tests/browser/
//
// It starts ComfyUI with this project as a custom node and tiny SSAE files (tests/browser/comfy_host.py),
// or uses a running one: SSAE_E2E_URL=http://127.0.0.1:PORT (models/ssae must hold comfy_host.py's files).
// Needs /usr/bin/chromium (or CHROMIUM_PATH) and `npm install` (playwright-core). Skipped with the reason
// when something is missing, unless SSAE_E2E_REQUIRE=1 (the pytest wrapper sets it after its own checks).
// Writes tests/artifacts/widget.png.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const ARTIFACTS = path.join(ROOT, "tests", "artifacts");
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const GOOD = "tiny_portraits.safetensors";
const BROKEN = "broken.safetensors";
const EXT_FILES = /ssae_concepts(_model)?\.js/;

function playwrightPath() {
  try {
    return createRequire(import.meta.url).resolve("playwright-core");
  } catch {
    return null;
  }
}

function skipReason() {
  if (!process.env.SSAE_E2E_URL) {
    const comfy = process.env.COMFYUI_PATH;
    if (!comfy) return "COMFYUI_PATH is unset: set it to a ComfyUI checkout (or SSAE_E2E_URL to a running host)";
    if (!existsSync(path.join(comfy, "main.py"))) return `COMFYUI_PATH=${comfy} has no main.py`;
  }
  if (!existsSync(CHROMIUM)) return `no Chromium at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)`;
  if (!playwrightPath()) return "playwright-core is not installed: run `npm install` in the repository root";
  return null;
}

const reason = skipReason();
if (reason && process.env.SSAE_E2E_REQUIRE === "1") throw new Error(`browser test cannot run: ${reason}`);

let host = null; // {url, proc}
let browser = null;
let page = null;
const pageErrors = [];

function startHost() {
  if (process.env.SSAE_E2E_URL) return Promise.resolve({ url: process.env.SSAE_E2E_URL.replace(/\/$/, ""), proc: null });
  const python = process.env.COMFYUI_PYTHON || "python3";
  const proc = spawn(python, [path.join(ROOT, "tests", "browser", "comfy_host.py")], {
    cwd: ROOT, env: process.env, stdio: ["pipe", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`ComfyUI did not start in 240 s:\n${err.slice(-3000)}`)), 240_000);
    proc.stdout.on("data", (d) => {
      out += d;
      const nl = out.indexOf("\n");
      if (nl >= 0) {
        clearTimeout(timer);
        try {
          resolve({ ...JSON.parse(out.slice(0, nl)), proc });
        } catch (e) {
          reject(new Error(`unexpected host output: ${out.slice(0, 500)}`));
        }
      }
    });
    proc.stderr.on("data", (d) => { err += d; });
    proc.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`comfy_host.py exited with ${code}:\n${err.slice(-3000)}`));
    });
  });
}

async function stopHost() {
  const proc = host?.proc;
  if (!proc || proc.exitCode !== null) return;
  const exited = new Promise((r) => proc.once("exit", r));
  proc.stdin.end(); // the host stops ComfyUI when its stdin closes
  const t = setTimeout(() => proc.kill("SIGTERM"), 30_000);
  await exited;
  clearTimeout(t);
}

// -- page helpers ---------------------------------------------------------------------------------
const row = (concept) => `.ssae-row[data-concept="${concept}"]`;

/** Build Load SSAE -> SSAE Concepts on an empty graph; returns the two node ids. */
async function buildGraph(ssaeName, { connect = true } = {}) {
  return page.evaluate(async ({ ssaeName, connect }) => {
    const { app, LiteGraph } = window;
    app.graph.clear();
    const loader = LiteGraph.createNode("SSAELoader");
    loader.pos = [40, 190];
    app.graph.add(loader);
    const concepts = LiteGraph.createNode("SSAEConceptVector");
    concepts.pos = [360, 140];
    app.graph.add(concepts);
    concepts.setSize([440, 650]);
    if (connect) loader.connect(0, concepts, 0);
    const w = loader.widgets.find((x) => x.name === "ssae_name");
    if (ssaeName) {
      w.value = ssaeName;
      w.callback?.(ssaeName);
    }
    app.canvas.ds.offset[0] = 0;
    app.canvas.ds.offset[1] = 0;
    app.canvas.ds.scale = 1;
    app.graph.setDirtyCanvas(true, true);
    return { loader: loader.id, concepts: concepts.id };
  }, { ssaeName, connect });
}

async function chooseFile(loaderId, name) {
  await page.evaluate(({ loaderId, name }) => {
    const loader = window.app.graph.getNodeById(loaderId);
    const w = loader.widgets.find((x) => x.name === "ssae_name");
    w.value = name; // what picking the combo entry does
    w.callback?.(name);
    window.app.graph.setDirtyCanvas(true, true);
  }, { loaderId, name });
}

async function conceptsValue(nodeId) {
  return page.evaluate((id) => window.app.graph.getNodeById(id).widgets.find((w) => w.name === "concepts").value, nodeId);
}

async function widgetText() {
  return page.locator(".ssae-concepts").first().innerText();
}

async function rowState(concept) {
  return page.locator(row(concept)).getAttribute("data-state");
}

// -- the test --------------------------------------------------------------------------------------
before(async () => {
  if (reason) return;
  host = await startHost();
  const { chromium } = await import("playwright-core");
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--disable-sync", "--no-first-run"],
  });
  page = await browser.newPage({ viewport: { width: 1100, height: 960 } });
  page.on("pageerror", (e) => {
    if (EXT_FILES.test(`${e.message}\n${e.stack ?? ""}`)) pageErrors.push(`${e.message}\n${e.stack}`);
  });
  page.on("console", (m) => {
    if (m.type() === "error" && (EXT_FILES.test(m.text()) || /ssae_concepts/.test(m.location()?.url ?? ""))) {
      pageErrors.push(m.text());
    }
  });
  await page.goto(host.url);
  await page.waitForFunction(() => window.app?.graph && window.LiteGraph && window.app.extensions?.length, null,
    { timeout: 90_000 });
  await page.waitForTimeout(1000);
  await page.keyboard.press("Escape"); // the "Get Started with a Template" dialog
  await page.waitForTimeout(300);
});

after(async () => {
  await browser?.close().catch(() => {});
  await stopHost();
});

test("concept widget in a real ComfyUI", { skip: reason ?? false, timeout: 300_000 }, async (t) => {
  let ids;

  await t.test("the extension is registered and its files load", async () => {
    const names = await page.evaluate(() => window.app.extensions.map((e) => e.name));
    assert.ok(names.includes("ssae.concepts"), `extensions: ${names.join(", ")}`);
  });

  await t.test("without a loader the widget says what to connect", async () => {
    ids = await buildGraph(null, { connect: false });
    await page.locator(".ssae-msg-info").first().waitFor();
    assert.match(await widgetText(), /connect an SSAE Loader to list concepts/);
    assert.equal(await page.locator(".ssae-concepts").count(), 1);
  });

  await t.test("route errors (422 broken file, 404 unknown file) show as messages, not an empty list", async () => {
    ids = await buildGraph(BROKEN);
    const error = page.locator(".ssae-msg-error");
    await error.waitFor();
    assert.match(await error.innerText(), /cannot read this SSAE file: broken\.safetensors has an unreadable header/);
    assert.equal(await page.locator(".ssae-row").count(), 0);
    await chooseFile(ids.loader, "gone.safetensors");
    await page.waitForFunction(() => /not found/.test(document.querySelector(".ssae-msg-error")?.innerText ?? ""));
    assert.match(await error.innerText(), /SSAE file not found: no SSAE file 'gone\.safetensors' in models\/ssae/);
    // a network failure, then the refresh button once the server answers again
    await chooseFile(ids.loader, GOOD);
    await page.locator(row("A blond girl")).waitFor();
    await page.route("**/ssae/concepts?*", (r) => r.abort("connectionrefused"));
    await page.click('.ssae-head button[title="list the concepts again"]');
    await page.waitForFunction(() => /could not reach/.test(document.querySelector(".ssae-msg-error")?.innerText ?? ""));
    assert.equal(await page.locator(".ssae-row").count(), 0);
    await page.unroute("**/ssae/concepts?*");
    await page.click('.ssae-head button[title="list the concepts again"]');
    await page.locator(row("A blond girl")).waitFor();
    await chooseFile(ids.loader, BROKEN);
    await error.waitFor();
  });

  await t.test("choosing the SSAE file in the loader lists its concepts by category", async () => {
    await chooseFile(ids.loader, GOOD);
    await page.locator(row("A blond girl")).waitFor();
    assert.equal(await page.locator(".ssae-row").count(), 28);
    const cats = await page.locator(".ssae-cat").evaluateAll((els) => els.map((e) => e.dataset.category));
    assert.deepEqual(cats, ["hair", "eyes", "situration", "t_shirt", "hat", "action", "pose"]);
    assert.equal(await page.locator(".ssae-msg-error").count(), 0);
  });

  await t.test("unlinking and relinking the loader follows the link", async () => {
    await page.evaluate((id) => window.app.graph.getNodeById(id).disconnectInput(0), ids.concepts);
    await page.waitForFunction(() => /connect an SSAE Loader/.test(document.querySelector(".ssae-msg-info")?.innerText ?? ""));
    assert.equal(await page.locator(".ssae-row").count(), 0);
    await page.evaluate(({ loader, concepts }) => {
      const g = window.app.graph;
      g.getNodeById(loader).connect(0, g.getNodeById(concepts), 0);
    }, ids);
    await page.locator(row("A blond girl")).waitFor();
    assert.equal(await page.locator(".ssae-row").count(), 28);
  });

  await t.test("clicking toggles writes the concepts value; adding offers the replaced concept", async () => {
    await page.click(`${row("A blond girl")} button[data-set="add"]`);
    assert.equal(await rowState("A blond girl"), "add");
    // hair has exactly one other concept: one button
    const suggest = page.locator('.ssae-hint[data-category="hair"] button[data-suggest="A brunette girl"]');
    await suggest.click();
    assert.equal(await rowState("A brunette girl"), "remove");
    assert.equal(await page.locator('.ssae-hint[data-category="hair"]').count(), 0);
    // a bigger category: a choice of the others
    await page.locator(row("on horseback in the forest")).scrollIntoViewIfNeeded();
    await page.click(`${row("on horseback in the forest")} button[data-set="add"]`);
    const select = page.locator('.ssae-hint[data-category="situration"] select');
    assert.equal(await select.locator("option").count(), 11); // a prompt line + the ten others
    await select.selectOption("walking down the street");
    assert.equal(await rowState("walking down the street"), "remove");
    // a plain remove toggle, then back off
    await page.click(`${row("with brown eyes")} button[data-set="remove"]`);
    assert.equal(await rowState("with brown eyes"), "remove");
    await page.click(`${row("with brown eyes")} button[data-set="off"]`);
    assert.equal(await rowState("with brown eyes"), "off");
    // the weight slider, by keyboard as a user would: 1 -> 0.5 in ten 0.05 steps
    const slider = page.locator(`${row("on horseback in the forest")} input[type="range"]`);
    await slider.focus();
    for (let i = 0; i < 10; i++) await page.keyboard.press("ArrowLeft");
    assert.equal(await page.locator(`${row("on horseback in the forest")} .ssae-weight`).innerText(), "0.5");
    assert.ok(await page.locator(`${row("A brunette girl")} input[type="range"]`).isEnabled());
    assert.ok(!(await page.locator(`${row("with blue eyes")} input[type="range"]`).isEnabled()));

    assert.deepEqual(JSON.parse(await conceptsValue(ids.concepts)), {
      mode: "edit",
      add: { "A blond girl": 1, "on horseback in the forest": 0.5 },
      remove: { "A brunette girl": 1, "walking down the street": 1 },
    });
  });

  await t.test("graphToPrompt sends the JSON string, and nothing of the DOM widget", async () => {
    const prompt = await page.evaluate(async (id) => {
      const p = await window.app.graphToPrompt();
      return { inputs: p.output[String(id)].inputs, node: p.workflow.nodes.find((n) => n.id === id) };
    }, ids.concepts);
    assert.equal(prompt.inputs.mode, "edit");
    assert.deepEqual(Object.keys(prompt.inputs).sort(), ["concepts", "mode", "ssae"]);
    const sent = JSON.parse(prompt.inputs.concepts);
    assert.deepEqual(sent.add, { "A blond girl": 1, "on horseback in the forest": 0.5 });
    assert.deepEqual(sent.remove, { "A brunette girl": 1, "walking down the street": 1 });
    assert.deepEqual(prompt.node.widgets_values, ["edit", prompt.inputs.concepts]);
  });

  await t.test("a screenshot of the widget", async () => {
    await page.click(`${row("and a hat")} button[data-set="add"]`); // leaves a suggestion on view
    await page.click('.ssae-cat[data-category="situration"] > summary'); // folded: its header counts show
    await page.locator(".ssae-body").evaluate((b) => { b.scrollTop = 0; });
    const clip = await page.evaluate(async () => {
      const { app, LiteGraph } = window;
      await app.extensionManager?.setting?.set?.("Comfy.Minimap.Visible", false)?.catch?.(() => {});
      app.canvas.deselectAll?.();
      app.graph.setDirtyCanvas(true, true);
      const box = app.canvas.canvas.getBoundingClientRect();
      const s = app.canvas.ds.scale;
      const rects = app.graph.nodes.map((n) => {
        const [x, y] = app.canvas.ds.convertOffsetToCanvas([n.pos[0], n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT]);
        return [box.left + x, box.top + y, box.left + x + n.size[0] * s, box.top + y + (n.size[1] + LiteGraph.NODE_TITLE_HEIGHT) * s];
      });
      const m = 16;
      const x0 = Math.max(0, Math.min(...rects.map((r) => r[0])) - m);
      const y0 = Math.max(0, Math.min(...rects.map((r) => r[1])) - m - 22); // the nodes' source badges
      const x1 = Math.min(innerWidth, Math.max(...rects.map((r) => r[2])) + m);
      const y1 = Math.min(innerHeight, Math.max(...rects.map((r) => r[3])) + m);
      return { x: x0, y: y0, width: x1 - x0, height: y1 - y0 };
    });
    await page.mouse.move(clip.x + 5, clip.y + clip.height - 5); // no hover highlight on a row
    await page.waitForTimeout(400);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, "widget.png"), clip });
    await page.click('.ssae-cat[data-category="situration"] > summary');
    await page.click(`${row("and a hat")} button[data-set="off"]`);
  });

  await t.test("a saved workflow restores the toggles exactly", async () => {
    const before = await conceptsValue(ids.concepts);
    const workflow = await page.evaluate(() => window.app.graph.serialize());
    await page.evaluate(async (wf) => {
      window.app.graph.clear();
      await window.app.loadGraphData(wf);
    }, workflow);
    await page.locator(row("A blond girl")).waitFor();
    assert.equal(await page.locator(".ssae-concepts").count(), 1, "the removed node's widget is gone");
    const id = await page.evaluate(() => window.app.graph.nodes.find((n) => n.type === "SSAEConceptVector").id);
    assert.equal(await conceptsValue(id), before);
    assert.equal(await rowState("A blond girl"), "add");
    assert.equal(await rowState("A brunette girl"), "remove");
    assert.equal(await rowState("on horseback in the forest"), "add");
    assert.equal(await rowState("walking down the street"), "remove");
    assert.equal(await rowState("with brown eyes"), "off");
    assert.equal(await page.locator(`${row("on horseback in the forest")} input[type="range"]`).inputValue(), "0.5");
    ids.concepts = id;
  });

  await t.test("concepts the SSAE lacks are shown as missing and kept", async () => {
    const workflow = await page.evaluate(() => window.app.graph.serialize());
    const node = workflow.nodes.find((n) => n.type === "SSAEConceptVector");
    node.widgets_values[1] = JSON.stringify({ mode: "edit", add: { blond: 1, "A purple dragon": 0.7 }, remove: { brunette: 1 } });
    await page.evaluate(async (wf) => {
      window.app.graph.clear();
      await window.app.loadGraphData(wf);
    }, workflow);
    const missing = page.locator('.ssae-row[data-missing="true"][data-concept="A purple dragon"]');
    await missing.waitFor();
    assert.match(await missing.innerText(), /missing/);
    assert.equal(await missing.locator(".ssae-weight").innerText(), "0.7");
    assert.equal(await rowState("A blond girl"), "add"); // a fragment, shown on its concept
    assert.equal(await rowState("A brunette girl"), "remove");
    const id = await page.evaluate(() => window.app.graph.nodes.find((n) => n.type === "SSAEConceptVector").id);
    await page.click(`${row("and a baseball cap")} button[data-set="add"]`);
    const value = JSON.parse(await conceptsValue(id));
    assert.deepEqual(value.add, { "A blond girl": 1, "A purple dragon": 0.7, "and a baseball cap": 1 });
    assert.deepEqual(value.remove, { "A brunette girl": 1 });
    ids.concepts = id;
  });

  await t.test("a garbage value is reported, and the mode combo is followed", async () => {
    await page.evaluate((id) => {
      const node = window.app.graph.getNodeById(id);
      const w = node.widgets.find((x) => x.name === "concepts");
      w.value = "{oops";
      window.app.graph.setDirtyCanvas(true, true);
    }, ids.concepts);
    await page.waitForFunction(() => /cannot be read/.test(document.querySelector(".ssae-msg-warn")?.innerText ?? ""));
    assert.match(await page.locator(".ssae-msg-warn").innerText(), /not valid JSON/);
    await page.click(`${row("A blond girl")} button[data-set="add"]`);
    assert.equal(await page.locator(".ssae-msg-warn").count(), 0);
    await page.evaluate((id) => {
      const w = window.app.graph.getNodeById(id).widgets.find((x) => x.name === "mode");
      w.value = "compose";
      w.callback?.("compose");
    }, ids.concepts);
    assert.deepEqual(JSON.parse(await conceptsValue(ids.concepts)), { mode: "compose", add: { "A blond girl": 1 }, remove: {} });
    assert.equal(await page.locator(".ssae-hint").count(), 0, "compose mode replaces nothing");
  });

  await t.test("removing the node removes its widget", async () => {
    await page.evaluate((id) => window.app.graph.remove(window.app.graph.getNodeById(id)), ids.concepts);
    await page.waitForFunction(() => !document.querySelector(".ssae-concepts"));
    await page.waitForTimeout(200);
    assert.equal(await page.locator(".ssae-concepts").count(), 0);
  });

  await t.test("no errors from the extension's files", () => {
    assert.deepEqual(pageErrors, []);
  });
});

test("an SSAE node shows what it reports when it runs, and keeps it out of the workflow", { skip: reason ?? false,
  timeout: 300_000 }, async () => {
  await page.evaluate(async (good) => {
    const { app, LiteGraph } = window;
    app.graph.clear();
    const loader = LiteGraph.createNode("SSAELoader");
    loader.pos = [40, 60];
    app.graph.add(loader);
    loader.widgets.find((w) => w.name === "ssae_name").value = good;
    const save = LiteGraph.createNode("SSAESave");
    save.pos = [420, 60];
    app.graph.add(save);
    save.widgets.find((w) => w.name === "filename").value = "report_copy";
    loader.connect(0, save, 0);
    await app.queuePrompt(0, 1);
  }, GOOD);
  const report = page.locator(".ssae-report");
  await page.waitForFunction(() => document.querySelectorAll(".ssae-report").length === 2, null, { timeout: 120_000 });
  const texts = await report.allInnerTexts();
  assert.ok(texts.some((t) => /site: conditioning/.test(t) && /hair: A blond girl, A brunette girl/.test(t)), texts.join("\n"));
  assert.ok(texts.some((t) => /saved report_copy\.safetensors/.test(t)), texts.join("\n"));
  await page.screenshot({ path: path.join(ARTIFACTS, "report.png") });
  const saved = await page.evaluate(async () => {
    const { app } = window;
    const loader = app.graph._nodes.find((n) => n.type === "SSAELoader");
    return { values: loader.serialize().widgets_values, prompt: (await app.graphToPrompt()).output };
  });
  assert.deepEqual(saved.values, [GOOD], "the report is not a widget value of the workflow");
  assert.ok(Object.values(saved.prompt).every((n) => !("ssae_report" in n.inputs)), "nor an input of the prompt");
});

test("example workflows load as written", { skip: reason ?? false, timeout: 300_000 }, async () => {
  // Each example workflow, loaded by the front end, turned into the prompt that Run would send; the pytest
  // wrapper compares these with the graphs scripts/build_example_workflows.py declares.
  const dir = path.join(ROOT, "example_workflows");
  const prompts = {};
  for (const file of readdirSync(dir).filter((f) => f.endsWith(".json")).sort()) {
    const wf = JSON.parse(readFileSync(path.join(dir, file), "utf8"));
    prompts[file.replace(/\.json$/, "")] = await page.evaluate(async (wf) => {
      await window.app.loadGraphData(wf);
      return (await window.app.graphToPrompt()).output;
    }, wf);
    await page.keyboard.press("Escape"); // the missing-models dialog: the examples name SD3.5 files
  }
  mkdirSync(ARTIFACTS, { recursive: true });
  writeFileSync(path.join(ARTIFACTS, "workflow_prompts.json"), JSON.stringify(prompts, null, 1));
  assert.ok(Object.keys(prompts).length > 0);
});
