"""The bundle's text side: export through the text gate, the Python runtime, the CLI, verify,
and what bad queries and damaged bundles get (docs/design.md §5.10)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from conftest import AMMKD, assert_user_error, run_cli

from ammkd.bundle.format import BundleReader
from ammkd.bundle.text_encoder import open_text_side
from ammkd.common.errors import BundleError, ConfigError, ExportError
from ammkd.mobile_runtime.retriever import Retriever
from ammkd.mobile_runtime.verify import verify_bundle


def test_the_text_encoder_reproduces_every_class_vector(text_pipeline):
    bundle = BundleReader.open(text_pipeline["bundle"])
    side = bundle.manifest["text_encoder"]
    assert "text_encoder_absent" not in bundle.manifest
    assert side["transformers"] == 1  # both teachers locked MiniLM: it ships once
    assert side["ids_differ_from_teachers"] == 0
    assert side["index_texts_checked"] == bundle.manifest["index"]["count"]  # a small index: every text
    by_quant = {t["quantization"]: t for t in side["targets"]}
    fp32 = by_quant["none"]["parity"]
    assert fp32["texts"] == bundle.manifest["index"]["count"]
    assert fp32["cosine_min"] >= 0.999 and fp32["self_top1"] >= 0.99
    if "int8-dynamic" in by_quant:  # kept only when it passed the int8 text bound
        assert by_quant["int8-dynamic"]["parity"]["cosine_min"] >= 0.95
        assert by_quant["int8-dynamic"]["bytes"] < 0.5 * by_quant["none"]["bytes"]  # word embeddings too
    else:
        assert side["left_out"][0]["target"] == "onnx/int8-dynamic"


def test_runtime_embeds_free_text_into_the_index_space(text_pipeline):
    r = Retriever.open(text_pipeline["bundle"])
    assert r.has_text_encoder
    for i in (0, len(r.texts) // 2, len(r.texts) - 1):
        e = r.embed_text(r.texts[i])
        assert abs(np.linalg.norm(e) - 1) < 1e-4
        assert float(e @ r.index[i]) >= 0.999  # fp16 index row: the class vector
        assert r.search_embedding(e, 1)[0].id == i
    free = r.embed_text("a thing that is nowhere in the index, with emoji 🐶 and ß")
    assert free.shape == r.index[0].shape and abs(np.linalg.norm(free) - 1) < 1e-4
    vec, via = r.text_query("something new")
    assert via == "text encoder" and np.allclose(vec, r.embed_text("something new"))


@pytest.mark.parametrize(
    "query, message",
    [("", "empty"), ("  \t\n ", "empty"), ("x" * 100_000, "at most 10000"), ("bad \udcff bytes", "not valid UTF-8")],
)
def test_bad_queries_get_a_message(text_pipeline, query, message):
    side = open_text_side(BundleReader.open(text_pipeline["bundle"]))
    with pytest.raises(ConfigError, match=message):
        side.embed(query)


def test_a_long_query_is_truncated_not_refused(text_pipeline):
    side = open_text_side(BundleReader.open(text_pipeline["bundle"]))
    ids = side.tokenizer.encode("dog " * 2000)
    assert len(ids) == side.tokenizer.settings.max_length
    assert np.isfinite(side.embed("dog " * 2000)).all()


def test_search_cli_takes_free_text(text_pipeline):
    b = str(text_pipeline["bundle"])
    proc = run_cli("search", "--bundle", b, "--text", "a red shape on the left", "--k", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["query_by"] == "text encoder" and len(got["hits"]) == 3
    assert got["hits"][0]["score"] >= got["hits"][-1]["score"]
    proc = run_cli("search", "--bundle", b, "--text", "a red shape", "--text-quantization", "int8-weights")
    assert_user_error(proc, "no text encoder with quantization int8-weights")
    assert_user_error(run_cli("search", "--bundle", b, "--text", "   "), "text query is empty")
    bad = subprocess.run([*AMMKD, "search", "--bundle", b, "--text", b"\xff\xfe dog"], capture_output=True, timeout=300)
    assert bad.returncode != 0 and b"Traceback" not in bad.stderr and b"not valid UTF-8" in bad.stderr


def test_verify_runs_the_kit_and_catches_a_tampered_tokenizer(text_pipeline, tmp_path):
    report = verify_bundle(text_pipeline["bundle"])
    rows = {r["target"]: r for r in report["targets"]}
    assert report["ok"] and rows["tokenizer"]["status"] == "ok" and rows["tokenizer"]["kit_cases"] >= 200
    assert rows["text/onnx/none"]["cosine_min"] >= 0.999
    copy = shutil.copytree(text_pipeline["bundle"], tmp_path / "b")
    vocab = copy / "tokenizer" / "vocab.txt"
    vocab.write_bytes(vocab.read_bytes().replace(b"\ndog\n", b"\ncat\n", 1))
    bad = verify_bundle(copy)
    assert not bad["ok"] and any("vocab.txt" in f.get("reason", "") for f in bad["files"] if not f["ok"])
    with pytest.raises(BundleError, match="vocab.txt"):
        open_text_side(BundleReader.open(copy))


def test_a_text_encoder_of_the_wrong_width_is_refused(text_pipeline, tmp_path):
    copy = shutil.copytree(text_pipeline["bundle"], tmp_path / "b")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["text_encoder"]["dim"] += 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="does not match the index"):
        open_text_side(BundleReader.open(copy))


def test_bpe_teachers_ship_no_text_encoder_and_say_why(pipeline, tmp_path):
    from ammkd.export.exporter import ExportConfig, export_bundle

    manifest = BundleReader.open(pipeline["bundle"]).manifest
    assert "text_encoder" not in manifest and "BPE" in manifest["text_encoder_absent"]
    assert not Retriever.open(pipeline["bundle"]).has_text_encoder
    with pytest.raises(ExportError, match="no text encoder can ship: .*BPE"):
        export_bundle(pipeline["student"], tmp_path / "b", ExportConfig(parity_images=4, text_encoder="on"))
    assert not (tmp_path / "b").exists()
