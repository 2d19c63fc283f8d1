"""gpt-moe's GPT in plain PyTorch, for a training-speed comparison.

What it is: the model `swift run -c release gpt-moe train` builds for the presets
`baseline` and `dense` (Sources/gpt-moe/Presets.swift, Options.swift;
Sources/MoE/Models/GPT.swift), written the way nanoGPT writes it: attention by
`torch.nn.functional.scaled_dot_product_attention(is_causal=True)`, and the MoE
as the plain loop over experts (each expert gathers its tokens, runs its MLP,
and adds its weighted output back with `index_add_`). It trains with Adam on
Tiny Shakespeare for a number of steps and reports training tokens per second
with 1 and 2 threads.

How to run (the speed section of the README says which machine and load):

    /work/venv/bin/python Tests/Reference/pytorch_gpt.py                  # both presets, 1 and 2 threads, 150 steps
    python3 Tests/Reference/pytorch_gpt.py --preset baseline --threads 2 --steps 150 --json

`swift test` never runs this file, and nothing in the package reads its output.

The model, as gpt-moe's defaults set it (4 blocks, width C = 64, 4 heads,
context T = 64, MLP hidden 4·C = 256, 32 windows per step):
  * character tokens: the sorted characters of the training text (the first
    90% of the file) plus one id for "unknown", as CharTokenizer does; Tiny
    Shakespeare has 65, so V = 66;
  * token and position tables, N(0, 0.02²);
  * per block, pre-LayerNorm: x += attn(ln1(x)); x += ffn(ln2(x)); attention
    has a fused qkv projection C → 3C and an output projection C → C, both
    with biases; no dropout anywhere;
  * the dense feed-forward: Linear(C, 4C), GELU (tanh form), Linear(4C, C);
  * baseline: blocks 1 and 3 have instead 8 such experts and a router
    Linear(C, 8) with a bias and no noise; p = softmax(router logits), each
    token goes to its most probable expert, whose output is multiplied by p of
    that expert (Switch's gate: not renormalised, which for k = 1 would make
    the weight exactly 1); the Switch balancing loss aux = E·Σᵢ fᵢPᵢ with
    weight α = 0.01 is added to the cross-entropy for each MoE block;
  * a final LayerNorm and the head tied to the token table (no bias);
  * Adam (not AdamW: no weight decay), lr 3e-3 constant, betas (0.9, 0.999),
    eps 1e-8; no gradient clipping, no schedule.
The initial values follow PyTorch's defaults where gpt-moe's do (Linear: uniform
±1/√in; LayerNorm 1 and 0), but they are not gpt-moe's numbers: this is a
speed reference, not a parity test. The parameter count is checked against
gpt-moe's own report for the same preset.

Speed, measured as gpt-moe measures it: LanguageModelTrainer times each step's
forward pass (with the loss), backward pass (with zeroing the gradients) and
optimiser step; "Avg tokens/s" in its Results table is
steps · B · T / (sum of those times over all steps), every step counted, no
warm-up left out, evaluations and batch assembly not timed. The column
`tokens/s` below is that number. `median tokens/s` is B·T over the median step
time, steps after the first `--warmup` ones, shown beside it for reference.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# Total parameters gpt-moe reports for its default model ("Params" in the
# Results table of `gpt-moe train` / `compare`, README, section "gpt-moe").
# (Presets.swift mentions 17,286,656: that is the count the notes quote for
# their own, larger model, not the count gpt-moe's defaults give.)
GPT_MOE_PARAMETERS = {"dense": 208_384, "baseline": 672_656}


class CausalSelfAttention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        # [B, T, C] -> [B, H, T, hs]
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class MLP(nn.Module):
    """The dense feed-forward, and one expert: Linear, GELU (tanh form), Linear."""
    def __init__(self, width, hidden):
        super().__init__()
        self.fc = nn.Linear(width, hidden)
        self.out = nn.Linear(hidden, width)

    def forward(self, x):
        return self.out(F.gelu(self.fc(x), approximate="tanh"))


class SwitchMoE(nn.Module):
    """Top-1 routing with Switch's gate and balancing loss, the naive expert loop."""
    def __init__(self, width, hidden, experts, alpha):
        super().__init__()
        self.gate = nn.Linear(width, experts)   # with a bias, as gpt-moe's GPT router
        self.experts = nn.ModuleList(MLP(width, hidden) for _ in range(experts))
        self.alpha = alpha
        self.aux = torch.zeros(())

    def forward(self, x):                        # x [N, C]
        p = F.softmax(self.gate(x), dim=-1)      # [N, E]
        weight, chosen = p.max(dim=-1)           # top-1: p of the chosen expert, not renormalised
        y = torch.zeros_like(x)
        for i, expert in enumerate(self.experts):
            rows = (chosen == i).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            y.index_add_(0, rows, expert(x[rows]) * weight[rows, None])
        e = p.shape[1]
        fractions = torch.bincount(chosen, minlength=e).to(p.dtype) / p.shape[0]   # fᵢ, no gradient
        self.aux = self.alpha * e * (fractions * p.mean(dim=0)).sum()              # α·E·Σ fᵢ Pᵢ
        return y


class Block(nn.Module):
    def __init__(self, width, heads, ffn):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.ffn = ffn

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        b, t, c = x.shape
        return x + self.ffn(self.ln2(x).reshape(b * t, c)).view(b, t, c)


class GPT(nn.Module):
    def __init__(self, vocab, context, layers, width, heads, hidden, moe_layers, experts, alpha):
        super().__init__()
        self.token = nn.Parameter(torch.randn(vocab, width) * 0.02)
        self.position = nn.Parameter(torch.randn(context, width) * 0.02)
        self.blocks = nn.ModuleList(
            Block(width, heads, SwitchMoE(width, hidden, experts, alpha) if l in moe_layers else MLP(width, hidden))
            for l in range(layers))
        self.final_norm = nn.LayerNorm(width)

    def forward(self, idx, targets):
        b, t = idx.shape
        x = self.token[idx] + self.position[:t]
        for block in self.blocks:
            x = block(x)
        logits = self.final_norm(x) @ self.token.t()          # tied head, [B, T, V]
        loss = F.cross_entropy(logits.view(b * t, -1), targets.view(b * t))
        for block in self.blocks:
            if isinstance(block.ffn, SwitchMoE):
                loss = loss + block.ffn.aux
        return loss


def load_tokens(path, validation_fraction=0.1):
    """The training split's character ids, as gpt-moe makes them (TextCorpus.split, CharTokenizer)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    held = int(round(len(text) * validation_fraction))
    train = text[:len(text) - held]
    symbols = sorted(set(train))
    ids = {s: i for i, s in enumerate(symbols)}
    return torch.tensor([ids[s] for s in train], dtype=torch.long), len(symbols) + 1


def run(preset, threads, steps, warmup, tokens, vocab, args):
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    moe_layers = list(range(1, args.layers, 2)) if preset == "baseline" else []
    model = GPT(vocab, args.context, args.layers, args.width, args.heads, 4 * args.width,
                moe_layers, experts=8, alpha=0.01)
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.999), eps=1e-8)
    model.train()

    # Windows of T + 1 tokens every T tokens (stride = context), shuffled once per epoch.
    t = args.context
    starts = torch.arange(0, len(tokens) - t, t)
    offsets = torch.arange(t + 1)
    generator = torch.Generator().manual_seed(args.seed)
    order, position = torch.randperm(len(starts), generator=generator), 0

    step_seconds = []
    losses = []
    for _ in range(steps):
        if position + args.batch_size > len(order):
            order, position = torch.randperm(len(starts), generator=generator), 0
        windows = tokens[starts[order[position:position + args.batch_size], None] + offsets]   # [B, T+1]
        position += args.batch_size
        x, y = windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
        t0 = time.perf_counter()
        loss = model(x, y)
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.step()
        step_seconds.append(time.perf_counter() - t0)
        losses.append(loss.item())

    tokens_per_step = args.batch_size * t
    timed = step_seconds[warmup:] if len(step_seconds) > warmup else step_seconds
    return {
        "preset": preset, "threads": threads, "steps": steps, "tokens_per_step": tokens_per_step,
        "parameters": params, "gpt_moe_parameters": GPT_MOE_PARAMETERS.get(preset),
        "tokens_per_second": steps * tokens_per_step / sum(step_seconds),
        "median_tokens_per_second": tokens_per_step / statistics.median(timed),
        "median_step_ms": 1000 * statistics.median(timed),
        "train_seconds": sum(step_seconds),
        "first_loss": losses[0], "last_loss": losses[-1],
    }


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_text = os.path.normpath(os.path.join(here, "..", "..", "..", "shared", "data", "tinyshakespeare", "input.txt"))
    parser = argparse.ArgumentParser(description="gpt-moe's GPT in PyTorch: training tokens per second.")
    parser.add_argument("--preset", choices=["baseline", "dense", "both"], default="both")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the median (not of tokens/s)")
    parser.add_argument("--threads", default="1,2", help="comma list of thread counts")
    parser.add_argument("--text", default=default_text, help="the file gpt-moe reads (--text)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args()

    torch.set_num_interop_threads(1)
    tokens, vocab = load_tokens(args.text)
    presets = ["baseline", "dense"] if args.preset == "both" else [args.preset]
    threads = [int(n) for n in args.threads.split(",")]
    results = [run(p, n, args.steps, args.warmup, tokens, vocab, args) for p in presets for n in threads]

    defaults = (args.layers, args.width, args.heads, args.context) == (4, 64, 4, 64)
    if args.json:
        print(json.dumps({"torch": torch.__version__, "text": args.text, "vocabulary": vocab,
                          "results": results}, indent=2))
    else:
        print(f"torch {torch.__version__}, {args.text}: V = {vocab}, {args.steps} steps of "
              f"{args.batch_size} × {args.context} tokens")
        print(f"{'preset':<9} {'threads':>7} {'params':>9} {'gpt-moe':>9} {'tokens/s':>9} "
              f"{'median tokens/s':>15} {'median step ms':>14} {'loss first→last':>16}")
        for r in results:
            expected = r["gpt_moe_parameters"] if defaults else None
            print(f"{r['preset']:<9} {r['threads']:>7} {r['parameters']:>9,} "
                  f"{(f'{expected:,}' if expected else '—'):>9} {r['tokens_per_second']:>9,.0f} "
                  f"{r['median_tokens_per_second']:>15,.0f} {r['median_step_ms']:>14.1f} "
                  f"{r['first_loss']:>7.3f}→{r['last_loss']:.3f}")
    if defaults:
        wrong = [r for r in results if r["parameters"] != r["gpt_moe_parameters"]]
        for r in wrong:
            print(f"parameter count differs from gpt-moe's: {r['preset']} {r['parameters']:,} "
                  f"vs {r['gpt_moe_parameters']:,}", file=sys.stderr)
        if wrong:
            sys.exit(1)


if __name__ == "__main__":
    main()
