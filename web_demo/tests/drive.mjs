// Drive the demo page in headless Chromium and print one JSON object (used by tests/web).
//
//   node web_demo/tests/drive.mjs URL [--golden I]... [--golden-image I]... [--upload FILE]... [--bench RUNS] [--gallery-text T]... [--screenshot PNG]
//                                [--open-folder DIR]... [--text-queries JSON]... [--text-bench JSON]... [--text-variant Q]...
//                                [--chromium PATH] [--timeout MS] [--webgpu] [--no-wasm-simd]
//
// --webgpu launches Chromium with WebGPU enabled (headless, that is SwiftShader's software
// adapter: the page needs ?ep=webgpu to use it); without it the GPU is disabled.
// --no-wasm-simd makes the page's index scan module fail WebAssembly.validate, as in a browser
// without WebAssembly SIMD (onnxruntime-web itself still runs: it needs SIMD).
//
// --text-queries JSON: a file {"queries": [...], "k": K}: each query typed into the page's text box
// (top-k set to K) and submitted; reports the page's result (token ids, embedding, hits, photos,
// timings) and what the page shows. --text-bench JSON: {"queries": [...], "runs": R, "warmup": W},
// window.ammkd.benchText. --text-variant Q: picks text encoder Q in the page's select.
// Text actions first wait for the text side to finish loading; the report's `text` is the text
// side's state at the end (state.text, the info line and the message).
//
// Waits until window.ammkd.state is ready or has an error, then runs the actions in order.

import { readFileSync } from "node:fs";

import { chromium } from "playwright-core";

const args = process.argv.slice(2);
const url = args.shift();
const actions = [];
let executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
let timeout = 90000;
let launchArgs = ["--no-sandbox", "--disable-gpu"];
let noWasmSimd = false;
while (args.length) {
  const flag = args.shift();
  if (flag === "--webgpu") {
    launchArgs = ["--no-sandbox", "--enable-unsafe-webgpu"];
    continue;
  }
  if (flag === "--no-wasm-simd") {
    noWasmSimd = true;
    continue;
  }
  const value = args.shift();
  if (flag === "--golden") actions.push({ golden: parseInt(value, 10) });
  else if (flag === "--golden-image") actions.push({ goldenImage: parseInt(value, 10) });
  else if (flag === "--upload") actions.push({ upload: value });
  else if (flag === "--bench") actions.push({ bench: parseInt(value, 10) });
  else if (flag === "--gallery-text") actions.push({ galleryText: value });
  else if (flag === "--screenshot") actions.push({ screenshot: value });
  else if (flag === "--open-folder") actions.push({ openFolder: value });
  else if (flag === "--text-queries") actions.push({ textQueries: JSON.parse(readFileSync(value, "utf8")) });
  else if (flag === "--text-bench") actions.push({ textBench: JSON.parse(readFileSync(value, "utf8")) });
  else if (flag === "--text-variant") actions.push({ textVariant: value });
  else if (flag === "--chromium") executablePath = value;
  else if (flag === "--timeout") timeout = parseInt(value, 10);
  else throw new Error(`unknown flag ${flag}`);
}

const result = {
  url,
  console: [],
  pageErrors: [],
  golden: [],
  goldenImages: [],
  uploads: [],
  bench: [],
  gallery: [],
  folders: [],
  textQueries: [],
  textBench: [],
};
const browser = await chromium.launch({ executablePath, headless: true, args: launchArgs });
try {
  const page = await browser.newPage({ viewport: { width: 900, height: 640 } });
  page.on("console", (m) => result.console.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => result.pageErrors.push(String(e)));
  if (noWasmSimd) {
    await page.addInitScript(() => {
      // the scan module is the one that exports "scan": refuse it, as an engine without SIMD would
      const validate = WebAssembly.validate;
      const name = [4, 0x73, 0x63, 0x61, 0x6e]; // "scan", length-prefixed
      WebAssembly.validate = (bytes, ...rest) => {
        const b = new Uint8Array(bytes.buffer || bytes, bytes.byteOffset || 0, bytes.byteLength);
        for (let i = 0; i + name.length <= b.length; i++) if (name.every((v, j) => b[i + j] === v)) return false;
        return validate.call(WebAssembly, bytes, ...rest);
      };
    });
  }
  const t0 = Date.now();
  await page.goto(url);
  await page.waitForFunction(() => window.ammkd && (window.ammkd.state.ready || window.ammkd.state.error), null, {
    timeout,
  });
  result.loadMs = Date.now() - t0;
  result.state = await page.evaluate(() => ({ ...window.ammkd.state }));
  result.statusText = await page.textContent("#status");
  result.bundleInfo = await page.textContent("#bundle-info");
  // the text side loads after the image side: wait until it is ready, refused, or absent
  const textSettled = () =>
    page.waitForFunction(() => window.ammkd.state.text && window.ammkd.state.text.status !== "loading", null, { timeout });
  for (const a of actions) {
    const ready = await page.evaluate(() => window.ammkd.state.ready);
    if (!ready && !("screenshot" in a) && !("openFolder" in a)) continue; // a refused bundle: nothing to run
    if ("openFolder" in a) {
      // the page's "Open a bundle folder" input (webkitdirectory), as a user picking the folder
      const before = await page.evaluate(() => window.ammkd.state.loads);
      await page.setInputFiles("#folder", a.openFolder);
      await page.waitForFunction((n) => window.ammkd.state.loads > n, before, { timeout });
      result.folders.push({
        folder: a.openFolder,
        state: await page.evaluate(() => ({ ...window.ammkd.state })),
        statusText: await page.textContent("#status"),
      });
    } else if ("textVariant" in a) {
      await textSettled();
      await page.selectOption("#text-variant", a.textVariant);
      await page.waitForFunction((q) => window.ammkd.state.text.quantization === q, a.textVariant, { timeout });
      await textSettled();
    } else if ("textQueries" in a) {
      await textSettled();
      if (a.textQueries.k) await page.fill("#k", String(a.textQueries.k));
      for (const query of a.textQueries.queries) {
        if (await page.isDisabled("#text-query")) {
          result.textQueries.push({ query, disabled: true, message: await page.textContent("#text-message") });
          continue;
        }
        const before = await page.evaluate(() => window.ammkd.state.textSearches);
        await page.fill("#text-query", query);
        await page.click("#text-submit");
        await page.waitForFunction((n) => window.ammkd.state.textSearches > n, before, { timeout });
        result.textQueries.push({
          query,
          result: await page.evaluate(() => window.ammkd.lastText()),
          message: await page.textContent("#text-message"),
          results: await page.$$eval("#text-results li", (lis) => lis.map((li) => li.textContent)),
          photos: await page.$$eval("#text-photos li", (lis) => lis.map((li) => li.textContent)),
          timings: await page.textContent("#text-timings"),
        });
      }
    } else if ("textBench" in a) {
      await textSettled();
      const b = a.textBench;
      result.textBench.push(await page.evaluate((x) => window.ammkd.benchText(x.queries, x.runs, x.warmup), b));
    } else if ("galleryText" in a) {
      result.gallery.push(await page.evaluate((t) => window.ammkd.searchGallery(t, 5), a.galleryText));
    } else if ("bench" in a) {
      result.bench.push(await page.evaluate((n) => window.ammkd.benchGolden(0, n, 5), a.bench));
    } else if ("golden" in a) {
      result.golden.push(await page.evaluate((i) => window.ammkd.runGolden(i), a.golden));
    } else if ("goldenImage" in a) {
      result.goldenImages.push(await page.evaluate((i) => window.ammkd.runGoldenImage(i), a.goldenImage));
    } else if ("upload" in a) {
      await page.evaluate(() => {
        window.ammkd.state.lastError = null;
        document.getElementById("results").replaceChildren();
      });
      await page.setInputFiles("#file", a.upload);
      await page.waitForFunction(
        () => window.ammkd.state.lastError || document.querySelectorAll("#results li").length > 0,
        null,
        { timeout },
      );
      result.uploads.push({
        file: a.upload,
        message: await page.textContent("#message"),
        results: await page.$$eval("#results li", (lis) => lis.map((li) => li.textContent)),
        timings: await page.textContent("#timings"),
        caption: await page.textContent("#results-caption"),
      });
    } else if ("screenshot" in a) {
      await page.screenshot({ path: a.screenshot, fullPage: true });
    }
  }
  result.crossOriginIsolated = await page.evaluate(() => globalThis.crossOriginIsolated);
  if (await page.evaluate(() => window.ammkd.state.ready)) await textSettled();
  result.text = {
    state: await page.evaluate(() => window.ammkd.state.text),
    info: await page.textContent("#text-info"),
    message: await page.textContent("#text-message"),
    hidden: await page.evaluate(() => document.getElementById("text-search").hidden),
    galleryHidden: await page.evaluate(() => document.getElementById("gallery").hidden),
  };
} catch (e) {
  result.driverError = String(e && e.stack ? e.stack : e);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
