"""The `ammkd` command: parse, load a config, call one library function, print a summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ammkd.common.errors import AmmkdError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Distil CLIP teachers into a phone-sized image encoder and ship it as a bundle.",
)
teachers_app = typer.Typer(no_args_is_help=True, help="Train or inspect CLIP teachers.")
app.add_typer(teachers_app, name="teachers")
out = Console(width=max(120, Console().width))
err = Console(stderr=True)


def _metrics_table(title: str, rows: dict[str, dict]) -> Table:
    keys = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "mean_recall"]
    table = Table(title=escape(title))
    table.add_column("model")
    for k in keys:
        table.add_column(k, justify="right")
    for name, m in rows.items():
        table.add_row(escape(name), *[f"{m[k]:.1f}" for k in keys])
    return table


@teachers_app.command("train")
def teachers_train(
    out_dir: Path = typer.Option(..., "--out", help="Teacher folder to write (open_clip local-dir layout)."),
    preset: Optional[str] = typer.Option(None, help="Preset: ammkd-tiny-vit, ammkd-tiny-rn, ammkd-small-rn..."),
    model: Optional[str] = typer.Option(
        None,
        help="open_clip NAME[:PRETRAINED|:CHECKPOINT], VISION+hf:DIR (e.g. tf_efficientnet_lite2:imagenet"
        "+hf:all-MiniLM-L6-v2), or a folder.",
    ),
    data: Optional[str] = typer.Option(None, help="DATA spec, e.g. synthetic or flickr8k:DIR."),
    epochs: Optional[float] = typer.Option(None),
    batch_size: Optional[int] = typer.Option(None, help="Global batch (the contrastive negatives of a step)."),
    accum_steps: Optional[int] = typer.Option(None, help="Micro-batches per step (gradient accumulation)."),
    lr: Optional[float] = typer.Option(None),
    text_unlocked_layers: Optional[int] = typer.Option(None, help="HF text tower: last N layers train (0: frozen)."),
    image_frozen_stages: Optional[int] = typer.Option(
        None, help="Pretrained timm tower: stem + first N stages frozen, their outputs cached (no crop augmentation)."
    ),
    image_lr_scale: Optional[float] = typer.Option(None, help="lr of the pretrained image tower relative to --lr."),
    eval_every: Optional[int] = typer.Option(None, help="Steps between validation recalls in the log."),
    checkpoint_every: Optional[int] = typer.Option(None, help="Steps between atomic checkpoints (0: none)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable images; list them in skipped.json."),
    config: Optional[Path] = typer.Option(None, help="YAML/TOML/JSON TeacherConfig; options override it."),
    resume: bool = typer.Option(False, help="Continue an interrupted run from its last checkpoint in --out."),
    overwrite: bool = typer.Option(False, help="Start over in an --out that holds a finished or interrupted run."),
):
    """Contrastively train one teacher (open_clip ClipLoss) on the train split."""
    from ammkd.common.config import load_config
    from ammkd.distill.teacher_training import TeacherConfig, train_teacher
    from ammkd.tools.evaluate import evaluate

    if preset and model:
        raise AmmkdError("give --preset or --model, not both")
    cfg = load_config(
        TeacherConfig,
        config,
        model=preset or model,
        data=data,
        epochs=epochs,
        batch_size=batch_size,
        accum_steps=accum_steps,
        lr=lr,
        text_unlocked_layers=text_unlocked_layers,
        image_frozen_stages=image_frozen_stages,
        image_lr_scale=image_lr_scale,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        skip_bad=skip_bad or None,
    )
    train_teacher(cfg, out_dir, resume=resume, overwrite=overwrite)
    metrics = evaluate(str(out_dir), cfg.data, skip_bad=cfg.skip_bad)
    out.print(_metrics_table(f"teacher {cfg.model} on {cfg.data} (val)", {str(out_dir): metrics}))
    out.print(
        f"teacher written to [bold]{escape(str(out_dir))}[/bold] (learning curve: {out_dir / 'learning_curve.png'})"
    )


@app.command()
def distill(
    teachers: str = typer.Option(..., help="Comma-separated teacher folders or specs: T1,T2."),
    out_dir: Path = typer.Option(..., "--out", help="Student folder to write."),
    data: Optional[str] = typer.Option(None, help="DATA spec."),
    weighting: Optional[str] = typer.Option(
        None,
        help="adaptive (min-norm per batch) | adaptive-norm | adaptive-sample | adaptive-gt | equal | fixed | single | "
        "none",
    ),
    student: Optional[str] = typer.Option(
        None, help="Student preset (ammkd-lite0: ImageNet EfficientNet-Lite0), timm model name, or ARCH:WEIGHTS."
    ),
    image_size: Optional[int] = typer.Option(None, help="Student input size in px (default: the preset's)."),
    frozen_stages: Optional[int] = typer.Option(
        None, help="Pretrained student: stem + first N stages frozen, their outputs cached (no crop augmentation)."
    ),
    epochs: Optional[float] = typer.Option(None),
    tolerance: Optional[float] = typer.Option(None, help="Cap C on a teacher's weight (adaptive schemes)."),
    gt_margin: Optional[float] = typer.Option(
        None, help="adaptive-gt: nats above the best teacher's caption cross-entropy still weighed."
    ),
    fusion: Optional[str] = typer.Option(
        None, help="network (default: trained fused index) | network+teacher (and a fused teacher) | concat"
    ),
    teacher_outputs: Optional[str] = typer.Option(None, help="cached (fp16 on disk) | online (teachers every step)"),
    feature_weight: Optional[float] = typer.Option(None, help="CLIP-KD feature loss weight (0: off)."),
    relation_weight: Optional[float] = typer.Option(None, help="CLIP-KD relation loss weight (0: off)."),
    spectral_weight: Optional[float] = typer.Option(None, help="Spectral feature loss weight (0: off; needs online)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable images; list them in skipped.json."),
    config: Optional[Path] = typer.Option(None, help="YAML/TOML/JSON DistillConfig; options override it."),
    resume: bool = typer.Option(False, help="Continue an interrupted run from its last checkpoint in --out."),
    overwrite: bool = typer.Option(False, help="Start over in an --out that holds a finished or interrupted run."),
):
    """Distil a student from the teachers (AMMKD: KL over class vectors, adaptive weights)."""
    from ammkd.common.config import load_config
    from ammkd.distill.distributed import ranks
    from ammkd.distill.train import DistillConfig, distill as run
    from ammkd.tools.evaluate import evaluate

    cfg = load_config(
        DistillConfig,
        config,
        teachers=[t for t in teachers.split(",") if t],
        data=data,
        weighting=weighting,
        student=student,
        image_size=image_size,
        frozen_stages=frozen_stages,
        epochs=epochs,
        tolerance=tolerance,
        gt_margin=gt_margin,
        fusion=fusion,
        teacher_outputs=teacher_outputs,
        feature_weight=feature_weight,
        relation_weight=relation_weight,
        spectral_weight=spectral_weight,
        skip_bad=skip_bad or None,
    )
    run(cfg, out_dir, resume=resume, overwrite=overwrite)
    if not ranks().is_main:  # under torchrun, rank 0 alone reports
        return
    metrics = evaluate(str(out_dir), cfg.data, skip_bad=cfg.skip_bad)
    out.print(_metrics_table(f"student ({cfg.weighting}) on {cfg.data} (val)", {str(out_dir): metrics}))
    out.print(f"student written to [bold]{escape(str(out_dir))}[/bold]")


@app.command("eval")
def eval_cmd(
    model: str = typer.Option(..., help="Student folder, bundle folder, teacher folder or teacher spec."),
    data: str = typer.Option(..., help="DATA spec."),
    split: str = typer.Option("val", help="Split to evaluate (a split in the DATA spec wins)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON on stdout."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave unreadable images out instead of failing."),
):
    """Image->text and text->image Recall@1/5/10 on a held-out split."""
    from ammkd.distill.data import load_split
    from ammkd.tools.evaluate import evaluate_on

    images = load_split(data, split)
    metrics = evaluate_on(model, images, skip_bad)
    if as_json:
        print(json.dumps({"model": model, "data": data, "split": images.split, **metrics}))
    else:
        out.print(_metrics_table(f"{data} ({images.split})", {model: metrics}))


@app.command()
def export(
    model: Path = typer.Option(..., help="Student folder written by `ammkd distill`."),
    out_dir: Path = typer.Option(..., "--out", help="Bundle folder to write."),
    target: str = typer.Option("onnx", help="onnx|executorch|coreml|all, or a comma-separated list."),
    quantize: str = typer.Option(
        "none", help="none|fp16|int8|int8-dynamic|int8-weights|palettize4|palettize8, or a comma-separated list."
    ),
    dynamic_batch: bool = typer.Option(False, help="ONNX: symbolic batch dimension instead of batch 1."),
    calibration_images: Optional[int] = typer.Option(None, help="Training images for int8 calibration (64)."),
    int8_float_convs: Optional[int] = typer.Option(
        None, help="Static int8: leading convolutions kept float (default: the fewest that pass the gate)."
    ),
    coreml_precision: Optional[str] = typer.Option(None, help="Core ML compute precision: fp16|fp32."),
    coreml_min_target: Optional[str] = typer.Option(None, help="Core ML deployment target: iOS16|iOS17|iOS18."),
    executorch_delegate: Optional[str] = typer.Option(
        None, help="ExecuTorch delegate: xnnpack (CPU, Android and iOS) or coreml (iOS/macOS; fp16)."
    ),
    allow_degraded: bool = typer.Option(False, help="Keep artifacts that miss the parity bounds (default: left out)."),
    strict: bool = typer.Option(False, help="Fail if any artifact misses the parity bounds (default: left out)."),
    overwrite: bool = typer.Option(False, help="Replace a bundle of another model at --out."),
    text_encoder: Optional[str] = typer.Option(
        None,
        help="Text side for free-text search: auto (default: shipped when the teachers' text towers are "
        "Hugging Face WordPiece ones), on (fail if it cannot ship), off.",
    ),
    text_quantize: Optional[str] = typer.Option(
        None, help="Text encoder variants: none|int8-dynamic|int8-weights, comma-separated (none,int8-dynamic)."
    ),
    config: Optional[Path] = typer.Option(None, help="YAML/TOML/JSON ExportConfig; options override it."),
):
    """Export the student and its class-vector index to a verified bundle."""
    from ammkd.bundle.format import BundleReader
    from ammkd.common.config import load_config
    from ammkd.export.exporter import ExportConfig, export_bundle

    cfg = load_config(
        ExportConfig,
        config,
        target=target,
        quantize=quantize,
        dynamic_batch=dynamic_batch or None,
        calibration_images=calibration_images,
        int8_float_convs=int8_float_convs,
        coreml_precision=coreml_precision,
        coreml_min_target=coreml_min_target,
        executorch_delegate=executorch_delegate,
        allow_degraded=allow_degraded or None,
        strict=strict or None,
        overwrite=overwrite or None,
        text_encoder=text_encoder,
        text_quantize=text_quantize,
    )
    export_bundle(model, out_dir, cfg)
    manifest = BundleReader.open(out_dir).manifest
    table = Table(title=escape(f"bundle {out_dir}"))
    for col in ("target", "weights", "path", "MB", "cosine min", "top-1 agreement", "export s"):
        table.add_column(col)
    for t in manifest["targets"]:
        p = t["parity"]
        table.add_row(
            f"{t['format']}/{t['quantization']}",
            t["dtype"],
            (t.get("file") or t.get("package"))["path"],
            f"{t['bytes'] / 1e6:.2f}",
            f"{p['cosine_min']:.6f}" if "cosine_min" in p else "not run",
            f"{p['top1_agreement']:.3f}" if "top1_agreement" in p else p.get("skipped", ""),
            f"{t['export_seconds']:.1f}",
        )
    out.print(table)
    m = manifest["model"]
    out.print(
        f"model: {m['params'] / 1e6:.2f} M params, {m['macs_per_image'] / 1e6:.1f} M MACs per image; "
        f"index: {manifest['index']['count']} texts x {manifest['index']['dim']} (fp16)"
    )
    for miss in manifest.get("parity_misses", []):
        out.print(f"[yellow]kept despite missing its parity bound (--allow-degraded):[/yellow] {escape(miss.strip())}")
    for left in manifest.get("left_out", []):
        for miss in left["misses"]:
            out.print(f"[yellow]left out, missed its parity bound:[/yellow] {escape(miss)}")
    if manifest.get("left_out"):
        out.print("(--allow-degraded keeps such artifacts, --strict makes a miss fail the export)")
    side = manifest.get("text_encoder")
    if side is None:
        out.print(f"text encoder: none ({escape(manifest.get('text_encoder_absent', ''))})")
        return
    for t in side["targets"]:
        p = t["parity"]
        out.print(
            f"text encoder onnx/{t['quantization']}: {t['bytes'] / 1e6:.1f} MB, cosine to the class vectors "
            f"min {p['cosine_min']:.4f} mean {p['cosine_mean']:.4f} over {p['texts']} index texts, "
            f"own text first {p['self_top1']:.1%}"
        )
    for left in side.get("left_out", []):
        out.print(f"[yellow]text encoder left out:[/yellow] {escape('; '.join(left['misses']))}")


@app.command()
def search(
    bundle: Path = typer.Option(..., help="Bundle folder."),
    image: Optional[Path] = typer.Option(None, help="Image file: its top-k texts of the index."),
    text: Optional[str] = typer.Option(
        None,
        help="A query: its top-k photos of --gallery, or without --gallery its top-k texts of the index. "
        "Free text with a bundle that has a text encoder; otherwise a text of the index.",
    ),
    gallery: Optional[Path] = typer.Option(None, help="Folder of photos, embedded into the bundle's gallery/."),
    rebuild_gallery: bool = typer.Option(False, "--rebuild-gallery", help="Start the gallery afresh."),
    k: int = typer.Option(5, min=1),
    backend: str = typer.Option("auto", help="auto, onnx, ort, executorch or coreml (macOS)."),
    quantization: Optional[str] = typer.Option(None, help="Which quantized target to run (default: unquantized)."),
    text_quantization: Optional[str] = typer.Option(None, help="Which text encoder to run (default: unquantized)."),
    threads: int = typer.Option(1, min=1),
    as_json: bool = typer.Option(False, "--json"),
):
    """Image -> top-k texts of the index; text -> top-k photos of --gallery, or top-k texts."""
    from ammkd.common.errors import ConfigError
    from ammkd.mobile_runtime.retriever import Retriever

    if (image is None) == (text is None):
        raise ConfigError("search: give either --image FILE or --text TEXT (with --gallery DIR to search photos)")
    r = Retriever.open(bundle, threads=threads, backend=backend, quantization=quantization)
    r.text_quantization = text_quantization
    if text is not None:
        if gallery is None and not r.has_text_encoder:
            raise ConfigError(
                "search: this bundle has no text encoder, so --text searches photos by a text of the index: "
                "give the photo folder with --gallery DIR"
            )
        if gallery is None:
            _search_texts(r, text, k, as_json)
        else:
            _search_gallery(r, gallery, text, k, rebuild_gallery, as_json)
        return
    hits = r.top_texts(image, k)
    timings = {k: round(v, 3) for k, v in r.timings_ms.items()}
    if as_json:
        print(
            json.dumps(
                {
                    "image": str(image),
                    "backend": r.target["format"],
                    "hits": [h.__dict__ for h in hits],
                    "timings_ms": timings,
                }
            )
        )
        return
    _print_hits(f"top {k} for {image}", [(h.score, h.text) for h in hits])
    t = r.timings_ms
    out.print(
        f"{r.target['format']}/{r.target['quantization']}: load {t['load']:.1f} ms, "
        f"preprocess {t['preprocess']:.1f} ms, encode {t['encode']:.1f} ms, search {t['search']:.2f} ms"
    )


def _print_hits(title: str, rows: list[tuple[float, str]], what: str = "text") -> None:
    table = Table(title=escape(title))
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column(what)
    for rank, (score, name) in enumerate(rows, 1):
        table.add_row(str(rank), f"{score:.3f}", escape(name))
    out.print(table)


def _search_texts(r, text: str, k: int, as_json: bool) -> None:
    """Free text -> the top-k texts of the index, by the bundle's text encoder."""
    query, via = r.text_query(text)
    hits = r.search_embedding(query, k)
    if as_json:
        timings = {k: round(v, 3) for k, v in r.timings_ms.items()}
        print(json.dumps({"text": text, "query_by": via, "hits": [h.__dict__ for h in hits], "timings_ms": timings}))
        return
    _print_hits(f"top {k} texts for {text!r}", [(h.score, h.text) for h in hits])
    out.print(f"text encoder {r._text.target['quantization']}: encode {r.timings_ms['encode_text']:.1f} ms")


def _search_gallery(r, gallery: Path, text: str, k: int, rebuild: bool, as_json: bool) -> None:
    from ammkd.mobile_runtime.gallery import update_gallery

    # the query first: a typo of an index text (bundles without a text encoder) fails at once
    query, via = r.text_query(text)
    update = update_gallery(r, gallery, rebuild)
    hits = update.gallery.search(query, k)
    if as_json:
        known = {"text_id": r.texts.index(text)} if via == "index" and text in r.texts else {}
        print(
            json.dumps(
                {
                    "text": text,
                    "query_by": via,
                    **known,
                    "added": update.added,
                    "skipped": update.skipped,
                    "gallery_size": len(update.gallery.images),
                    "hits": [{"image": p, "score": s} for p, s in hits],
                }
            )
        )
        return
    for s in update.skipped:
        err.print(f"[yellow]skipped[/yellow] {escape(s['path'])}: {escape(s['reason'])}", highlight=False)
    out.print(
        f"gallery: {len(update.gallery.images)} photos ({update.added} new, {len(update.skipped)} skipped) "
        f"in {update.gallery.folder}"
    )
    _print_hits(f"top {k} photos for {text!r}", [(s, str(p)) for p, s in hits], "photo")


@app.command()
def verify(
    bundle: Path = typer.Option(..., help="Bundle folder."),
    threads: int = typer.Option(1, min=1),
    as_json: bool = typer.Option(False, "--json"),
):
    """Run the bundle's golden inputs through every backend present; exit 1 if one disagrees."""
    from ammkd.export.mil_reference import mil_reference_predict  # Core ML off macOS: needs PyTorch
    from ammkd.mobile_runtime.verify import verify_bundle

    report = verify_bundle(bundle, threads, coreml_reference=mil_reference_predict)
    if as_json:
        print(json.dumps(report))
    else:
        bad = [f for f in report["files"] if not f["ok"]]
        out.print(f"files: {len(report['files']) - len(bad)} of {len(report['files'])} listed files intact")
        for f in bad:
            out.print(f"[red]FAILED[/red] {escape(f['reason'])}")
        for p in report["preprocess"]:
            out.print(
                f"preprocess {escape(str(p['image']))}: max |diff| {p['max_abs_diff']:.2e} "
                + ("ok" if p["ok"] else "FAILED")
            )
        table = Table(title=f"{report['golden']} golden inputs per target")
        for col in ("target", "dtype", "status", "cosine min", "bound", "top-1 agreement", "note"):
            table.add_column(col)
        for t in report["targets"]:
            cos = f"{t['cosine_min']:.6f}" if "cosine_min" in t else ""
            table.add_row(
                t["target"],
                t["dtype"],
                t["status"],
                cos,
                str(t.get("cosine_bound", "")),
                str(t.get("top1_agreement", "")),
                t.get("reason", ""),
            )
        out.print(table)
        out.print("[green]bundle verified[/green]" if report["ok"] else "[red]bundle verification failed[/red]")
    if not report["ok"]:
        raise typer.Exit(1)


@app.command()
def bench(
    bundle: Optional[Path] = typer.Option(None, help="Bundle folder."),
    threads: int = typer.Option(1, min=1, help="Threads per runtime (pinned, reported)."),
    runs: int = typer.Option(50, min=1, help="Timed runs per target after warm-up."),
    warmup: int = typer.Option(10, min=0),
    batch: int = typer.Option(8, min=1, help="Batch for throughput (targets with a dynamic batch)."),
    emit_phone_scripts: Optional[Path] = typer.Option(
        None, help="Write adb / Core ML benchmark scripts for the bundle into this folder instead."
    ),
    parse_phone_results: Optional[Path] = typer.Option(
        None, help="Read the results/ of a phone-scripts folder back into bench rows."
    ),
    as_json: bool = typer.Option(False, "--json"),
):
    """Load time, batch-1 latency, peak memory and throughput of every target; index search time."""
    from ammkd.common.errors import ConfigError

    if parse_phone_results is not None:
        from ammkd.tools.phone_bench import parse_phone_results as parse

        r = parse(parse_phone_results)
        if as_json:
            print(json.dumps(r))
        else:
            _print_bench_rows(f"{r['device']} (phone)", r["targets"])
        _exit_if_a_target_failed(r["targets"])
        return
    if bundle is None:
        raise ConfigError("bench: give --bundle B (or --parse-phone-results DIR)")
    if emit_phone_scripts is not None:
        from ammkd.tools.phone_bench import emit_phone_scripts as emit

        folder = emit(bundle, emit_phone_scripts, runs=runs)
        out.print(f"phone benchmark scripts in [bold]{escape(str(folder))}[/bold]; see {folder / 'README.md'}")
        return
    from ammkd.tools.bench import bench_bundle

    r = bench_bundle(bundle, threads, warmup, runs, batch)
    if as_json:
        print(json.dumps(r))
    else:
        _print_bench_rows(f"{r['model']} ({r['image_size']} px), {runs} runs after {warmup} warm-up", r["targets"])
        s = r["index_search"]
        out.print(
            f"index search (exact, NumPy): top-{s['k']} of {s['count']:,} x {s['dim']} in "
            f"{s['exact_numpy']['median_ms']:.3f} ms median (p90 {s['exact_numpy']['p90_ms']:.3f})"
        )
    _exit_if_a_target_failed(r["targets"])


def _exit_if_a_target_failed(rows: list[dict]) -> None:
    """Exit 1 (after every row was reported) if a target failed; skipped ones (no runtime here) do not count."""
    failed = [t["target"] for t in rows if t["status"] == "failed"]
    if failed:
        err.print(f"[red]bench: {len(failed)} target(s) failed: {', '.join(failed)}[/red]")
        raise typer.Exit(1)


def _print_bench_rows(title: str, rows: list[dict]) -> None:
    table = Table(title=escape(title))
    for col in ("target", "threads", "load ms", "median ms", "p90 ms", "min ms", "max ms", "images/s", "peak MB"):
        table.add_column(col, justify="left" if col == "target" else "right")
    for t in rows:
        if t["status"] != "ok":
            table.add_row(t["target"], escape(f"{t['status']}: {t['reason']}"), *[""] * 7)
            continue
        lat = t["latency"]
        ips = f"{t['throughput_ips']:.0f} (batch {t['throughput_batch']})" if "throughput_ips" in t else ""
        load = f"{t['load_ms']:.1f}" if "load_ms" in t else ""
        peak = f"{t['peak_rss_mb']:.0f}" if "peak_rss_mb" in t else ""
        table.add_row(
            t["target"],
            str(t.get("threads") or ""),
            load,
            f"{lat['median_ms']:.3f}",
            f"{lat['p90_ms']:.3f}",
            f"{lat['min_ms']:.3f}",
            f"{lat['max_ms']:.3f}",
            ips,
            peak,
        )
    out.print(table)


def print_summary(s: dict, console) -> None:
    """The demo's summary (tools/demo.py `run_demo`) as a table, then the bundle and an example search."""
    from rich.table import Table

    keys = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "mean_recall"]
    table = Table(title=f"ammkd demo ({s['preset']}, {s['data']} val split, recall in %)")
    for col in ["model", "params M", "i2t@1", "i2t@5", "i2t@10", "t2i@1", "t2i@5", "t2i@10", "mean", "ONNX ms"]:
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=col == "model")
    for name, m in s["rows"].items():
        table.add_row(
            name,
            f"{m['params_M']:.2f}" if "params_M" in m else "",
            *[f"{m[k]:.1f}" for k in keys],
            f"{m['onnx_ms']:.2f}" if "onnx_ms" in m else "",
        )
    console.print(table)
    p = s["parity"]
    console.print(
        f"bundle: [bold]{s['bundle']}[/bold] ({s['bundle_MB']:.2f} MB); ONNX vs PyTorch cosine min "
        f"{p['cosine_min']:.6f}, top-1 agreement {p['top1_agreement']:.3f}"
    )
    console.print(f"search {s['example']['image']}: " + "; ".join(f"{t} ({sc:.3f})" for t, sc in s["example"]["top3"]))
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in s.get("stage_seconds", {}).items())
    console.print(f"finished in {s['seconds']:.0f} s ({stages})")


@app.command()
def demo(
    preset: str = typer.Option("default", help="smoke (< 3 min on 2 cores) or default (about half an hour)."),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", help="Run folder (runs/demo, or runs/demo-PRESET for other presets)."
    ),
    as_json: bool = typer.Option(False, "--json"),
):
    """The whole pipeline on the embedded synthetic data: teachers, student, bundle, search."""
    from ammkd.tools.demo import run_demo

    result = run_demo(preset, out_dir, log=lambda msg: err.print(msg))
    if as_json:
        print(json.dumps(result))
    else:
        print_summary(result, out)


@app.command()
def serve(
    bundle: Path = typer.Option(..., help="Bundle folder to serve under /bundle/."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; 0.0.0.0 for phones on the local network."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port (0: a free one, printed)."),
):
    """Serve the browser demo (web_demo/) and a bundle over local HTTP, read-only."""
    from ammkd.tools.serve import serve as serve_bundle

    serve_bundle(bundle, host, port, print_fn=out.print)


def main() -> None:
    """Console entry point: user errors become one red line and exit code 1."""
    try:
        app()
    except AmmkdError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except OSError as e:  # the machine refused (read-only folder, disk full, a file where a folder goes)
        where = f"{e.filename}: " if e.filename else ""
        err.print(f"[red]error:[/red] {escape(where + (e.strerror or str(e)))}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
