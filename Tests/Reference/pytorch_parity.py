#!/usr/bin/env python3
"""Writes Tests/MoETests/Fixtures/parity.safetensors: PyTorch reference values for the Swift tests.

    pip install torch
    python3 Tests/Reference/pytorch_parity.py            # from the repository root

Neither this script nor PyTorch is needed to build or test the Swift package:
the fixture it writes is committed, and the Swift tests only read it.

What it computes, for a tiny MoEClassifier (in 12, d 8, expert hidden 6, 4
experts, k 2, 5 classes) and a tiny DenseClassifier (in 12, d 8, hidden 6, 5
classes) — the walkthrough's Part 2 classes of moe_torch.py, with PyTorch's
default nn.Linear initialisation after torch.manual_seed(SEED) and
noise_weights at zero — on one fixed batch x [7, 12] ~ U[0, 1), labels [7] in
0..4, in training mode with the gate noise ε of each forward pass drawn here
from its own generator (NOISE_SEED) and written to the fixture, so Swift can
add the very same ε:

  * the initial parameters, the forward values (router probabilities, top-k
    indices and weights, logits, losses) and every parameter's gradient of the
    total loss (cross entropy + ALPHA * aux for the MoE, cross entropy alone
    for the dense model), computed with autograd — noise_weights included;
  * the logits in evaluation mode (no noise) from the initial parameters;
  * starting again from the initial parameters, 3 steps of
    torch.optim.Adam(lr=1e-2) on the same batch: the total loss of each step's
    forward pass (taken before that step's update) and the parameters after
    the third update.

The batch is drawn from its own generator (BATCH_SEED), chosen once with
`--search` so that every routing decision, at the start, at each of the
three Adam steps and in evaluation mode, wins by a clear margin: the Swift
model, computing in a different order, must make the same choices. (The
gate noise, about ln 2 in scale, spreads these 7 rows over all four experts;
an expert with no rows is tested in Swift, MoELayerTests.)

The file is written by hand (struct + json), in the safetensors layout: an
8-byte little-endian header length, a JSON header padded with spaces to a
multiple of 8, then the float32 data, each tensor contiguous, in header order.
Every tensor is F32, the labels and expert indices included.
"""

import argparse
import copy
import json
import os
import struct
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from moe_torch import DenseClassifier, MoEClassifier, fill_missing_grads, moe_loss  # noqa: E402

SEED = 0            # torch.manual_seed before building the two models
BATCH_SEED = 2      # generator seed for x and labels: the first seed `--search 60` accepts
NOISE_SEED = 1      # generator seed for the gate noise of each forward pass
N, D_IN, D_MODEL, D_HIDDEN, NUM_EXPERTS, K, NUM_CLASSES = 7, 12, 8, 6, 4, 2, 5
ALPHA = 0.1
LR = 1e-2
ADAM_STEPS = 3
# A routing decision counts as clear when consecutive probabilities among the
# k+1 largest of a row differ by at least this much.
MIN_MARGIN = 1e-3

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(REPO, "Tests", "MoETests", "Fixtures", "parity.safetensors")


# --------------------------------------------------------------------------- setup

def build_models():
    torch.manual_seed(SEED)
    moe = MoEClassifier(D_IN, D_MODEL, NUM_CLASSES, NUM_EXPERTS, K, expert_hidden_dim=D_HIDDEN)
    dense = DenseClassifier(D_IN, D_MODEL, NUM_CLASSES, expert_hidden_dim=D_HIDDEN)
    return moe, dense


def make_noise():
    """ε for the forward pass of each Adam step (step 1's is also the one of the single forward/backward)."""
    g = torch.Generator().manual_seed(NOISE_SEED)
    return torch.randn(ADAM_STEPS, N, NUM_EXPERTS, generator=g)


def make_batch(batch_seed):
    g = torch.Generator().manual_seed(batch_seed)
    x = torch.rand(N, D_IN, generator=g)
    labels = torch.randint(0, NUM_CLASSES, (N,), generator=g)
    return x, labels


def routing_margin(probs):
    """Smallest gap between consecutive values among the k+1 largest probabilities of any row."""
    top = torch.sort(probs.detach(), dim=-1, descending=True).values[:, : K + 1]
    return (top[:, :-1] - top[:, 1:]).min().item()


def adam_run(model, x, labels, loss_fn, inspect=None):
    """ADAM_STEPS Adam steps on one batch. Returns (losses, model after the steps)."""
    model = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    losses = []
    noise = make_noise()
    for step in range(ADAM_STEPS):
        opt.zero_grad()
        loss = loss_fn(model, x, labels, noise[step])
        if inspect is not None:
            inspect(model, noise[step])
        loss.backward()
        fill_missing_grads(model)
        opt.step()
        losses.append(loss.item())
    return losses, model


def moe_total(model, x, labels, noise):
    return moe_loss(model, x, labels, ALPHA, noise)[0]


def dense_total(model, x, labels, noise):
    return F.cross_entropy(model(x), labels)


def check_batch(moe, batch_seed):
    """(ok, description) for the routing conditions described in the module docstring."""
    x, labels = make_batch(batch_seed)
    with torch.no_grad():
        _, _, _, _, (probs, index, _) = moe_loss(moe, x, labels, ALPHA, make_noise()[0])
        moe.eval()
        _, _, _, _, (clean, _, _) = moe_loss(moe, x, labels, ALPHA)
        moe.train()
    used = torch.bincount(index.reshape(-1), minlength=NUM_EXPERTS)
    margins = [routing_margin(probs), routing_margin(clean)]
    per_step = []

    def inspect(m, noise):
        with torch.no_grad():
            p, i, _ = moe_loss(m, x, labels, ALPHA, noise)[4]
        margins.append(routing_margin(p))
        per_step.append(torch.bincount(i.reshape(-1), minlength=NUM_EXPERTS).tolist())

    adam_run(moe, x, labels, moe_total, inspect)
    # inspect saw the forward passes of steps 1..3; the first equals the initial one.
    ok = min(margins) >= MIN_MARGIN
    desc = (f"rows per expert {used.tolist()} (Adam steps 1-3: {per_step}), "
            f"min margin {min(margins):.2e}")
    return ok, desc


# ------------------------------------------------------------- float64 cross-check

def naive_moe_loss64(model, x, labels, noise):
    """The MoE loss in float64 written a second way: a dense combine matrix instead of a gather."""
    m = copy.deepcopy(model).double()
    x = x.double()
    h = F.relu(m.input_proj(x))
    noisy = m.moe.gating.gate(h) + noise.double() * F.softplus(m.moe.gating.noise_weights)
    probs = torch.softmax(noisy, dim=-1)
    index = torch.sort(probs.detach(), dim=-1, descending=True, stable=True).indices[:, :K]
    chosen = probs.gather(1, index)
    weight = chosen / (chosen.sum(-1, keepdim=True) + 1e-8)
    combine = torch.zeros(N, NUM_EXPERTS, dtype=torch.float64).scatter(1, index, weight)
    outs = torch.stack([e(h) for e in m.moe.experts], dim=1)          # [N, E, D]
    y = F.relu((combine.unsqueeze(-1) * outs).sum(1))
    logits = m.output_proj(y)
    ce = F.cross_entropy(logits, labels)
    f = torch.zeros(NUM_EXPERTS, dtype=torch.float64)
    for i in range(NUM_EXPERTS):
        f[i] = (index == i).any(dim=1).sum() / N
    aux = NUM_EXPERTS * (f * probs.mean(0)).sum()
    loss = ce + ALPHA * aux
    loss.backward()
    grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in m.named_parameters()}
    return loss.item(), grads


# --------------------------------------------------------------------- safetensors

def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, float32 torch tensor); metadata: dict of str -> str."""
    header = {"__metadata__": metadata}
    chunks = []
    offset = 0
    for name, t in tensors:
        values = t.detach().to(torch.float32).contiguous().reshape(-1).tolist()
        data = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for data in chunks:
            fh.write(data)


def read_safetensors(path):
    """Parses the file independently of the writer, checking the layout. Returns (tensors, metadata)."""
    with open(path, "rb") as fh:
        blob = fh.read()
    (hlen,) = struct.unpack_from("<Q", blob, 0)
    assert hlen % 8 == 0, "header not padded to a multiple of 8"
    header = json.loads(blob[8 : 8 + hlen].decode("utf-8"))
    data = blob[8 + hlen :]
    metadata = header.pop("__metadata__", {})
    assert all(isinstance(v, str) for v in metadata.values())
    spans = sorted((info["data_offsets"][0], info["data_offsets"][1], name) for name, info in header.items())
    expect = 0
    for begin, end, name in spans:
        assert begin == expect, f"{name}: gap or overlap at {begin}, expected {expect}"
        expect = end
    assert expect == len(data), f"data area is {len(data)} bytes, tensors cover {expect}"
    out = {}
    for name, info in header.items():
        assert info["dtype"] == "F32"
        begin, end = info["data_offsets"]
        count = 1
        for s in info["shape"]:
            count *= s
        assert end - begin == 4 * count, f"{name}: {end - begin} bytes for shape {info['shape']}"
        values = struct.unpack_from("<%df" % count, data, begin)
        out[name] = torch.tensor(values, dtype=torch.float32).reshape(info["shape"])
    return out, metadata


# --------------------------------------------------------------------------- main

def search(moe, limit):
    for s in range(limit):
        ok, desc = check_batch(moe, s)
        print(f"batch seed {s}: {desc}{'  <- ok' if ok else ''}")
        if ok:
            return s
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=FIXTURE, help="fixture path (default: %(default)s)")
    ap.add_argument("--search", type=int, metavar="LIMIT", default=0,
                    help="try batch seeds 0..LIMIT-1 and report the first that meets the routing conditions")
    args = ap.parse_args()

    torch.set_default_dtype(torch.float32)
    moe, dense = build_models()
    if args.search:
        found = search(moe, args.search)
        print("first suitable batch seed:", found)
        return

    ok, desc = check_batch(moe, BATCH_SEED)
    print(f"batch seed {BATCH_SEED}: {desc} ({'meets' if ok else 'DOES NOT meet'} the routing conditions)")
    x, labels = make_batch(BATCH_SEED)
    tensors = []

    # ---- MoE: forward and backward from the initial weights
    noise = make_noise()
    tensors += [("moe/x", x), ("moe/labels", labels.float()), ("moe/noise", noise)]
    tensors += [(f"moe/param/{n}", p.detach().clone()) for n, p in moe.named_parameters()]
    with torch.no_grad():
        evaluating = copy.deepcopy(moe).eval()
        tensors += [("moe/eval_logits", evaluating(x)[0])]
    work = copy.deepcopy(moe)
    loss, ce, aux, logits, (probs, index, weight) = moe_loss(work, x, labels, ALPHA, noise[0])
    loss.backward()
    fill_missing_grads(work)
    tensors += [
        ("moe/router_probs", probs), ("moe/topk_index", index.float()), ("moe/topk_weight", weight),
        ("moe/logits", logits), ("moe/ce_loss", ce), ("moe/aux_loss", aux), ("moe/loss", loss),
    ]
    tensors += [(f"moe/grad/{n}", p.grad) for n, p in work.named_parameters()]

    ref_loss, ref_grads = naive_moe_loss64(moe, x, labels, noise[0])
    worst = max((p.grad.double() - ref_grads[n]).abs().max().item() for n, p in work.named_parameters())
    print(f"float64 dense-combine cross-check: |loss diff| {abs(loss.item() - ref_loss):.2e}, "
          f"max |grad diff| {worst:.2e}")
    assert abs(loss.item() - ref_loss) < 1e-5 and worst < 1e-5

    losses, trained = adam_run(moe, x, labels, moe_total)
    tensors += [(f"moe/adam3/{n}", p.detach()) for n, p in trained.named_parameters()]
    tensors += [("moe/adam_losses", torch.tensor(losses))]

    # ---- Dense: the same on the same batch
    tensors += [("dense/x", x), ("dense/labels", labels.float())]
    tensors += [(f"dense/param/{n}", p.detach().clone()) for n, p in dense.named_parameters()]
    work = copy.deepcopy(dense)
    logits = work(x)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    tensors += [("dense/logits", logits), ("dense/loss", loss)]
    tensors += [(f"dense/grad/{n}", p.grad) for n, p in work.named_parameters()]
    losses, trained = adam_run(dense, x, labels, dense_total)
    tensors += [(f"dense/adam3/{n}", p.detach()) for n, p in trained.named_parameters()]
    tensors += [("dense/adam_losses", torch.tensor(losses))]

    metadata = {
        "generator": "Tests/Reference/pytorch_parity.py",
        "torch_version": torch.__version__,
        "seed": str(SEED),
        "batch_seed": str(BATCH_SEED),
        "batch": str(N), "d_in": str(D_IN), "d_model": str(D_MODEL), "d_hidden": str(D_HIDDEN),
        "num_experts": str(NUM_EXPERTS), "k": str(K), "num_classes": str(NUM_CLASSES),
        "alpha": str(ALPHA), "lr": str(LR), "adam_betas": "0.9,0.999", "adam_eps": "1e-08",
        "adam_weight_decay": "0", "adam_steps": str(ADAM_STEPS),
        "noise_seed": str(NOISE_SEED),
        "model": "Part 2's classes (moe_torch.py): ReLU after the MoE, bias-free gate, learned noise_weights",
        "noise": "moe/noise[t] is the eps of step t's forward (t = 0 also for moe/grad); eval_logits: no noise",
        "topk": "stable descending sort of the noisy softmax probs; ties -> lower expert index; "
                "weights renormalised over the k chosen (+1e-8 in the denominator, as Part 2)",
        "aux_loss": "N * sum_i f_i * p_i; f_i = rows choosing i / B (constant), p_i = mean noisy prob",
        "moe_loss": "cross_entropy(mean) + alpha * aux_loss", "dense_loss": "cross_entropy(mean)",
        "adam_losses": "total loss of the forward pass of step t, before its update",
        "unused_experts": "zero gradient (Adam still steps every parameter)",
    }
    write_safetensors(args.out, tensors, metadata)
    size = os.path.getsize(args.out)
    print(f"wrote {args.out} ({size} bytes, {len(tensors)} tensors)\n")

    for name, t in tensors:
        flat = t.detach().reshape(-1)
        head = " ".join(f"{v:.6g}" for v in flat[:6].tolist())
        more = " ..." if flat.numel() > 6 else ""
        print(f"{name:34s} {str(list(t.shape)):9s} {head}{more}")

    # ---- Verify: read back with the independent parser, bit for bit
    back, meta = read_safetensors(args.out)
    assert meta == metadata
    assert list(back) == [n for n, _ in tensors]
    for name, t in tensors:
        assert torch.equal(back[name], t.detach().float()), name
    print(f"\nread back: {len(back)} tensors identical, layout valid")
    try:
        from safetensors.torch import load_file
    except ImportError:
        print("safetensors package not installed; skipped the second check")
    else:
        loaded = load_file(args.out)
        assert set(loaded) == set(back)
        assert all(torch.equal(loaded[n], back[n]) for n in back)
        print("safetensors.torch.load_file: identical")


if __name__ == "__main__":
    main()
