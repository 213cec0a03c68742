"""The on-device loop, on the host: read the bundle, preprocess, encode, search the index."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ammkd.bundle.backends import ImageEncoder, open_image_encoder
from ammkd.bundle.format import BundleReader
from ammkd.bundle.preprocess import preprocess
from ammkd.bundle.text_encoder import TextSide, open_text_side
from ammkd.bundle.texts import find_text
from ammkd.common.errors import BundleError
from ammkd.mobile_runtime.index import APPROX_THRESHOLD, ExactIndex, FaissIndex


@dataclass
class Hit:
    id: int
    text: str
    score: float  # cosine similarity


@dataclass
class Retriever:
    """Image -> top-k texts of the bundle's index. `timings_ms` holds the last call's stages."""

    bundle: BundleReader
    encoder: ImageEncoder
    target: dict  # the manifest entry of the encoder in use
    index: np.ndarray  # (N, D) float32, decoded once from the fp16 file
    texts: list[str]
    searcher: ExactIndex | FaissIndex
    timings_ms: dict = field(default_factory=dict)
    text_quantization: str | None = None  # which text encoder embed_text runs (None: the most precise)
    _text: TextSide | None = field(default=None, repr=False)

    @classmethod
    def open(
        cls,
        bundle_dir: str | Path,
        threads: int = 1,
        backend: str = "auto",
        quantization: str | None = None,
        search: str = "auto",
    ) -> "Retriever":
        """Verify and load a bundle (hashes of every file are checked before use). `backend`:
        onnx, ort, executorch, coreml, or auto (what the bundle holds); see `open_image_encoder`.
        `search`: exact (the apps' NumPy scan), a faiss kind (flat, hnsw, ivf), or auto: exact
        below `index.APPROX_THRESHOLD` texts, faiss HNSW above."""
        t0 = time.perf_counter()
        bundle = BundleReader.open(bundle_dir)
        encoder, target = open_image_encoder(bundle, backend, quantization, threads)
        idx = bundle.manifest["index"]
        index = bundle.read_array(idx["vectors"]).astype(np.float32)
        texts = bundle.read_json(idx["texts"])
        if not isinstance(texts, list) or len(texts) != idx["count"]:
            raise BundleError(f"{bundle.root / idx['texts']['path']}: expected a list of {idx['count']} texts")
        if search == "exact" or (search == "auto" and len(index) < APPROX_THRESHOLD):
            searcher = ExactIndex(index)
        else:
            searcher = FaissIndex(index, search, threads=threads)
        r = cls(bundle, encoder, target, index, texts, searcher)
        r.timings_ms["load"] = (time.perf_counter() - t0) * 1e3
        return r

    def embed(self, image: str | Path | Image.Image | np.ndarray) -> np.ndarray:
        """One image (path, PIL, or HxWx3/4 uint8) -> embedding (D,)."""
        t0 = time.perf_counter()
        x = preprocess(image, self.bundle.input_spec)
        t1 = time.perf_counter()
        emb = self.encoder.embed(x)[0]
        t2 = time.perf_counter()
        self.timings_ms.update(preprocess=(t1 - t0) * 1e3, encode=(t2 - t1) * 1e3)
        return emb

    def search_embedding(self, emb: np.ndarray, k: int = 5) -> list[Hit]:
        t0 = time.perf_counter()
        ids, scores = (a[0] for a in self.searcher.search(emb, k))
        self.timings_ms["search"] = (time.perf_counter() - t0) * 1e3
        return [Hit(int(i), self.texts[i], float(s)) for i, s in zip(ids, scores) if i >= 0]

    def top_texts(self, image, k: int = 5) -> list[Hit]:
        return self.search_embedding(self.embed(image), k)

    @property
    def has_text_encoder(self) -> bool:
        return "text_encoder" in self.bundle.manifest

    def embed_text(self, text: str) -> np.ndarray:
        """A free-text query -> (D,) unit embedding by the bundle's text encoder (opened on first
        use). BundleError for a bundle without one; ConfigError for an empty or invalid query."""
        t0 = time.perf_counter()
        if self._text is None:
            self._text = open_text_side(self.bundle, self.text_quantization)
        emb = self._text.embed(text)
        self.timings_ms["encode_text"] = (time.perf_counter() - t0) * 1e3
        return emb

    def text_query(self, text: str) -> tuple[np.ndarray, str]:
        """The vector a text searches with, and how it was found: the text encoder's embedding
        ("text encoder"), or, in a bundle without one, the class vector of that text of the index
        ("index"; a text outside the index raises DataError with the nearest known texts)."""
        if self.has_text_encoder:
            return self.embed_text(text), "text encoder"
        return self.index[find_text(self.texts, text)], "index"
