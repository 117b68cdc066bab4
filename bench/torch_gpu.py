#!/usr/bin/env python3
"""PyTorch peer of bench/gpubench on a GPU (or the CPU, where none is).

A plain GPT-2 in PyTorch eager mode, written for this comparison with the
arithmetic of tandem's model/ package (pre-LayerNorm blocks, fused QKV
projection, tanh GELU, tied output embedding, AdamW with decay on matrices
only), measured like gpubench measures the CUDA backend:

  train  forward + cross-entropy + backward + clipping + AdamW, B x T tokens
  gen    batched greedy generation with a preallocated KV cache: one
         prefill of the prompts, then one token per row per step, the
         argmax on the device

at FP32 (TF32 disabled) and TF32 (torch.backends.cuda.matmul.allow_tf32).
Attention is F.scaled_dot_product_attention (PyTorch's fused kernels), as a
current eager GPT-2 uses (written out on PyTorch before 2.0). Prints one JSON object; scripts/gpu-check.sh
compares it with gpubench's.
"""

import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def sdpa(q, k, v, causal=False, mask=None):
    """F.scaled_dot_product_attention where PyTorch has it (2.0 and later:
    fused kernels on a GPU), else the same arithmetic written out."""
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        T, S = q.shape[-2], k.shape[-2]
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
    if mask is not None:
        att = att.masked_fill(~mask, float("-inf"))
    return F.softmax(att, dim=-1) @ v


class Block(nn.Module):
    def __init__(self, c, nh):
        super().__init__()
        self.nh = nh
        self.ln1 = nn.LayerNorm(c, eps=1e-5)
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)
        self.ln2 = nn.LayerNorm(c, eps=1e-5)
        self.fc = nn.Linear(c, 4 * c)
        self.out = nn.Linear(4 * c, c)

    def attention(self, x, cache, pos):
        B, T, C = x.shape
        hs = C // self.nh
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.nh, hs).transpose(1, 2)
        k = k.view(B, T, self.nh, hs).transpose(1, 2)
        v = v.view(B, T, self.nh, hs).transpose(1, 2)
        if cache is None:
            y = sdpa(q, k, v, causal=True)
        else:
            kc, vc = cache
            kc[:, :, pos:pos + T] = k
            vc[:, :, pos:pos + T] = v
            k, v = kc[:, :, :pos + T], vc[:, :, :pos + T]
            if T == 1:
                y = sdpa(q, k, v)
            else:  # prefill at pos: query i sees keys 0..pos+i
                S = pos + T
                mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
                y = sdpa(q, k, v, mask=mask)
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))

    def forward(self, x, cache=None, pos=0):
        x = x + self.attention(self.ln1(x), cache, pos)
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, n_layer, n_head, n_embd, n_positions, vocab):
        super().__init__()
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(n_positions, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)
        for name, p in self.named_parameters():
            if name.endswith("weight") and p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, caches=None, pos=0, last_only=False):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(pos, pos + T, device=idx.device))
        for i, blk in enumerate(self.blocks):
            x = blk(x, None if caches is None else caches[i], pos)
        x = self.ln_f(x)
        if last_only:
            x = x[:, -1:, :]
        return x @ self.wte.weight.t()


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def set_precision(prec):
    tf32 = prec == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def bench_train(model, cfg, args, dev, prec):
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    plain = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": plain, "weight_decay": 0.0}], lr=3e-4)
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, cfg["vocab"], (args.train_batch, args.ctx), generator=g).to(dev)
    y = torch.randint(0, cfg["vocab"], (args.train_batch, args.ctx), generator=g).to(dev)
    model.train()

    def step():
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, cfg["vocab"]), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    for _ in range(args.warmup):
        step()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync(dev)
    dt = time.perf_counter() - t0
    del opt
    return {"precision": prec, "batch": args.train_batch, "context": args.ctx, "steps": args.steps, "seconds": dt,
            "tokens_per_s": args.train_batch * args.ctx * args.steps / dt, "loss": float(loss)}


def bench_gen(model, cfg, args, dev, prec, batch):
    model.eval()
    hs = cfg["n_embd"] // cfg["n_head"]
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(0, cfg["vocab"], (batch, args.prompt), generator=g).to(dev)
    max_t = args.prompt + args.new
    caches = [(torch.zeros(batch, cfg["n_head"], max_t, hs, device=dev),
               torch.zeros(batch, cfg["n_head"], max_t, hs, device=dev)) for _ in range(cfg["n_layer"])]

    def run(new):
        logits = model(prompts, caches, 0, last_only=True)
        pos = args.prompt
        nxt = logits[:, -1, :].argmax(dim=-1, keepdim=True)
        for _ in range(new - 1):
            logits = model(nxt, caches, pos)
            pos += 1
            nxt = logits[:, -1, :].argmax(dim=-1, keepdim=True)
        return nxt

    with torch.inference_mode():
        for _ in range(args.warmup):
            run(4)
        sync(dev)
        t0 = time.perf_counter()
        run(args.new)
        sync(dev)
        dt = time.perf_counter() - t0
    return {"precision": prec, "batch": batch, "prompt_tokens": args.prompt, "new_tokens": args.new, "seconds": dt,
            "tokens_per_s": batch * args.new / dt}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto, cuda or cpu")
    ap.add_argument("--parts", default="train,gen")
    ap.add_argument("--precisions", default="fp32,tf32")
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--gen-batches", default="1,8,64")
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    args = ap.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = args.parts.split(",")
    precs = args.precisions.split(",") if dev.type == "cuda" else ["fp32"]
    cfg = {"n_layer": args.layers, "n_head": 12, "n_embd": 768, "vocab": 50257,
           "n_positions": max(1024, args.ctx, args.prompt + args.new)}
    res = {"torch": torch.__version__, "backend": dev.type, "config": cfg}
    if dev.type == "cuda":
        res["device"] = torch.cuda.get_device_name(0)
    else:
        res["device"] = "cpu (%d threads)" % torch.get_num_threads()
    torch.manual_seed(0)
    model = GPT(cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["n_positions"], cfg["vocab"]).to(dev)
    res["params"] = sum(p.numel() for p in model.parameters())
    train, gen = [], []
    for prec in precs:
        set_precision(prec)
        if "train" in parts:
            print("torch_gpu: %s training" % prec, file=sys.stderr)
            train.append(bench_train(model, cfg, args, dev, prec))
        if "gen" in parts:
            for b in [int(s) for s in args.gen_batches.split(",") if s]:
                print("torch_gpu: %s generation, batch %d" % (prec, b), file=sys.stderr)
                gen.append(bench_gen(model, cfg, args, dev, prec, b))
    res["train"], res["gen"] = train, gen
    json.dump(res, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
