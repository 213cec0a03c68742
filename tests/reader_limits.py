"""The bounds bundle/manifest.schema.json puts on the manifest numbers a reader allocates from,
and the same bounds as the Kotlin core (Limits.kt) and the web page (bundle.js) declare them: the
tests compare them so that the three readers cannot drift apart."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "bundle" / "manifest.schema.json"
LIMITS_KT = ROOT / "android_demo" / "core" / "src" / "main" / "kotlin" / "ai" / "ammkd" / "core" / "Limits.kt"
BUNDLE_JS = ROOT / "web_demo" / "bundle.js"


def schema_maxima() -> dict[str, int]:
    """{MAX_INPUT_SIZE, MAX_DIM, MAX_COUNT, MAX_RANK, MAX_EXTENT, MAX_BATCH} from the schema."""
    s = json.loads(SCHEMA.read_text())
    shape = s["$defs"]["file"]["properties"]["shape"]
    props = s["properties"]
    dims = {props["output"]["properties"]["dim"]["maximum"], props["index"]["properties"]["dim"]["maximum"]}
    assert len(dims) == 1, f"output.dim and index.dim have different maxima: {dims}"
    return {
        "MAX_INPUT_SIZE": props["input"]["properties"]["size"]["maximum"],
        "MAX_DIM": dims.pop(),
        "MAX_COUNT": props["index"]["properties"]["count"]["maximum"],
        "MAX_RANK": shape["maxItems"],
        "MAX_EXTENT": shape["items"]["maximum"],
        "MAX_BATCH": props["targets"]["items"]["properties"]["batch"]["oneOf"][0]["maximum"],
    }


def _ints(pattern: str, text: str) -> dict[str, int]:
    return {name: int(value.replace("_", "").rstrip("L")) for name, value in re.findall(pattern, text, re.M)}


def kotlin_limits() -> dict[str, int]:
    """`const val MAX_... = N` of Limits.kt (integer literals only)."""
    return _ints(r"^\s*const val (MAX_\w+) = ([\d_]+L?)\s*$", LIMITS_KT.read_text())


def js_limits() -> dict[str, int]:
    """`MAX_...: N,` of bundle.js's LIMITS object."""
    text = BUNDLE_JS.read_text()
    body = re.search(r"export const LIMITS = Object\.freeze\(\{(.*?)\}\);", text, re.S)
    assert body, f"{BUNDLE_JS}: no `export const LIMITS = Object.freeze({{...}});`"
    return _ints(r"^\s*(MAX_\w+): ([\d_]+),", body.group(1))
