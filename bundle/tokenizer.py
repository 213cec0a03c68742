"""The bundle's text tokenizer: BERT WordPiece from plain files any language reads (docs/design.md §5.10).

A bundle with a text encoder carries `tokenizer/vocab.txt` (one token per line, UTF-8, `\\n`
line ends; id = line number from 0) and `tokenizer/settings.json` (TokenizerSettings). A query
(a string of Unicode code points) becomes ids in five steps:

  1. whitespace: split on the code points Python's `str.isspace()` accepts (WHITESPACE below)
     and re-join the words with one space (open_clip's `whitespace_clean`; its `ftfy` repairs
     and HTML unescaping are not part of the contract, see §5.10);
  2. BERT normalizer: drop U+0000, U+FFFD and "other" code points (categories Cc, Cf, Co as of
     Unicode 8.0; unassigned code points stay; tab, LF and CR excepted), map whitespace (tab, LF,
     CR and Unicode White_Space) to a space, put spaces around CJK ideographs (`chinese_chars`),
     strip accents (NFD, then drop category Mn as of Unicode 8.0) and lower-case each code point
     on its own (`lowercase`; no context rules);
  3. pre-tokenizer: split on whitespace, and every punctuation code point (ASCII 33-47, 58-64,
     91-96, 123-126, or a Unicode P* category) is a word of its own;
  4. WordPiece: a word longer than `max_input_chars_per_word` code points is `unk`; otherwise
     greedy longest match from the left, pieces after the first prefixed with `##`; a word
     with an unmatched rest is `unk` as a whole;
  5. `[cls] + pieces[: max_length - 2] + [sep]`, not padded (the encoder takes (1, L), L <= max_length).

Python runs steps 2-5 with Hugging Face `tokenizers` (the reference implementation); the Kotlin
core and the web page implement them and are held to the tokenizer kit (golden/tokenizer_kit.json
in a bundle, tests/fixtures/tokenizer_kit.json here).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ammkd.common.errors import BundleError

VOCAB_FILE = "tokenizer/vocab.txt"
SETTINGS_FILE = "tokenizer/settings.json"
KIT_FILE = "golden/tokenizer_kit.json"  # {"cases": [{"text", "ids"}]}
KIT_EMBEDDINGS = "golden/text_embeddings.f32.bin"  # (M, D) float32, PyTorch's embedding of each kit text
# Python's str.isspace() code points: what str.split() splits on (step 1).
WHITESPACE = frozenset(
    [*range(0x09, 0x0E), *range(0x1C, 0x21), 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029]
    + [0x202F, 0x205F, 0x3000]
)


@dataclass(frozen=True)
class TokenizerSettings:
    kind: str = "wordpiece"
    lowercase: bool = True
    strip_accents: bool = True
    chinese_chars: bool = True
    max_length: int = 64  # tokens, [CLS] and [SEP] included
    max_input_chars_per_word: int = 100
    continuing_prefix: str = "##"
    unk: str = "[UNK]"
    cls: str = "[CLS]"
    sep: str = "[SEP]"
    pad: str = "[PAD]"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str) -> TokenizerSettings:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown or d.get("kind") != "wordpiece":
            kind = d.get("kind")
            raise BundleError(f"{where}: not a WordPiece tokenizer this reader knows (kind {kind!r}, {unknown})")
        s = cls(**d)
        if not 3 <= s.max_length <= 4096 or s.max_input_chars_per_word < 1:
            raise BundleError(f"{where}: max_length must be in 3..4096 and max_input_chars_per_word >= 1")
        return s


def clean_whitespace(text: str) -> str:
    """Step 1: words split on WHITESPACE, joined with one space (Python: " ".join(text.split()))."""
    return " ".join(text.split())


def read_vocab(data: bytes, where: str) -> list[str]:
    """vocab.txt bytes -> tokens (id = index). Refuses invalid UTF-8, empty or repeated tokens."""
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise BundleError(f"{where}: not UTF-8 ({e})") from None
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or any(t == "" or "\r" in t for t in lines) or len(set(lines)) != len(lines):
        raise BundleError(f"{where}: a vocabulary needs one distinct, non-empty token per line")
    return lines


class WordPieceTokenizer:
    """Texts -> token ids (steps 1-5), with Hugging Face `tokenizers` for steps 2-5."""

    def __init__(self, vocab: list[str], settings: TokenizerSettings, where: str = "tokenizer"):
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

        self.vocab, self.settings = vocab, settings
        ids = {t: i for i, t in enumerate(vocab)}
        missing = [t for t in (settings.unk, settings.cls, settings.sep, settings.pad) if t not in ids]
        if missing:
            raise BundleError(f"{where}: special tokens {missing} are not in the vocabulary")
        self.cls_id, self.sep_id, self.pad_id = ids[settings.cls], ids[settings.sep], ids[settings.pad]
        tok = Tokenizer(
            models.WordPiece(
                ids,
                unk_token=settings.unk,
                max_input_chars_per_word=settings.max_input_chars_per_word,
                continuing_subword_prefix=settings.continuing_prefix,
            )
        )
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=settings.chinese_chars,
            strip_accents=settings.strip_accents,
            lowercase=settings.lowercase,
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.post_processor = processors.TemplateProcessing(
            single=f"{settings.cls} $A {settings.sep}",
            special_tokens=[(settings.cls, self.cls_id), (settings.sep, self.sep_id)],
        )
        tok.enable_truncation(settings.max_length)
        self._tok = tok

    @classmethod
    def from_files(cls, folder: Path) -> WordPieceTokenizer:
        """A bundle-layout folder holding tokenizer/vocab.txt and tokenizer/settings.json."""
        try:
            vocab = read_vocab((folder / VOCAB_FILE).read_bytes(), str(folder / VOCAB_FILE))
            settings = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise BundleError(f"{folder}: unreadable tokenizer files: {e}") from None
        return cls(vocab, TokenizerSettings.from_dict(settings, str(folder / SETTINGS_FILE)), str(folder))

    def encode(self, text: str) -> list[int]:
        """One text -> ids, [CLS] ... [SEP], at most max_length of them."""
        return self._tok.encode(clean_whitespace(text)).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch([clean_whitespace(t) for t in texts])]
