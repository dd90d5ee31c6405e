"""attention_pool (fxkernels/ops/attention/README.md, "attention_pool"): the Triton backend vs attention_pool_ref
(torchvision's Conv3d + LayerNorm) in fp64, the output and the gradients of x, weight, norm weight and bias
under a random upstream gradient.

Runs the kernels on CPU tensors under TRITON_INTERPRET=1 (set by conftest when there is no GPU) or on CUDA;
small grids (the interpreter is slow).
"""

import math
import os
from functools import partial

import pytest
import torch

import fxkernels
from fxkernels.ops.attention.reference import attention_pool_ref
from fxkernels.testing import assert_close, assert_deterministic, check_op, gradcheck, run_with_grads
from tests.conftest import AVAILABLE

if not AVAILABLE["triton"]:
    pytest.skip("triton is not available", allow_module_level=True)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not set", allow_module_level=True)

from fxkernels._triton_utils import record_launches  # noqa: E402
from fxkernels.ops.attention.pool_triton import (  # noqa: E402
    POOL_MAX_HD,
    attention_pool_bwd_triton,
    attention_pool_fwd_triton,
)


def make(B, nh, thw, hd, kernel, has_cls, norm, dtype, layout="contig"):
    """Inputs of `fxkernels.attention_pool` / `attention_pool_ref`; x (B, nh, c + T*H*W, hd) in `layout`:
    "contig", "heads-last" (a (B, L, nh, hd) tensor transposed) or "strided-d" (no unit stride on hd)."""
    L = int(has_cls) + math.prod(thw)
    if layout == "heads-last":
        x = torch.randn(B, L, nh, hd, dtype=torch.float64).transpose(1, 2)
    elif layout == "strided-d":
        x = torch.randn(B, nh, L, 2 * hd, dtype=torch.float64)[..., ::2]
    else:
        x = torch.randn(B, nh, L, hd, dtype=torch.float64)
    assert layout == "contig" or not x.is_contiguous()
    inp = {"x": x, "weight": torch.randn(hd, 1, *kernel, dtype=torch.float64) / math.prod(kernel) ** 0.5}
    if norm:
        inp["norm_weight"] = 1 + 0.3 * torch.randn(hd, dtype=torch.float64)
        inp["norm_bias"] = 0.3 * torch.randn(hd, dtype=torch.float64)
    return {k: v.to(dtype=dtype, device=DEVICE) for k, v in inp.items()}


def triton_pool(**kw):
    return fxkernels.attention_pool(**kw, backend="triton")


def check(B, nh, thw, hd, kernel, stride, has_cls, norm, dtype, layout="contig", **kw):
    inp = make(B, nh, thw, hd, kernel, has_cls, norm, dtype, layout)
    args = dict(inp, stride=stride, thw=thw, has_cls=has_cls)
    return check_op(triton_pool, attention_pool_ref, args, **kw)


# (B, nh, thw, hd, kernel, stride, has_cls, norm, layout): torchvision MViT's q / kv pooling (kernel 3, q stride
# (1, 2, 2), kv strides (1, 4, 4) / (1, 8, 8)), strides 1 / 2 / 4 / 8, kernels 1 and 3, odd grids, no norm
SHAPES = [
    pytest.param(1, 2, (3, 5, 7), 32, (3, 3, 3), (1, 2, 2), True, True, "contig", id="q-s122-k3-cls-T3H5W7"),
    pytest.param(1, 2, (2, 9, 9), 24, (3, 3, 3), (1, 4, 4), True, True, "heads-last", id="kv-s144-k3-H9"),
    pytest.param(1, 1, (3, 8, 9), 32, (3, 3, 3), (1, 8, 8), False, True, "contig", id="kv-s188-k3-nocls"),
    pytest.param(
        2, 1, (3, 5, 7), 24, (3, 3, 3), (2, 2, 2), False, False, "strided-d", id="s222-nonorm-strided"
    ),
    pytest.param(1, 2, (2, 3, 5), 64, (1, 1, 1), (1, 1, 1), True, True, "heads-last", id="k1-s1-cls"),
    pytest.param(1, 1, (2, 9, 9), 16, (1, 3, 3), (1, 4, 4), True, False, "contig", id="k133-s144-nonorm"),
    pytest.param(1, 2, (2, 3, 4), 96, (3, 3, 3), (1, 1, 1), True, True, "contig", id="s1-k3-hd96"),
    pytest.param(1, 1, (1, 17, 3), 32, (3, 3, 1), (1, 8, 1), False, True, "contig", id="s8-H17-kw1"),
    pytest.param(1, 1, (2, 2, 3), 256, (3, 3, 3), (2, 2, 2), True, True, "contig", id="hd256"),
    pytest.param(1, 1, (3, 3, 3), 7, (3, 3, 3), (4, 4, 4), True, True, "contig", id="s444-hd7-one-output"),
]


@pytest.mark.parametrize("B,nh,thw,hd,kernel,stride,has_cls,norm,layout", SHAPES)
def test_matches_reference_fp64(B, nh, thw, hd, kernel, stride, has_cls, norm, layout):
    check(B, nh, thw, hd, kernel, stride, has_cls, norm, torch.float64, layout)


def test_matches_reference_fp32():
    check(2, 2, (3, 6, 5), 32, (3, 3, 3), (1, 2, 2), True, True, torch.float32, "heads-last")


@pytest.mark.parametrize(
    "dtype", [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]
)
def test_half_matches_reference(dtype):
    """fp16 / bf16 inputs (fp32 accumulation, one rounding) vs the fp64 reference on the same values; dw and the
    norm gradients sum over every position (a looser bound for those long reductions)."""
    scale = {"dweight": 4.0, "dnorm_weight": 4.0, "dnorm_bias": 4.0}
    check(1, 2, (2, 5, 6), 32, (3, 3, 3), (1, 2, 2), True, True, dtype, scale=scale)


def test_empty_batch():
    """B = 0 through the public op (attention_pool_ref's reshape needs B > 0): empty y and dx, zero dw / dnw / dnb."""
    inp = make(0, 2, (2, 3, 3), 16, (3, 3, 3), True, True, torch.float64)
    run = run_with_grads(partial(triton_pool, stride=(1, 2, 2), thw=(2, 3, 3), has_cls=True), inp)
    assert run.outputs[0].shape == (0, 2, 1 + 2 * 2 * 2, 16) and run.outputs[1] == (2, 2, 2)
    assert run.grads["x"].shape == inp["x"].shape
    for name in ("weight", "norm_weight", "norm_bias"):
        assert run.grads[name].shape == inp[name].shape and not run.grads[name].any()


def test_gradcheck_fp64():
    for norm in (True, False):
        inp = make(1, 1, (2, 3, 3), 4, (3, 3, 3), True, norm, torch.float64)
        assert gradcheck(
            lambda **kw: triton_pool(**kw, stride=(1, 2, 2), thw=(2, 3, 3), has_cls=True)[0],
            inp,
            eps=1e-6,
            atol=1e-8,
            fast_mode=True,
        )


@pytest.mark.parametrize(
    "dtype", [pytest.param(torch.float32, id="fp32"), pytest.param(torch.bfloat16, id="bf16")]
)
def test_deterministic(dtype):
    inp = make(2, 2, (3, 5, 5), 32, (3, 3, 3), True, True, dtype)
    assert_deterministic(
        lambda **kw: triton_pool(**kw, stride=(1, 2, 2), thw=(3, 5, 5), has_cls=True)[0], inp
    )


# --------------------------------------------------------------------------------------------- launchers
def test_launcher_stats_and_outputs():
    """stats = (mean, rstd) of each pooled row before the norm; without a norm an empty stats and no dnw / dnb."""
    inp = make(1, 2, (3, 4, 5), 32, (3, 3, 3), True, True, torch.float64)
    x, w = inp["x"], inp["weight"]
    y, stats = attention_pool_fwd_triton(
        x, w, inp["norm_weight"], inp["norm_bias"], (1, 2, 2), (3, 4, 5), True, 1e-6
    )
    z, _ = attention_pool_ref(x, w, (1, 2, 2), (3, 4, 5), True)
    assert y.is_contiguous() and stats.shape == (1, 2, z.shape[2], 2) and stats.dtype == torch.float64
    assert_close(stats[..., 0], z.mean(-1), name="mean")
    assert_close(stats[..., 1], (z.var(-1, unbiased=False) + 1e-6).rsqrt(), name="rstd")
    y0, s0 = attention_pool_fwd_triton(x, w, None, None, (1, 2, 2), (3, 4, 5), True, 1e-6)
    assert s0.numel() == 0
    assert_close(y0, z, name="y without norm")
    dx, dw, dnw, dnb = attention_pool_bwd_triton(y0, x, w, None, None, s0, (1, 2, 2), (3, 4, 5), True, 1e-6)
    assert dnw is None and dnb is None and dx.shape == x.shape and dw.shape == w.shape


def test_launchers_empty():
    """B = 0 or nh = 0: empty outputs, zero dw / dnw / dnb, nothing launched."""
    for B, nh in ((0, 2), (2, 0)):
        inp = make(B, nh, (2, 3, 3), 16, (3, 3, 3), True, True, torch.float32)
        x, w, nw, nb = inp["x"], inp["weight"], inp["norm_weight"], inp["norm_bias"]
        with record_launches() as rec:
            y, stats = attention_pool_fwd_triton(x, w, nw, nb, (1, 2, 2), (2, 3, 3), True, 1e-6)
            dx, dw, dnw, dnb = attention_pool_bwd_triton(
                y, x, w, nw, nb, stats, (1, 2, 2), (2, 3, 3), True, 1e-6
            )
        assert not rec
        assert y.shape == (B, nh, 9, 16) and dx.shape == x.shape
        assert not dw.any() and not dnw.any() and not dnb.any()


def test_launchers_bad_input():
    inp = make(1, 2, (2, 3, 3), 16, (3, 3, 3), True, True, torch.float32)
    x, w, nw, nb = inp["x"], inp["weight"], inp["norm_weight"], inp["norm_bias"]
    fwd = attention_pool_fwd_triton
    with pytest.raises(ValueError, match="weight must be"):
        fwd(x, w[:8], nw, nb, (1, 2, 2), (2, 3, 3), True, 1e-6)
    with pytest.raises(ValueError, match="thw"):
        fwd(x, w, nw, nb, (1, 2, 2), (2, 3, 4), True, 1e-6)
    with pytest.raises(ValueError, match="norm_weight"):
        fwd(x, w, nw[:4], nb, (1, 2, 2), (2, 3, 3), True, 1e-6)
    with pytest.raises(ValueError, match="go together"):
        fwd(x, w, nw, None, (1, 2, 2), (2, 3, 3), True, 1e-6)
    with pytest.raises(ValueError, match="hd"):
        big = torch.zeros(1, 1, 19, POOL_MAX_HD + 1, device=DEVICE)
        fwd(
            big,
            torch.zeros(POOL_MAX_HD + 1, 1, 1, 1, 1, device=DEVICE),
            None,
            None,
            (1, 1, 1),
            (2, 3, 3),
            True,
            1e-6,
        )
    y, stats = fwd(x, w, nw, nb, (1, 2, 2), (2, 3, 3), True, 1e-6)
    with pytest.raises(ValueError, match="dy must be"):
        attention_pool_bwd_triton(y[:, :, :3], x, w, nw, nb, stats, (1, 2, 2), (2, 3, 3), True, 1e-6)
    with pytest.raises(ValueError, match="stats must be"):
        attention_pool_bwd_triton(y, x, w, nw, nb, stats.half(), (1, 2, 2), (2, 3, 3), True, 1e-6)


def test_opcheck():
    """The registered kit op on the Triton backend: schema, fakes, autograd registration (torch.compile's path)."""
    op = torch.ops.fxkernels.attention_pool.default
    for norm in (True, False):
        inp = make(1, 2, (1, 2, 3), 8, (1, 3, 3), True, norm, torch.float32)
        t = {k: v.detach().requires_grad_(True) for k, v in inp.items()}
        args = (
            t["x"],
            t["weight"],
            t.get("norm_weight"),
            t.get("norm_bias"),
            [1, 2, 2],
            [1, 2, 3],
            True,
            1e-6,
            "triton",
        )
        torch.library.opcheck(op, args)
