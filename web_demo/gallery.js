// The bundle's optional gallery (gallery/gallery.json + gallery/embeddings.f32.bin, written by
// `ammkd search --gallery`, see mobile_runtime/gallery.py): photos ranked by cosine to a text's
// class vector. The photos themselves are served by `ammkd serve` as photos/<row>; a bundle
// folder opened from disk has none of them (only their names).

import { BundleError, LIMITS } from "./bundle.js";
import { scoresOf, topk } from "./search.js";

export const GALLERY_FORMAT = "ammkd-gallery";

export class Gallery {
  constructor(manifest, vectors, servesPhotos) {
    this.manifest = manifest;
    this.servesPhotos = servesPhotos;
    this.vectors = vectors;
    this.count = manifest.images.length;
    this.dim = manifest.dim;
  }

  /** The bundle's gallery, its embeddings checked (size, SHA-256), or null when it has none. */
  static async open(bundle) {
    const raw = await bundle.source.get("gallery/gallery.json");
    if (raw === null) return null;
    let m;
    try {
      m = JSON.parse(new TextDecoder().decode(raw));
    } catch (e) {
      throw new BundleError(`gallery/gallery.json: not valid JSON (${e.message})`);
    }
    if (!m || m.format !== GALLERY_FORMAT || m.format_version !== 1) {
      throw new BundleError(`gallery/gallery.json: not an ${GALLERY_FORMAT} version 1 manifest`);
    }
    checkGalleryManifest(m, bundle.manifest.output.dim);
    const vectors = new Float32Array(await bundle.readBytes(m.embeddings));
    if (vectors.length !== m.images.length * m.dim) {
      throw new BundleError(`${m.embeddings.path}: ${vectors.length} values for ${m.images.length} photos x ${m.dim}`);
    }
    return new Gallery(m, vectors, bundle.source.servesPhotos);
  }

  /** query (D) unit vector -> [{id, score, image, url}] best first (url null when no photos are served). */
  search(query, k = 5) {
    return topk(scoresOf(query, this.vectors, this.count, this.dim), k).map((h) => ({
      ...h,
      image: this.manifest.images[h.id],
      url: this.servesPhotos ? `photos/${h.id}` : null,
    }));
  }
}

/**
 * gallery.json is untrusted: what sizes the embeddings read (photo count, dim, bytes, shape) is
 * bounded and consistent before anything is fetched, and the file stays inside the bundle.
 */
function checkGalleryManifest(m, dim) {
  const where = "gallery/gallery.json";
  const bad = (why) => new BundleError(`${where}: ${why}`);
  if (!Array.isArray(m.images) || !m.images.every((n) => typeof n === "string")) throw bad("'images' is not a list of names");
  if (m.images.length > LIMITS.MAX_COUNT) {
    throw bad(`${m.images.length} images, more than the maximum of ${LIMITS.MAX_COUNT}`);
  }
  if (m.dim !== dim) throw bad(`gallery dim ${JSON.stringify(m.dim)} differs from the encoder's ${dim}`);
  const e = m.embeddings;
  if (!e || typeof e !== "object" || e.path !== "gallery/embeddings.f32.bin" || !/^[0-9a-f]{64}$/.test(e.sha256 || "")) {
    throw bad("'embeddings' is not the gallery's gallery/embeddings.f32.bin with a SHA-256");
  }
  const need = m.images.length * dim * 4; // <= 5e7 * 65536 * 4: exact in a double
  if (e.bytes !== need) throw bad(`${m.images.length} images of dim ${dim} need ${need} bytes, embeddings say ${JSON.stringify(e.bytes)}`);
  if (e.dtype !== undefined && e.dtype !== "float32") throw bad(`embeddings dtype ${JSON.stringify(e.dtype)} is not float32`);
  if (e.shape !== undefined && !(Array.isArray(e.shape) && e.shape.length === 2 && e.shape[0] === m.images.length && e.shape[1] === dim)) {
    throw bad(`embeddings shape ${JSON.stringify(e.shape)} is not [${m.images.length}, ${dim}]`);
  }
}

/** Lower-cased (no locale), ASCII whitespace runs collapsed to one space, trailing full stops
 * removed: ammkd.bundle.texts.normalise (docs/design.md §5.9, tests/fixtures/nearest_texts.json). */
export function normalise(s) {
  return s.toLowerCase().split(/[ \t\n\v\f\r]+/).filter(Boolean).join(" ").replace(/\.+$/, "");
}

/** Levenshtein distance (insert, delete, substitute: cost 1) between two strings, in code points. */
export function editDistance(a, b) {
  const x = Array.from(a, (c) => c.codePointAt(0));
  const y = Array.from(b, (c) => c.codePointAt(0));
  let prev = Array.from({ length: y.length + 1 }, (_, j) => j);
  let cur = new Array(y.length + 1);
  for (let i = 1; i <= x.length; i++) {
    cur[0] = i;
    for (let j = 1; j <= y.length; j++) {
      cur[j] = Math.min(prev[j - 1] + (x[i - 1] === y[j - 1] ? 0 : 1), prev[j] + 1, cur[j - 1] + 1);
    }
    [prev, cur] = [cur, prev];
  }
  return prev[y.length];
}

/** Ids of the `n` texts nearest to `query`, best first: edit distance over the longer length
 * (code points, float64 division), ascending, ties towards the lower id. */
export function nearestTexts(texts, query, n = 5) {
  const q = normalise(query);
  const qLen = Array.from(q).length;
  const ratio = texts.map((t) => {
    const f = normalise(t);
    const longer = Math.max(qLen, Array.from(f).length);
    return longer === 0 ? 0 : editDistance(q, f) / longer;
  });
  const ids = texts.map((_, i) => i);
  ids.sort((a, b) => ratio[a] - ratio[b] || a - b);
  return ids.slice(0, Math.max(n, 0));
}

/** The id of `query` in `texts` (exact, else by normal form), or {id: -1, suggestions}: the 5
 * nearest known texts (ammkd.bundle.texts.find_text). */
export function findText(texts, query) {
  const exact = texts.indexOf(query);
  if (exact >= 0) return { id: exact };
  const q = normalise(query);
  const found = texts.findIndex((t) => normalise(t) === q);
  if (found >= 0) return { id: found };
  return { id: -1, suggestions: nearestTexts(texts, query, 5).map((i) => texts[i]) };
}
