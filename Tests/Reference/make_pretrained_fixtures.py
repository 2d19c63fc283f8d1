"""Fixtures for the pretrained-moe tests: tiny random MoE checkpoints made by
Hugging Face transformers, and what transformers computes with them.

For each family (mixtral, olmoe, qwen2_moe, granitemoe) this script builds a
tiny model from a config (2 layers, 4-8 experts, grouped-query attention,
width 32, vocabulary of a few hundred), with random weights, and saves it with
`save_pretrained` twice: in F32 (folder FAMILY/) and in BF16 (FAMILY-bf16/). It
trains a small tokenizer of the family's kind with the `tokenizers` package:
byte-level BPE for olmoe (GPT-NeoX style), granitemoe (digits split first) and
qwen2_moe (Qwen's split regex), and a metaspace BPE with byte fallback for
mixtral (Llama style: normalizer prepends and replaces spaces by U+2581, byte
tokens <0x00>..<0xFF>, BOS added). Then it records, in FAMILY/reference.json:

  * for a few prompts: the token ids, the logits [T][V], the router logits of
    every MoE layer [L][T][E], the experts chosen [L][T][K] (in torch.topk's
    order, best first) and a greedy continuation of 8 tokens;
  * the same for the BF16 weights, run in F32 (FAMILY-bf16/reference.json),
    and for olmoe also F16 weights saved in shards with an index
    (olmoe-f16-sharded/);
  * the tokenizer's ids (and decoding) of a sample with Unicode, emoji,
    digits and runs of whitespace.

Random weights put some router decisions and greedy choices close to ties; a
seed whose smallest margin is below `MARGIN` is skipped, so that float
rounding differences of ~1e-6 cannot flip a choice. The margins are printed.

Run (needs torch, transformers, tokenizers, safetensors from PyPI):
    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch transformers tokenizers safetensors
    /tmp/venv/bin/python Tests/Reference/make_pretrained_fixtures.py
Writes Tests/MoETests/Fixtures/pretrained/ (`--only-tokenizers`: just its
tokenizers/ folder). The BPE trainer does not break ties the same way on every
run, so a rerun may learn slightly different merges; the tests compare against
whatever the same run recorded. Made with transformers 5.24.0,
tokenizers 0.23.3, torch 2.13.0 (CPU).
"""
import json
import os
import shutil

import torch
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "MoETests", "Fixtures", "pretrained")
CORPUS = os.path.join(HERE, "..", "..", "..", "shared", "data", "tinyshakespeare", "input.txt")
MARGIN = 1e-3
GREEDY_TOKENS = 8

SAMPLE = ("Hello, world! Ünïcödé: naïve café, 東京, Привет. Emoji: 🦀🚀👩‍💻 "
          "digits 1234567 and 3.14159;   three spaces,\ttab,\n\nnewlines    end")
PROMPTS = ["To be, or not to be", "First Citizen:\nBefore we proceed", "The 3 kings 🦀 said"]

QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def corpus_lines():
    text = open(CORPUS, encoding="utf-8").read()[:60000]
    return text.split("\n") + [SAMPLE]


def byte_level_tokenizer(kind):
    """GPT-2 style byte-level BPE, with the family's pre-tokenizer."""
    tok = Tokenizer(models.BPE())
    if kind == "qwen":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    elif kind == "granite":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=360, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus_lines(), trainer)
    return tok


def metaspace_tokenizer():
    """Llama/Mixtral style: U+2581 for spaces, BPE with byte fallback, <s> prepended."""
    # Learn merges on words split at spaces, then rebuild the model the way
    # Mixtral's tokenizer.json has it: specials, then the 256 byte tokens, then pieces.
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=160, show_progress=False, limit_alphabet=80)
    trainer_tok.train_from_iterator(corpus_lines(), trainer)
    learned = json.loads(trainer_tok.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for piece, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        if piece not in vocab:
            vocab[piece] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


def family_config(family, vocab):
    common = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.15)
    if family == "mixtral":
        return transformers.MixtralConfig(intermediate_size=16, num_local_experts=8, num_experts_per_tok=2,
                                          rope_theta=1e6, bos_token_id=1, eos_token_id=2, **common)
    if family == "olmoe":
        return transformers.OlmoeConfig(intermediate_size=16, num_experts=8, num_experts_per_tok=3,
                                        norm_topk_prob=False, eos_token_id=0, pad_token_id=0, **common)
    if family == "qwen2_moe":
        return transformers.Qwen2MoeConfig(intermediate_size=48, moe_intermediate_size=16, num_experts=6,
                                           num_experts_per_tok=2, shared_expert_intermediate_size=24,
                                           norm_topk_prob=False, rope_theta=1e6, eos_token_id=0, **common)
    if family == "granitemoe":
        common["num_key_value_heads"] = 1  # multi-query, the extreme of GQA
        return transformers.GraniteMoeConfig(intermediate_size=16, num_local_experts=4, num_experts_per_tok=2,
                                             embedding_multiplier=12.0, residual_multiplier=0.22,
                                             attention_multiplier=0.125, logits_scaling=4.0,
                                             tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, **common)
    raise ValueError(family)


def router_modules(model):
    return [m for m in model.modules() if type(m).__name__.endswith("TopKRouter")]


def run(model, ids):
    """Logits [T][V], router logits [L][T][E], experts [L][T][K], smallest decision margin."""
    captured = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: captured.append(out)) for m in router_modules(model)]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    for h in hooks:
        h.remove()
    router_logits, experts, margin = [], [], float("inf")
    for (rl, _, idx) in captured:
        rl = rl.float()
        router_logits.append(rl.tolist())
        experts.append(idx.tolist())
        k = idx.shape[-1]
        top = torch.sort(rl, dim=-1, descending=True).values
        margin = min(margin, (top[:, k - 1] - top[:, k]).min().item())  # chosen vs first not chosen
    return logits, router_logits, experts, margin


def greedy(model, ids):
    """Greedy continuation by full recomputation (no cache), and the smallest top-2 gap."""
    ids, out, gap = list(ids), [], float("inf")
    for _ in range(GREEDY_TOKENS):
        with torch.no_grad():
            last = model(torch.tensor([ids])).logits[0, -1].float()
        top = torch.topk(last, 2).values
        gap = min(gap, (top[0] - top[1]).item())
        nxt = int(torch.argmax(last))
        out.append(nxt)
        ids.append(nxt)
    return out, gap


def rounded(x):
    if isinstance(x, list):
        return [rounded(v) for v in x]
    return float("%.7g" % x)


def reference(model, tok, bos):
    prompts, worst = [], float("inf")
    for text in PROMPTS:
        ids = tok.encode(text).ids
        logits, rl, ex, margin = run(model, ids)
        cont, gap = greedy(model, ids)
        worst = min(worst, margin, gap)
        prompts.append(dict(text=text, ids=ids, logits=rounded(logits.tolist()), router_logits=rounded(rl),
                            experts=ex, greedy=cont))
    return prompts, worst


def make(family, kind):
    tok = metaspace_tokenizer() if kind == "metaspace" else byte_level_tokenizer(kind)
    vocab = tok.get_vocab_size()
    for seed in range(100):
        torch.manual_seed(seed)
        config = family_config(family, vocab)
        model = transformers.AutoModelForCausalLM.from_config(config).float().eval()
        prompts, worst = reference(model, tok, None)
        # The BF16 checkpoint: the same weights rounded to BF16, run by transformers in F32.
        bf16 = transformers.AutoModelForCausalLM.from_config(config).eval()
        bf16.load_state_dict(model.state_dict())
        bf16 = bf16.to(torch.bfloat16)
        as_f32 = transformers.AutoModelForCausalLM.from_config(config).float().eval()
        as_f32.load_state_dict({k: v.float() for k, v in bf16.state_dict().items()})
        prompts16, worst16 = reference(as_f32, tok, None)
        if min(worst, worst16) >= MARGIN:
            break
        print(f"{family}: seed {seed} has a decision margin {min(worst, worst16):.2e} < {MARGIN}; next seed")
    print(f"{family}: seed {seed}, vocabulary {vocab}, smallest margin {min(worst, worst16):.3e}")
    for folder, m, p in [(family, model, prompts), (family + "-bf16", bf16, prompts16)]:
        path = os.path.join(OUT, folder)
        shutil.rmtree(path, ignore_errors=True)
        m.save_pretrained(path)
        tok.save(os.path.join(path, "tokenizer.json"))
        enc = tok.encode(SAMPLE).ids
        ref = dict(family=family, transformers=transformers.__version__, seed=seed, prompts=p,
                   tokenizer=dict(sample=SAMPLE, ids=enc, decoded=tok.decode(enc, skip_special_tokens=False),
                                  prompt_ids=[tok.encode(t).ids for t in PROMPTS]))
        with open(os.path.join(path, "reference.json"), "w", encoding="utf-8") as f:
            json.dump(ref, f, ensure_ascii=False, separators=(",", ":"))
        os.remove(os.path.join(path, "generation_config.json")) if os.path.exists(os.path.join(path, "generation_config.json")) else None
    if family == "olmoe":
        # F16, sharded: the same weights rounded to F16, saved in shards of at most 100 KB
        # with a model.safetensors.index.json, and transformers' F32 run on them.
        f16 = transformers.AutoModelForCausalLM.from_config(config).eval()
        f16.load_state_dict(model.state_dict())
        f16 = f16.to(torch.float16)
        as_f32 = transformers.AutoModelForCausalLM.from_config(config).float().eval()
        as_f32.load_state_dict({k: v.float() for k, v in f16.state_dict().items()})
        prompts_f16, worst_f16 = reference(as_f32, tok, None)
        print(f"{family}-f16-sharded: smallest margin {worst_f16:.3e}")
        assert worst_f16 >= MARGIN
        path = os.path.join(OUT, family + "-f16-sharded")
        shutil.rmtree(path, ignore_errors=True)
        f16.save_pretrained(path, max_shard_size="100KB")
        tok.save(os.path.join(path, "tokenizer.json"))
        ref = dict(family=family, transformers=transformers.__version__, seed=seed, prompts=prompts_f16)
        with open(os.path.join(path, "reference.json"), "w", encoding="utf-8") as f:
            json.dump(ref, f, ensure_ascii=False, separators=(",", ":"))
        os.remove(os.path.join(path, "generation_config.json")) if os.path.exists(os.path.join(path, "generation_config.json")) else None


def tokenizer_variants():
    """More tokenizer.json shapes that real checkpoints use, without a model:
    tokenizers/NAME.json and tokenizers/reference.json ({NAME: {ids, decoded}}).

      metaspace-pretokenizer  Mistral/Mixtral files written by newer tokenizers: no
                              normalizer, a Metaspace pre-tokenizer (prepend_scheme
                              "first", split false) and a Metaspace decoder
      nfc-byte-level          Qwen's: an NFC normalizer before the split regex
                              (the sample has a decomposed e + U+0301)
      prefix-space            byte-level with add_prefix_space true (RoBERTa style)
      added-tokens            byte-level with extra added tokens inside the text
    """
    folder = os.path.join(OUT, "tokenizers")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    sample = SAMPLE + " cafe\u0301 <|user|>hi<|endoftext|> ok"
    variants = {}
    base = metaspace_tokenizer()
    meta = json.loads(base.to_str())
    meta["normalizer"] = None
    meta["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
    meta["decoder"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
    variants["metaspace-pretokenizer"] = Tokenizer.from_str(json.dumps(meta))
    qwen = byte_level_tokenizer("qwen")
    qwen.normalizer = normalizers.NFC()
    variants["nfc-byte-level"] = qwen
    prefix = byte_level_tokenizer("neox")
    prefix.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    variants["prefix-space"] = prefix
    added = byte_level_tokenizer("granite")
    added.add_special_tokens(["<|user|>"])
    variants["added-tokens"] = added
    ref = {}
    for name, tok in variants.items():
        tok.save(os.path.join(folder, name + ".json"))
        ids = tok.encode(sample).ids
        ref[name] = dict(sample=sample, ids=ids, decoded=tok.decode(ids, skip_special_tokens=False))
    with open(os.path.join(folder, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(ref, f, ensure_ascii=False, separators=(",", ":"))


if __name__ == "__main__":
    import sys
    if sys.argv[1:] == ["--only-tokenizers"]:
        tokenizer_variants()
        sys.exit(0)
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT, exist_ok=True)
    make("mixtral", "metaspace")
    make("olmoe", "neox")
    make("qwen2_moe", "qwen")
    make("granitemoe", "granite")
    tokenizer_variants()
