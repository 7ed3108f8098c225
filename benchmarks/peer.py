"""The gated RNN layer of benchmarks/Benchmarks (d 256, N 1024, B 8, T 1024) in PyTorch, written
as a Python user would: projections, then a loop over time. Prints forward and forward+backward
times and the matmul rate, for comparison in the same run. Needs python3 with torch (Debian:
apt-get install python3-torch libopenblas0-pthread, then /usr/bin/python3 benchmarks/peer.py; without
OpenBLAS, Debian's torch falls back to the reference BLAS, about 30 times slower)."""
import os
import time
import torch

torch.set_num_threads(os.cpu_count())

torch.manual_seed(1)
d, n, b, t = 256, 1024, 8, 1024
value, gate, readout = torch.nn.Linear(d, n), torch.nn.Linear(d, n), torch.nn.Linear(n, d)
lam = torch.nn.Parameter(torch.rand(n) * 0.5 + 0.45)
x = torch.randn(b, t, d)


def forward(x):
    u = value(x) * torch.sigmoid(gate(x))
    h = torch.zeros(b, n)
    outputs = []
    for step in range(t):
        h = lam * h + u[:, step]
        outputs.append(h)
    return readout(torch.stack(outputs, 1))


def best(run, repeats=3):
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return min(times)


with torch.no_grad():
    print(f"python forward: {best(lambda: forward(x)):.1f} ms")
print(f"python forward + backward: {best(lambda: forward(x).sum().backward(), repeats=2):.1f} ms")
a = torch.randn(2048, 2048)
ms = best(lambda: a @ a)
print(f"python matmul 2048^3: {ms:.1f} ms, {2 * 2048 ** 3 / ms / 1e6:.1f} GFLOP/s")
