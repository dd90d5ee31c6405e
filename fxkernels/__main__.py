"""`python -m fxkernels`: versions, build configuration and per-op backends.
`python -m fxkernels demo`: runs every op on every available backend, checks it against the reference and
prints a speed table."""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time

import torch

from . import _backend, _ext
from .ops import OP_FAMILIES


def info() -> None:
    try:
        import triton

        triton_version = triton.__version__
    except Exception as e:  # noqa: BLE001
        triton_version = f"not importable ({type(e).__name__})"
    b = _ext.build_info()
    print(f"fxkernels {importlib.import_module('fxkernels').__version__}  python {platform.python_version()}")
    print(
        f"torch     {torch.__version__} (CUDA build: {torch.version.cuda}, GPU visible: {torch.cuda.is_available()})"
    )
    print(f"triton    {triton_version}  (TRITON_INTERPRET={_backend.triton_interpret()})")
    if b.get("loaded"):
        print(f"_C        compiler {b.get('compiler')}, OpenMP {b.get('openmp')}")
        print(
            f"          CUDA kernels compiled: {b.get('cuda')} (CUDA {b.get('cuda_version')}, archs {b.get('cuda_archs')})"
        )
        print(f"          kernels: {', '.join(b.get('kernels', []))}")
    else:
        print(f"_C        not available: {b.get('error')}")
    print(f"backends  {_backend.backends()}  default: {_backend.default_backend()}")
    print("per op (backends usable in this process):")
    for op, mod in OP_FAMILIES.items():
        kernels = importlib.import_module(mod).KERNELS
        avail = [n for n in _backend.BACKENDS[1:] if _backend.backend_available(n, op, kernels)]
        print(f"  {op:<20} {', '.join(avail)}")


def _time(fn, warmup=2, iters=5) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(iters):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def _fcc_cases(device):
    from .ops.fcc import KERNELS, circular_conv, circular_conv2d

    B, C, H, W = 32, 128, 16, 16  # MOL's FCC shape
    x = torch.randn(B, C, H, W, device=device)
    w1, w2 = torch.randn(C, H, device=device) / 4, torch.randn(C, W, device=device) / 4
    p1, p2 = torch.randn(C, H, device=device), torch.randn(C, W, device=device)
    b1, b2 = torch.randn(C, device=device), torch.randn(C, device=device)
    t = (x, w1, w2, p1, p2, b1, b2)
    return [
        (
            "circular_conv (V)",
            t,
            lambda be, t: circular_conv(t[0], t[1], -2, t[3], t[5], backend=be),
            KERNELS,
        ),
        (
            "circular_conv2d (VH)",
            t,
            lambda be, t: circular_conv2d(t[0], *t[1:3], "VH", *t[3:7], backend=be),
            KERNELS,
        ),
    ]


def _ccc_cases(device):
    from .ops.ccc import channel_edge_conv, knn_cosine, spatial_edge_conv
    from .ops.ccc.ccc import KERNELS

    B, C, N, k = 32, 128, 256, 4  # MOL's CCC shape: (32, 128, 16, 16) maps, 4 neighbours
    x = torch.randn(B, C, N, device=device)
    w = [torch.randn(N, N, device=device) / N**0.5 for _ in range(2)]
    b = [torch.randn(N, device=device) / N**0.5 for _ in range(2)]
    t = (x, *w, *b)

    def channel(be, t):
        return channel_edge_conv(t[0], knn_cosine(t[0], k, be), *t[1:], backend=be)

    def spatial(be, t):
        return spatial_edge_conv(t[0], knn_cosine(t[0].transpose(1, 2), k, be), *t[1:], backend=be)

    return [("CCC channel (knn+conv)", t, channel, KERNELS), ("CCC spatial (knn+conv)", t, spatial, KERNELS)]


def _corr_cases(device):
    from .ops.corr import spatial_correlation
    from .ops.corr.corr import KERNELS

    # MOL's FlowNetC correlation: 56 frame pairs (B=8 clips x 7 pairs), 256 channels, 16x16, patch 21, dilation 2
    t = tuple(torch.randn(56, 256, 16, 16, device=device) for _ in range(2))
    return [("spatial_correlation", t, lambda be, t: spatial_correlation(*t, 21, 2, backend=be), KERNELS)]


def _spectral_cases(device):
    from .ops.spectral import spectral_filter
    from .ops.spectral.spectral import KERNELS

    # MTSTWN's STFE temporal branch at its second MViT stage: 15 steps, a per-position filter, the residual
    B, C, T, H, W = 8, 64, 15, 28, 28
    M = T // 2 + 1
    x, res = torch.randn(B, C, T, H, W, device=device), torch.randn(B, C, T, H, W, device=device)
    filt = torch.randn(B, C, M, 2, H, W, device=device).permute(
        0, 1, 2, 4, 5, 3
    )  # as TemporalFilter makes it
    return [("spectral_filter", (x, filt, res), lambda be, t: spectral_filter(*t, backend=be), KERNELS)]


def demo() -> int:
    from .testing import errors

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    print(f"fxkernels demo on {device}: every op at its model shape (MOL, MTSTWN), float32, synthetic data")
    ok = True
    rows = []
    for name, inputs, fn, kernels in (
        _fcc_cases(device) + _ccc_cases(device) + _corr_cases(device) + _spectral_cases(device)
    ):
        kinds = [
            n for n in ("reference", "cpu", "triton", "cuda") if _backend.backend_available(n, name, kernels)
        ]
        if device == "cpu" and "triton" in kinds:
            kinds.remove("triton")  # the interpreter is for correctness tests, not a speed table
        base = {}
        with torch.no_grad():
            g = torch.randn_like(fn("reference", inputs))  # one upstream gradient for every backend
        for be in kinds:
            leaves = [t.detach().clone().requires_grad_(True) for t in inputs]

            def fwd(be=be, leaves=leaves, fn=fn):
                with torch.no_grad():
                    return fn(be, leaves)

            def fwd_bwd(be=be, leaves=leaves, fn=fn, g=g):
                for t in leaves:
                    t.grad = None
                fn(be, leaves).backward(g)

            y = fn(be, leaves)
            y.backward(g)
            grads = [t.grad for t in leaves]
            if be == "reference":
                base = {"y": y.detach(), "grads": grads}
                err = 0.0
            else:
                pairs = [(a, b) for a, b in zip(grads, base["grads"]) if b is not None]  # unused inputs: None
                err = max([errors(y, base["y"])[1]] + [errors(a, b)[1] for a, b in pairs])
                ok &= err < 1e-4
            tf, tfb = _time(fwd), _time(fwd_bwd)
            if be == "reference":
                base["tf"], base["tfb"] = tf, tfb
            rows.append((name, be, tf, tfb, base["tf"] / tf, base["tfb"] / tfb, err))
    print(
        f"{'op':<24} {'backend':<10} {'fwd ms':>8} {'fwd+bwd ms':>11} {'fwd x':>7} {'f+b x':>7} {'max rel RMS err':>16}"
    )
    for r in rows:
        print(f"{r[0]:<24} {r[1]:<10} {r[2]:8.2f} {r[3]:11.2f} {r[4]:7.2f} {r[5]:7.2f} {r[6]:16.2e}")
    print("all backends match the reference" if ok else "MISMATCH against the reference")
    return 0 if ok else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fxkernels", description=__doc__)
    parser.add_argument("command", nargs="?", default="info", choices=["info", "demo"])
    args = parser.parse_args(argv)
    if args.command == "demo":
        info()
        print()
        return demo()
    info()
    return 0


if __name__ == "__main__":
    sys.exit(main())
