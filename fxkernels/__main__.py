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
        print(f"  {op:<18} {', '.join(avail)}")


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


def demo() -> int:
    from .ops.fcc import circular_conv, circular_conv2d
    from .testing import errors

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    B, C, H, W = 32, 128, 16, 16  # MOL's FCC shape
    print(f"fxkernels demo on {device}: FCC ops at the MOL shape x=({B}, {C}, {H}, {W}), float32")
    x = torch.randn(B, C, H, W, device=device)
    w1, w2 = torch.randn(C, H, device=device) / 4, torch.randn(C, W, device=device) / 4
    p1, p2, b1, b2 = (torch.randn(C, n, device=device) for n in (H, W, 1, 1))
    b1, b2 = b1[:, 0].contiguous(), b2[:, 0].contiguous()
    g = torch.randn_like(x)
    cases = {
        "circular_conv (V)": lambda be, t: circular_conv(t[0], t[1], -2, t[3], t[5], backend=be),
        "circular_conv2d (VH)": lambda be, t: circular_conv2d(t[0], *t[1:3], "VH", *t[3:7], backend=be),
    }
    ok = True
    kinds = [
        n
        for n in ("reference", "cpu", "triton", "cuda")
        if _backend.backend_available(
            n, "circular_conv", importlib.import_module("fxkernels.ops.fcc").KERNELS
        )
    ]
    if device == "cpu" and "triton" in kinds:
        kinds.remove("triton")  # the interpreter is for correctness tests, not a speed table
    rows = []
    for name, fn in cases.items():
        base = {}
        for be in kinds:
            leaves = [t.detach().clone().requires_grad_(True) for t in (x, w1, w2, p1, p2, b1, b2)]

            def fwd(be=be, leaves=leaves, fn=fn):
                with torch.no_grad():
                    return fn(be, leaves)

            def fwd_bwd(be=be, leaves=leaves, fn=fn):
                for t in leaves:
                    t.grad = None
                fn(be, leaves).backward(g)

            y = fn(be, leaves)
            y.backward(g)
            grads = [t.grad for t in leaves[:7]]
            if be == "reference":
                base = {"y": y.detach(), "grads": grads}
                err = 0.0
            else:
                err = max(
                    [errors(y, base["y"])[1]]
                    + [errors(a, b)[1] for a, b in zip(grads, base["grads"]) if b is not None]
                )
                ok &= err < 1e-4
            tf, tfb = _time(fwd), _time(fwd_bwd)
            if be == "reference":
                base["tf"], base["tfb"] = tf, tfb
            rows.append((name, be, tf, tfb, base["tf"] / tf, base["tfb"] / tfb, err))
    print(
        f"{'op':<22} {'backend':<10} {'fwd ms':>8} {'fwd+bwd ms':>11} {'fwd x':>7} {'f+b x':>7} {'max rel RMS err':>16}"
    )
    for r in rows:
        print(f"{r[0]:<22} {r[1]:<10} {r[2]:8.2f} {r[3]:11.2f} {r[4]:7.2f} {r[5]:7.2f} {r[6]:16.2e}")
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
