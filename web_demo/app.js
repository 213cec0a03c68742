// The page: load and check the bundle, run the image encoder with onnxruntime-web (WebGPU when the
// browser has a hardware GPU adapter, else WASM), search the index, show the top-k texts.
// Test hook: window.ammkd (state, runGolden, runGoldenImage, embedTensor, search).

import { Bundle, BundleError, FileSource, UrlSource, onnxTarget } from "./bundle.js";
import { ImageInputError, preprocessFile, resizePlan } from "./preprocess.js";
import { Gallery, findText } from "./gallery.js";
import { TextIndex } from "./search.js";

const params = new URLSearchParams(location.search);
const BUNDLE_URL = new URL(params.get("bundle") || "bundle/", location.href);
const $ = (id) => document.getElementById(id);

const state = {
  ready: false,
  error: null,
  status: "loading",
  threads: 1,
  crossOriginIsolated: globalThis.crossOriginIsolated === true,
  ep: null, // the execution provider the encoder runs on: "webgpu" or "wasm"
  epNote: "", // why it is not WebGPU, when it is not
  scan: null, // the index scan: "wasm-simd" (WebAssembly SIMD) or "js" (?scan=auto|wasm|js)
  scanNote: "", // why it is not WebAssembly SIMD, when it is not
  scanKernel: null, // "relaxed-madd" (relaxed SIMD fused multiply-add), "mul-add" or "js"
  source: "", // where the bundle comes from: the server's /bundle/ or a folder the user opened
  loads: 0, // bundles loaded (or refused) so far: a new folder starts load number loads + 1
};
const timings = {};
let ort, bundle, target, session, index, gallery;

/**
 * ?ep=auto (default): WebGPU when the browser offers a hardware adapter, else WASM (a software
 * adapter such as SwiftShader is slower than WASM). ?ep=webgpu: WebGPU on any adapter.
 * ?ep=wasm: WASM only. Returns {ep, note}: note says why WebGPU is not used.
 */
async function chooseProvider(asked) {
  if (!["auto", "webgpu", "wasm"].includes(asked)) throw new Error(`?ep=${asked}: use auto, webgpu or wasm`);
  if (asked === "wasm") return { ep: "wasm", note: "WASM asked for (?ep=wasm)" };
  if (!navigator.gpu) return { ep: "wasm", note: "this browser has no WebGPU" };
  let adapter;
  try {
    adapter = await navigator.gpu.requestAdapter();
  } catch (e) {
    return { ep: "wasm", note: `WebGPU adapter request failed (${e.message})` };
  }
  if (!adapter) return { ep: "wasm", note: "WebGPU offers no adapter here" };
  const info = adapter.info || {};
  const software = info.isFallbackAdapter || adapter.isFallbackAdapter || info.architecture === "swiftshader";
  if (software && asked === "auto") return { ep: "wasm", note: "WebGPU adapter is software (slower than WASM); ?ep=webgpu forces it" };
  return { ep: "webgpu", note: "", adapter: [info.vendor, info.architecture].filter(Boolean).join(" ") };
}

function setStatus(text, kind = "info") {
  state.status = text;
  const el = $("status");
  el.textContent = text;
  el.className = `status ${kind}`;
}

function showTimings() {
  const parts = ["load", "preprocess", "encode", "search"]
    .filter((k) => k in timings)
    .map((k) => `${k} ${timings[k].toFixed(1)} ms`);
  $("timings").textContent = parts.join(" · ");
}

function showHits(hits, caption) {
  const list = $("results");
  list.replaceChildren();
  for (const h of hits) {
    const li = document.createElement("li");
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = h.score.toFixed(4);
    const text = document.createElement("span");
    text.textContent = h.text;
    li.append(score, text);
    list.append(li);
  }
  $("results-caption").textContent = caption;
}

function k() {
  const v = parseInt($("k").value, 10);
  return Number.isInteger(v) && v > 0 ? Math.min(v, 100) : 5;
}

/** Input tensor (Float32Array, 1x3xSxS) -> L2-normalised embedding (Float32Array, D). */
async function embedTensor(tensor) {
  const s = bundle.manifest.input.size;
  if (tensor.length !== 3 * s * s) throw new Error(`input has ${tensor.length} values, expected ${3 * s * s}`);
  const feeds = { [target.input_name || session.inputNames[0]]: new ort.Tensor("float32", tensor, [1, 3, s, s]) };
  const t0 = performance.now();
  const out = await session.run(feeds);
  timings.encode = performance.now() - t0;
  const emb = out[target.output_name || session.outputNames[0]].data;
  return Float32Array.from(emb);
}

function search(embedding, kk = 5) {
  const t0 = performance.now();
  const hits = index.search(embedding, kk);
  timings.search = performance.now() - t0;
  return hits;
}

async function runGolden(i = 0) {
  if (!state.ready) throw new Error(`not ready: ${state.error || state.status}`);
  const golden = bundle.manifest.golden || [];
  if (!(i >= 0 && i < golden.length)) throw new Error(`golden[${i}]: the bundle has ${golden.length} golden inputs`);
  const input = await bundle.readFloat32(golden[i].input);
  const embedding = await embedTensor(input);
  const hits = search(embedding, k());
  showTimings();
  showHits(hits, `golden input ${i} (${golden[i].input.path})`);
  return { embedding: Array.from(embedding), topk: hits, timings: { ...timings }, scan: index.lastPath };
}

/**
 * Golden image i (its PNG, hash-checked) through the page's own preprocessing (decode, resize,
 * centre crop on a canvas), the encoder and the search: the tensor, the geometry it used, the
 * embedding and the top-k, for the test to compare with the golden input and embedding.
 */
async function runGoldenImage(i = 0) {
  if (!state.ready) throw new Error(`not ready: ${state.error || state.status}`);
  const golden = bundle.manifest.golden || [];
  if (!(i >= 0 && i < golden.length)) throw new Error(`golden[${i}]: the bundle has ${golden.length} golden images`);
  const bytes = await bundle.readBytes(golden[i].image);
  const file = new File([bytes], golden[i].image.path.split("/").pop(), { type: "image/png" });
  const { tensor, width, height } = await preprocessFile(file, bundle.manifest.input, document.createElement("canvas"));
  const embedding = await embedTensor(tensor);
  const hits = search(embedding, k());
  const plan = resizePlan(width, height, bundle.manifest.input.size);
  return { width, height, plan, tensor: Array.from(tensor), embedding: Array.from(embedding), topk: hits };
}

async function runFile(file) {
  if (!state.ready) return;
  $("message").textContent = "";
  try {
    const t0 = performance.now();
    const { tensor, width, height } = await preprocessFile(file, bundle.manifest.input, $("crop"));
    timings.preprocess = performance.now() - t0;
    $("preview").src = URL.createObjectURL(file);
    const embedding = await embedTensor(tensor);
    const hits = search(embedding, k());
    showTimings();
    showHits(hits, `${file.name || "photo"} (${width}x${height})`);
    return hits;
  } catch (e) {
    const msg = e instanceof ImageInputError ? e.message : `${file.name || "photo"}: ${e.message}`;
    $("message").textContent = msg;
    $("results").replaceChildren();
    $("results-caption").textContent = "";
    $("preview").removeAttribute("src");
    $("crop").getContext("2d").clearRect(0, 0, $("crop").width, $("crop").height);
    state.lastError = msg;
    return null;
  }
}

/**
 * The encoder's session on `choice.ep` -> {session, ep, note}; a WebGPU session that cannot be
 * created falls back to WASM, and the note says why.
 */
async function createSession(modelBytes, choice) {
  const options = { graphOptimizationLevel: "all" };
  if (target.session_config) options.extra = { ...target.session_config }; // e.g. session.disable_quant_qdq
  let note = choice.note;
  if (choice.ep === "webgpu") {
    try {
      const gpu = await ort.InferenceSession.create(modelBytes, { ...options, executionProviders: ["webgpu", "wasm"] });
      return { session: gpu, ep: "webgpu", note };
    } catch (e) {
      note = `WebGPU session failed (${e.message || e}); running on WASM`;
    }
  }
  return { session: await ort.InferenceSession.create(modelBytes, { ...options, executionProviders: ["wasm"] }), ep: "wasm", note };
}

/** Runtime settings are fixed by the first load: onnxruntime-web is configured once per page. */
let choice = null;

async function startRuntime() {
  if (choice) return;
  choice = await chooseProvider(params.get("ep") || "auto");
  // the WebGPU build of onnxruntime-web also runs WASM; the plain WASM build is smaller
  ort = await import(choice.ep === "webgpu" ? "./ort/ort.webgpu.min.mjs" : "./ort/ort.wasm.min.mjs");
  ort.env.wasm.wasmPaths = new URL("ort/", location.href).href; // served locally, never a CDN
  const asked = parseInt(params.get("threads") || "", 10); // ?threads=N pins the WASM threads (benchmarks)
  const most = state.crossOriginIsolated ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
  state.threads = Number.isInteger(asked) && asked > 0 ? Math.min(asked, most) : most;
  ort.env.wasm.numThreads = state.threads;
}

/** Forget the current bundle (a new one is being opened): controls off, results and session gone. */
async function unload() {
  state.ready = false;
  state.error = null;
  state.scan = null;
  state.scanNote = "";
  for (const el of document.querySelectorAll("#file, #camera, #k")) el.disabled = true;
  for (const id of ["results", "photos"]) $(id).replaceChildren();
  for (const id of ["results-caption", "message", "gallery-message", "timings", "bundle-info"]) $(id).textContent = "";
  $("gallery").hidden = true;
  for (const key of Object.keys(timings)) delete timings[key];
  if (session) await session.release().catch(() => {});
  session = index = gallery = bundle = null;
}

async function load(source) {
  const t0 = performance.now();
  await startRuntime();
  state.source = source.label;
  setStatus(`loading bundle from ${source.label}…`);
  bundle = await Bundle.open(source);
  const m = bundle.manifest;
  target = onnxTarget(m);
  const [modelBytes, vectorBytes, texts] = await Promise.all([
    bundle.readBytes(target.file),
    bundle.readBytes(m.index.vectors),
    bundle.readJson(m.index.texts),
  ]);
  if (!Array.isArray(texts) || texts.length !== m.index.count) {
    throw new BundleError(`${m.index.texts.path}: expected a list of ${m.index.count} texts`);
  }
  index = await TextIndex.create(vectorBytes, texts, m.index.count, m.index.dim, { scan: params.get("scan") || "auto" });
  state.scan = index.path;
  state.scanNote = index.note;
  state.scanKernel = index.kernel;
  setStatus(`starting the encoder (${choice.ep === "webgpu" ? "WebGPU" : "WASM"})…`);
  const created = await createSession(new Uint8Array(modelBytes), choice);
  session = created.session;
  state.ep = created.ep;
  state.epNote = created.note;
  timings.load = performance.now() - t0;
  const runtime =
    state.ep === "webgpu"
      ? `WebGPU${choice.adapter ? " (" + choice.adapter + ")" : ""}`
      : `WASM, ${state.threads} thread(s)${state.crossOriginIsolated ? "" : " (not cross-origin isolated)"}`;
  const model = m.model ? m.model.name || m.model.student || "" : "";
  $("bundle-info").textContent =
    `${model ? model + " · " : ""}${target.file.path} (${(target.file.bytes / 1e6).toFixed(1)} MB, ${target.quantization}) · ` +
    `${m.index.count} texts × ${m.index.dim} · input ${m.input.size}px · ${runtime}` +
    (state.epNote ? ` · ${state.epNote}` : "") +
    ` · search: ${state.scan === "wasm-simd" ? "WASM SIMD" : "JS"}${state.scanNote ? " (" + state.scanNote + ")" : ""}`;
  gallery = await Gallery.open(bundle);
  if (gallery) {
    $("gallery").hidden = false;
    $("gallery-info").textContent = `${gallery.count} photos`;
  }
  showTimings();
  state.ready = true;
  setStatus("ready: choose or drop a photo", "ok");
  for (const el of document.querySelectorAll("#file, #camera, #k")) el.disabled = false;
}

/** Open a bundle (the server's, or a folder the user chose): refusals are shown, never thrown. */
async function openBundle(source) {
  await unload();
  try {
    await load(source);
  } catch (e) {
    state.error = e instanceof BundleError ? e.message : `${e.name || "Error"}: ${e.message || e}`;
    setStatus(`refused: ${state.error}`, "error");
    console.error(e);
  } finally {
    state.loads += 1;
  }
}

function wire() {
  $("gallery-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    searchGallery($("gallery-text").value);
  });
  for (const id of ["file", "camera"]) {
    $(id).addEventListener("change", (ev) => {
      const f = ev.target.files && ev.target.files[0];
      if (f) runFile(f);
      ev.target.value = "";
    });
  }
  const drop = $("drop");
  drop.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    const item = ev.dataTransfer && ev.dataTransfer.items && ev.dataTransfer.items[0];
    const entry = item && item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
    if (entry && entry.isDirectory) return openBundle(await FileSource.fromDirectoryEntry(entry)); // a bundle folder
    const f = ev.dataTransfer && ev.dataTransfer.files[0];
    if (f) runFile(f);
  });
  $("folder").addEventListener("change", (ev) => {
    if (ev.target.files && ev.target.files.length) openBundle(FileSource.fromFileList(ev.target.files));
    ev.target.value = "";
  });
}

/** Text -> top-k photos of the gallery: {text, textId, hits} or {error, suggestions}. */
function searchGallery(text, kk = k()) {
  if (!gallery) return { error: "this bundle has no gallery (make one with ammkd search --gallery DIR --text ...)" };
  const found = findText(index.texts, text.trim());
  const list = $("photos");
  list.replaceChildren();
  if (found.id < 0) {
    const msg = `"${text}" is not one of the bundle's texts; nearest: ${found.suggestions.join(" | ")}`;
    $("gallery-message").textContent = msg;
    return { error: msg, suggestions: found.suggestions };
  }
  $("gallery-message").textContent = "";
  const query = index.vector(found.id);
  const hits = gallery.search(query, kk);
  for (const h of hits) {
    const li = document.createElement("li");
    const cap = document.createElement("span");
    cap.textContent = `${h.score.toFixed(3)} ${h.image}`;
    if (h.url) {
      const img = document.createElement("img");
      img.src = h.url;
      img.alt = h.image;
      img.width = 96;
      li.append(img);
    }
    li.append(cap);
    list.append(li);
  }
  return { text: index.texts[found.id], textId: found.id, hits };
}

/** Timing loop for benchmarks: golden input i, `warmup` untimed then `runs` timed encode + search. */
async function benchGolden(i = 0, runs = 30, warmup = 5) {
  if (!state.ready) throw new Error(`not ready: ${state.error || state.status}`);
  const input = await bundle.readFloat32(bundle.manifest.golden[i].input);
  const rows = [];
  for (let r = 0; r < warmup + runs; r++) {
    const embedding = await embedTensor(input);
    search(embedding, 10);
    if (r >= warmup) rows.push({ encode: timings.encode, search: timings.search });
  }
  return { threads: state.threads, ep: state.ep, scan: index.lastPath, kernel: index.kernel, candidates: index.wasm ? index.wasm.candidates : null, load: timings.load, rows };
}

window.ammkd = { state, timings, runGolden, runGoldenImage, benchGolden, searchGallery, runFile, embedTensor: async (t) => Array.from(await embedTensor(t)), search };
wire();
openBundle(new UrlSource(BUNDLE_URL));
