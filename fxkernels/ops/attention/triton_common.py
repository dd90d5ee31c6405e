"""Shared pieces of the attention Triton backend (README.md, "Backend contract"): the rel-pos bias gather and
the key one-hot of the jit kernels, the launch configurations (shared with ``aot_specs``), the argument checks
and the AOT spec builder."""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from fxkernels._triton_utils import (
    FLOAT_DTYPES,
    TORCH_TO_SIG,
    acc_dtype,
    acc_torch_dtype,
    check_i32,
    make_spec,
    next_pow2,
    variant_name,
)

MAX_HD = 256  # widest head (BLOCK_D 256)
BD_CLASSES = (32, 64, 128, 256)  # BLOCK_D: next power of two of hd, at least 32 (tl.dot K >= 16)
BR_CLASSES = (32, 128)  # BLOCK_R: 32 for R = Tk + Hk + Wk <= 32 (MViT with kv pooling), else 128
MAX_R = BR_CLASSES[-1]


# ==================================================================================================
# jit helpers


@triton.jit
def _key_coords(j, c, Hk, Wk):
    """Grid coordinates (jt, jh, jw) of keys j (any shape; garbage for the cls key j < c, masked by callers)."""
    n = j - c
    jw = n % Wk
    jh = (n // Wk) % Hk
    jt = n // (Wk * Hk)
    return jt, jh, jw


@triton.jit
def _load_rel(rel_base, srm, offs_i, c, Lq, R, BLOCK_R: tl.constexpr, TRANS: tl.constexpr):
    """The rel rows of queries offs_i ([M]) as an [M, BLOCK_R] tile ([BLOCK_R, M] with TRANS), zero for the cls
    row, the masked tail and the padding columns r >= R."""
    r = tl.arange(0, BLOCK_R)
    ok = (offs_i >= c) & (offs_i < Lq)
    if TRANS:
        ptrs = rel_base + (offs_i - c)[None, :] * srm + r[:, None]
        t = tl.load(ptrs, mask=ok[None, :] & (r < R)[:, None], other=0.0)
    else:
        ptrs = rel_base + (offs_i - c)[:, None] * srm + r[None, :]
        t = tl.load(ptrs, mask=ok[:, None] & (r < R)[None, :], other=0.0)
    return t


@triton.jit
def _key_onehot(j, c, Lk, Tk, Hk, Wk, BLOCK_R: tl.constexpr, DT: tl.constexpr, TRANS: tl.constexpr):
    """The 0/1 bin matrix of keys j ([N]): onehot[n, r] = 1 for r in {jt, Tk+jh, Tk+Hk+jw} of a grid key, a
    zero row for the cls key and the masked tail; [N, BLOCK_R], or [BLOCK_R, N] with TRANS. So
    bias = rel @ onehot^T (the gather of rel[i, jt] + rel[i, Tk+jh] + rel[i, Tk+Hk+jw] as a product that
    lands in the layout of S) and drel = dS @ onehot (the binning)."""
    jt, jh, jw = _key_coords(j, c, Hk, Wk)
    ok = (j >= c) & (j < Lk)
    r = tl.arange(0, BLOCK_R)
    if TRANS:
        hit = (
            (r[:, None] == jt[None, :])
            | (r[:, None] == (Tk + jh)[None, :])
            | (r[:, None] == (Tk + Hk + jw)[None, :])
        )
        oh = tl.where(hit & ok[None, :], 1.0, 0.0)
    else:
        hit = (
            (r[None, :] == jt[:, None])
            | (r[None, :] == (Tk + jh)[:, None])
            | (r[None, :] == (Tk + Hk + jw)[:, None])
        )
        oh = tl.where(hit & ok[:, None], 1.0, 0.0)
    return oh.to(DT)  # (from fp32: an i1 -> bf16 cast is wrong in the interpreter)


@triton.jit
def _dot_rows(
    a_base,
    sa,
    offs_a,
    amask,
    b_base,
    sb,
    offs_b,
    bmask,
    hd,
    ACC: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DC: tl.constexpr,
    PREC: tl.constexpr,
):
    """A @ B^T (in ACC) with A = rows offs_a of a_base (row stride sa), B = rows offs_b of b_base, contracted over
    the head axis in BLOCK_DC-wide chunks read from memory: only [*, BLOCK_DC] operand tiles are live, so
    the wide-head fp32 / fp64 classes fit in registers (the chunks are re-read from L1/L2 per tile)."""
    offs_c = tl.arange(0, BLOCK_DC)
    for d0 in tl.static_range(0, BLOCK_D, BLOCK_DC):
        od = d0 + offs_c
        dm = od < hd
        a = tl.load(a_base + offs_a[:, None] * sa + od[None, :], mask=amask[:, None] & dm[None, :], other=0.0)
        b = tl.load(b_base + offs_b[:, None] * sb + od[None, :], mask=bmask[:, None] & dm[None, :], other=0.0)
        # [A, B] += [A, BLOCK_DC] @ [BLOCK_DC, B]
        if d0 == 0:
            acc = tl.dot(a, tl.trans(b), input_precision=PREC, out_dtype=ACC)
        else:
            acc = tl.dot(a, tl.trans(b), acc, input_precision=PREC, out_dtype=ACC)
    return acc


@triton.jit
def _onehot_dot(x, oh, acc, X_FIRST: tl.constexpr, PREC: tl.constexpr, SPLIT: tl.constexpr):
    """acc + x @ oh (X_FIRST) or acc + oh @ x, x in the accumulation dtype, oh a 0/1 matrix (exact in any
    dtype). SPLIT (fp16 / bf16 kernels): x = hi + lo in two bf16 parts, two bf16 products (about 2^-17 relative
    error, fp32 range); else one product at PREC (3xTF32 for fp32, fp64 for fp64)."""
    if SPLIT:
        hi = x.to(tl.bfloat16)
        lo = (x - hi.to(tl.float32)).to(tl.bfloat16)
        if X_FIRST:
            acc = tl.dot(hi, oh, acc, out_dtype=tl.float32)
            acc = tl.dot(lo, oh, acc, out_dtype=tl.float32)
        else:
            acc = tl.dot(oh, hi, acc, out_dtype=tl.float32)
            acc = tl.dot(oh, lo, acc, out_dtype=tl.float32)
    elif X_FIRST:
        acc = tl.dot(x, oh, acc, input_precision=PREC, out_dtype=acc.dtype)
    else:
        acc = tl.dot(oh, x, acc, input_precision=PREC, out_dtype=acc.dtype)
    return acc


# ==================================================================================================
# launch configurations


def dtype_class(dtype: torch.dtype) -> str:
    return {torch.float64: "f64", torch.float32: "f32"}.get(dtype, "half")


def kernel_prec(dtype: torch.dtype, prec: str) -> str:
    """tl.dot input precision of the GEMMs: fp32 runs as 3xTF32 (about fp32 accuracy on tensor cores; FMA
    products of whole head-width tiles would not fit in registers) whatever PyTorch's TF32 switch says, so one
    fp32 binary per launch class is compiled; fp64 / fp16 / bf16 ignore it."""
    del prec
    return "tf32x3" if dtype == torch.float32 else "ieee"


def bd_class(hd: int) -> int:
    return max(BD_CLASSES[0], next_pow2(hd))


def br_class(R: int) -> int:
    return next((b for b in BR_CLASSES if R <= b), BR_CLASSES[-1])  # R > MAX_R: refused by check_rel


# (kind, dtype class, BLOCK_D) -> (BLOCK_M, BLOCK_N, num_warps, num_stages[, BLOCK_DC]) without the bias, with
# BLOCK_R 32 and with BLOCK_R 128: the largest tiles of a ladder that compile with 0 spills on sm_80 and sm_90
# (found by tools/tune_attention_blocks.py; checked by python -m fxkernels.aot --family attention). Whole
# head-width tiles first; where none fits (fp32's 3xTF32 operand splits, fp64 at wide heads) a BLOCK_DC-chunked
# tile: the head axis is contracted in chunks and each program owns a BLOCK_DC slice of the outputs (grid axis
# 1), recomputing S per slice. None: nothing fits; those classes are not compiled and `unsupported` names them.
BLOCKS = {
    ("fwd", "f32", 32): ((64, 32, 4, 2), (32, 32, 4, 1), (16, 32, 8, 1)),
    ("fwd", "f32", 64): ((32, 32, 4, 1), (32, 32, 4, 1), (16, 32, 8, 1)),
    ("fwd", "f32", 128): ((16, 32, 8, 1), (16, 32, 8, 1), (16, 32, 8, 1)),
    ("fwd", "f32", 256): ((16, 32, 8, 1, 64), (16, 32, 8, 1, 64), (16, 32, 8, 1, 64)),
    ("fwd", "f64", 32): ((64, 64, 4, 2), (32, 32, 4, 1), (32, 32, 4, 1)),
    ("fwd", "f64", 64): ((32, 32, 4, 1), (32, 32, 4, 1), (16, 32, 8, 1)),
    ("fwd", "f64", 128): ((32, 32, 8, 1), (32, 32, 8, 1), (16, 32, 8, 1)),
    ("fwd", "f64", 256): ((16, 32, 8, 1), (16, 32, 8, 1), (32, 32, 8, 1, 32)),
    ("fwd", "half", 32): ((64, 64, 4, 2), (64, 64, 4, 2), (64, 64, 4, 2)),
    ("fwd", "half", 64): ((64, 64, 4, 2), (64, 32, 4, 2), (64, 32, 4, 2)),
    ("fwd", "half", 128): ((64, 32, 8, 1), (64, 32, 8, 1), (64, 32, 8, 1)),
    ("fwd", "half", 256): ((32, 32, 8, 1), (32, 32, 8, 1), (32, 32, 8, 1)),
    ("row", "f32", 32): ((32, 16, 8, 1), (16, 16, 8, 1), (16, 16, 8, 1)),
    ("row", "f32", 64): ((32, 16, 8, 1), (16, 16, 8, 1), None),
    ("row", "f32", 128): ((16, 32, 8, 1), (16, 32, 8, 1, 32), None),
    ("row", "f32", 256): ((16, 32, 8, 1, 64), (16, 32, 8, 1, 32), None),
    ("row", "f64", 32): ((64, 32, 4, 1), (64, 32, 8, 1), None),
    ("row", "f64", 64): ((32, 32, 4, 1), (32, 16, 8, 1), None),
    ("row", "f64", 128): ((32, 32, 8, 1), (16, 32, 8, 1), None),
    ("row", "f64", 256): ((32, 32, 8, 1, 64), (16, 32, 8, 1, 64), None),
    ("row", "half", 32): ((64, 64, 4, 2), (64, 32, 4, 2), (32, 32, 8, 1)),
    ("row", "half", 64): ((32, 32, 4, 1), (32, 32, 8, 1), (32, 32, 8, 1)),
    ("row", "half", 128): ((32, 32, 8, 1), (32, 16, 8, 1), (32, 16, 8, 1)),
    ("row", "half", 256): ((16, 32, 8, 1), (16, 32, 8, 1), (16, 16, 8, 1)),
    ("col", "f32", 32): ((32, 16, 8, 1), (32, 16, 8, 1), None),
    ("col", "f32", 64): ((16, 32, 8, 1), (16, 32, 8, 1), None),
    ("col", "f32", 128): ((16, 32, 8, 1, 64), (16, 16, 8, 1, 64), None),
    ("col", "f32", 256): ((16, 16, 8, 1, 64), (16, 16, 8, 1, 64), None),
    ("col", "f64", 32): ((32, 32, 4, 1), (32, 32, 8, 1), (32, 16, 8, 1)),
    ("col", "f64", 64): ((32, 32, 4, 1), (32, 32, 8, 1), (32, 16, 8, 1)),
    ("col", "f64", 128): ((32, 32, 8, 1), (32, 16, 8, 1), (16, 16, 8, 1)),
    ("col", "f64", 256): ((16, 32, 8, 1, 64), (16, 32, 8, 1, 64), (16, 16, 8, 1, 64)),
    ("col", "half", 32): ((64, 32, 4, 1), (32, 32, 4, 1), (32, 16, 8, 1)),
    ("col", "half", 64): ((64, 32, 4, 1), (32, 32, 4, 1), (32, 16, 8, 1)),
    ("col", "half", 128): ((64, 32, 4, 1), (32, 32, 4, 1), (16, 16, 8, 1)),
    ("col", "half", 256): ((64, 32, 8, 1), (32, 32, 8, 1), (16, 16, 8, 1)),
}


def _rel_class(has_rel: bool, br: int) -> int:
    return BR_CLASSES.index(br) + 1 if has_rel else 0


def unsupported(dtype: torch.dtype, hd: int, R: int | None) -> str | None:
    """None if the three kernels have spill-free tiles for (dtype, hd, bias width R or None), else why not."""
    bd = bd_class(hd)
    cls = 0 if R is None else _rel_class(True, br_class(R))
    if all(BLOCKS[(kind, dtype_class(dtype), bd)][cls] is not None for kind in ("fwd", "row", "col")):
        return None
    what = "without a bias" if R is None else f"with a bias of Tk+Hk+Wk = {R} (BLOCK_R {br_class(R)})"
    return (
        f"the triton backend has no spill-free tiles for {str(dtype).removeprefix('torch.')} at head width "
        f"hd={hd} (BLOCK_D {bd}) {what}: fp16 / bf16 take every head width and bias up to hd 256"
    )


def meta(kind: str, dtype: torch.dtype, prec: str, bd: int, has_rel: bool, br: int = BR_CLASSES[0]) -> dict:
    """The constexprs and launch options of one kernel launch (also what ``aot_specs`` compiles)."""
    cfg = BLOCKS[(kind, dtype_class(dtype), bd)][_rel_class(has_rel, br)]
    if cfg is None:
        raise ValueError(f"attention (triton): no spill-free {kind} tiles for {dtype} BLOCK_D {bd}")
    bm, bn, warps, stages = cfg[:4]
    m = dict(
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_D=bd,
        BLOCK_DC=cfg[4] if len(cfg) > 4 else bd,
        BLOCK_R=br if has_rel else BR_CLASSES[0],
        HAS_REL=bool(has_rel),
        ACC=acc_dtype(dtype),
        PREC=kernel_prec(dtype, prec),
        num_warps=warps,
        num_stages=stages,
    )
    # the one-hot products (bias, drel) keep the accumulation dtype's accuracy: 3xTF32 for fp32 (the one-hot
    # is exact in tf32), a bf16 hi + lo split for fp16 / bf16 (OH_DT), fp64 for fp64
    m["SPLIT"] = dtype in (torch.float16, torch.bfloat16)
    m["RPREC"] = "ieee" if dtype == torch.float64 else "tf32x3"
    m["OH_DT"] = tl.bfloat16 if m["SPLIT"] else m["ACC"]
    return m


_CONSTEXPR_KEYS = (
    "BLOCK_M",
    "BLOCK_N",
    "BLOCK_D",
    "BLOCK_DC",
    "BLOCK_R",
    "HAS_REL",
    "ACC",
    "PREC",
    "RPREC",
    "SPLIT",
    "OH_DT",
)
_SHORT = {
    "BLOCK_M": "BM",
    "BLOCK_N": "BN",
    "BLOCK_D": "BD",
    "BLOCK_DC": "DC",
    "BLOCK_R": "BR",
    "HAS_REL": "rel",
}
FLOAT_ARGS = ("scale_hi", "scale_lo")


def spec(fn, dtype: torch.dtype, prec: str, m: dict, acc_ptrs: tuple, float_args=FLOAT_ARGS):
    """The KernelSpec of a launch with meta `m`: `acc_ptrs` point to the accumulation dtype, `float_args`
    are fp32 scalars, every other runtime argument is i32."""
    constexprs = {k: v for k, v in m.items() if k in _CONSTEXPR_KEYS}
    cfg = "-".join(f"{_SHORT[k]}{int(v)}" for k, v in constexprs.items() if k in _SHORT)
    cfg += f"-w{m['num_warps']}-s{m['num_stages']}"
    acc_sig = TORCH_TO_SIG[acc_torch_dtype(dtype)]
    s = make_spec(
        fn,
        TORCH_TO_SIG[dtype],
        constexprs,
        m["num_warps"],
        m["num_stages"],
        dtype=variant_name(dtype, prec),
        config=cfg,
        ptr_overrides={name: acc_sig for name in acc_ptrs},
    )
    for name in float_args:
        s.signature[name] = "fp32"
    return s


def split_scale(scale: float) -> tuple[float, float]:
    """scale as an fp32 pair hi + lo (Triton passes Python floats as fp32): the kernels add them in the
    accumulation dtype, so fp64 runs see scale to ~2^-48."""
    hi = float(torch.tensor(scale, dtype=torch.float32))
    return hi, float(torch.tensor(scale - hi, dtype=torch.float32))


# ==================================================================================================
# argument checks


def need(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError("attention (triton): " + msg)


def desc(t) -> str:
    return f"{tuple(t.shape)} {t.dtype} on {t.device}" if isinstance(t, torch.Tensor) else type(t).__name__


def last_contiguous(t: torch.Tensor) -> torch.Tensor:
    """t with a unit stride on its last axis (the kernels take any strides on the others)."""
    return t if t.shape[-1] <= 1 or t.stride(-1) == 1 else t.contiguous()


def check_qkv(q, k, v) -> None:
    need(
        isinstance(q, torch.Tensor) and q.dim() == 4 and q.dtype in FLOAT_DTYPES,
        f"q must be a (B, nh, Lq, hd) float32/float64/float16/bfloat16 tensor, got {desc(q)}",
    )
    B, nh, _, hd = q.shape
    for name, t in (("k", k), ("v", v)):
        need(
            isinstance(t, torch.Tensor)
            and t.dim() == 4
            and (t.shape[0], t.shape[1], t.shape[3]) == (B, nh, hd)
            and t.dtype == q.dtype
            and t.device == q.device,
            f"{name} must be (B, nh, Lk, hd) = ({B}, {nh}, Lk, {hd}) {q.dtype} on {q.device}, got {desc(t)}",
        )
    need(v.shape == k.shape, f"v must have k's shape {tuple(k.shape)}, got {tuple(v.shape)}")
    need(1 <= hd <= MAX_HD, f"head width hd must be in [1, {MAX_HD}], got {hd}")
    need(k.shape[2] >= 1, f"k needs at least one token, got {tuple(k.shape)}")


def check_rel(rel, q, thw_k, has_cls, Lk) -> int:
    """Checks thw_k (and rel when given); returns R = Tk + Hk + Wk."""
    c = int(bool(has_cls))
    need(
        isinstance(thw_k, (list, tuple)) and len(thw_k) == 3 and all(int(s) >= 1 for s in thw_k),
        f"thw_k must be 3 positive ints, got {thw_k!r}",
    )
    need(
        c + math.prod(thw_k) == Lk,
        f"thw_k = {tuple(thw_k)} does not multiply out to k's {Lk} tokens (c = {c})",
    )
    R = sum(int(s) for s in thw_k)
    if rel is not None:
        B, nh, Lq, _ = q.shape
        shape = (B, nh, Lq - c, R)
        adt = acc_torch_dtype(q.dtype)
        need(
            isinstance(rel, torch.Tensor)
            and tuple(rel.shape) == shape
            and rel.dtype == adt
            and rel.device == q.device,
            f"rel must be (B, nh, Lq - c, Tk+Hk+Wk) = {shape} {adt} on {q.device}, got {desc(rel)}",
        )
        need(R <= MAX_R, f"Tk + Hk + Wk = {R} > {MAX_R} is not supported by the Triton kernels")
    return R


def check_offsets(*tensors) -> None:
    """Strides and the offsets within one (b, h) slice stay int32 (the AOT signature); (b, h) offsets are
    int64 in the kernels."""
    for t in tensors:
        st = t.stride()
        check_i32(*st, sum((n - 1) * s for n, s in zip(t.shape[2:], st[2:])))


def scale_args(scale) -> tuple[float, float]:
    need(
        isinstance(scale, (int, float)) and not isinstance(scale, bool),
        f"scale must be a float, got {scale!r}",
    )
    return split_scale(float(scale))
