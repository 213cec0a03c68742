"""The bundle's optional text encoder: the teachers' text towers and the fusion as one model from
token ids to the student's space, so a free-text query lands where its class vector would
(docs/design.md §5.10).

    ids (B, L) int64 --> per distinct HF transformer: hidden states, mask = ids != pad
                     --> per teacher k: mean-pool, projection, L2-normalise   (B, D_k)
                     --> fusion: concat / sqrt(K), or the trained FusionNetwork's text map (B, D_f), unit rows

Teachers that share one frozen transformer (the usual case: both fine-tuned with the text tower
locked) share it here too, so the encoder holds each transformer once. Only Hugging Face
WordPiece text towers ship (their tokenizer is plain files, bundle/tokenizer.py); open_clip's
own BPE towers do not, and export says so.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ammkd.bundle.format import file_entry, write_array
from ammkd.bundle.parity import TEXT_MIN_COSINE
from ammkd.bundle.text_encoder import OnnxTextEncoder
from ammkd.bundle.tokenizer import (
    KIT_EMBEDDINGS,
    KIT_FILE,
    SETTINGS_FILE,
    VOCAB_FILE,
    TokenizerSettings,
    WordPieceTokenizer,
)
from ammkd.common.errors import ExportError
from ammkd.common.files import atomic_write_json
from ammkd.distill.fusion import FusionNetwork
from ammkd.distill.student_folder import load_fusion, teacher_id
from ammkd.distill.teachers import Teacher, load_teacher
from ammkd.distill.text_towers import is_hf_cfg, transformer_fingerprint
from ammkd.export.onnx_export import SESSION_CONFIG, dynamo_export, quantize_onnx
from ammkd.export.tokenizer_kit import KIT_TEXTS


class FusedTextEncoder(nn.Module):
    """Token ids (B, L) int64, padded with `pad_id` -> (B, D_f) float32 unit rows."""

    def __init__(self, teachers: list[Teacher], fusion_net: FusionNetwork | None, pad_id: int):
        super().__init__()
        self.pad_id = pad_id
        self.transformers = nn.ModuleList()
        seen: dict[str, int] = {}
        self.which: list[int] = []  # teacher k -> its transformer
        for t in teachers:
            fp = transformer_fingerprint(t.model)
            if fp not in seen:
                seen[fp] = len(self.transformers)
                self.transformers.append(t.model.text.transformer)
            self.which.append(seen[fp])
        self.poolers = nn.ModuleList(t.model.text.pooler for t in teachers)
        self.projections = nn.ModuleList(t.model.text.proj for t in teachers)
        self.fusion_net = fusion_net
        self.eval().requires_grad_(False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = (input_ids != self.pad_id).long()
        hidden = [tr(input_ids=input_ids, attention_mask=mask) for tr in self.transformers]
        feats = [
            F.normalize(proj(pool(hidden[w], mask)), dim=-1)
            for w, pool, proj in zip(self.which, self.poolers, self.projections)
        ]
        if self.fusion_net is not None:
            return self.fusion_net.texts(feats)
        return torch.cat(feats, dim=-1) / math.sqrt(len(feats))


def why_no_text_encoder(teachers: list[Teacher]) -> str | None:
    """Why these teachers' text side cannot ship (None: it can)."""
    for t in teachers:
        if not is_hf_cfg(t.model_cfg):
            return (
                f"teacher {t.name} has open_clip's own text tower (BPE tokenizer); "
                "only Hugging Face WordPiece towers ship"
            )
    try:
        described = [tokenizer_settings(t) for t in teachers]
    except ExportError as e:
        return str(e)
    if len({(vocab.read_bytes(), json.dumps(s.to_dict(), sort_keys=True)) for vocab, s in described}) > 1:
        return "the teachers' text towers tokenize differently (vocabularies or settings differ)"
    return None


def tokenizer_settings(teacher: Teacher) -> tuple[Path, TokenizerSettings]:
    """(vocab.txt, settings) of a teacher's HF tokenizer, read from its tokenizer.json, which
    must be the BERT pipeline bundle/tokenizer.py implements."""
    folder = Path(teacher.model_cfg["text_cfg"]["hf_tokenizer_name"])
    where = folder / "tokenizer.json"
    try:
        tj = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExportError(f"{where}: unreadable tokenizer description ({e})") from None
    norm, pre, model = tj.get("normalizer") or {}, tj.get("pre_tokenizer") or {}, tj.get("model") or {}
    if (norm.get("type"), pre.get("type"), model.get("type")) != ("BertNormalizer", "BertPreTokenizer", "WordPiece"):
        raise ExportError(f"{where}: not a BERT WordPiece tokenizer (the only kind a bundle ships)")
    if not norm.get("clean_text", True) or not (folder / "vocab.txt").is_file():
        raise ExportError(f"{where}: needs clean_text and a vocab.txt beside it")
    lowercase = bool(norm.get("lowercase", True))
    strip = norm.get("strip_accents")
    context = int(teacher.model_cfg["text_cfg"].get("context_length", 64))
    settings = TokenizerSettings(
        lowercase=lowercase,
        strip_accents=lowercase if strip is None else bool(strip),
        chinese_chars=bool(norm.get("handle_chinese_chars", True)),
        max_length=context,
        max_input_chars_per_word=int(model.get("max_input_chars_per_word", 100)),
        continuing_prefix=model.get("continuing_subword_prefix", "##"),
        unk=model.get("unk_token", "[UNK]"),
    )
    return folder / "vocab.txt", settings


TEXT_INPUT_NAME = "input_ids"
TEXT_OUTPUT_NAME = "text_embedding"
TEXT_QUANTIZATIONS = ("none", "int8-dynamic", "int8-weights")
KIT_INDEX_TEXTS = 120  # index texts added to the kit's fixed strings (>= 200 in all when the index is large enough)


def pad_batch(ids: list[list[int]], pad_id: int) -> np.ndarray:
    """Token id lists -> (B, L) int64, right-padded with `pad_id` to the longest."""
    width = max(len(x) for x in ids)
    return np.array([x + [pad_id] * (width - len(x)) for x in ids], dtype=np.int64)


def parity_texts(texts: list[str], n: int, seed: int = 0) -> list[int]:
    """Rows of the index the text gate encodes: all of them, or a seeded sample of `n` (n > 0)."""
    if n <= 0 or n >= len(texts):
        return list(range(len(texts)))
    return sorted(np.random.default_rng(seed).choice(len(texts), n, replace=False).tolist())


def export_onnx_text(encoder: FusedTextEncoder, path: Path, max_length: int, opset: int) -> Path:
    """ONNX with symbolic batch and length (1..max_length); weights in the one file."""
    example = (torch.tensor([[101, 2000, 102]], dtype=torch.int64),)
    dims = {0: torch.export.Dim("batch", min=1, max=1024), 1: torch.export.Dim("length", min=1, max=max_length)}
    return dynamo_export(encoder, example, path, opset, (TEXT_INPUT_NAME, TEXT_OUTPUT_NAME), {"input_ids": dims})


def write_text_side(
    model_dir: Path, meta: dict, texts: list[str], index: np.ndarray, index16: np.ndarray, tmp: Path, cfg
) -> tuple[dict | None, str | None]:
    """The bundle's text side (tokenizer files, kit, encoder variants through the text gate),
    written into `tmp`. Returns (the manifest's `text_encoder`, None), or (None, why not)."""
    teachers = [load_teacher(t) for t in meta["teachers"]]
    ids = [teacher_id(t) for t in teachers]
    if ids != meta["teacher_ids"]:
        return None, f"the teachers at {meta['teachers']} are not the ones the student was trained against ({ids})"
    reason = why_no_text_encoder(teachers)
    if reason:
        return None, reason
    vocab_path, settings = tokenizer_settings(teachers[0])
    tmp_vocab = tmp / VOCAB_FILE
    tmp_vocab.parent.mkdir(parents=True, exist_ok=True)
    tmp_vocab.write_bytes(vocab_path.read_bytes())
    atomic_write_json(tmp / SETTINGS_FILE, settings.to_dict())
    tok = WordPieceTokenizer.from_files(tmp)
    encoder = FusedTextEncoder(teachers, load_fusion(model_dir, meta), tok.pad_id)

    rows = parity_texts(texts, cfg.text_parity_texts)
    row_ids = tok.encode_batch([texts[i] for i in rows])
    differ = _ids_differ_from_teachers(teachers[0], [texts[i] for i in rows], row_ids)
    kit = _write_kit(tmp, tok, encoder, texts)

    fp32 = export_onnx_text(encoder, tmp / ".text-fp32.onnx", settings.max_length, cfg.opset)
    targets, left_out = [], []
    for quant in cfg.text_quantizations():
        t0 = time.time()
        rel = "text_encoder" + ("" if quant == "none" else f".{quant}") + ".onnx"
        if quant == "none":
            shutil.copyfile(fp32, tmp / rel)
        else:
            quantize_onnx(fp32, tmp / rel, quant, None, quantize_all_ops=True)  # Gather too: the word embeddings
        session = OnnxTextEncoder((tmp / rel).read_bytes(), session_config=SESSION_CONFIG.get(quant))
        emb = np.concatenate(
            [session.embed(pad_batch(row_ids[s : s + 64], tok.pad_id)) for s in range(0, len(rows), 64)]
        )
        dtype = "float32" if quant == "none" else "int8"
        par = _text_parity(emb, index, index16, rows) | {"evaluator": "onnxruntime"}
        entry = {"role": "text_encoder", "format": "onnx", "file": file_entry(tmp, rel).to_dict(), "dtype": dtype}
        entry |= {"quantization": quant, "batch": "dynamic", "parity": par}
        if quant in SESSION_CONFIG:
            entry["session_config"] = SESSION_CONFIG[quant]
        entry |= {"bytes": entry["file"]["bytes"], "export_seconds": round(time.time() - t0, 1)}
        if par["cosine_min"] >= TEXT_MIN_COSINE[dtype] or cfg.allow_degraded:
            targets.append(entry)
        else:
            (tmp / rel).unlink()
            left_out.append({"target": f"onnx/{quant}", "dtype": dtype, "misses": [
                f"cosine_min {par['cosine_min']} < {TEXT_MIN_COSINE[dtype]} over {par['texts']} index texts"
            ], "parity": par})  # fmt: skip
    fp32.unlink()
    if not targets:
        return None, f"every text encoder variant missed the text gate: {left_out}"
    section = {
        "input_name": TEXT_INPUT_NAME,
        "output_name": TEXT_OUTPUT_NAME,
        "dim": int(index.shape[1]),
        "normalized": True,
        "tokenizer": {
            "kind": "wordpiece",
            "vocab": file_entry(tmp, VOCAB_FILE).to_dict(),
            "settings": file_entry(tmp, SETTINGS_FILE).to_dict(),
        },
        "kit": kit,
        "transformers": len(encoder.transformers),
        "params": sum(p.numel() for p in encoder.parameters()),
        "index_texts_checked": len(rows),
        "ids_differ_from_teachers": differ,
        "targets": targets,
        "left_out": left_out,
    }
    return section, None


def _text_parity(emb: np.ndarray, index: np.ndarray, index16: np.ndarray, rows: list[int]) -> dict:
    """An encoder's embeddings (M, D) of index rows `rows` against their class vectors: cosine,
    and how often a text's nearest row of the shipped (fp16) index is its own (self_top1)."""
    cos = (emb * index[rows]).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(index[rows], axis=1))
    top1 = np.argmax(emb @ index16.T, axis=1)
    return {
        "texts": len(rows),
        "cosine_min": round(float(cos.min()), 6),
        "cosine_mean": round(float(cos.mean()), 6),
        "self_top1": round(float(np.mean(top1 == np.asarray(rows))), 4),
    }


def _ids_differ_from_teachers(teacher: Teacher, texts: list[str], ids: list[list[int]]) -> int:
    """How many of `texts` the bundle tokenizer splits otherwise than the teacher's own (open_clip's
    HFTokenizer also repairs text with ftfy and unescapes HTML, which the bundle tokenizer does not)."""
    pad = teacher.model.text.config.pad_token_id
    differ = 0
    for s in range(0, len(texts), 512):
        theirs = teacher.tokenizer(texts[s : s + 512]).tolist()
        differ += sum([i for i in t if i != pad] != mine for t, mine in zip(theirs, ids[s : s + 512]))
    return differ


def _write_kit(tmp: Path, tok: WordPieceTokenizer, encoder: FusedTextEncoder, texts: list[str]) -> dict:
    """golden/tokenizer_kit.json (texts with their ids) and golden/text_embeddings.f32.bin (PyTorch's
    embedding of each, (M, D)): the fixed edge cases plus a sample of index texts."""
    sample = [texts[i] for i in parity_texts(texts, KIT_INDEX_TEXTS, seed=1)]
    kit_texts = list(dict.fromkeys(KIT_TEXTS + sample))
    ids = tok.encode_batch(kit_texts)
    with torch.no_grad():
        emb = np.concatenate([encoder(torch.from_numpy(pad_batch([x], tok.pad_id))).numpy() for x in ids])
    atomic_write_json(tmp / KIT_FILE, {"cases": [{"text": t, "ids": x} for t, x in zip(kit_texts, ids)]})
    return {
        "cases": file_entry(tmp, KIT_FILE).to_dict(),
        "embeddings": write_array(tmp, KIT_EMBEDDINGS, emb, "float32").to_dict(),
    }
