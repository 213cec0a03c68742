// Reading an ammkd bundle over HTTP: the manifest, then each file it names, checked (size and
// SHA-256) before its bytes are used. A missing, tampered or malformed bundle is refused with a
// message that names the file, as the Python reader (bundle/format.py) does.
// Every manifest number that sizes an allocation is bounded (LIMITS) before anything is
// allocated, and a file's size (Content-Length, File.size, or the bytes as they stream in) is
// checked against the manifest before its body is held in memory or hashed.

import { sha256Hex } from "./sha256.js";

export const FORMAT_NAME = "ammkd-bundle";
export const FORMAT_VERSION = 1;
const DTYPE_BYTES = { float16: 2, float32: 4, int32: 4, int64: 8, uint8: 1 };

/**
 * Upper bounds on the manifest numbers the page allocates from: the maxima of
 * bundle/manifest.schema.json (a Python test reads them from this file and fails if they drift).
 * A manifest saying input size 100000 would otherwise ask for a 120 GB input tensor.
 */
export const LIMITS = Object.freeze({
  MAX_INPUT_SIZE: 4096, // input.size: side of the square input image
  MAX_DIM: 65536, // output.dim, index.dim (and a gallery's dim)
  MAX_COUNT: 50000000, // index.count (and a gallery's photos)
  MAX_RANK: 8, // dimensions of a file entry's shape
  MAX_EXTENT: 2147483647, // each of them
  MAX_BATCH: 4096, // a target's static batch
  MAX_FILE_BYTES: 2147483647, // the largest file the page reads into one ArrayBuffer
});

/** An integer manifest value at `key` in [min, max], else a BundleError saying which bound it breaks. */
export function bounded(value, where, key, min, max) {
  if (!Number.isSafeInteger(value)) {
    throw new BundleError(`${where}: invalid manifest at ${key}: ${JSON.stringify(value)} is not an integer`);
  }
  if (value < min) throw new BundleError(`${where}: invalid manifest at ${key}: ${value} is less than the minimum of ${min}`);
  if (value > max) throw new BundleError(`${where}: invalid manifest at ${key}: ${value} is greater than the maximum of ${max}`);
  return value;
}

function sizeError(path, actual, expected) {
  return new BundleError(`${path}: size ${actual} bytes, manifest says ${expected} (truncated or replaced)`);
}

export class BundleError extends Error {
  constructor(message) {
    super(message);
    this.name = "BundleError";
  }
}

function need(cond, where, what) {
  if (!cond) throw new BundleError(`${where}: malformed manifest: ${what}`);
}

/** A file entry's path, SHA-256, size and (for an array) dtype and shape, else a BundleError. */
export function checkEntry(entry, where, label, key = label.replace(/\[(\d+)\]/g, "/$1").replace(/\./g, "/")) {
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
  bounded(entry.bytes, where, `${key}/bytes`, 0, Number.MAX_SAFE_INTEGER);
  if (entry.dtype !== undefined) {
    need(entry.dtype in DTYPE_BYTES, where, `${label} has unknown dtype ${entry.dtype}`);
    need(Array.isArray(entry.shape), where, `${label} has no shape`);
    if (entry.shape.length > LIMITS.MAX_RANK) {
      throw new BundleError(
        `${where}: invalid manifest at ${key}/shape: ${entry.shape.length} dimensions, more than the maximum of ${LIMITS.MAX_RANK}`,
      );
    }
    entry.shape.forEach((d, i) => bounded(d, where, `${key}/shape/${i}`, 0, LIMITS.MAX_EXTENT));
    const n = entry.shape.reduce((a, b) => a * BigInt(b), 1n); // exact: no float rounding, no overflow
    need(
      n * BigInt(DTYPE_BYTES[entry.dtype]) === BigInt(entry.bytes),
      where,
      `${label} shape ${JSON.stringify(entry.shape)} does not match ${entry.bytes} bytes`,
    );
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
  need(inp && typeof inp === "object", where, "input");
  bounded(inp.size, where, "input/size", 1, LIMITS.MAX_INPUT_SIZE);
  need(inp.resize === "shortest_side" && inp.crop === "center", where, `unsupported input resize=${inp.resize} crop=${inp.crop}`);
  // The geometry (preprocess.js resizePlan); a manifest without these keys means the same rule.
  const rounding = inp.resize_rounding ?? "half_even";
  const offset = inp.crop_offset ?? "floor";
  need(
    rounding === "half_even" && offset === "floor",
    where,
    `unsupported input resize_rounding=${rounding} crop_offset=${offset} (this page implements half_even and floor)`,
  );
  need(inp.layout === "NCHW" && inp.color === "RGB" && inp.dtype === "float32", where, "input must be NCHW RGB float32");
  need(Array.isArray(inp.value_range) && inp.value_range.length === 2, where, "input.value_range");
  need(Array.isArray(inp.mean) && inp.mean.length === 3 && Array.isArray(inp.std) && inp.std.length === 3, where, "input mean/std");
  need(m.output && typeof m.output === "object", where, "output");
  bounded(m.output.dim, where, "output/dim", 1, LIMITS.MAX_DIM);
  const idx = m.index;
  need(idx && typeof idx === "object", where, "index");
  bounded(idx.count, where, "index/count", 1, LIMITS.MAX_COUNT);
  bounded(idx.dim, where, "index/dim", 1, LIMITS.MAX_DIM);
  checkEntry(idx.vectors, where, "index.vectors");
  checkEntry(idx.texts, where, "index.texts");
  need(idx.vectors.dtype === "float16", where, "index.vectors must be float16");
  need(
    idx.vectors.shape.length === 2 && idx.vectors.shape[0] === idx.count && idx.vectors.shape[1] === idx.dim && idx.dim === m.output.dim,
    where,
    `index vectors ${JSON.stringify(idx.vectors.shape)} do not match count ${idx.count} x dim ${idx.dim} (encoder output dim ${m.output.dim})`,
  );
  need(Array.isArray(m.targets), where, "targets");
  m.targets.forEach((t, i) => {
    need(t && typeof t === "object", where, `targets[${i}]`);
    if (t.batch !== undefined && t.batch !== "dynamic") bounded(t.batch, where, `targets/${i}/batch`, 1, LIMITS.MAX_BATCH);
  });
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
  checkEntry(t.file, where, `target ${t.file && t.file.path}`, `targets/${m.targets.indexOf(t)}/file`);
  return t;
}

/** A bundle served over HTTP: files fetched relative to `base` (a URL ending with /). */
export class UrlSource {
  constructor(base) {
    this.base = base;
    this.label = new URL(base).pathname;
    this.servesPhotos = true; // `ammkd serve` serves the gallery's photos as photos/<row>
  }

  /**
   * path -> ArrayBuffer, or null when the server has no such file. With `expected` (the
   * manifest's byte size) a body of another size is refused before it is held in memory: by its
   * Content-Length when the server sends one (uncompressed), else as it streams in, never
   * reading past `expected` bytes.
   */
  async get(path, expected) {
    let resp;
    try {
      resp = await fetch(new URL(path, this.base), { cache: "no-cache" });
    } catch (e) {
      throw new BundleError(`${path}: cannot be fetched (${e.message})`);
    }
    if (resp.status === 404) return null;
    if (!resp.ok) throw new BundleError(`${path}: cannot be fetched (HTTP ${resp.status})`);
    if (expected === undefined) return resp.arrayBuffer();
    const encoding = (resp.headers.get("Content-Encoding") || "identity").trim().toLowerCase();
    const length = resp.headers.get("Content-Length");
    if (encoding === "identity" && length !== null && /^\d+$/.test(length.trim())) {
      if (Number(length) === expected) return resp.arrayBuffer(); // the network stack holds the body to it
      await resp.body?.cancel().catch(() => {});
      throw sizeError(path, Number(length), expected);
    }
    if (!resp.body) return resp.arrayBuffer(); // no stream: the caller checks the length
    // no usable Content-Length: count the bytes as they come, holding no more than arrived
    const chunks = [];
    const reader = resp.body.getReader();
    let n = 0;
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (e) {
        throw new BundleError(`${path}: cannot be fetched (${e.message})`);
      }
      if (chunk.done) break;
      n += chunk.value.byteLength;
      if (n > expected) {
        await reader.cancel().catch(() => {});
        throw sizeError(path, `more than ${expected}`, expected);
      }
      chunks.push(chunk.value);
    }
    if (n !== expected) throw sizeError(path, n, expected);
    const out = new Uint8Array(n);
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.byteLength;
    }
    return out.buffer;
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

  /** path -> ArrayBuffer, or null; with `expected`, a file of another size is refused before it is read. */
  async get(path, expected) {
    const f = this.files.get(path);
    if (!f) return null;
    if (expected !== undefined && f.size !== expected) throw sizeError(path, f.size, expected);
    return f.arrayBuffer();
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

  /**
   * A file's bytes (ArrayBuffer), checked against its entry before they are returned: a size the
   * page cannot hold is refused before the fetch, a size other than the manifest's before the
   * body is held (the source checks it), then the SHA-256.
   */
  async readBytes(entry) {
    const where = entry.path;
    if (entry.bytes > LIMITS.MAX_FILE_BYTES) {
      throw new BundleError(`${where}: ${entry.bytes} bytes, more than this page can hold in memory (${LIMITS.MAX_FILE_BYTES})`);
    }
    const data = await this.source.get(entry.path, entry.bytes);
    if (data === null) throw new BundleError(this.source.missing(where));
    if (data.byteLength !== entry.bytes) throw sizeError(where, data.byteLength, entry.bytes);
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
