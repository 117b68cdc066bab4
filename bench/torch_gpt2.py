#!/usr/bin/python3
"""Peer measurements for Tandem's model package: a plain GPT-2 in PyTorch.

Run with Debian's interpreter (/usr/bin/python3, python3-torch and
python3-numpy). Prints one JSON object on stdout with the parts asked for:

  gen    batched greedy generation with a KV cache at GPT-2 124M shapes
         (random weights): batch 8, 32-token prompts, 64 new tokens.
  train  forward + backward + AdamW at 6 layers, 6 heads, 384 wide,
         context 256, batch 8, vocabulary 50257.
  sgemm  numpy float32 matrix products, 768x768x768 and 2304x768x768
         (M x N x K), GFLOP/s.

The model below is written for this benchmark: it mirrors the shapes and
the arithmetic of tandem's model/ package (pre-LayerNorm blocks, fused QKV
projection, tanh GELU, tied output embedding) so that the two sides do the
same work.
"""

import argparse
import ctypes
import json
import math
import os
import sys
import time

import numpy as np

THREADS = 2


class Config:
    def __init__(self, n_layer, n_head, n_embd, n_positions, vocab_size):
        self.n_layer = n_layer
        self.n_head = n_head
        self.n_embd = n_embd
        self.n_positions = n_positions
        self.vocab_size = vocab_size


def build_model(torch, cfg):
    nn = torch.nn
    F = torch.nn.functional

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            c = cfg.n_embd
            self.ln1 = nn.LayerNorm(c, eps=1e-5)
            self.qkv = nn.Linear(c, 3 * c)
            self.proj = nn.Linear(c, c)
            self.ln2 = nn.LayerNorm(c, eps=1e-5)
            self.fc = nn.Linear(c, 4 * c)
            self.out = nn.Linear(4 * c, c)

        def attention(self, x, cache, pos):
            """x: [B, T, C]. cache: None (training) or a pair of tensors
            [B, H, maxT, hs] that receive this call's keys and values at
            positions pos..pos+T-1."""
            B, T, C = x.shape
            H = cfg.n_head
            hs = C // H
            q, k, v = self.qkv(x).split(C, dim=2)
            q = q.view(B, T, H, hs).transpose(1, 2)
            k = k.view(B, T, H, hs).transpose(1, 2)
            v = v.view(B, T, H, hs).transpose(1, 2)
            if cache is not None:
                kc, vc = cache
                kc[:, :, pos:pos + T] = k
                vc[:, :, pos:pos + T] = v
                k = kc[:, :, :pos + T]
                v = vc[:, :, :pos + T]
            S = k.shape[2]
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
            if T > 1:
                # Query i (absolute position pos+i) sees keys 0..pos+i.
                mask = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)
                att = att.masked_fill(~mask, float("-inf"))
            att = F.softmax(att, dim=-1)
            y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
            return self.proj(y)

        def forward(self, x, cache=None, pos=0):
            x = x + self.attention(self.ln1(x), cache, pos)
            h = F.gelu(self.fc(self.ln2(x)), approximate="tanh")
            return x + self.out(h)

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
            self.wpe = nn.Embedding(cfg.n_positions, cfg.n_embd)
            self.blocks = nn.ModuleList(Block() for _ in range(cfg.n_layer))
            self.ln_f = nn.LayerNorm(cfg.n_embd, eps=1e-5)
            for name, p in self.named_parameters():
                if name.endswith("weight") and p.dim() == 2:
                    nn.init.normal_(p, std=0.02)

        def forward(self, idx, caches=None, pos=0, last_only=False):
            B, T = idx.shape
            x = self.wte(idx) + self.wpe(torch.arange(pos, pos + T))
            for i, blk in enumerate(self.blocks):
                x = blk(x, None if caches is None else caches[i], pos)
            x = self.ln_f(x)
            if last_only:
                x = x[:, -1:, :]
            return x @ self.wte.weight.t()  # tied output embedding

    return GPT()


def bench_gen(torch, batch=8, prompt=32, new=64, reps=1):
    cfg = Config(12, 12, 768, 1024, 50257)
    torch.manual_seed(0)
    model = build_model(torch, cfg).eval()
    hs = cfg.n_embd // cfg.n_head
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(0, cfg.vocab_size, (batch, prompt), generator=g)

    def run(new):
        maxT = prompt + new
        caches = [(torch.zeros(batch, cfg.n_head, maxT, hs), torch.zeros(batch, cfg.n_head, maxT, hs))
                  for _ in range(cfg.n_layer)]
        logits = model(prompts, caches, 0, last_only=True)
        out = []
        pos = prompt
        for i in range(new):
            nxt = logits[:, -1, :].argmax(dim=-1, keepdim=True)
            out.append(nxt)
            if i == new - 1:
                break
            logits = model(nxt, caches, pos)
            pos += 1
        return torch.cat(out, dim=1)

    best = float("inf")
    with torch.inference_mode():
        run(2)  # warm-up: first-touch allocations, thread pool start
        for _ in range(reps):
            t0 = time.perf_counter()
            run(new)
            best = min(best, time.perf_counter() - t0)
    return {
        "batch": batch, "prompt_tokens": prompt, "new_tokens": new,
        "seconds": best,
        "tokens_per_s": batch * new / best,
        "params": sum(p.numel() for p in model.parameters()),
    }


def bench_train(torch, batch=8, ctx=256, steps=3):
    cfg = Config(6, 6, 384, ctx, 50257)
    torch.manual_seed(0)
    model = build_model(torch, cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, cfg.vocab_size, (batch, ctx), generator=g)
    y = torch.randint(0, cfg.vocab_size, (batch, ctx), generator=g)

    def step():
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.view(-1, cfg.vocab_size), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    step()  # warm-up: optimizer state allocation
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    dt = time.perf_counter() - t0
    n = sum(p.numel() for p in model.parameters())
    return {
        "batch": batch, "context": ctx, "steps": steps, "seconds": dt,
        "tokens_per_s": batch * ctx * steps / dt,
        "params": n, "final_loss": loss,
    }


def openblas_corename():
    """Name of the kernel OpenBLAS picked, read through the library numpy
    loaded (threadpoolctl is not installed here)."""
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({line.split()[-1] for line in f if "blas" in line and ".so" in line})
        for lib in libs:
            h = ctypes.CDLL(lib)
            if hasattr(h, "openblas_get_corename"):
                h.openblas_get_corename.restype = ctypes.c_char_p
                return h.openblas_get_corename().decode() + " (" + os.path.basename(lib) + ")"
    except OSError:
        pass
    return "unknown"


def bench_sgemm(min_seconds=0.5):
    out = {}
    rng = np.random.default_rng(3)
    for m, n, k in ((768, 768, 768), (2304, 768, 768)):
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        c = a @ b  # warm-up
        best = float("inf")
        t_end = time.perf_counter() + min_seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            np.matmul(a, b, out=c)
            best = min(best, time.perf_counter() - t0)
        out["%dx%dx%d" % (m, n, k)] = 2.0 * m * n * k / best / 1e9
    out["openblas_core"] = openblas_corename()
    out["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE", "")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="gen,train,sgemm", help="comma-separated: gen, train, sgemm")
    args = ap.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    for p in parts:
        if p not in ("gen", "train", "sgemm"):
            sys.exit("unknown part %r" % p)
    res = {"threads": THREADS}
    if "gen" in parts or "train" in parts:
        import torch
        torch.set_num_threads(THREADS)
        res["torch"] = torch.__version__
        if "gen" in parts:
            res["gen"] = bench_gen(torch)
        if "train" in parts:
            res["train"] = bench_train(torch)
    if "sgemm" in parts:
        res["sgemm_gflops"] = bench_sgemm()
    json.dump(res, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
