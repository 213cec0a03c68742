"""A bundle's optional text side (manifest `text_encoder`, docs/design.md §5.10): its tokenizer
and an ONNX text encoder, `embed(ids (B, L) int64) -> (B, D) float32` unit rows in the space of
the image encoder and the class vectors. Every file is hash-checked before use."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ammkd.bundle.backends import PRECISION_ORDER, onnx_session
from ammkd.bundle.format import BundleReader
from ammkd.bundle.tokenizer import TokenizerSettings, WordPieceTokenizer, read_vocab
from ammkd.common.errors import BundleError, ConfigError

MAX_QUERY_CHARS = 10_000  # longer queries are refused before tokenizing (max_length tokens is far less)


class OnnxTextEncoder:
    """ONNX Runtime on the CPU: token ids (B, L) int64, padded with the tokenizer's pad id -> (B, D)."""

    def __init__(self, model, threads: int = 1, name: str = "text encoder", session_config: dict | None = None):
        self.session = onnx_session(model, threads, name, session_config)
        self.input_name = self.session.get_inputs()[0].name
        self.dim = self.session.get_outputs()[0].shape[-1]

    def embed(self, ids: np.ndarray) -> np.ndarray:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[1] < 1:
            raise ValueError(f"text encoder input must be (B, L) int64 token ids; got {ids.shape}")
        return np.asarray(self.session.run(None, {self.input_name: ids})[0], dtype=np.float32)


@dataclass
class TextSide:
    """A bundle's tokenizer and one of its text encoders."""

    tokenizer: WordPieceTokenizer
    encoder: OnnxTextEncoder
    target: dict  # the manifest entry of the encoder in use

    def embed(self, text: str) -> np.ndarray:
        """One query -> (D,) float32 unit embedding. Refuses an empty or whitespace-only query."""
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("text query is empty: type a few words")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: invalid UTF-8 bytes on a command line
            raise ConfigError("text query is not valid UTF-8 (undecodable bytes); pass UTF-8 text") from None
        if len(text) > MAX_QUERY_CHARS:
            raise ConfigError(f"text query has {len(text)} characters; at most {MAX_QUERY_CHARS} are accepted")
        ids = np.array([self.tokenizer.encode(text)], dtype=np.int64)
        return self.encoder.embed(ids)[0]


def read_tokenizer(bundle: BundleReader) -> WordPieceTokenizer:
    """The bundle's tokenizer (files hash-checked). BundleError if it has none."""
    side = bundle.manifest.get("text_encoder")
    if side is None:
        raise BundleError(f"{bundle.root}: this bundle has no text encoder (export it with --text-encoder on)")
    tok = side["tokenizer"]
    vocab = read_vocab(bundle.read_bytes(tok["vocab"]), str(bundle.root / tok["vocab"]["path"]))
    where = str(bundle.root / tok["settings"]["path"])
    try:
        settings = json.loads(bundle.read_bytes(tok["settings"]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise BundleError(f"{where}: not JSON ({e})") from None
    return WordPieceTokenizer(vocab, TokenizerSettings.from_dict(settings, where), where)


def open_text_side(bundle: BundleReader, quantization: str | None = None, threads: int = 1) -> TextSide:
    """The tokenizer and the text encoder of `quantization` (None: the most precise one held)."""
    tokenizer = read_tokenizer(bundle)
    side = bundle.manifest["text_encoder"]
    held = {t["quantization"]: t for t in reversed(side["targets"]) if t["format"] == "onnx"}
    want = quantization or next((q for q in PRECISION_ORDER if q in held), None)
    if want not in held:
        raise BundleError(f"{bundle.root}: no text encoder with quantization {want} (has: {sorted(held)})")
    target = held[want]
    where = str(bundle.root / target["file"]["path"])
    encoder = OnnxTextEncoder(bundle.read_bytes(target["file"]), threads, where, target.get("session_config"))
    width = bundle.manifest["index"]["dim"]
    if encoder.dim != side["dim"] or side["dim"] != width:
        raise BundleError(f"{where}: text encoder output width {encoder.dim} does not match the index's {width}")
    return TextSide(tokenizer, encoder, target)
