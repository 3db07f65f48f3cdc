"""Would a vectorised group pay? N members' MLPs looped vs torch.func.vmap vs batched matmul.

    python -m benchmarks.bench_group [--members 4] [--batch 4000] [--reps 10] [--precision fp32,bf16]

The dense part of a same-architecture group step (forward + backward of each member's MLP
[F*D -> 400 -> 200 -> 100 -> 1] on its own (B, F*D) input, F=39, D=16) three ways:

* loop:  the members one after another (what ``Trainer.step`` does),
* vmap:  ``torch.func.stack_module_state`` + ``functional_call`` under ``vmap`` over the members,
* bmm:   the stacked weights as (N, in, out) tensors and ``torch.baddbmm`` per layer.

This is the part a vectorised path can change: the embedding lookups, their backward and the
row-wise optimizer already share the batch's unique rows across members (models/embedding.py),
and on a GPU vectorising mostly saves kernel launches, which a CPU does not pay. Prints median
milliseconds per variant and precision, and the ratios to the loop. Results go to
OUT/group.json.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import header, header_line, median, write_report


def mlp(in_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, 400), nn.ReLU(), nn.Linear(400, 200), nn.ReLU(),
                         nn.Linear(200, 100), nn.ReLU(), nn.Linear(100, 1))


def variants(n: int, batch: int, in_dim: int):
    from torch.func import functional_call, stack_module_state, vmap

    torch.manual_seed(0)
    members = [mlp(in_dim) for _ in range(n)]
    xs = [torch.randn(batch, in_dim, requires_grad=True) for _ in range(n)]
    X = torch.stack([x.detach() for x in xs]).requires_grad_(True)  # (N, B, in)

    def loop():
        sum(m(x).sum() for m, x in zip(members, xs)).backward()

    params, buffers = stack_module_state(members)
    skeleton = copy.deepcopy(members[0]).to("meta")

    def one(p, b, x):
        return functional_call(skeleton, (p, b), (x,))

    def vmapped():
        vmap(one)(params, buffers, X).sum().backward()

    linears = [0, 2, 4, 6]
    W = [torch.stack([m[i].weight.detach() for m in members]).transpose(1, 2).contiguous().requires_grad_(True)
         for i in linears]  # (N, in, out)
    Bs = [torch.stack([m[i].bias.detach() for m in members]).unsqueeze(1).requires_grad_(True) for i in linears]

    def bmm():
        h = X
        for k in range(len(W)):
            h = torch.baddbmm(Bs[k], h, W[k])
            if k < len(W) - 1:
                h = torch.relu(h)
        h.sum().backward()

    return {"loop": loop, "vmap": vmapped, "bmm": bmm}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4000)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--precision", default="fp32,bf16")
    ap.add_argument("--out", type=Path, default=Path("bench_out"))
    a = ap.parse_args(argv)
    h = header()
    print(header_line(h), flush=True)
    fns = variants(a.members, a.batch, 39 * 16)
    res = {"header": h, "args": vars(a) | {"out": str(a.out)}, "ms": {}}
    for prec in a.precision.split(","):
        times = {k: [] for k in fns}
        for _ in range(2):
            for k, f in fns.items():  # warm-up (oneDNN primitive creation)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
                    f()
        for _ in range(a.reps):
            for k, f in fns.items():  # interleaved, so that other load hits all alike
                t = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
                    f()
                times[k].append(time.perf_counter() - t)
        res["ms"][prec] = {k: round(median(v) * 1e3, 1) for k, v in times.items()}
    lines = [header_line(h), f"# {a.members} MLPs [624, 400, 200, 100, 1], batch {a.batch}, forward + backward; "
                             f"median of {a.reps}",
             f"{'precision':9s} {'loop ms':>8s} {'vmap ms':>8s} {'bmm ms':>8s} {'vmap/loop':>10s} {'bmm/loop':>9s}"]
    for prec, ms in res["ms"].items():
        lines.append(f"{prec:9s} {ms['loop']:>8.1f} {ms['vmap']:>8.1f} {ms['bmm']:>8.1f} "
                     f"{ms['vmap'] / ms['loop']:>10.2f} {ms['bmm'] / ms['loop']:>9.2f}")
    write_report(a.out, "group", res, lines)
    return res


if __name__ == "__main__":
    main()
