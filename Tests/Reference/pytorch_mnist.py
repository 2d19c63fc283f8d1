#!/usr/bin/env python3
"""The walkthrough's Part 3 experiment in plain PyTorch: an MoE and a dense MLP on MNIST.

    pip install torch numpy
    python3 Tests/Reference/pytorch_mnist.py                       # both models, seed 0
    python3 Tests/Reference/pytorch_mnist.py --model moe --seed 1 --threads 1

A reference for the Swift `mnist-moe` executable, not needed to build or test
the package. Setup, as in the walkthrough:

  * data: the first 5,000 training images and all 10,000 test images, pixels
    scaled to [0, 1] (divided by 255), no other normalisation;
  * MoE: Part 2's MoEClassifier (moe_torch.py): input_proj 784 -> 256, ReLU,
    MoE layer (bias-free gate, learned gate noise in training, 8 experts of
    256 -> 128 -> 256, top-2, renormalised weights), ReLU, output_proj
    256 -> 10; 732,946 parameters, of which 337,426 are used per image;
    loss = cross entropy + 0.1 * load-balancing loss;
  * dense: input 784 -> 256, ReLU, one FFN 256 -> 128 -> 256, ReLU,
    output 256 -> 10; 269,450 parameters; loss = cross entropy;
  * Adam, lr 1e-3, batch 64 (the last batch of an epoch has 8 images),
    30 epochs, the training set reshuffled every epoch by a generator seeded
    with --seed; torch.manual_seed(--seed) before each model is built.

Per epoch it prints the mean loss, cross entropy, aux loss (MoE) and training
accuracy, all averaged over the epoch's images and measured on the fly (each
batch before its update), and the epoch's wall time. At the end: test
accuracy, train_seconds, the wall time of the training steps alone
(time.perf_counter; no evaluation), and the median epoch time, which is less
disturbed by other load on a shared machine.
"""

import argparse
import gzip
import os
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from moe_torch import DenseClassifier, MoEClassifier, fill_missing_grads, moe_loss  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "mnist"))

TRAIN_SUBSET = 5000
D_IN, D_MODEL, D_HIDDEN, NUM_EXPERTS, K, NUM_CLASSES = 784, 256, 128, 8, 2, 10
ALPHA = 0.1
LR = 1e-3
BATCH = 64


def read_idx(path):
    """An IDX file (gzip-compressed) as a numpy uint8 array of its declared shape."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    zero, dtype, ndim = struct.unpack_from(">HBB", raw, 0)
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack_from(">%dI" % ndim, raw, 4)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    return data.reshape(dims)


def load_mnist(folder):
    def images(name):
        a = read_idx(os.path.join(folder, name))
        return torch.from_numpy(a.reshape(a.shape[0], -1).astype(np.float32) / 255.0)

    def labels(name):
        return torch.from_numpy(read_idx(os.path.join(folder, name)).astype(np.int64))

    x_train = images("train-images-idx3-ubyte.gz")[:TRAIN_SUBSET]
    y_train = labels("train-labels-idx1-ubyte.gz")[:TRAIN_SUBSET]
    x_test = images("t10k-images-idx3-ubyte.gz")
    y_test = labels("t10k-labels-idx1-ubyte.gz")
    return x_train, y_train, x_test, y_test


def forward(model, kind, x, y):
    """(total loss, cross entropy, aux or None, logits, routing or None)."""
    if kind == "moe":
        loss, ce, aux, logits, routing = moe_loss(model, x, y, ALPHA)
        return loss, ce, aux, logits, routing
    logits = model(x)
    ce = F.cross_entropy(logits, y)
    return ce, ce, None, logits, None


def train(kind, seed, epochs, data):
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(seed)
    if kind == "moe":
        model = MoEClassifier(D_IN, D_MODEL, NUM_CLASSES, NUM_EXPERTS, K, expert_hidden_dim=D_HIDDEN)
    else:
        model = DenseClassifier(D_IN, D_MODEL, NUM_CLASSES, expert_hidden_dim=D_HIDDEN)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"== {kind}  seed {seed}  parameters {n_params:,}  threads {torch.get_num_threads()}")
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    shuffle = torch.Generator().manual_seed(seed)
    n = x_train.shape[0]
    train_seconds = 0.0
    epoch_times = []

    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=shuffle)
        sums = {"loss": 0.0, "ce": 0.0, "aux": 0.0, "correct": 0}
        for start in range(0, n, BATCH):
            idx = order[start : start + BATCH]
            xb, yb = x_train[idx], y_train[idx]
            opt.zero_grad()
            loss, ce, aux, logits, _ = forward(model, kind, xb, yb)
            loss.backward()
            # An expert with no row in this batch has no gradient; give it a zero
            # one so that Adam steps every parameter, as the Swift optimiser does.
            fill_missing_grads(model)
            opt.step()
            b = yb.shape[0]
            sums["loss"] += loss.item() * b
            sums["ce"] += ce.item() * b
            sums["aux"] += (aux.item() if aux is not None else 0.0) * b
            sums["correct"] += int((logits.argmax(dim=1) == yb).sum())
        epoch_seconds = time.perf_counter() - t0
        train_seconds += epoch_seconds
        epoch_times.append(epoch_seconds)
        line = f"epoch {epoch:2d}  loss {sums['loss'] / n:.4f}  ce {sums['ce'] / n:.4f}"
        if kind == "moe":
            line += f"  aux {sums['aux'] / n:.4f}"
        print(line + f"  train_acc {100.0 * sums['correct'] / n:.2f}%  ({epoch_seconds:.2f} s)", flush=True)

    # Evaluation (not timed), with the gate noise off.
    model.eval()
    correct = 0
    load = torch.zeros(NUM_EXPERTS)
    with torch.no_grad():
        for start in range(0, x_test.shape[0], 1000):
            xb, yb = x_test[start : start + 1000], y_test[start : start + 1000]
            _, _, _, logits, routing = forward(model, kind, xb, yb)
            correct += int((logits.argmax(dim=1) == yb).sum())
            if routing is not None:
                load += torch.bincount(routing[1].reshape(-1), minlength=NUM_EXPERTS).float()
    test_acc = 100.0 * correct / x_test.shape[0]
    if kind == "moe":
        share = " ".join(f"{v:.3f}" for v in (load / load.sum()).tolist())
        print(f"test routing share per expert: {share}")
    median_epoch = statistics.median(epoch_times)
    print(f"test_acc {test_acc:.2f}%  train_seconds {train_seconds:.2f}  median epoch {median_epoch:.3f} s")
    print(f"RESULT model={kind} seed={seed} epochs={epochs} threads={torch.get_num_threads()} "
          f"test_acc={test_acc:.2f} train_seconds={train_seconds:.2f} "
          f"median_epoch_seconds={median_epoch:.3f}", flush=True)
    return test_acc, train_seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA, help="folder with the four IDX .gz files (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's choice)")
    ap.add_argument("--model", choices=["moe", "dense", "both"], default="both")
    args = ap.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, data {args.data}")
    data = load_mnist(args.data)
    kinds = ["moe", "dense"] if args.model == "both" else [args.model]
    for kind in kinds:
        train(kind, args.seed, args.epochs, data)


if __name__ == "__main__":
    main()
