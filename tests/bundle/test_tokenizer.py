"""The bundle tokenizer (bundle/tokenizer.py) against its kit and against the teachers' own tokenizer."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ammkd.bundle.tokenizer import SETTINGS_FILE, VOCAB_FILE, TokenizerSettings, WordPieceTokenizer, read_vocab
from ammkd.common.errors import BundleError

KIT = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "tokenizer_kit.json").read_text())


@pytest.fixture(scope="module")
def vocab_bytes() -> bytes:
    from ammkd.distill.text_towers import MINILM_ALIAS, resolve_hf_dir

    return (resolve_hf_dir(MINILM_ALIAS) / "vocab.txt").read_bytes()


@pytest.fixture(scope="module")
def tokenizer(vocab_bytes) -> WordPieceTokenizer:
    return WordPieceTokenizer(read_vocab(vocab_bytes, "vocab.txt"), TokenizerSettings(**KIT["settings"]))


def test_the_kit_is_what_the_reference_tokenizer_gives(tokenizer, vocab_bytes):
    assert hashlib.sha256(vocab_bytes).hexdigest() == KIT["vocab_sha256"]
    assert len(KIT["cases"]) >= 200
    wrong = [c["text"] for c in KIT["cases"] if tokenizer.encode(c["text"]) != c["ids"]]
    assert wrong == []
    lengths = [len(c["ids"]) for c in KIT["cases"]]
    assert max(lengths) == KIT["settings"]["max_length"] and min(lengths) == 2  # truncated, and the empty text


def test_it_agrees_with_the_teachers_tokenizer_where_ftfy_and_html_change_nothing(tokenizer):
    """The teachers tokenize with open_clip's HFTokenizer (ftfy + HTML unescaping + the same BERT
    pipeline). On every kit text those repairs leave alone, the ids are the same."""
    import ftfy
    from open_clip.tokenizer import HFTokenizer, whitespace_clean

    from ammkd.distill.text_towers import MINILM_ALIAS, resolve_hf_dir

    theirs = HFTokenizer(str(resolve_hf_dir(MINILM_ALIAS)), context_length=KIT["settings"]["max_length"])
    plain = [
        c
        for c in KIT["cases"]
        if whitespace_clean(ftfy.fix_text(c["text"])) == " ".join(c["text"].split())
        and "&" not in c["text"]
        and "[" not in c["text"]  # HF treats a literal "[CLS]" as the special token; the contract does not
    ]
    assert len(plain) >= 180
    for c in plain:
        ids = [i for i in theirs(c["text"])[0].tolist() if i != tokenizer.pad_id]
        assert ids == c["ids"], c["text"]


def test_bad_tokenizer_files_are_refused_with_the_file_named(tmp_path, vocab_bytes):
    with pytest.raises(BundleError, match="v.txt: a vocabulary needs one distinct"):
        read_vocab(b"[PAD]\na\na\n", "v.txt")
    with pytest.raises(BundleError, match="v.txt: not UTF-8"):
        read_vocab(b"[PAD]\n\xff\n", "v.txt")
    with pytest.raises(BundleError, match=r"special tokens \['\[UNK\]'"):
        WordPieceTokenizer(["[PAD]", "[CLS]", "[SEP]", "a"], TokenizerSettings(), "t")
    with pytest.raises(BundleError, match="s.json: not a WordPiece tokenizer"):
        TokenizerSettings.from_dict({"kind": "bpe"}, "s.json")
    with pytest.raises(BundleError, match="max_length must be in 3..4096"):
        TokenizerSettings.from_dict({"kind": "wordpiece", "max_length": 2}, "s.json")
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / VOCAB_FILE).write_bytes(vocab_bytes)
    with pytest.raises(BundleError, match="unreadable tokenizer files"):
        WordPieceTokenizer.from_files(tmp_path)  # settings.json missing
    (tmp_path / SETTINGS_FILE).write_text(json.dumps(TokenizerSettings().to_dict()))
    assert WordPieceTokenizer.from_files(tmp_path).encode("A dog.") == [101, 1037, 3899, 1012, 102]
