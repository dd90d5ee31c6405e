"""fuse_mvit (fxkernels/nn/mvit.py) on torchvision MViT models: after fuse_mvit the same outputs and every
parameter gradient as the stock model (fp64, train mode with the same dropout / stochastic-depth draws), the
state dict unchanged (the same Parameter objects), on small MViTs built from torchvision's own constructor
(v1- and v2-like) and on mvit_v2_s (its block config at a small clip; the full 16x224x224 once, marked
slow)."""

import copy
from unittest import mock

import pytest
import torch
from torch import nn
from torchvision.models.video import mvit as tvm

import fxkernels
from fxkernels.testing import assert_close
from tests.nn.test_attention import BACKENDS, check_vs, skip_unless_available

PATCH = dict(patch_embed_kernel=(3, 3, 3), patch_embed_stride=(2, 4, 4), patch_embed_padding=(1, 1, 1))
V1 = dict(residual_pool=False, residual_with_cls_embed=True, rel_pos_embed=False, proj_after_attn=False)
V2 = dict(residual_pool=True, residual_with_cls_embed=False, rel_pos_embed=True, proj_after_attn=True)
C = tvm.MSBlockConfig
CONFIGS = {
    # mvit_v1_b's pattern: kernel_q only where q is strided, the width change in the projection after norm2
    "v1": (V1, [C(1, 16, 32, [], [3] * 3, [], [1, 2, 2]), C(2, 32, 32, [3] * 3, [3] * 3, [1, 2, 2], [1] * 3),
                C(2, 32, 32, [], [1, 3, 3], [], [1] * 3)]),
    # mvit_v2_s's pattern: kernel (3,3,3) everywhere, the width change at the q-strided block
    "v2": (V2, [C(1, 16, 16, [3] * 3, [3] * 3, [1] * 3, [1, 2, 2]),
                C(2, 16, 32, [3] * 3, [3] * 3, [1, 2, 2], [1] * 3),
                C(2, 32, 32, [3] * 3, [3] * 3, [1] * 3, [1] * 3)]),
    "v2-residual-with-cls": ({**V2, "residual_with_cls_embed": True},
                             [C(2, 16, 32, [3] * 3, [3] * 3, [1, 2, 2], [1, 2, 2]),
                              C(2, 32, 32, [3] * 3, [3] * 3, [1] * 3, [1] * 3)]),
}  # fmt: skip
CLIP = (6, 16, 12)  # (T, H, W): a 3x4x3 token grid, H != W (the w tables get interpolated)


class Seeded(nn.Module):
    """m(x) after torch.manual_seed(seed): two models draw the same dropout / stochastic-depth masks."""

    def __init__(self, m, seed=0):
        super().__init__()
        self.m, self.seed = m, seed

    def forward(self, x):
        torch.manual_seed(self.seed)
        return self.m(x)


def tiny_mvit(kind):
    flags, blocks = CONFIGS[kind]
    torch.manual_seed(0)
    m = tvm.MViT(
        spatial_size=CLIP[1:],
        temporal_size=CLIP[0],
        block_setting=blocks,
        **flags,
        dropout=0.2,
        attention_dropout=0.1,
        stochastic_depth_prob=0.3,
        num_classes=7,
        **PATCH,
    )
    return m.double()


def count(model, cls):
    return sum(isinstance(m, cls) for m in model.modules())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", list(CONFIGS))
def test_fused_mvit_matches_stock(kind, backend):
    skip_unless_available(backend)
    stock = tiny_mvit(kind)
    fused = copy.deepcopy(stock)
    params = {n: p for n, p in fused.named_parameters()}
    assert fxkernels.fuse_mvit(fused, backend=backend) is fused
    assert count(fused, tvm.MultiscaleAttention) == 0
    assert count(fused, fxkernels.MultiscaleAttention) == len(CONFIGS[kind][1])
    assert all(p is params[n] for n, p in fused.named_parameters()), "fuse_mvit must share the Parameters"
    assert list(fused.state_dict()) == list(stock.state_dict())
    B = 1 if backend == "triton" else 2  # the Triton interpreter runs every program in Python
    check_vs(Seeded(fused), Seeded(stock), torch.randn((B, 3) + CLIP, dtype=torch.float64))


def test_fuse_mvit_keeps_the_optimizer_and_state_dict_working():
    model = tiny_mvit("v2")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sd = copy.deepcopy(model.state_dict())
    fxkernels.fuse_mvit(model, backend="reference")
    model.load_state_dict(sd)  # strict: the same keys
    attn = model.blocks[1].attn
    before = attn.rel_pos_h.detach().clone(), attn.pool_q.pool.weight.detach().clone()
    model(torch.randn((2, 3) + CLIP, dtype=torch.float64)).sum().backward()
    opt.step()  # the optimizer holds the Parameters the fused modules use
    assert not torch.equal(attn.rel_pos_h, before[0]) and not torch.equal(attn.pool_q.pool.weight, before[1])


def test_fuse_mvit_module_itself_and_shared_modules():
    tv = tvm.MultiscaleAttention(
        [2, 4, 4], 16, 16, 2, [3] * 3, [3] * 3, [1] * 3, [1, 2, 2], True, False, True
    )
    ours = fxkernels.fuse_mvit(tv, backend="sdpa")
    assert isinstance(ours, fxkernels.MultiscaleAttention) and ours.qkv is tv.qkv and ours.backend == "sdpa"
    pair = fxkernels.fuse_mvit(nn.ModuleList([tv, tv]))
    assert isinstance(pair[0], fxkernels.MultiscaleAttention) and pair[0] is pair[1]


def test_fuse_mvit_bad_arguments():
    tv = tvm.MultiscaleAttention(
        [2, 4, 4], 16, 16, 2, [3] * 3, [3] * 3, [1] * 3, [1, 2, 2], True, False, True
    )
    with pytest.raises(ValueError, match="backend must be one of"):
        fxkernels.fuse_mvit(nn.Sequential(tv), backend="cuda")
    tv.pool_k.pool = nn.Conv3d(8, 8, 3, stride=(1, 2, 2), padding=1, groups=8, bias=True)
    with pytest.raises(ValueError, match=r"pool_k.pool must be Conv3d\(hd, hd, k"):
        fxkernels.fuse_mvit(nn.Sequential(tv))


# --------------------------------------------------------------------------------------------- mvit_v2_s
def mvit_v2_s_kwargs():
    """The arguments mvit_v2_s() passes to torchvision's MViT builder (its block config)."""
    with mock.patch.object(tvm, "_mvit", lambda **kw: kw):
        kw = tvm.mvit_v2_s()
    for k in ("weights", "progress"):
        kw.pop(k)
    return kw


def test_fuse_mvit_v2_s_state_dict_unchanged():
    model = tvm.mvit_v2_s()
    sd = model.state_dict()
    fxkernels.fuse_mvit(model)
    assert count(model, fxkernels.MultiscaleAttention) == 16 and count(model, tvm.MultiscaleAttention) == 0
    sd2 = model.state_dict()
    assert list(sd2) == list(sd)
    assert all(sd2[k].data_ptr() == sd[k].data_ptr() and torch.equal(sd2[k], sd[k]) for k in sd)


@pytest.mark.parametrize("backend", ["reference", "sdpa", "cpu"])
def test_fused_mvit_v2_s_blocks_match_stock(backend):
    """mvit_v2_s's 16 blocks (heads, strides, kernels; the widths / 8: hd 12) at a 4x32x32 clip, fp64."""
    skip_unless_available(backend)
    kw = mvit_v2_s_kwargs()
    kw["block_setting"] = [
        tvm.MSBlockConfig(
            c.num_heads,
            c.input_channels // 8,
            c.output_channels // 8,
            c.kernel_q,
            c.kernel_kv,
            c.stride_q,
            c.stride_kv,
        )
        for c in kw["block_setting"]
    ]
    kw.update(spatial_size=(32, 32), temporal_size=4, num_classes=10)
    torch.manual_seed(0)
    stock = tvm.MViT(**kw).double()
    fused = fxkernels.fuse_mvit(copy.deepcopy(stock), backend=backend)
    check_vs(Seeded(fused), Seeded(stock), torch.randn(1, 3, 4, 32, 32, dtype=torch.float64))


@pytest.mark.slow
def test_fused_mvit_v2_s_full_clip():
    """mvit_v2_s itself (random weights), eval, one forward of its 16x224x224 clip: the only size it takes
    (MViT.forward runs the token grid fixed at construction, 8x56x56)."""
    torch.manual_seed(0)
    stock = tvm.mvit_v2_s().eval()
    fused = fxkernels.fuse_mvit(copy.deepcopy(stock))
    x = torch.randn(1, 3, 16, 224, 224)
    with torch.no_grad():
        y, want = fused(x), stock(x)
    assert_close(y, want, torch.float32, "logits")
