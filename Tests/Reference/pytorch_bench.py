#!/usr/bin/env python3
"""PyTorch CPU matmul throughput for the shapes the MoE model uses, as a yardstick for the Swift kernels.

    pip install torch
    python3 Tests/Reference/pytorch_bench.py           # a table
    python3 Tests/Reference/pytorch_bench.py --json    # {"matmul": [{"m", "k", "n", "variant", "threads", "gflops"}]}

Not needed to build or test the package. For each M x K x N and each of the
three products a training step needs,

    AB   C[M,N] = A[M,K]   @ B[K,N]      (forward)
    ABt  C[M,N] = A[M,K]   @ B[N,K].T    (gradient w.r.t. the layer input)
    AtB  C[M,N] = A[K,M].T @ B[K,N]      (gradient w.r.t. the weight)

with torch.set_num_threads(1) and (2), float32, it times torch.matmul into a
preallocated output (out=), transposes being views as PyTorch users write them.
After a warm-up, calls are timed in groups of at least ~2 ms (several calls per
group for small shapes, time.perf_counter); the median time per call over the
groups gives GFLOP/s = 2*M*N*K / seconds / 1e9.
"""

import argparse
import json
import statistics
import time

import torch

SHAPES = [  # (M, K, N)
    (64, 784, 256),   # MoE/dense input layer, batch 64
    (64, 256, 8),     # gate
    (16, 256, 128),   # expert up, ~16 rows routed to one expert
    (16, 128, 256),   # expert down
    (64, 256, 10),    # output layer
    (256, 256, 256),
    (512, 512, 512),
]
VARIANTS = ["AB", "ABt", "AtB"]


def operands(variant, m, k, n, gen):
    """Returns (left, right) such that torch.matmul(left, right) is the [m, n] product of the variant."""
    if variant == "AB":
        return torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
    if variant == "ABt":
        return torch.randn(m, k, generator=gen), torch.randn(n, k, generator=gen).T
    if variant == "AtB":
        return torch.randn(k, m, generator=gen).T, torch.randn(k, n, generator=gen)
    raise ValueError(variant)


def time_matmul(left, right, out, min_group=2e-3, budget=0.3, min_groups=15, max_groups=301):
    """Median seconds per torch.matmul(left, right, out=out)."""
    # Warm-up, and a first estimate of the time of one call.
    t0 = time.perf_counter()
    calls = 0
    while calls < 5 or time.perf_counter() - t0 < 0.05:
        torch.matmul(left, right, out=out)
        calls += 1
    per_call = (time.perf_counter() - t0) / calls
    group = max(1, int(min_group / per_call))
    samples = []
    start = time.perf_counter()
    while len(samples) < max_groups and (len(samples) < min_groups or time.perf_counter() - start < budget):
        t = time.perf_counter()
        for _ in range(group):
            torch.matmul(left, right, out=out)
        samples.append((time.perf_counter() - t) / group)
    return statistics.median(samples)


def run(thread_counts):
    gen = torch.Generator().manual_seed(0)
    rows = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for m, k, n in SHAPES:
            for variant in VARIANTS:
                left, right = operands(variant, m, k, n, gen)
                out = torch.empty(m, n)
                seconds = time_matmul(left, right, out)
                rows.append({"m": m, "k": k, "n": n, "variant": variant, "threads": threads,
                             "gflops": round(2.0 * m * n * k / seconds / 1e9, 2)})
    return rows


def print_table(rows, thread_counts):
    by_key = {(r["m"], r["k"], r["n"], r["variant"], r["threads"]): r["gflops"] for r in rows}
    print(f"torch {torch.__version__}, float32, GFLOP/s (2*M*N*K / median time per call)")
    header = f"{'M x K x N':>15}  {'variant':7}" + "".join(f"  {f'{t} thread' + ('s' if t > 1 else ''):>10}"
                                                          for t in thread_counts)
    print(header)
    print("-" * len(header))
    for m, k, n in SHAPES:
        for variant in VARIANTS:
            cells = "".join(f"  {by_key[(m, k, n, variant, t)]:10.1f}" for t in thread_counts)
            print(f"{f'{m}x{k}x{n}':>15}  {variant:7}{cells}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default: 1 2)")
    args = ap.parse_args()
    rows = run(args.threads)
    if args.json:
        print(json.dumps({"matmul": rows}, indent=1))
    else:
        print_table(rows, args.threads)


if __name__ == "__main__":
    main()
