// Reading an ammkd bundle over HTTP: the manifest, then each file it names, checked (size and
// SHA-256) before its bytes are used. A missing, tampered or malformed bundle is refused with a
// message that names the file, as the Python reader (export/bundle_format.py) does.

import { sha256Hex } from "./sha256.js";

export const FORMAT_NAME = "ammkd-bundle";
export const FORMAT_VERSION = 1;
const DTYPE_BYTES = { float16: 2, float32: 4, int32: 4, int64: 8, uint8: 1 };

export class BundleError extends Error {
  constructor(message) {
    super(message);
    this.name = "BundleError";
  }
}

function need(cond, where, what) {
  if (!cond) throw new BundleError(`${where}: malformed manifest: ${what}`);
}

function checkEntry(entry, where, label) {
  need(entry && typeof entry === "object", where, `${label} is not a file entry`);
  need(typeof entry.path === "string" && entry.path.length > 0, where, `${label} has no path`);
  const parts = entry.path.split("/");
  need(
    !entry.path.startsWith("/") && !entry.path.includes("\\") && !parts.some((p) => p === "" || p === "." || p === ".."),
    where,
    `${label} path ${JSON.stringify(entry.path)} points outside the bundle`,
  );
  need(/^[0-9a-f]{64}$/.test(entry.sha256 || ""), where, `${label} has no SHA-256`);
  need(Number.isInteger(entry.bytes) && entry.bytes >= 0, where, `${label} has no byte size`);
  if (entry.dtype !== undefined) {
    need(entry.dtype in DTYPE_BYTES, where, `${label} has unknown dtype ${entry.dtype}`);
    need(Array.isArray(entry.shape) && entry.shape.every((d) => Number.isInteger(d) && d >= 0), where, `${label} has no shape`);
    const n = entry.shape.reduce((a, b) => a * b, 1);
    need(n * DTYPE_BYTES[entry.dtype] === entry.bytes, where, `${label} shape ${JSON.stringify(entry.shape)} does not match ${entry.bytes} bytes`);
  }
}

/** Check what the page relies on (the Python side also validates the JSON schema). */
export function validateManifest(m, where = "manifest.json") {
  need(m && typeof m === "object" && !Array.isArray(m), where, "not a JSON object");
  if (m.format !== FORMAT_NAME) throw new BundleError(`${where}: not an ${FORMAT_NAME} manifest`);
  if (m.format_version !== FORMAT_VERSION) {
    throw new BundleError(
      `${where}: format_version ${JSON.stringify(m.format_version)} is not supported by this page (it reads version ${FORMAT_VERSION})`,
    );
  }
  const inp = m.input;
  need(inp && Number.isInteger(inp.size) && inp.size > 0, where, "input.size");
  need(inp.resize === "shortest_side" && inp.crop === "center", where, `unsupported input resize=${inp.resize} crop=${inp.crop}`);
  need(inp.layout === "NCHW" && inp.color === "RGB" && inp.dtype === "float32", where, "input must be NCHW RGB float32");
  need(Array.isArray(inp.value_range) && inp.value_range.length === 2, where, "input.value_range");
  need(Array.isArray(inp.mean) && inp.mean.length === 3 && Array.isArray(inp.std) && inp.std.length === 3, where, "input mean/std");
  need(m.output && Number.isInteger(m.output.dim), where, "output.dim");
  const idx = m.index;
  need(idx && Number.isInteger(idx.count) && Number.isInteger(idx.dim), where, "index count/dim");
  checkEntry(idx.vectors, where, "index.vectors");
  checkEntry(idx.texts, where, "index.texts");
  need(idx.vectors.dtype === "float16", where, "index.vectors must be float16");
  need(
    idx.vectors.shape.length === 2 && idx.vectors.shape[0] === idx.count && idx.vectors.shape[1] === idx.dim && idx.dim === m.output.dim,
    where,
    `index vectors ${JSON.stringify(idx.vectors.shape)} do not match count ${idx.count} x dim ${idx.dim} (encoder output dim ${m.output.dim})`,
  );
  need(Array.isArray(m.targets), where, "targets");
  need(Array.isArray(m.golden || []), where, "golden");
  (m.golden || []).forEach((g, i) => {
    checkEntry(g.input, where, `golden[${i}].input`);
    if (g.embedding) checkEntry(g.embedding, where, `golden[${i}].embedding`);
  });
}

/** The first ONNX image encoder of the bundle (the unquantized one comes first), as in Python. */
export function onnxTarget(m, where = "manifest.json") {
  const t = m.targets.find((t) => t.role === "image_encoder" && t.format === "onnx" && t.file);
  if (!t) {
    const have = m.targets.map((t) => `${t.role}/${t.format}`).join(", ") || "none";
    throw new BundleError(`${where}: no image_encoder target in format onnx, which this page runs (has: ${have})`);
  }
  checkEntry(t.file, where, `target ${t.file && t.file.path}`);
  return t;
}

/** A bundle served over HTTP: files fetched relative to `base` (a URL ending with /). */
export class UrlSource {
  constructor(base) {
    this.base = base;
    this.label = new URL(base).pathname;
    this.servesPhotos = true; // `ammkd serve` serves the gallery's photos as photos/<row>
  }

  /** path -> ArrayBuffer, or null when the server has no such file. */
  async get(path) {
    let resp;
    try {
      resp = await fetch(new URL(path, this.base), { cache: "no-cache" });
    } catch (e) {
      throw new BundleError(`${path}: cannot be fetched (${e.message})`);
    }
    if (resp.status === 404) return null;
    if (!resp.ok) throw new BundleError(`${path}: cannot be fetched (HTTP ${resp.status})`);
    return resp.arrayBuffer();
  }

  missing(path) {
    return `${path}: missing from the bundle (HTTP 404)`;
  }
}

/** A bundle folder the user picked or dropped: File objects by path relative to the folder. */
export class FileSource {
  constructor(files, name) {
    this.files = files; // Map: "index/texts.json" -> File
    this.label = `${name}/ (your folder)`;
    this.servesPhotos = false; // the gallery's photos stay on the machine that embedded them
  }

  /** Files of a folder input (webkitdirectory): paths start with the folder's own name, which is dropped. */
  static fromFileList(list) {
    const files = new Map();
    let name = "folder";
    for (const f of list) {
      const parts = (f.webkitRelativePath || f.name).split("/");
      if (parts.length > 1) name = parts.shift();
      files.set(parts.join("/"), f);
    }
    return new FileSource(files, name);
  }

  /** A dropped directory (FileSystemDirectoryEntry), read recursively. */
  static async fromDirectoryEntry(dir) {
    const files = new Map();
    const readAll = (reader) =>
      new Promise((resolve, reject) => {
        const out = [];
        const next = () =>
          reader.readEntries((batch) => (batch.length ? (out.push(...batch), next()) : resolve(out)), reject);
        next();
      });
    const walk = async (entry, prefix) => {
      for (const child of await readAll(entry.createReader())) {
        if (child.isDirectory) await walk(child, `${prefix}${child.name}/`);
        else files.set(`${prefix}${child.name}`, await new Promise((res, rej) => child.file(res, rej)));
      }
    };
    await walk(dir, "");
    return new FileSource(files, dir.name);
  }

  async get(path) {
    const f = this.files.get(path);
    return f ? f.arrayBuffer() : null;
  }

  missing(path) {
    return `${path}: missing from the folder you opened (is it a bundle folder, made by ammkd export?)`;
  }
}

export class Bundle {
  constructor(source, manifest) {
    this.source = source;
    this.manifest = manifest;
  }

  /** Read and validate manifest.json from a UrlSource or FileSource. */
  static async open(source) {
    const raw = await source.get("manifest.json");
    if (raw === null) throw new BundleError(source.missing("manifest.json"));
    let manifest;
    try {
      manifest = JSON.parse(new TextDecoder().decode(raw));
    } catch (e) {
      throw new BundleError(`manifest.json: not valid JSON (${e.message}); the file is truncated or corrupt`);
    }
    validateManifest(manifest);
    return new Bundle(source, manifest);
  }

  /** A file's bytes (ArrayBuffer), checked against its entry (size, SHA-256) before they are returned. */
  async readBytes(entry) {
    const where = entry.path;
    const data = await this.source.get(entry.path);
    if (data === null) throw new BundleError(this.source.missing(where));
    if (data.byteLength !== entry.bytes) {
      throw new BundleError(`${where}: size ${data.byteLength} bytes, manifest says ${entry.bytes} (truncated or replaced)`);
    }
    if ((await sha256Hex(data)) !== entry.sha256) {
      throw new BundleError(`${where}: SHA-256 does not match the manifest (file was modified)`);
    }
    return data;
  }
  async readJson(entry) {
    const data = await this.readBytes(entry);
    try {
      return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(data));
    } catch (e) {
      throw new BundleError(`${entry.path}: not UTF-8 JSON (${e.message})`);
    }
  }

  /** A float32 array entry (little-endian; every browser this page runs on is little-endian). */
  async readFloat32(entry) {
    if (entry.dtype !== "float32") throw new BundleError(`${entry.path}: dtype ${entry.dtype}, expected float32`);
    return new Float32Array(await this.readBytes(entry));
  }
}
