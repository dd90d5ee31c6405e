"""Shared helpers for the Triton kernel families of fxkernels.

What lives here:

* ``kernel``: a ``triton.jit`` wrapper that turns off the JIT's value specialisation (ints equal to 1,
  ints / pointers divisible by 16) for every runtime argument.  A launch then always compiles to the
  one variant that ``fxkernels.aot`` compiled ahead of time for its constexprs, whatever the shapes,
  strides or pointer offsets (no silent recompiles per shape, and the AOT table covers what runs).
  Only an int argument >= 2**31 changes the signature (``i64``); launchers keep offsets below that.
* ``KernelSpec`` / ``make_spec``: the description of one compiled variant (kernel, signature,
  constexprs, num_warps, num_stages) that a family's ``aot_specs()`` returns.
* ``launch``: every launcher goes through it, so tests can record launches (``record_launches``)
  instead of running them, and check that each one matches an AOT spec (``fxkernels.aot``).
* small dtype / config helpers (tile classes, accumulator dtype, ``tl.dot`` precision).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from typing import Any, Callable

import torch
import triton
import triton.language as tl

# --------------------------------------------------------------------------------------------------
# dtypes

TORCH_TO_TL = {
    torch.float32: tl.float32,
    torch.float64: tl.float64,
    torch.float16: tl.float16,
    torch.bfloat16: tl.bfloat16,
}
# pointer element names used in Triton signatures ("*fp32", ...)
TORCH_TO_SIG = {
    torch.float32: "fp32",
    torch.float64: "fp64",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
}
FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

# Every (dtype, tl.dot input precision) a launcher can use: fp32 runs "ieee" by default and "tf32"
# when torch.backends.cuda.matmul.allow_tf32 is set; the precision is ignored for the other dtypes.
DTYPE_VARIANTS: tuple[tuple[torch.dtype, str], ...] = (
    (torch.float32, "ieee"),
    (torch.float32, "tf32"),
    (torch.float64, "ieee"),
    (torch.float16, "ieee"),
    (torch.bfloat16, "ieee"),
)


def acc_dtype(dtype: torch.dtype):
    """Accumulator dtype (a tl dtype): fp64 for fp64, fp32 otherwise."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def acc_torch_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def tf32_matmul_enabled() -> bool:
    """PyTorch's fp32 matmul TF32 switch. Reads the new ``fp32_precision`` API when present (it also
    reflects the legacy ``allow_tf32`` / ``set_float32_matmul_precision``; reading ``allow_tf32`` raises
    in torch >= 2.9 once the new API has been used)."""
    m = torch.backends.cuda.matmul
    prec = getattr(m, "fp32_precision", None)
    if isinstance(prec, str):
        return prec == "tf32"
    try:
        return bool(m.allow_tf32)
    except RuntimeError:  # pragma: no cover
        return False


def dot_precision(dtype: torch.dtype) -> str:
    """`tl.dot` input precision matching PyTorch's matmul defaults ("tf32" only for fp32 with TF32 on)."""
    if dtype == torch.float32 and tf32_matmul_enabled():
        return "tf32"
    return "ieee"


def variant_name(dtype: torch.dtype, prec: str) -> str:
    name = TORCH_TO_SIG[dtype]
    return name + "-tf32" if (dtype == torch.float32 and prec == "tf32") else name


# --------------------------------------------------------------------------------------------------
# rounding at the store (shared by the kernels of every family)


@triton.jit
def to_storage(v, DT: tl.constexpr):
    """v (fp32 / fp64 accumulator) rounded once to the storage dtype DT, returned in DT. bf16 rounds to
    nearest even by bit arithmetic: the GPU's cvt.rn, and exact under TRITON_INTERPRET too (whose
    fp32 -> bf16 cast truncates). NaN stays NaN."""
    if DT == tl.bfloat16:
        u = v.to(tl.uint32, bitcast=True)
        u = ((u + (0x7FFF + ((u >> 16) & 1))) >> 16) << 16
        r = u.to(tl.float32, bitcast=True)
        v = tl.where(v == v, r, v)
    return v.to(DT)


@triton.jit
def round_to(v, DT: tl.constexpr):
    """v rounded to the storage dtype DT as in ``to_storage``, kept in v's dtype."""
    return to_storage(v, DT).to(v.dtype)


# --------------------------------------------------------------------------------------------------
# sizes


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(x: int) -> int:
    return 1 if x <= 1 else 1 << (int(x) - 1).bit_length()


def tile_class(n: int, lo: int = 16, hi: int = 64) -> int:
    """Pad a length to a power of two clamped to [lo, hi] (tl.dot needs >= 16)."""
    return max(lo, min(hi, next_pow2(n)))


INT32_MAX = 2**31 - 1


def check_i32(*values: int) -> None:
    """Launch arguments must stay i32 (the AOT-compiled signature); fail loudly otherwise."""
    for v in values:
        if not -INT32_MAX <= int(v) <= INT32_MAX:
            raise ValueError(f"fxkernels: kernel argument {v} does not fit in int32")


# --------------------------------------------------------------------------------------------------
# jit wrapper


def _runtime_arg_names(fn: Callable) -> list[str]:
    names = []
    for name, p in inspect.signature(fn).parameters.items():
        ann = p.annotation
        is_constexpr = ann is tl.constexpr or (isinstance(ann, str) and ann.endswith("constexpr"))
        if not is_constexpr:
            names.append(name)
    return names


def kernel(fn: Callable):
    """``triton.jit`` without value specialisation of runtime arguments (see module docstring)."""
    names = _runtime_arg_names(fn)
    return triton.jit(fn, do_not_specialize=names, do_not_specialize_on_alignment=names)


def kernel_name(fn) -> str:
    return getattr(fn, "__name__", None) or fn.fn.__name__


def kernel_arg_names(fn) -> list[str]:
    """Argument names of a JITFunction or an interpreter wrapper."""
    if hasattr(fn, "arg_names"):
        return list(fn.arg_names)
    return list(inspect.signature(fn.fn).parameters)


# --------------------------------------------------------------------------------------------------
# AOT specs


@dataclasses.dataclass
class KernelSpec:
    """One compiled variant: what ``triton.compile(ASTSource(fn, signature, constexprs), ...)`` needs."""

    fn: Any
    signature: dict[str, str]
    constexprs: dict[str, Any]
    num_warps: int
    num_stages: int
    dtype: str  # variant name, e.g. "fp32", "fp32-tf32", "bf16"
    config: str  # short human-readable config, e.g. "BM16-BN32-BK16-w4"

    @property
    def name(self) -> str:
        return kernel_name(self.fn)

    def key(self) -> tuple:
        """Identity of the compiled binary (independent of the arch)."""
        return (
            self.name,
            tuple(sorted(self.signature.items())),
            tuple(sorted((k, _constexpr_repr(v)) for k, v in self.constexprs.items())),
            self.num_warps,
            self.num_stages,
        )


def _constexpr_repr(v) -> str:
    if isinstance(v, tl.dtype):
        return "tl." + v.name
    if hasattr(v, "value"):  # tl.constexpr
        return _constexpr_repr(v.value)
    return repr(v)


def make_spec(
    fn,
    ptr_dtype: str,
    constexprs: dict[str, Any],
    num_warps: int,
    num_stages: int,
    dtype: str,
    config: str,
    ptr_overrides: dict[str, str] | None = None,
) -> KernelSpec:
    """Build a spec. Args named ``*_ptr`` are pointers to ``ptr_dtype`` (or ``ptr_overrides[name]``),
    args listed in ``constexprs`` are constexprs, every other arg is an ``i32`` (see ``kernel``)."""
    ptr_overrides = ptr_overrides or {}
    sig = {}
    for name in kernel_arg_names(fn):
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*" + ptr_overrides.get(name, ptr_dtype)
        else:
            sig[name] = "i32"
    missing = [k for k in constexprs if k not in sig]
    if missing:
        raise KeyError(f"{kernel_name(fn)}: unknown constexprs {missing}")
    raw = getattr(fn, "fn", None)
    if raw is not None:  # every tl.constexpr parameter needs a value
        unset = [n for n in kernel_arg_names(fn) if n not in constexprs and n not in _runtime_arg_names(raw)]
        if unset:
            raise KeyError(f"{kernel_name(fn)}: no value for constexprs {unset}")
    return KernelSpec(fn, sig, dict(constexprs), num_warps, num_stages, dtype, config)


# --------------------------------------------------------------------------------------------------
# launches

_recorder: list[tuple[Any, tuple, dict[str, Any]]] | None = None


def launch(fn, grid, *args, **meta) -> None:
    """``fn[grid](*args, **meta)``, or record the call inside ``record_launches()``."""
    if _recorder is not None:
        _recorder.append((fn, tuple(args), dict(meta)))
        return
    if min(grid) <= 0:
        return
    fn[grid](*args, **meta)


def patch_interpreter_bf16_dot() -> bool:
    """Test helper for ``TRITON_INTERPRET=1``: the triton interpreter stores bf16 as raw uint16 bit
    patterns and its ``tl.dot`` multiplies those integers (garbage results).  This upcasts bf16 dot
    operands to fp32 first (fp32 accumulation, as on the GPU).  Idempotent; returns True if patched.
    Only for tests of bf16 kernels under the interpreter; it changes nothing for compiled kernels."""
    try:
        import numpy as np
        from triton.runtime import interpreter as _interp
    except Exception:  # pragma: no cover
        return False
    builder_cls = _interp.InterpreterBuilder
    if getattr(builder_cls, "_fxk_bf16_dot", False):
        return True
    orig = builder_cls.create_dot

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if a.dtype.scalar == tl.bfloat16 or b.dtype.scalar == tl.bfloat16:

            def up(h):
                data = _interp._convert_float(h.data, tl.bfloat16, tl.float32, None).view(np.float32)
                return _interp.TensorHandle(data.reshape(h.data.shape), tl.float32)

            a, b = up(a), up(b)
        return orig(self, a, b, d, input_precision, max_num_imprecise_acc)

    builder_cls.create_dot = create_dot
    builder_cls._fxk_bf16_dot = True
    return True


@contextlib.contextmanager
def record_launches():
    """Record launches instead of running them (outputs are left uninitialised)."""
    global _recorder
    prev, _recorder = _recorder, []
    try:
        yield _recorder
    finally:
        _recorder = prev
