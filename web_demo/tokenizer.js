// The bundle's text tokenizer (tokenizer/vocab.txt + tokenizer/settings.json): BERT WordPiece,
// steps 1-5 of bundle/tokenizer.py, which runs steps 2-5 with Hugging Face `tokenizers` (its
// BertNormalizer, BertPreTokenizer and WordPiece, written in Rust). Held to the language-neutral
// tokenizer kit (tests/fixtures/tokenizer_kit.json, golden/tokenizer_kit.json in a bundle) as the
// Kotlin core is.
//
// Everything works on code points, never UTF-16 units: strings are walked with for..of, and a
// word's length (max_input_chars_per_word) is its number of code points. Character classes are
// the browser's Unicode property escapes (\p{...}) and String.normalize("NFD"), corrected by the
// REFERENCE_* tables below where the reference's older Unicode tables say otherwise. Lower-casing
// is toLowerCase on one code point at a time, as Rust's char::to_lowercase (Rust's own recent
// Unicode: it agrees with Node 20.20's on every code point; a browser on an older Unicode leaves
// the capitals added since as they are).

/** Python's str.isspace() code points, what `" ".join(text.split())` splits on (step 1;
 * WHITESPACE in bundle/tokenizer.py). Wider than \p{White_Space}: U+001C-U+001F count too. */
const WHITESPACE = new Set([
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680,
  0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a,
  0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
]);

// Step 2's "other" code points, dropped: categories Cc, Cf and Co; tab, LF and CR are
// whitespace instead. Not Cn: the reference's category tables (crate unicode_categories) were
// generated from UnicodeData.txt, which lists no unassigned code point, so its Cn is empty and an
// unassigned code point (U+0378, U+10FFFF) stays, a letter like any other. A lone surrogate (Cs),
// which a JS string can hold and a Rust or Python UTF-8 string cannot, is dropped.
const OTHER = /[\p{Cc}\p{Cf}\p{Co}\p{Cs}]/u;
// Rust's char::is_whitespace: the Unicode White_Space property (tab, LF, CR included).
const SPACE = /\p{White_Space}/u;
// Step 2's accent stripping drops non-spacing marks after NFD.
const NONSPACING_MARK = /\p{Mn}/u;
// Step 3: ASCII punctuation (33-47, 58-64, 91-96, 123-126: $ + < = > ^ ` | ~ are symbols, not
// Unicode P*) or any Unicode punctuation category (Pc Pd Ps Pe Pi Pf Po).
const PUNCTUATION = /[!-/:-@[-`{-~\p{P}]/u;

// Where the reference's Unicode is older than the browser's. Hugging Face `tokenizers` takes
// categories (Cf, Mn, P*) from unicode_categories 0.1.1 (Unicode 8.0) and NFD from
// unicode-normalization-alignments (Unicode 9.0 tables), while \p{...} and String.normalize follow
// the browser's ICU (Unicode 17.0 in Node 20.20 / ICU 78). The tables below were found by running
// every code point (as "a" + c + "b", and NFD of c and of "a\u0345" + c + "\u0334") through both
// and comparing; with them the two agree on all 1,112,064 of them. A browser on an older Unicode
// needs none of this (there these code points are unassigned, which is what the reference sees);
// one on a newer Unicode than 17.0 may see new marks or punctuation the reference does not.

/** "7fd 897-89f ..." (hex code points and inclusive ranges) -> Set of code points. */
function codePoints(spec) {
  const set = new Set();
  for (const item of spec.trim().split(/\s+/)) {
    const [lo, hi = lo] = item.split("-").map((h) => parseInt(h, 16));
    for (let cp = lo; cp <= hi; cp++) set.add(cp);
  }
  return set;
}

// Assigned after Unicode 8.0 as Cf, Mn or P*: letters to the reference (kept, never split off).
const REFERENCE_LETTERS = codePoints(`
  61d 7fd 890-891 897-89f 8ca-8e2 9fd-9fe a76 afa-aff b55 c04 c3c c77 c84 d00 d3b-d3c d81 eba ece
  180f 1885-1886 1abf-1add 1ae0-1aeb 1b4e-1b4f 1b7d-1b7f 1df6-1dfb 2e43-2e4f 2e52-2e5d a82c a8c5
  a8ff a9bd 10d24-10d27 10d69-10d6e 10eab-10ead 10ed0 10efa-10eff 10f46-10f50 10f55-10f59
  10f82-10f89 11070 11073-11074 110c2 110cd 111cf 1123e 11241 1133b 113bb-113c0 113ce 113d0 113d2
  113d4-113d5 113d7-113d8 113e1-113e2 11438-1143f 11442-11444 11446 1144b-1144f 1145a-1145b
  1145d-1145e 11660-1166c 116b9 1182f-11837 11839-1183b 1193b-1193c 1193e 11943-11946 119d4-119d7
  119da-119db 119e0 119e2 11a01-11a0a 11a33-11a38 11a3b-11a47 11a51-11a56 11a59-11a5b 11a8a-11a96
  11a98-11a9c 11a9e-11aa2 11b00-11b09 11b60 11b62-11b64 11b66 11be1 11c30-11c36 11c38-11c3d 11c3f
  11c41-11c45 11c70-11c71 11c92-11ca7 11caa-11cb0 11cb2-11cb3 11cb5-11cb6 11d31-11d36 11d3a
  11d3c-11d3d 11d3f-11d45 11d47 11d90-11d91 11d95 11d97 11ef3-11ef4 11ef7-11ef8 11f00-11f01
  11f36-11f3a 11f40 11f42-11f4f 11f5a 11fff 12ff1-12ff2 13430-13440 13447-13455 1611e-16129
  1612d-1612f 16d6d-16d6f 16e97-16e9a 16f4f 16fe2 16fe4 1cf00-1cf2d 1cf30-1cf46 1e000-1e006
  1e008-1e018 1e01b-1e021 1e023-1e024 1e026-1e02a 1e08f 1e130-1e136 1e2ae 1e2ec-1e2ef 1e4ec-1e4ef
  1e5ee-1e5ef 1e5ff 1e6e3 1e6e6 1e6ee-1e6ef 1e6f5 1e944-1e94a 1e95e-1e95f
`);
// Mn in Unicode 8.0 (dropped by accent stripping), Mc now.
const REFERENCE_NONSPACING = codePoints(`1734 1171e`);
// Po in Unicode 8.0 (split off), So or Mn now.
const REFERENCE_PUNCTUATION = codePoints(`166d 111c9`);
// Starters without a decomposition in the reference's NFD (assigned after Unicode 9.0): new
// canonical decompositions, or a non-zero combining class that would reorder marks around them.
const REFERENCE_NFD_STARTERS = codePoints(`
  7fd 897-89f 8ca-8d3 9fe c3c d3b-d3c eba 1715 1abf-1add 1ae0-1aeb 1df6-1dfa a82c 105c9 105e4
  10d24-10d27 10d69-10d6d 10eab-10eac 10efa-10efb 10efd-10eff 10f46-10f50 10f82-10f85 11070 1133b
  11383 11385 1138e 11391 113c5 113c7-113c8 113ce-113d0 1145e 11839-1183a 11938 1193d-1193e 11943
  119e0 11a34 11a47 11a99 11d42 11d44-11d45 11d97 11f41-11f42 16121-16128 1612f 16d68-16d6a
  16ff0-16ff1 1e08f 1e130-1e136 1e2ae 1e2ec-1e2ef 1e4ec-1e4ef 1e5ee-1e5ef 1e6e3 1e6e6 1e6ee-1e6ef
  1e6f5
`);

function isOther(ch, cp) {
  return !REFERENCE_LETTERS.has(cp) && OTHER.test(ch);
}

function isNonspacingMark(ch, cp) {
  if (REFERENCE_NONSPACING.has(cp)) return true;
  return !REFERENCE_LETTERS.has(cp) && !REFERENCE_PUNCTUATION.has(cp) && NONSPACING_MARK.test(ch);
}

function isPunctuation(ch, cp) {
  return REFERENCE_PUNCTUATION.has(cp) || (!REFERENCE_LETTERS.has(cp) && PUNCTUATION.test(ch));
}

/** NFD as the reference computes it: REFERENCE_NFD_STARTERS neither decompose nor reorder. */
function referenceNfd(text) {
  let out = "";
  let run = "";
  for (const ch of text) {
    if (REFERENCE_NFD_STARTERS.has(ch.codePointAt(0))) {
      out += run.normalize("NFD") + ch;
      run = "";
    } else run += ch;
  }
  return out + run.normalize("NFD");
}

/** BERT's "Chinese characters": CJK ideograph blocks (not kana, not Hangul), as the reference
 * has them: 0x2B920, not BERT's 0x2B820, starts the Extension E-F block (U+2B820-U+2B91F, the
 * first 256 of Extension E, are not spaced out). */
function isCjk(cp) {
  return (
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) ||
    (cp >= 0x2b920 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0x2f800 && cp <= 0x2fa1f)
  );
}

/**
 * vocab.txt text -> tokens (id = index): split on "\n", one trailing empty line dropped
 * (bundle/tokenizer.py read_vocab).
 * @param {string} text the file decoded as UTF-8
 * @returns {string[]} tokens, V of them
 * @throws {Error} when the file has no tokens, an empty token, a token holding "\r", or a token
 *   twice
 */
export function readVocab(text) {
  const lines = text.split("\n");
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  if (lines.length === 0) throw new Error("vocab.txt: no tokens (a vocabulary needs one token per line)");
  const seen = new Map();
  lines.forEach((t, i) => {
    if (t === "" || t.includes("\r")) {
      const what = t === "" ? "empty" : "a token with \\r (CRLF line ends?)";
      throw new Error(`vocab.txt: line ${i + 1} is ${what}; a vocabulary needs one non-empty token per line`);
    }
    if (seen.has(t)) {
      throw new Error(`vocab.txt: token ${JSON.stringify(t)} on lines ${seen.get(t) + 1} and ${i + 1}; tokens must be distinct`);
    }
    seen.set(t, i);
  });
  return lines;
}

/**
 * Steps 1-5: a text -> token ids over a WordPiece vocabulary.
 *
 * `settings` is tokenizer/settings.json (TokenizerSettings in bundle/tokenizer.py):
 * {kind: "wordpiece", lowercase, strip_accents, chinese_chars, max_length,
 *  max_input_chars_per_word, continuing_prefix, unk, cls, sep, pad}.
 */
export class WordPieceTokenizer {
  /**
   * @param {string[]} vocab tokens, id = index (readVocab)
   * @param {object} settings tokenizer/settings.json, as parsed
   * @throws {Error} when settings are not a WordPiece tokenizer's, or a special token (unk, cls,
   *   sep, pad) is not in the vocabulary
   */
  constructor(vocab, settings) {
    const s = settings ?? {};
    const bad = (key, why) => new Error(`tokenizer/settings.json: ${key} ${JSON.stringify(s[key])} ${why}`);
    if (s.kind !== "wordpiece") throw bad("kind", 'is not "wordpiece"');
    for (const key of ["lowercase", "strip_accents", "chinese_chars"]) {
      if (typeof s[key] !== "boolean") throw bad(key, "is not true or false");
    }
    for (const key of ["continuing_prefix", "unk", "cls", "sep", "pad"]) {
      if (typeof s[key] !== "string") throw bad(key, "is not a string");
    }
    if (!Number.isInteger(s.max_length) || s.max_length < 3 || s.max_length > 4096) throw bad("max_length", "is not in 3..4096");
    if (!Number.isInteger(s.max_input_chars_per_word) || s.max_input_chars_per_word < 1) {
      throw bad("max_input_chars_per_word", "is not >= 1");
    }
    this.settings = s;
    this.vocab = vocab;
    /** @type {Map<string, number>} token -> id */
    this.ids = new Map(vocab.map((t, i) => [t, i]));
    const missing = [s.unk, s.cls, s.sep, s.pad].filter((t) => !this.ids.has(t));
    if (missing.length) throw new Error(`tokenizer: special tokens ${JSON.stringify(missing)} are not in the vocabulary`);
    this.unkId = this.ids.get(s.unk);
    this.clsId = this.ids.get(s.cls);
    this.sepId = this.ids.get(s.sep);
    this.padId = this.ids.get(s.pad);
  }

  /**
   * One text -> ids: [cls, ...pieces (at most max_length - 2), sep], not padded.
   * @param {string} text any string (code points; a lone surrogate is dropped)
   * @returns {Int32Array} L ids, 2 <= L <= max_length (the text encoder's (1, L) input)
   */
  encode(text) {
    const pieces = [];
    const room = this.settings.max_length - 2;
    for (const word of preTokenize(this.normalize(cleanWhitespace(text)))) {
      this.wordPiece(word, pieces);
      if (pieces.length >= room) break;
    }
    pieces.length = Math.min(pieces.length, room);
    return Int32Array.from([this.clsId, ...pieces, this.sepId]);
  }

  /** Step 2 (BertNormalizer): clean, space out CJK ideographs, strip accents, lower-case.
   * @param {string} text @returns {string} */
  normalize(text) {
    const s = this.settings;
    let out = "";
    for (const ch of text) {
      const cp = ch.codePointAt(0);
      if (cp < 0x80 && cp > 0x20 && cp !== 0x7f) out += ch; // printable ASCII: as it is
      // dropped before whitespace is mapped: \v, \f and U+0085 are Cc, so they go (tab, LF, CR stay)
      else if (cp === 0 || cp === 0xfffd || (cp !== 0x09 && cp !== 0x0a && cp !== 0x0d && isOther(ch, cp))) continue;
      else if (SPACE.test(ch)) out += " ";
      else if (s.chinese_chars && isCjk(cp)) out += ` ${ch} `;
      else out += ch;
    }
    if (s.strip_accents) {
      let kept = "";
      for (const ch of referenceNfd(out)) if (!isNonspacingMark(ch, ch.codePointAt(0))) kept += ch;
      out = kept;
    }
    if (s.lowercase) {
      // each code point on its own, as Rust's char::to_lowercase: a whole-string toLowerCase
      // would apply the Greek final-sigma rule (Σ at a word's end -> ς), which Rust does not
      let lower = "";
      for (const ch of out) lower += ch.toLowerCase();
      out = lower;
    }
    return out;
  }

  /** Step 4: one word's pieces (greedy longest match from the left) appended to `out` as ids.
   * @param {string} word @param {number[]} out */
  wordPiece(word, out) {
    const cps = Array.from(word);
    if (cps.length > this.settings.max_input_chars_per_word) {
      out.push(this.unkId);
      return;
    }
    const found = [];
    for (let start = 0; start < cps.length; ) {
      let end = cps.length;
      let id;
      for (; end > start; end--) {
        const sub = (start > 0 ? this.settings.continuing_prefix : "") + cps.slice(start, end).join("");
        id = this.ids.get(sub);
        if (id !== undefined) break;
      }
      if (end === start) {
        out.push(this.unkId); // an unmatched rest: the whole word is unk
        return;
      }
      found.push(id);
      start = end;
    }
    out.push(...found);
  }
}

/** Step 1: words split on Python's whitespace (WHITESPACE), joined with one space.
 * @param {string} text @returns {string} */
export function cleanWhitespace(text) {
  const words = [];
  let word = "";
  for (const ch of text) {
    if (WHITESPACE.has(ch.codePointAt(0))) {
      if (word) words.push(word);
      word = "";
    } else word += ch;
  }
  if (word) words.push(word);
  return words.join(" ");
}

/** Step 3 (BertPreTokenizer): split on whitespace; each punctuation code point a word of its own.
 * @param {string} text normalized (step 2) @returns {string[]} words, none empty */
export function preTokenize(text) {
  const words = [];
  let word = "";
  for (const ch of text) {
    const space = SPACE.test(ch);
    if (space || isPunctuation(ch, ch.codePointAt(0))) {
      if (word) words.push(word);
      word = "";
      if (!space) words.push(ch);
    } else word += ch;
  }
  if (word) words.push(word);
  return words;
}
