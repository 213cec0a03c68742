"""`ammkd verify`: the bundle's golden pairs through every backend present, as an app's self-test.

Every file the manifest lists must be a regular file (not a link) of the listed size and SHA-256.
For each golden pair: the source PNG, preprocessed from the manifest's input spec, must equal the
stored input tensor; then each image encoder target (ONNX, ORT, ExecuTorch; Core ML on macOS, and
elsewhere its saved MIL program through a reference evaluator the caller passes in, for example
export/mil_reference.py's, which needs PyTorch) embeds the stored input, and its
cosine to the stored PyTorch embedding and its top-k ids in the index are compared with the
stored ones. Bounds are the export's parity bounds of the target's weight dtype; unquantized
targets must also return the same top-1 text. A bundle with a text encoder also runs its
tokenizer kit (identical ids) and each text encoder on the kit (cosine to PyTorch's embedding).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ammkd.bundle.backends import open_image_encoder, why_not_runnable_here
from ammkd.bundle.format import BundleReader, listed_files
from ammkd.bundle.parity import TEXT_MIN_COSINE, min_cosine_for
from ammkd.bundle.preprocess import preprocess
from ammkd.bundle.search import topk
from ammkd.bundle.text_encoder import OnnxTextEncoder, read_tokenizer
from ammkd.common.errors import AmmkdError, BundleError

PREPROCESS_TOLERANCE = 1e-6  # max abs difference of the Python preprocessing to the stored input


CoreMLReference = Callable[[Path, np.ndarray], np.ndarray]  # (package, uint8 (B, 3, S, S)) -> (B, D)


def verify_bundle(bundle_dir, threads: int = 1, coreml_reference: CoreMLReference | None = None) -> dict:
    """-> {"files": [...], "preprocess": [...], "targets": [...], "ok": bool}; each row says what
    was compared. Without a Core ML runtime, a Core ML target is evaluated by `coreml_reference`
    (given by the caller, so that this device-side module imports no PyTorch) or skipped."""
    bundle = BundleReader.open(bundle_dir)
    file_rows = [_check_file(bundle, e) for e in listed_files(bundle.manifest)]
    if not all(r["ok"] for r in file_rows):  # the golden pairs below would only repeat the first failure
        golden = len(bundle.manifest["golden"])
        return {"bundle": str(bundle.root), "golden": golden, "files": file_rows, "preprocess": [], "targets": []} | {
            "ok": False
        }
    spec = bundle.input_spec
    index = bundle.read_array(bundle.manifest["index"]["vectors"]).astype(np.float32)
    golden = bundle.manifest["golden"]
    inputs = np.concatenate([bundle.read_array(g["input"]).astype(np.float32) for g in golden])
    expected = np.stack([bundle.read_array(g["embedding"]).astype(np.float32).reshape(-1) for g in golden])

    pre_rows = []
    for g, x in zip(golden, inputs):
        diff = float(np.abs(preprocess(bundle.path(g["image"]), spec)[0] - x).max())
        pre_rows.append({"image": g["image"]["path"], "max_abs_diff": diff, "ok": diff <= PREPROCESS_TOLERANCE})

    rows = []
    for t in bundle.manifest["targets"]:
        name = f"{t['format']}/{t['quantization']}"
        row = {"target": name, "dtype": t["dtype"]}
        reason = why_not_runnable_here(t)
        if reason and (t["format"] != "coreml" or coreml_reference is None):
            rows.append(row | {"status": "skipped", "reason": reason})
            continue
        try:
            if reason:  # Core ML off macOS: its saved MIL program through the reference evaluator
                for f in t["package"]["files"]:
                    bundle.read_bytes(f)
                u8 = np.clip(np.rint(inputs * 255.0), 0, 255).astype(np.uint8)
                emb = coreml_reference(bundle.root / t["package"]["path"], u8)
                row["evaluator"] = "mil-reference (no Core ML runtime here)"
            else:
                encoder, _ = open_image_encoder(bundle, t["format"], t["quantization"], threads)
                emb = encoder.embed(inputs)
        except AmmkdError as e:
            rows.append(row | {"status": "failed", "reason": str(e)})
            continue
        cos = (emb * expected).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(expected, axis=1))
        k = len(golden[0]["topk_ids"])
        got = [topk(e, index, k)[0].tolist() for e in emb]
        top1 = float(np.mean([r[0] == g["topk_ids"][0] for r, g in zip(got, golden)]))
        overlap = float(np.mean([len(set(r) & set(g["topk_ids"])) / k for r, g in zip(got, golden)]))
        bound = min_cosine_for(t["dtype"])
        ok = float(cos.min()) >= bound and (t["quantization"] != "none" or top1 == 1.0)
        rows.append(
            row
            | {
                "status": "ok" if ok else "failed",
                "cosine_min": round(float(cos.min()), 6),
                "cosine_bound": bound,
                "top1_agreement": top1,
                f"top{k}_overlap": round(overlap, 4),
            }
        )
    rows += _text_rows(bundle, threads)
    ok = all(r["ok"] for r in pre_rows) and all(r["status"] != "failed" for r in rows)
    report = {"bundle": str(bundle.root), "golden": len(golden), "files": file_rows, "preprocess": pre_rows}
    return report | {"targets": rows, "ok": ok}


def _text_rows(bundle: BundleReader, threads: int) -> list[dict]:
    """The text side's self-test: the tokenizer on the kit (identical ids), then each text encoder
    on the kit's ids against the stored PyTorch embeddings (cosine bound of its weight dtype)."""
    side = bundle.manifest.get("text_encoder")
    if side is None:
        return []
    try:
        tokenizer = read_tokenizer(bundle)
        cases = bundle.read_json(side["kit"]["cases"])["cases"]
        expected = bundle.read_array(side["kit"]["embeddings"]).astype(np.float32)
    except (AmmkdError, KeyError, TypeError) as e:
        return [{"target": "tokenizer", "dtype": "-", "status": "failed", "reason": str(e)}]
    wrong = [c["text"] for c in cases if tokenizer.encode(c["text"]) != c["ids"]]
    rows = [
        {
            "target": "tokenizer",
            "dtype": "-",
            "status": "failed" if wrong else "ok",
            "kit_cases": len(cases),
            **({"reason": f"{len(wrong)} kit texts tokenized differently, first {wrong[0]!r}"} if wrong else {}),
        }
    ]
    for t in side["targets"]:
        row = {"target": f"text/{t['format']}/{t['quantization']}", "dtype": t["dtype"]}
        try:
            enc = OnnxTextEncoder(
                bundle.read_bytes(t["file"]), threads, str(t["file"]["path"]), t.get("session_config")
            )
            emb = np.concatenate([enc.embed(np.array([c["ids"]], dtype=np.int64)) for c in cases])
        except AmmkdError as e:
            rows.append(row | {"status": "failed", "reason": str(e)})
            continue
        cos = (emb * expected).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(expected, axis=1))
        bound = TEXT_MIN_COSINE[t["dtype"]]
        status = "ok" if float(cos.min()) >= bound else "failed"
        rows.append(row | {"status": status, "cosine_min": round(float(cos.min()), 6), "cosine_bound": bound})
    return rows


def _check_file(bundle: BundleReader, entry: dict) -> dict:
    """{"path", "ok", "reason"?}: one listed file is a regular file with its size and SHA-256."""
    try:
        if (bundle.root / entry["path"]).is_symlink():
            raise BundleError(f"{bundle.root / entry['path']}: a symbolic link; bundle files must be regular files")
        bundle.read_bytes(entry)
    except (BundleError, OSError) as e:
        return {"path": entry["path"], "ok": False, "reason": str(e)}
    return {"path": entry["path"], "ok": True}
