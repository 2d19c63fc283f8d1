#!/usr/bin/env python3
"""OpenBLAS sgemm on one thread, on exactly moe-bench's matmul shapes: the yardstick for the Swift kernels.

    pip install numpy                                  # a wheel from PyPI bundles OpenBLAS
    python3 Tests/Reference/openblas_matmul.py         # a table, in moe-bench's layout
    python3 Tests/Reference/openblas_matmul.py --json  # {"matmul": [{"m", "k", "n", "variant", "threads", "gflops"}]}

Needs numpy and nothing else; neither `swift build` nor `swift test` ever runs
it. It sets OPENBLAS_NUM_THREADS=1 (and the OpenMP/MKL equivalents) before
numpy loads, so the figures compare with moe-bench's "tiled 1 thread" column;
`numpy.show_config()` names the BLAS that numpy was built against.

Shapes and variants are moe-bench's (Sources/moe-bench/main.swift), C[M,N]:

    AB   A[M,K]   @ B[K,N]
    ABt  A[M,K]   @ B[N,K].T     B.T is a view: BLAS is called with transB
    AtB  A[K,M].T @ B[K,N]       A.T is a view: BLAS is called with transA

float32 throughout, written into a preallocated output (numpy.matmul(out=)),
so each call is one sgemm plus numpy's dispatch (about a microsecond, which
the smallest shapes feel as moe-bench's own call overhead does).

Timing is moe-bench's `medianSeconds`: one warm-up call; then the number of
calls per batch doubles until a batch lasts more than 2 ms; then 15 batches
are timed (time.perf_counter) and the median seconds per call gives
GFLOP/s = 2*M*N*K / seconds / 1e9. The machine is shared and noisy: compare
with moe-bench in the same minute, one run after the other.
"""

import os

for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = "1"   # before numpy is imported, or the BLAS has already started its threads

import argparse
import json
import time

import numpy as np

SHAPES = [  # (M, K, N, note), in moe-bench's order
    (64, 784, 256, "input layer"),
    (64, 256, 8, "router"),
    (16, 256, 128, "expert up"),
    (16, 128, 256, "expert down"),
    (64, 256, 10, "output layer"),
    (256, 64, 784, "input weight grad"),
    (8, 64, 256, "router weight grad"),
    (128, 16, 256, "expert up w. grad"),
    (256, 16, 128, "expert down w. grad"),
    (10, 64, 256, "output weight grad"),
    (2048, 64, 256, "GPT MLP"),
    (2048, 256, 64, "GPT MLP"),
    (256, 2048, 64, "GPT weight grad"),
    (256, 64, 256, "GPT expert"),
    (256, 256, 256, "square"),
    (512, 512, 512, "square"),
]
VARIANTS = ["AB", "ABt", "AtB"]


def operands(variant, m, k, n, rng):
    """(left, right) whose product is the variant's [m, n] result; transposes are views, never copies."""
    def uniform(*shape):
        return rng.uniform(-1, 1, size=shape).astype(np.float32)
    if variant == "AB":
        return uniform(m, k), uniform(k, n)
    if variant == "ABt":
        return uniform(m, k), uniform(n, k).T
    if variant == "AtB":
        return uniform(k, m).T, uniform(k, n)
    raise ValueError(variant)


def median_seconds(body, min_batches=15):
    """Median seconds of one call of `body`, exactly as moe-bench's medianSeconds measures it."""
    body()   # warm-up
    calls = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(calls):
            body()
        if time.perf_counter() - t0 > 0.002 or calls > 1 << 20:
            break
        calls *= 2
    samples = []
    for _ in range(min_batches):
        t0 = time.perf_counter()
        for _ in range(calls):
            body()
        samples.append((time.perf_counter() - t0) / calls)
    samples.sort()
    return samples[len(samples) // 2]


def run():
    rng = np.random.default_rng(42)
    rows = []
    for m, k, n, note in SHAPES:
        for variant in VARIANTS:
            left, right = operands(variant, m, k, n, rng)
            out = np.empty((m, n), dtype=np.float32)
            seconds = median_seconds(lambda: np.matmul(left, right, out=out))
            rows.append({"m": m, "k": k, "n": n, "note": note, "variant": variant, "threads": 1,
                         "gflops": round(2.0 * m * n * k / seconds / 1e9, 2)})
    return rows


def print_table(rows):
    print("OpenBLAS sgemm GFLOP/s (numpy %s), median, 1 thread" % np.__version__)
    table = [["M×K×N", "", "variant", "OpenBLAS 1 thread"]]
    for r in rows:
        table.append(["%d×%d×%d" % (r["m"], r["k"], r["n"]), r["note"], r["variant"], "%.1f" % r["gflops"]])
    widths = [max(len(line[c]) for line in table) for c in range(len(table[0]))]
    for i, line in enumerate(table):
        print("  ".join(cell.ljust(widths[c]) if c < 3 else cell.rjust(widths[c]) for c, cell in enumerate(line)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    arguments = parser.parse_args()
    rows = run()
    if arguments.json:
        print(json.dumps({"matmul": [{key: r[key] for key in ("m", "k", "n", "variant", "threads", "gflops")}
                                     for r in rows]}, indent=2, sort_keys=True))
    else:
        print_table(rows)


if __name__ == "__main__":
    main()
