// Screenshots of the example workflows as ComfyUI's front end draws them, for the README.
// usage: node scripts/screenshot_workflows.mjs http://127.0.0.1:8188   (a ComfyUI with this pack loaded)
import { chromium } from "playwright-core";
import { readdirSync, readFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const url = process.argv[2] ?? "http://127.0.0.1:8188";
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"],
});
const page = await browser.newPage({ viewport: { width: 2300, height: 1150 } });
await page.goto(url);
await page.waitForFunction(() => window.app?.graph && window.LiteGraph);
await page.waitForTimeout(1500);
await page.keyboard.press("Escape");
for (const file of readdirSync(join(root, "example_workflows")).filter((f) => f.endsWith(".json")).sort()) {
  const wf = JSON.parse(readFileSync(join(root, "example_workflows", file), "utf8"));
  await page.evaluate(async (wf) => window.app.loadGraphData(wf), wf);
  await page.waitForTimeout(800);
  await page.keyboard.press("Escape"); // the missing-models dialog: the examples name SD3.5 files
  await page.evaluate(() => {
    window.app.canvas.ds.scale = 0.75; // above the front end's low-detail threshold, so titles and widgets show
    window.app.canvas.ds.offset = [-20, 20];
    window.app.graph.setDirtyCanvas(true, true);
  });
  await page.waitForTimeout(500);
  const clip = await page.evaluate(() => { // the graph's extent on screen, so that the picture holds no empty canvas
    const { canvas, graph } = window.app;
    const box = canvas.canvas.getBoundingClientRect();
    const [ox, oy] = canvas.ds.offset;
    const s = canvas.ds.scale;
    const right = Math.max(...graph._nodes.map((n) => (n.pos[0] + n.size[0] + ox) * s));
    const bottom = Math.max(...graph._nodes.map((n) => (n.pos[1] + n.size[1] + oy) * s));
    return { x: 0, y: 0, width: Math.min(box.left + right + 40, innerWidth),
             height: Math.min(box.top + bottom + 40, innerHeight) };
  });
  const out = join(root, "docs", "img", file.replace(".json", ".png"));
  await page.screenshot({ path: out, clip });
  console.log("wrote", out);
}
await browser.close();
