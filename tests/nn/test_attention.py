"""MViT attention modules (fxkernels/nn/attention.py, mvit.py) vs torchvision.models.video.mvit:
MultiscaleAttention and MultiscaleBlock loaded from a torchvision module's state dict give its outputs and
gradients (fp64); has_cls=False, the max/avg pools and the stfm hook vs torchvision's own pieces; bad
arguments.
The whole-model tests (fuse_mvit, MViT, mvit_v2_s) are in test_mvit.py."""

import copy
import importlib.util

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.video import mvit as tvm

import fxkernels
from fxkernels._backend import backend_available
from fxkernels.ops.attention.attention import KERNELS as ATTENTION_KERNELS
from fxkernels.ops.attention.pool import KERNELS as POOL_KERNELS
from fxkernels.testing import _module_run, assert_runs_close, check_module

BACKENDS = ["reference", "sdpa", "cpu", "triton"]


def skip_unless_available(backend):
    """The fused attention kernels land apart from these modules: their cases skip until they are there."""
    if backend == "cpu":
        for op, kernels in (("attention", ATTENTION_KERNELS), ("attention_pool", POOL_KERNELS)):
            if not backend_available("cpu", op, kernels):
                pytest.skip(f"the C++ kernel {kernels['cpu']} is not compiled into fxkernels._C")
    if backend == "triton":
        if not fxkernels.backends()["triton"]:
            pytest.skip("Triton cannot run here (no GPU and TRITON_INTERPRET unset)")
        for mod in ("triton", "pool_triton"):
            if importlib.util.find_spec(f"fxkernels.ops.attention.{mod}") is None:
                pytest.skip(f"the Triton kernels (fxkernels/ops/attention/{mod}.py) are not there")


class Call(nn.Module):
    """m(x, thw)[0] (or fn(m, x, thw)) as a one-input module for check_module; `seed` re-seeds torch first so
    that two models draw the same dropout / stochastic-depth masks."""

    def __init__(self, m, thw, fn=None, seed=None):
        super().__init__()
        self.m, self.thw, self.fn, self.seed = m, thw, fn, seed

    def forward(self, x):
        if self.seed is not None:
            torch.manual_seed(self.seed)
        return (self.fn(self.m, x, self.thw) if self.fn is not None else self.m(x, self.thw))[0]


# the softmax cancels pool_k's LayerNorm bias (it adds q_i.b to every score of row i): its gradient is 0 in
# exact arithmetic and rounding noise in practice, so it gets an absolute bound instead of a relative one
ZERO_GRAD = ("pool_k.norm_act.0.bias",)


def check_vs(module, reference, x):
    """check_module(module, reference, x) (fp64), the ZERO_GRAD parameters held to an absolute bound."""
    names = [n.removeprefix("_orig_mod.") for n, _ in module.named_parameters()]  # torch.compile's prefix
    zero = [n for n in names if n.endswith(ZERO_GRAD)]
    if not zero:
        return check_module(module, reference, x)
    runs = []
    for m in (reference, module):
        params = {n.removeprefix("_orig_mod."): p for n, p in m.named_parameters()}
        assert list(params) == names, "different parameters"
        runs.append(_module_run(m, params, (x,), ["x"], runs[0].upstream if runs else None))
    want, got = runs
    assert all(g is not None for g in got.grads.values()), "a parameter got no gradient"
    largest = max(g.abs().max().item() for g in want.grads.values())
    for run in runs:
        for n in zero:
            noise = run.grads.pop(n).abs().max().item()
            assert noise <= 1e-12 * largest, f"d{n}: {noise:.3e}, expected 0 up to rounding"
    assert_runs_close(got, want, torch.float64)


# ------------------------------------------------------------------------------------ torchvision's pieces
def _pad_row(t):
    """A zero row in front of the tokens (dim -2) where torchvision expects the class token."""
    return torch.cat((t.new_zeros(t.shape[:-2] + (1, t.shape[-1])), t), dim=-2)


def tv_attention_nocls(tv, x, thw):
    """torchvision MultiscaleAttention.forward on a grid without class token, from torchvision's own `Pool`
    and `_add_rel_pos`: a dummy row is put where they expect the cls row and taken off again right after
    (the pools' LayerNorm is per row; the dummy score row and column are dropped before the softmax)."""
    B, N, _ = x.shape
    q, k, v = tv.qkv(x).reshape(B, N, 3, tv.num_heads, tv.head_dim).transpose(1, 3).unbind(dim=2)
    k_thw = thw
    if tv.pool_k is not None:
        k, k_thw = tv.pool_k(_pad_row(k), thw)
        k = k[:, :, 1:]
        v = tv.pool_v(_pad_row(v), thw)[0][:, :, 1:]
    q_thw = thw
    if tv.pool_q is not None:
        q, q_thw = tv.pool_q(_pad_row(q), thw)
        q = q[:, :, 1:]
    attn = torch.matmul(tv.scaler * q, k.transpose(2, 3))
    if tv.rel_pos_h is not None:
        padded = F.pad(attn, (1, 0, 1, 0))
        attn = tvm._add_rel_pos(padded, _pad_row(q), q_thw, k_thw, tv.rel_pos_h, tv.rel_pos_w, tv.rel_pos_t)
        attn = attn[:, :, 1:, 1:]
    o = attn.softmax(dim=-1) @ v
    if tv.residual_pool:
        o = o + q
    return tv.project(o.transpose(1, 2).reshape(B, -1, tv.output_dim)), q_thw


def tv_block_forward(tv, x, thw, has_cls=True):
    """torchvision MultiscaleBlock.forward, with the stfm hook (a `stfm` child of `tv`, if set) and, for
    has_cls=False, the attention and the skip pooling of a grid without class token (tv_attention_nocls)."""
    xn = tv.norm1(x)
    a, thw_new = tv.attn(xn, thw) if has_cls else tv_attention_nocls(tv.attn, xn, thw)
    s = x if tv.project is None or not tv.proj_after_attn else tv.project(xn)
    if tv.pool_skip is not None:
        s = tv.pool_skip(s, thw)[0] if has_cls else tv.pool_skip(_pad_row(s), thw)[0][:, 1:]
    z = s + tv.stochastic_depth(a)
    stfm = getattr(tv, "stfm", None)
    if stfm is not None:
        c = int(has_cls)
        g = z[:, c:]
        g = stfm(g.transpose(1, 2).reshape((g.shape[0], g.shape[2]) + tuple(thw_new)))
        z = torch.cat((z[:, :c], g.flatten(2).transpose(1, 2)), dim=1)
    zn = tv.norm2(z)
    zp = z if tv.project is None or tv.proj_after_attn else tv.project(zn)
    return zp + tv.stochastic_depth(tv.mlp(zn)), thw_new


# ------------------------------------------------------------------------------------ MultiscaleAttention
# (input_size, embed_dim, output_dim, heads, kernel_q, kernel_kv, stride_q, stride_kv, residual_pool,
#  residual_with_cls_embed, rel_pos_embed)
ATTN = {
    "v2-qstride": ((3, 4, 4), 16, 32, 2, [3, 3, 3], [3, 3, 3], [1, 2, 2], [1, 2, 2], True, False, True),
    "v2-kvstride-cls-residual": (
        (3, 5, 3),
        8,
        16,
        1,
        [3, 3, 3],
        [3, 3, 3],
        [1, 1, 1],
        [1, 2, 2],
        True,
        True,
        True,
    ),
    "v2-interpolated-tables": (
        (3, 4, 6),
        16,
        16,
        2,
        [1, 3, 3],
        [3, 1, 3],
        [1, 1, 2],
        [2, 2, 1],
        True,
        False,
        True,
    ),
    "v2-no-pool": ((2, 3, 3), 16, 16, 2, [], [], [], [], True, False, True),
    "v1-kv-only": ((2, 4, 4), 16, 16, 2, [], [3, 3, 3], [], [1, 2, 2], False, True, False),
    "v1-q-and-kv": ((3, 4, 4), 16, 32, 2, [3, 3, 3], [1, 3, 3], [1, 2, 2], [1, 1, 1], False, True, False),
}
NORM = dict(norm_layer=lambda d: nn.LayerNorm(d, eps=1e-6))


def attn_pair(kind, backend, has_cls=True, pool="conv", **kwargs):
    """(torchvision module, ours with its state dict), fp64, both in train mode."""
    args = ATTN[kind]
    tv = tvm.MultiscaleAttention(list(args[0]), *args[1:], **NORM, **kwargs).double()
    if pool != "conv":  # torchvision's own Pool around a torch pooling, no norm
        for which in ("pool_q", "pool_k", "pool_v"):
            p = getattr(tv, which)
            if p is not None:
                c = p.pool
                torch_pool = nn.MaxPool3d if pool == "max" else nn.AvgPool3d
                setattr(tv, which, tvm.Pool(torch_pool(c.kernel_size, c.stride, c.padding), None))
    ours = fxkernels.MultiscaleAttention(*args, **NORM, **kwargs, has_cls=has_cls, pool=pool, backend=backend)
    ours.double().load_state_dict(tv.state_dict())
    return tv, ours


def attn_input(kind, has_cls=True, B=2):
    (T, H, W), dim = ATTN[kind][0], ATTN[kind][1]
    return torch.randn(B, int(has_cls) + T * H * W, dim, dtype=torch.float64), ATTN[kind][0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", list(ATTN))
def test_attention_matches_torchvision(kind, backend):
    skip_unless_available(backend)
    tv, ours = attn_pair(kind, backend)
    x, thw = attn_input(kind)
    assert ours(x, thw)[1] == tv(x, thw)[1]
    check_vs(Call(ours, thw), Call(tv, thw), x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["v2-qstride", "v2-interpolated-tables", "v1-q-and-kv"])
def test_attention_without_cls(kind, backend):
    skip_unless_available(backend)
    tv, ours = attn_pair(kind, backend, has_cls=False)
    x, thw = attn_input(kind, has_cls=False)
    y, thw_q = ours(x, thw)
    assert y.shape == (2, thw_q[0] * thw_q[1] * thw_q[2], ATTN[kind][2]) and thw_q == tv(_pad_row(x), thw)[1]
    check_vs(Call(ours, thw), Call(tv, thw, fn=tv_attention_nocls), x)


def test_attention_state_dict_independent_of_has_cls():
    with_cls = fxkernels.MultiscaleAttention(*ATTN["v2-qstride"])
    without = fxkernels.MultiscaleAttention(*ATTN["v2-qstride"], has_cls=False)
    sd, sd2 = with_cls.state_dict(), without.state_dict()
    assert list(sd) == list(sd2) and all(sd[k].shape == sd2[k].shape for k in sd)
    assert list(sd) == list(tvm.MultiscaleAttention(*ATTN["v2-qstride"]).state_dict())


def test_attention_same_init_as_torchvision():
    """Parameters created in torchvision's order: the same seed gives the same initial weights."""
    args = ATTN["v2-kvstride-cls-residual"]
    torch.manual_seed(3)
    sd = tvm.MultiscaleAttention(list(args[0]), *args[1:]).state_dict()
    torch.manual_seed(3)
    sd2 = fxkernels.MultiscaleAttention(*args).state_dict()
    assert list(sd) == list(sd2) and all(torch.equal(sd[k], sd2[k]) for k in sd)


@pytest.mark.parametrize("has_cls", [True, False], ids=["cls", "no-cls"])
@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("kind", ["v2-qstride", "v1-q-and-kv"])
def test_attention_torch_pools(kind, pool, has_cls):
    tv, ours = attn_pair(kind, "reference", has_cls=has_cls, pool=pool)
    assert not any(".pool." in k or "norm_act" in k for k in ours.state_dict())
    x, thw = attn_input(kind, has_cls)
    check_vs(Call(ours, thw), Call(tv, thw, fn=None if has_cls else tv_attention_nocls), x)


def test_attention_project_dropout_draws_as_torchvision():
    tv, ours = attn_pair("v2-qstride", "reference", dropout=0.3)
    x, thw = attn_input("v2-qstride")
    check_vs(Call(ours, thw, seed=5), Call(tv, thw, seed=5), x)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_attention_compiles(backend):
    """torch.compile smoke test (dynamo, graph breaks allowed; the ops' own tests compile them fullgraph)."""
    skip_unless_available(backend)
    tv, ours = attn_pair("v2-qstride", backend)
    x, thw = attn_input("v2-qstride")
    torch._dynamo.reset()
    check_vs(torch.compile(Call(ours, thw), backend="eager"), Call(tv, thw), x)


def test_backend_reaches_the_pools():
    m = fxkernels.MultiscaleAttention(*ATTN["v2-qstride"])
    m.backend = "sdpa"
    assert {p.backend for p in (m.pool_q, m.pool_k, m.pool_v)} == {"sdpa"}
    block = fxkernels.MultiscaleBlock.v2(
        [2, 4, 4], tvm.MSBlockConfig(2, 16, 32, [3] * 3, [3] * 3, [1, 2, 2], [1] * 3)
    )
    block.backend = "reference"
    assert block.attn.backend == block.attn.pool_q.backend == "reference"


# ------------------------------------------------------------------------------------------ MultiscaleBlock
# (input_size, MSBlockConfig, version, dropout, stochastic_depth_prob)
BLOCKS = {
    "v2-qstride-widen": (
        (2, 4, 4),
        tvm.MSBlockConfig(2, 16, 32, [3] * 3, [3] * 3, [1, 2, 2], [1, 1, 1]),
        "v2",
    ),
    "v2-kvstride": ((3, 4, 3), tvm.MSBlockConfig(1, 16, 16, [3] * 3, [3] * 3, [1, 1, 1], [1, 2, 2]), "v2"),
    "v1-qstride-widen": (
        (2, 4, 4),
        tvm.MSBlockConfig(2, 16, 32, [3] * 3, [3] * 3, [1, 2, 2], [1, 1, 1]),
        "v1",
    ),
    "v1-kv-only": ((2, 4, 4), tvm.MSBlockConfig(2, 16, 16, [], [3] * 3, [], [1, 2, 2]), "v1"),
}
PRESETS = {
    "v1": dict(residual_pool=False, residual_with_cls_embed=True, rel_pos_embed=False, proj_after_attn=False),
    "v2": dict(residual_pool=True, residual_with_cls_embed=False, rel_pos_embed=True, proj_after_attn=True),
}


def block_pair(kind, backend, has_cls=True, stfm=None, **kwargs):
    size, cnf, version = BLOCKS[kind]
    tv = tvm.MultiscaleBlock(list(size), cnf, **PRESETS[version], **NORM, **kwargs)
    if stfm is not None:  # the reference's own copy, registered last as ours is
        tv.stfm = copy.deepcopy(stfm)
    preset = fxkernels.MultiscaleBlock.v1 if version == "v1" else fxkernels.MultiscaleBlock.v2
    ours = preset(list(size), cnf, **kwargs, has_cls=has_cls, stfm=stfm, backend=backend)
    ours.double().load_state_dict(tv.double().state_dict())
    return tv, ours


def block_input(kind, has_cls=True):
    (T, H, W), cnf = BLOCKS[kind][0], BLOCKS[kind][1]
    return torch.randn(2, int(has_cls) + T * H * W, cnf.input_channels, dtype=torch.float64), BLOCKS[kind][0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", list(BLOCKS))
def test_block_matches_torchvision(kind, backend):
    skip_unless_available(backend)
    tv, ours = block_pair(kind, backend, dropout=0.2, stochastic_depth_prob=0.4)
    x, thw = block_input(kind)
    assert ours(x, thw)[1] == tv(x, thw)[1]
    check_vs(Call(ours, thw, seed=1), Call(tv, thw, seed=1), x)


@pytest.mark.parametrize("kind", ["v2-qstride-widen", "v1-qstride-widen"])
def test_block_without_cls(kind):
    tv, ours = block_pair(kind, "reference", has_cls=False)
    x, thw = block_input(kind, has_cls=False)
    assert list(ours.state_dict()) == list(block_pair(kind, "reference")[1].state_dict())
    check_vs(Call(ours, thw), Call(tv, thw, fn=lambda m, x, thw: tv_block_forward(m, x, thw, False)), x)


def _conv_stfm(dim):
    return nn.Sequential(nn.Conv3d(dim, dim, 3, padding=1), nn.GELU()).double()


@pytest.mark.parametrize("has_cls", [True, False], ids=["cls", "no-cls"])
@pytest.mark.parametrize("kind", ["v2-qstride-widen", "v1-qstride-widen", "v2-kvstride"])
def test_block_stfm_hook(kind, has_cls):
    """z -> stfm(z on its (Tq, Hq, Wq) grid) between the attention residual and norm2 (the cls row passes)."""
    size, cnf, version = BLOCKS[kind]
    width = cnf.output_channels if version == "v2" else cnf.input_channels
    tv, ours = block_pair(kind, "reference", has_cls=has_cls, stfm=_conv_stfm(width))
    x, thw = block_input(kind, has_cls)
    fn = lambda m, x, thw: tv_block_forward(m, x, thw, has_cls)  # noqa: E731
    check_vs(Call(ours, thw), Call(tv, thw, fn=fn), x)


def test_block_with_fxkernels_stfm():
    kind = "v2-qstride-widen"
    stfm = fxkernels.STFM(32, 2, backend="reference").double()
    tv, ours = block_pair(kind, "reference", has_cls=False, stfm=stfm)
    x, thw = block_input(kind, has_cls=False)
    check_vs(Call(ours, thw), Call(tv, thw, fn=lambda m, x, thw: tv_block_forward(m, x, thw, False)), x)


def test_block_is_a_drop_in_for_torchvision_mvit():
    """MViT(block=fxkernels.MultiscaleBlock): the stock MViT's modules, initial weights and outputs."""
    blocks = [
        tvm.MSBlockConfig(1, 8, 16, [3] * 3, [3] * 3, [1, 2, 2], [1, 2, 2]),
        tvm.MSBlockConfig(2, 16, 16, [3] * 3, [3] * 3, [1] * 3, [1] * 3),
    ]
    kw = dict(spatial_size=(8, 8), temporal_size=4, block_setting=blocks, residual_pool=True,
              residual_with_cls_embed=False, rel_pos_embed=True, proj_after_attn=True, num_classes=5,
              patch_embed_kernel=(3, 3, 3), patch_embed_stride=(2, 2, 2),
              patch_embed_padding=(1, 1, 1))  # fmt: skip
    torch.manual_seed(2)
    tv = tvm.MViT(**kw).double().eval()
    torch.manual_seed(2)
    ours = tvm.MViT(**kw, block=fxkernels.MultiscaleBlock).double().eval()
    sd, sd2 = tv.state_dict(), ours.state_dict()
    assert list(sd) == list(sd2) and all(torch.equal(sd[k], sd2[k]) for k in sd)
    check_vs(ours, tv, torch.randn(2, 3, 4, 8, 8, dtype=torch.float64))


# -------------------------------------------------------------------------------------------- bad input
ATTN_ARGS = dict(input_size=[2, 4, 4], embed_dim=16, output_dim=32, num_heads=2, kernel_q=[3, 3, 3],
                 kernel_kv=[3, 3, 3], stride_q=[1, 2, 2], stride_kv=[1, 2, 2], residual_pool=True,
                 residual_with_cls_embed=False, rel_pos_embed=True)  # fmt: skip
BAD_ATTN = [
    pytest.param({"input_size": [4, 4]}, "input_size", id="input_size-2d"),
    pytest.param({"embed_dim": 0}, "embed_dim", id="embed_dim-0"),
    pytest.param(
        {"output_dim": 30, "num_heads": 4}, "output_dim must be a multiple of num_heads", id="heads"
    ),
    pytest.param({"num_heads": 2.0}, "num_heads", id="num_heads-float"),
    pytest.param({"kernel_q": [3, 3]}, "kernel_q", id="kernel_q-2"),
    pytest.param({"stride_kv": [1, 0, 2]}, "stride_kv", id="stride_kv-0"),
    pytest.param({"kernel_q": []}, "kernel_q and stride_q must both be 3 ints", id="stride-without-kernel"),
    pytest.param({"dropout": 1.0}, "dropout", id="dropout-1"),
    pytest.param({"pool": "mean"}, "pool must be one of", id="pool"),
    pytest.param({"backend": "cuda"}, "backend must be one of", id="backend-cuda"),
    pytest.param({"norm_layer": "LayerNorm"}, "norm_layer", id="norm_layer"),
]


@pytest.mark.parametrize("override,match", BAD_ATTN)
def test_attention_bad_arguments(override, match):
    with pytest.raises(ValueError, match=match):
        fxkernels.MultiscaleAttention(**{**ATTN_ARGS, **override})


def test_attention_bad_input():
    m = fxkernels.MultiscaleAttention(**ATTN_ARGS, backend="reference")
    with pytest.raises(ValueError, match=r"thw = \(2, 4, 4\) does not multiply out to x's 32 tokens"):
        m(torch.randn(1, 32, 16), (2, 4, 4))  # the cls row missing
    with pytest.raises(ValueError, match="embed_dim=16"):
        m(torch.randn(1, 33, 8), (2, 4, 4))
    with pytest.raises(ValueError, match="thw"):
        m(torch.randn(1, 33, 16), (32, 1))
    with pytest.raises(ValueError, match="backend must be one of"):
        m.backend = "fast"


BAD_BLOCK = [
    pytest.param({"cnf": (2, 16, 32)}, "cnf must be an MSBlockConfig", id="cnf-tuple"),
    pytest.param({"stochastic_depth_prob": 1.5}, "stochastic_depth_prob", id="sd-prob"),
    pytest.param({"stfm": lambda z: z}, "stfm must be an nn.Module", id="stfm-function"),
    pytest.param({"backend": "cuda"}, "backend must be one of", id="backend"),
    pytest.param({"pool": "min"}, "pool must be one of", id="pool"),
]


@pytest.mark.parametrize("override,match", BAD_BLOCK)
def test_block_bad_arguments(override, match):
    kw = {"input_size": [2, 4, 4], "cnf": BLOCKS["v2-qstride-widen"][1], **override}
    with pytest.raises(ValueError, match=match):
        fxkernels.MultiscaleBlock.v2(**kw)


def test_block_stfm_must_keep_the_shape():
    size, cnf, _ = BLOCKS["v2-qstride-widen"]
    block = fxkernels.MultiscaleBlock.v2(list(size), cnf, stfm=nn.Conv3d(32, 8, 1), backend="reference")
    with pytest.raises(ValueError, match="stfm must map"):
        block(torch.randn(1, 33, 16), size)
