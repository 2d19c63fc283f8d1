"""transformers on CPU at granite-3.1-1b-a400m's dimensions, random BF16 weights:
the reference for `moe-bench --only pretrained` (run both in one session).

Times a 128-token prefill (one forward pass) and 32 greedy decode steps with
the KV cache, on 2 threads by default, and prints tokens/s and resident memory.

    /tmp/venv/bin/python Tests/Reference/pretrained_bench.py [--threads N]
"""
import argparse
import resource
import time

import torch
import transformers

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)

config = transformers.GraniteMoeConfig(
    vocab_size=49155, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=8,
    intermediate_size=512, num_local_experts=32, num_experts_per_tok=8, tie_word_embeddings=True,
    embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=0.015625, logits_scaling=6.0,
    max_position_embeddings=4096)
model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
weights = sum(p.numel() * p.element_size() for p in model.parameters())
prompt = torch.randint(0, config.vocab_size, (1, 128))

with torch.no_grad():
    t0 = time.perf_counter()
    out = model(prompt, use_cache=True)
    prefill = prompt.shape[1] / (time.perf_counter() - t0)
    cache = out.past_key_values
    token = out.logits[:, -1:].argmax(-1)
    steps = 32
    t1 = time.perf_counter()
    for _ in range(steps):
        out = model(token, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        token = out.logits[:, -1:].argmax(-1)
    decode = steps / (time.perf_counter() - t1)

rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(f"transformers {transformers.__version__}, torch {torch.__version__}, {args.threads} threads, BF16")
print(f"  weights     {weights / 1e9:.2f} GB")
print(f"  prefill     {prefill:.1f} tokens/s (128-token prompt)")
print(f"  decode      {decode:.2f} tokens/s ({steps} steps)")
print(f"  peak RSS    {rss / 1e9:.2f} GB")
