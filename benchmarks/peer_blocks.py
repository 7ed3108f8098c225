"""RetNet's retention and gated linear attention (GLA) blocks of benchmarks/Benchmarks' blocks section (d 256, 4 heads of
key 64 and value 64, B 8, T 1024, float32) in PyTorch, written as a PyTorch user would: projections for the whole
sequence, then the attention in the parallel masked form (RetNet: decay mask D[t, s] = gamma^(t - s), as RetNet's
reference code) and in chunks (as flash-linear-attention's naive chunked references: chunks of 64 for RetNet's fixed
decays, 16 for GLA's per-key-channel decays, queries and keys rescaled by the decay within the chunk, a state carried
between chunks). GLA's masked form would hold [B, H, T, T, d_k] weights (8.6 GB) and is not run. Prints forward (no
gradients) and forward + backward times, "python <family> <form> forward: <ms> ms", for the C# runner (--peer) to
compare in the same run. Needs python3 with torch (Debian: apt-get install python3-torch libopenblas0-pthread)."""
import math
import os
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(os.cpu_count())
torch.manual_seed(1)
d, heads, dk, dv, b, t = 256, 4, 64, 64, 8, 1024


def group_norm(o, weight=None, bias=None):
    """o [B, H, T, dv] normalised per head and step, eps 1e-5; back to [B, T, H dv]."""
    o = F.layer_norm(o, (o.shape[-1],), eps=1e-5)
    o = o.transpose(1, 2).reshape(o.shape[0], o.shape[2], -1)
    return o if weight is None else o * weight + bias


def split(x, width):
    return x.view(x.shape[0], x.shape[1], heads, width).transpose(1, 2)


class RetNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k = torch.nn.Linear(d, heads * dk, bias=False), torch.nn.Linear(d, heads * dk, bias=False)
        self.v, self.g = torch.nn.Linear(d, heads * dv, bias=False), torch.nn.Linear(d, heads * dv, bias=False)
        self.out = torch.nn.Linear(heads * dv, d, bias=False)
        pairs = dk // 2
        angles = 10000 ** (-torch.arange(pairs, dtype=torch.float32) / (pairs - 1))
        position = torch.arange(t, dtype=torch.float32)[:, None] * angles
        self.cos, self.sin = position.cos(), position.sin()
        self.log_gamma = torch.log(1 - 2 ** (-5.0 - torch.arange(heads, dtype=torch.float32)))

    def rotate(self, x):
        pairs = x.view(*x.shape[:-1], dk // 2, 2)
        even, odd = pairs[..., 0], pairs[..., 1]
        return torch.stack([even * self.cos - odd * self.sin, even * self.sin + odd * self.cos], -1).flatten(-2)

    def qkv(self, x):
        q = self.rotate(split(self.q(x), dk))
        k = self.rotate(split(self.k(x), dk)) / math.sqrt(dk)
        return q, k, split(self.v(x), dv)

    def parallel(self, x):
        q, k, v = self.qkv(x)
        n = torch.arange(t, dtype=torch.float32)
        lag = n[:, None] - n[None, :]
        mask = torch.where(lag >= 0, torch.exp(self.log_gamma[:, None, None] * lag), torch.zeros(()))
        o = ((q @ k.transpose(-1, -2)) * mask) @ v
        return self.out(F.silu(self.g(x)) * group_norm(o))

    def chunked(self, x, c=64):
        q, k, v = self.qkv(x)
        n = torch.arange(c, dtype=torch.float32)
        lag = n[:, None] - n[None, :]
        decay = torch.where(lag >= 0, torch.exp(self.log_gamma[:, None, None] * lag), torch.zeros(()))  # [H, C, C]
        gamma = self.log_gamma[:, None]
        q_decay = torch.exp(gamma * (n + 1))[..., None]          # q_i reads the state through gamma^(i + 1)
        k_decay = torch.exp(gamma * (c - 1 - n))[..., None]      # k_j enters the next state with gamma^(C - 1 - j)
        chunk_decay = torch.exp(gamma * c)[..., None]
        state = torch.zeros(x.shape[0], heads, dk, dv)
        outputs = []
        for i in range(0, t, c):
            qi, ki, vi = q[:, :, i:i + c], k[:, :, i:i + c], v[:, :, i:i + c]
            outputs.append(((qi @ ki.transpose(-1, -2)) * decay) @ vi + (qi * q_decay) @ state)
            state = chunk_decay * state + (ki * k_decay).transpose(-1, -2) @ vi
        o = torch.cat(outputs, 2)
        return self.out(F.silu(self.g(x)) * group_norm(o))


class Gla(torch.nn.Module):
    def __init__(self, rank=16, temperature=16):
        super().__init__()
        self.q, self.k = torch.nn.Linear(d, heads * dk, bias=False), torch.nn.Linear(d, heads * dk, bias=False)
        self.v = torch.nn.Linear(d, heads * dv, bias=False)
        self.down, self.up = torch.nn.Linear(d, rank, bias=False), torch.nn.Linear(rank, heads * dk)
        self.r, self.out = torch.nn.Linear(d, heads * dv), torch.nn.Linear(heads * dv, d, bias=False)
        self.norm_weight, self.norm_bias = torch.nn.Parameter(torch.ones(heads * dv)), torch.nn.Parameter(torch.zeros(heads * dv))
        self.temperature = temperature

    def chunked(self, x, c=16):
        q, k, v = split(self.q(x), dk), split(self.k(x), dk), split(self.v(x), dv)
        log_alpha = split(F.logsigmoid(self.up(self.down(x))) / self.temperature, dk)
        mask = torch.ones(c, c, dtype=torch.bool).tril()
        state = torch.zeros(x.shape[0], heads, dk, dv)
        outputs = []
        for i in range(0, t, c):
            qi, ki, vi = q[:, :, i:i + c], k[:, :, i:i + c], v[:, :, i:i + c]
            cumulative = log_alpha[:, :, i:i + c].cumsum(2)              # b_i = sum of log alpha up to step i of the chunk
            last = cumulative[:, :, -1:]
            q_scaled, k_scaled = qi * cumulative.exp(), ki * (-cumulative).exp()
            scores = (q_scaled @ k_scaled.transpose(-1, -2)).masked_fill(~mask, 0)
            outputs.append(scores @ vi + q_scaled @ state)
            state = last.transpose(-1, -2).exp() * state + (ki * (last - cumulative).exp()).transpose(-1, -2) @ vi
        o = torch.cat(outputs, 2)
        return self.out(F.silu(self.r(x)) * group_norm(o, self.norm_weight, self.norm_bias))


def best(run, repeats=3):
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return min(times)


def report(family, form, forward, x):
    with torch.no_grad():
        print(f"python {family} {form} forward: {best(lambda: forward(x)):.2f} ms", flush=True)
    print(f"python {family} {form} forward + backward: {best(lambda: forward(x).sum().backward()):.2f} ms", flush=True)


x = torch.randn(b, t, d)
retnet, gla = RetNet(), Gla()
with torch.no_grad():
    difference = (retnet.parallel(x) - retnet.chunked(x)).abs().max() / retnet.parallel(x).abs().max()
print(f"RetNet masked vs chunked, max |difference| / max |y|: {difference:.1e}")
report("RetNet", "masked", retnet.parallel, x)
report("RetNet", "chunked", retnet.chunked, x)
report("GLA", "chunked", gla.chunked, x)
a = torch.randn(2048, 2048)
ms = best(lambda: a @ a)
print(f"python matmul 2048^3: {ms:.1f} ms, {2 * 2048 ** 3 / ms / 1e6:.1f} GFLOP/s")
