"""Search benchmark: exact NumPy vs faiss flat, HNSW and IVF top-10 over unit-norm vectors, on one core.

    uv run --frozen --no-sync python benchmarks/search.py            # N = 1k .. 1M; about 10 min
    uv run --frozen --no-sync python benchmarks/search.py --quick    # N <= 100k, 50 queries; about 1 min

Everything runs on ONE core: OMP/OpenBLAS/MKL threads are pinned to 1 before NumPy loads,
threadpoolctl limits every BLAS/OpenMP pool it finds and faiss gets `omp_set_num_threads(1)`.
The index is synthetic (see `_Embeddings`): 256-d unit vectors shaped like embeddings, stored as
float16 and decoded to float32 once, as the apps do; queries come from the same distribution but
are not in the index. Per N, one query at a time, median and p90 milliseconds of `search(q, 10)`
after warm-up: `ExactIndex` (the apps' `topk`) and faiss `IndexFlatIP` at every N; HNSW and IVF
from 100k on, with their build seconds and a sweep of ef_search / nprobe, recall@10 against the
exact ids. Writes `results/search.{json,md}` and `results/search_scaling.png` (`--quick`:
`search_quick*`, so a smoke run never overwrites the reference figures).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before NumPy (and faiss's OpenBLAS) load: their pools start with one thread

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from bench_util import cpu_model, write_results  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

from ammkd.common.files import atomic_write  # noqa: E402
from ammkd.mobile_runtime.index import ExactIndex, FaissIndex, FaissParams, recall_at_k  # noqa: E402
from ammkd.tools.latency import summarize_ms  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
K = 10
RECALL_GOAL = 0.95
EXACT_GOAL_MS, EXACT_GOAL_N = 10.0, 100_000
APPROX_GOAL_MS, APPROX_GOAL_N = 2.0, 1_000_000
EF_SEARCH = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
NPROBE = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128)


@dataclass(frozen=True)
class _Embeddings:
    """A mixture of Gaussian clusters in a low-dimensional subspace, lifted to `dim`, on the sphere.

    `clusters` centres ~ N(0, I) in `latent` dimensions, drawn with Dirichlet(1) weights (unequal
    class sizes); a point is its centre plus N(0, spread^2 I) in the subspace, mapped to `dim` by a
    random orthonormal basis, plus isotropic N(0, noise^2 I) in all `dim` (so the data is full rank
    but most of its variance lies in `latent` dimensions), plus a shared offset `cone` along one
    direction (embeddings of trained encoders occupy a narrow cone, not the whole sphere), then
    normalised. Synthetic: it is not a real model's embeddings, and approximate-search recall
    depends on the data, so treat recall on real vectors as to be re-measured.
    """

    def describe(self) -> str:
        return (
            f"{self.clusters} Gaussian clusters (Dirichlet(1) sizes, centres N(0, I), within-cluster std "
            f"{self.spread}) in a {self.latent}-d subspace, mapped to {self.dim}-d by a random orthonormal basis, "
            f"plus isotropic noise (std {self.noise}) and a shared offset along one direction (norm "
            f"{self.cone}·√{self.latent}, the 'cone' of trained encoders), normalised to unit length; "
            "queries are a fresh draw from the same distribution, not in the index."
        )

    dim: int = 256
    latent: int = 32
    clusters: int = 1_000
    spread: float = 0.6
    noise: float = 0.02
    cone: float = 1.0
    seed: int = 0

    def _model(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        basis = np.linalg.qr(rng.normal(size=(self.dim, self.latent)))[0].T  # (latent, dim), orthonormal rows
        centres = rng.normal(size=(self.clusters, self.latent))
        weights = rng.dirichlet(np.ones(self.clusters))
        offset = rng.normal(size=self.dim)
        return basis, centres, weights, self.cone * np.sqrt(self.latent) * offset / np.linalg.norm(offset)

    def sample(self, n: int, stream: int, dtype: type = np.float16, chunk: int = 65_536) -> np.ndarray:
        """n unit vectors (n, dim) of `dtype`; `stream` picks an independent draw (index vs queries)."""
        basis, centres, weights, offset = self._model()
        rng = np.random.default_rng([self.seed, stream])
        out = np.empty((n, self.dim), dtype)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            z = centres[rng.choice(self.clusters, m, p=weights)] + self.spread * rng.normal(size=(m, self.latent))
            x = z @ basis + self.noise * rng.normal(size=(m, self.dim)) + offset
            out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out


def _time(search, warm: np.ndarray, timed: np.ndarray) -> tuple[list[float], np.ndarray]:
    """One query at a time: ms of each `search(q, K)` over `timed` and its ids (Q, K), after `warm` untimed."""
    for q in warm:
        search(q, K)
    ms, ids = [], []
    for q in timed:
        t0 = time.perf_counter()
        found, _ = search(q, K)
        ms.append((time.perf_counter() - t0) * 1e3)
        ids.append(found[0])
    return ms, np.stack(ids)


def _extra_mib(index: FaissIndex) -> float:
    """Memory the approximate index holds beyond the float32 vectors (graph links / list ids and centroids)."""
    if index.kind == "hnsw":
        h = index.index.hnsw
        extra = 4 * h.neighbors.size() + 8 * h.offsets.size() + 4 * h.levels.size()
    else:
        extra = 8 * index.ntotal + 4 * index.nlist * index.dim
    return round(extra / 2**20, 1)


def _approximate(kind: str, matrix: np.ndarray, warm, timed, exact_ids, args) -> dict:
    """Build one approximate index, sweep its search knob; the fastest setting with recall >= the goal is `best`."""
    params = FaissParams(m=args.hnsw_m, ef_construction=args.ef_construction)
    t0 = time.perf_counter()
    index = FaissIndex(matrix, kind, params, threads=args.build_threads)
    build_s = round(time.perf_counter() - t0, 2)
    faiss.omp_set_num_threads(1)
    knob, values = ("ef_search", EF_SEARCH) if kind == "hnsw" else ("nprobe", [p for p in NPROBE if p <= index.nlist])
    sweep = []
    for value in values:
        index.tune(**{knob: value})
        ms, ids = _time(index.search, warm, timed)
        sweep.append({knob: value, "recall_at_10": round(recall_at_k(ids, exact_ids), 4), **summarize_ms(ms)})
    meeting = [s for s in sweep if s["recall_at_10"] >= RECALL_GOAL]
    setting = {"M": args.hnsw_m, "ef_construction": args.ef_construction} if kind == "hnsw" else {"nlist": index.nlist}
    return {
        "n": len(matrix),
        "kind": kind,
        "build_s": build_s,
        "build_threads": args.build_threads,
        "extra_mib": _extra_mib(index),
        **setting,
        "knob": knob,
        "sweep": sweep,
        "best": min(meeting, key=lambda s: s["median_ms"]) if meeting else None,
    }


def _plot(results: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for method, marker in (("numpy exact", "o"), ("faiss flat", "s")):
        rows = [r for r in results["exact"] if r["method"] == method]
        ax.plot([r["n"] for r in rows], [r["median_ms"] for r in rows], marker=marker, label=method)
    for kind, marker in (("hnsw", "^"), ("ivf", "v")):
        rows = [r for r in results["approximate"] if r["kind"] == kind and r["best"]]
        ax.plot([r["n"] for r in rows], [r["best"]["median_ms"] for r in rows], marker=marker, label=f"faiss {kind}*")
    for n, ms, what in ((EXACT_GOAL_N, EXACT_GOAL_MS, "exact goal"), (APPROX_GOAL_N, APPROX_GOAL_MS, "approx. goal")):
        ax.scatter([n], [ms], marker="x", color="k", zorder=3)
        ax.annotate(what, (n, ms), textcoords="offset points", xytext=(-20, 6), fontsize=7)
    ax.set(xscale="log", yscale="log", xlabel="vectors in the index (N)", ylabel="median ms per query")
    ax.set_title(f"top-{K}, d={results['dim']}, 1 core (* fastest with recall@{K} ≥ {RECALL_GOAL})", fontsize=9)
    ax.legend(fontsize=8)
    n_max = max(r["n"] for r in results["approximate"])
    for r in (r for r in results["approximate"] if r["n"] == n_max):
        bx.plot(
            [s["median_ms"] for s in r["sweep"]],
            [s["recall_at_10"] for s in r["sweep"]],
            marker=".",
            label=f"{r['kind']} ({r['knob']} sweep)",
        )
    bx.axhline(RECALL_GOAL, color="grey", lw=0.8, ls="--")
    bx.set(xscale="log", xlabel="median ms per query", ylabel=f"recall@{K}", title=f"N = {n_max:,}")
    bx.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(png, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def _goals(results: dict) -> dict:
    exact = next((r for r in results["exact"] if r["method"] == "numpy exact" and r["n"] == EXACT_GOAL_N), None)
    best = [r for r in results["approximate"] if r["n"] == APPROX_GOAL_N and r["best"]]
    fastest = min(best, key=lambda r: r["best"]["median_ms"], default=None)
    measured_1m = any(r["n"] == APPROX_GOAL_N for r in results["approximate"])
    return {
        "exact_100k": {
            "goal": f"ExactIndex over {EXACT_GOAL_N:,} x {results['dim']}: median < {EXACT_GOAL_MS} ms per query",
            "median_ms": exact and exact["median_ms"],
            "pass": None if exact is None else exact["median_ms"] < EXACT_GOAL_MS,
        },
        "approx_1m": {
            "goal": f"approximate over {APPROX_GOAL_N:,}: median < {APPROX_GOAL_MS} ms at recall@{K} >= {RECALL_GOAL}",
            "kind": fastest and fastest["kind"],
            "setting": fastest and {fastest["knob"]: fastest["best"][fastest["knob"]]},
            "median_ms": fastest and fastest["best"]["median_ms"],
            "recall_at_10": fastest and fastest["best"]["recall_at_10"],
            "pass": (fastest is not None and fastest["best"]["median_ms"] < APPROX_GOAL_MS) if measured_1m else None,
        },
    }


def _verdict(goal: dict) -> str:
    return {True: "**pass**", False: "**FAIL**", None: "not measured"}[goal["pass"]]


def _markdown(results: dict) -> list[str]:
    data, goals = results["data"], results["goals"]
    g1, g2 = goals["exact_100k"], goals["approx_1m"]
    rows = []
    for r in results["exact"]:
        rows.append(f"| {r['n']:,} | {r['method']} | – | 1.0 | {r['median_ms']} | {r['p90_ms']} | – | – |")
    for r in results["approximate"]:
        built = f"{r['build_s']} s ({r['build_threads']} thr)"
        if r["best"]:
            b = r["best"]
            rows.append(
                f"| {r['n']:,} | faiss {r['kind']} | {r['knob']}={b[r['knob']]} | {b['recall_at_10']} | "
                f"{b['median_ms']} | {b['p90_ms']} | {built} | {r['extra_mib']} |"
            )
        else:
            rows.append(
                f"| {r['n']:,} | faiss {r['kind']} | no setting reaches {RECALL_GOAL} | – | – | – | {built} | – |"
            )
    sweeps = []
    for r in results["approximate"]:
        cells = ", ".join(f"{s[r['knob']]}: {s['recall_at_10']:.3f} @ {s['median_ms']} ms" for s in r["sweep"])
        sweeps.append(f"- {r['kind']} N={r['n']:,} ({r['knob']}: recall@{K} @ median): {cells}")
    m = results["machine"]
    return [
        f"# Top-{K} search over unit-norm vectors, one core{' (--quick)' if results['quick'] else ''}",
        "",
        f"{results['queries']} queries of d={results['dim']}, one at a time, after {results['warmup']} warm-up "
        f"queries; median and p90 ms of `search(q, {K})`. Machine: {m['cpu_model'] or 'unknown CPU'}, "
        f"{m['cpus']} CPUs, searches pinned to **1 thread** (NumPy BLAS, faiss OpenMP).",
        "",
        f"- {g1['goal']}: {g1['median_ms']} ms, {_verdict(g1)}",
        f"- {g2['goal']}: "
        + (
            f"{g2['kind']} {g2['setting']}, {g2['median_ms']} ms at recall {g2['recall_at_10']}, {_verdict(g2)}"
            if g2["kind"]
            else _verdict(g2)
        ),
        "",
        f"| N | method | setting | recall@{K} | median ms | p90 ms | build | extra MiB |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Approximate rows show the fastest setting with recall@{K} ≥ {RECALL_GOAL} against the exact ids; "
        f"HNSW M={results['hnsw_m']}, efConstruction={results['ef_construction']}; IVF nlist = 4·√N. "
        "`extra MiB`: memory beyond the float32 vectors (graph links, list ids and centroids). Sweeps:",
        "",
        *sweeps,
        "",
        f"Data (synthetic, `_Embeddings` in the script): {data['description']} Parameters: "
        + ", ".join(f"{k}={v}" for k, v in data["params"].items())
        + f". Stored float16, decoded to float32 once. Mean cosine between random index vectors "
        f"{data['mean_cosine']}, mean top-1 / top-{K} score of the queries {data['top1_score']} / "
        f"{data['top10_score']} (at N={data['stats_n']:,}). Recall on real embeddings may differ.",
        "",
        f"Versions: {', '.join(f'{k} {v}' for k, v in results['versions'].items())}. "
        f"Thread pools: {'; '.join(results['threadpools'])}.",
        "",
        f"Command: `{results['command']}`",
        "",
    ]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: N up to 100k, fewer queries")
    ap.add_argument("--sizes", type=int, nargs="+", help="index sizes (default 1k 10k 100k 1M; --quick: up to 100k)")
    ap.add_argument("--approx-from", type=int, default=100_000, help="HNSW and IVF at sizes >= this")
    ap.add_argument("--queries", type=int, help="timed queries per measurement (default 200; --quick 50)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed queries before each measurement")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=100)
    ap.add_argument("--build-threads", type=int, default=1, help="faiss threads while building (search: 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    sizes = sorted(args.sizes or ([1_000, 10_000, 100_000] if args.quick else [1_000, 10_000, 100_000, 1_000_000]))
    n_queries = args.queries or (50 if args.quick else 200)
    name = "search_quick" if args.quick else "search"

    threadpool_limits(1)
    faiss.omp_set_num_threads(1)
    gen = _Embeddings(dim=args.dim, seed=args.seed)
    t0 = time.perf_counter()
    matrix = gen.sample(sizes[-1], stream=0).astype(np.float32)  # float16 storage, decoded once
    queries = gen.sample(n_queries + args.warmup, stream=1, dtype=np.float32)
    warm, timed = queries[: args.warmup], queries[args.warmup :]
    print(f"data: {sizes[-1]:,} x {args.dim} in {time.perf_counter() - t0:.1f} s", flush=True)

    exact_rows, approx_rows, exact_at = [], [], {}
    for n in sizes:
        sub = matrix[:n]  # a prefix of an i.i.d. sample is an i.i.d. sample
        ms, exact_ids = _time(ExactIndex(sub).search, warm, timed)
        exact_at[n] = exact_ids
        exact_rows.append({"n": n, "method": "numpy exact", **summarize_ms(ms)})
        flat = FaissIndex(sub, "flat", threads=1)
        ms, flat_ids = _time(flat.search, warm, timed)
        same = bool(np.all(flat_ids == exact_ids))
        exact_rows.append({"n": n, "method": "faiss flat", "same_ids_as_exact": same, **summarize_ms(ms)})
        del flat
        print(f"N={n:,}: {exact_rows[-2]} | {exact_rows[-1]}", flush=True)
        if n >= args.approx_from:
            for kind in ("hnsw", "ivf"):
                approx_rows.append(_approximate(kind, sub, warm, timed, exact_ids, args))
                r = approx_rows[-1]
                print(f"N={n:,} {kind}: build {r['build_s']} s, best {r['best']}", flush=True)

    stats_n = sizes[-1]
    sample = matrix[np.random.default_rng(1).choice(stats_n, min(stats_n, 2_000), replace=False)]
    top = ExactIndex(matrix).search(timed[:50], K)[1]
    results = {
        "benchmark": "search",
        "quick": args.quick,
        "k": K,
        "dim": args.dim,
        "queries": n_queries,
        "warmup": args.warmup,
        "threads": {"search": 1, "build": args.build_threads},
        "hnsw_m": args.hnsw_m,
        "ef_construction": args.ef_construction,
        "data": {
            "description": gen.describe(),
            "params": asdict(gen),
            "storage": "float16, decoded to float32 once",
            "stats_n": stats_n,
            "mean_cosine": round(float((sample @ sample.T)[np.triu_indices(len(sample), 1)].mean()), 3),
            "top1_score": round(float(top[:, 0].mean()), 3),
            "top10_score": round(float(top[:, -1].mean()), 3),
        },
        "exact": exact_rows,
        "approximate": approx_rows,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
        },
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "faiss": faiss.__version__,
            "threadpoolctl": importlib.metadata.version("threadpoolctl"),
            "matplotlib": importlib.metadata.version("matplotlib"),
        },
        "threadpools": [
            f"{p['internal_api']}{' ' + p['version'] if p.get('version') else ''} ({Path(p['filepath']).parent.name}): "
            f"{p['num_threads']} thread(s)"
            for p in threadpool_info()
        ],
        "command": "uv run --frozen --no-sync python benchmarks/search.py " + " ".join(argv or sys.argv[1:]),
    }
    results["goals"] = _goals(results)
    md = _markdown(results)
    write_results(args.results, name, results, md)
    if approx_rows:
        _plot(results, args.results / f"{name}_scaling.png")
    return results


if __name__ == "__main__":
    main()
