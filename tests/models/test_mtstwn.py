"""MTSTWN reference model (models/mtstwn.py): fused backends vs plain PyTorch (outputs and every gradient,
fp64), the paper-size shapes on the meta device, the ablation switches, the ASAM / grey / positional
embedding arithmetic, torchvision block layouts, loss weights, predictions, metrics and bad inputs."""

import contextlib
import copy
import importlib
import math
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.video import mvit as tvm

import fxkernels
from fxkernels.testing import assert_close, backend_params
from models.mtstwn import (
    MTSTWN,
    mtstwn_loss,
    mtstwn_metrics,
    mtstwn_predictions,
    num_parameters,
)

F64 = torch.float64
SMALL = dict(frames=6, size=64, embed_dim=12, depths=(1, 1, 1), num_heads=(1, 2, 2), branch_heads=2)
# (device, backend) for the fused backends of the layers here: attention, its pools, the spectral filter
FUSED = [p for p in backend_params() if p.values[1] in ("cpu", "triton")]
SWITCHES = {
    "v2-full": dict(mvit="v2"),
    "v1-full": dict(mvit="v1"),
    "v2-no-asam": dict(mvit="v2", asam=False),
    "v2-no-stfm-no-mtl": dict(mvit="v2", stfm=False, mtl=False),
    "v1-sigmoid-no-mtl": dict(mvit="v1", mtl=False, mask_act="sigmoid"),
    "v2-depth2": dict(mvit="v2", depths=(2, 1, 1)),
}
# Triton runs under TRITON_INTERPRET=1 on CPU (slow): only the full config there, at 32x32
CASES = [
    pytest.param(dev, be, name, 64 if be != "triton" else 32, id=f"{dev}-{be}-{name}")
    for dev, be in (p.values for p in FUSED)
    for name in SWITCHES
    if be != "triton" or name == "v2-full"
]


def clip(B=2, T=6, S=64, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, T, S, S, generator=g, dtype=F64).to(dtype)


def small(**kw):
    torch.manual_seed(0)
    return MTSTWN(**{**SMALL, **kw})


def alphas(T):
    """alpha_t = 2(T - t + 1) - (T + 1)(H_T - H_{t-1}), t = 1..T (Bilen et al.'s fast dynamic image)."""
    H = [0.0]
    for j in range(1, T + 1):
        H.append(H[-1] + 1.0 / j)
    return torch.tensor([2 * (T - t + 1) - (T + 1) * (H[T] - H[t - 1]) for t in range(1, T + 1)], dtype=F64)


def run(model, x, seed=1):
    """Seeded forward (same dropout / drop-path draws), backward under a fixed random upstream gradient per
    output; returns (outputs, {"x" and every parameter name: gradient})."""
    x = x.detach().requires_grad_(True)
    for p in model.parameters():
        p.grad = None
    torch.manual_seed(seed)
    out = model(x)
    g = torch.Generator().manual_seed(7)
    ups = {k: torch.randn(v.shape, generator=g, dtype=F64).to(v) for k, v in sorted(out.items())}
    torch.autograd.backward([out[k] for k in ups], [ups[k] for k in ups])
    grads = {"x": x.grad, **{n: p.grad for n, p in model.named_parameters()}}
    return {k: v.detach() for k, v in out.items()}, grads


def close_or_zero(a, e, name):
    """assert_close, except for gradients that are zero in exact arithmetic and rounding noise here (the
    key pool's LayerNorm bias: a shift of every key adds one constant per query row, which softmax
    ignores): those must stay at noise level in both."""
    if e.abs().max() < 1e-12:
        assert a.abs().max() < 1e-12, f"{name}: {a.abs().max():.3e} where the reference gradient is 0"
        return
    assert_close(a, e, F64, name)


def fused_twin(ref, backend):
    """A copy of `ref` with every fused layer (the dynamic image included) on `backend`."""
    ker = copy.deepcopy(ref).set_backend(backend)
    assert ker.backend == backend
    return ker


# ------------------------------------------------------------------------------ fused vs reference
@pytest.mark.parametrize("device,backend,name,size", CASES)
def test_fused_backends_match_reference(device, backend, name, size):
    kw = {**SWITCHES[name], "size": size, "branch_dropout": 0.1, "drop_path": 0.0}
    ref = small(**kw, backend="reference").to(device, F64).train()
    ker = fused_twin(ref, backend)
    x = clip(S=size).to(device)
    y_ref, g_ref = run(ref, x)
    y, g = run(ker, x)
    assert y.keys() == y_ref.keys()
    for k in y_ref:
        assert_close(y[k], y_ref[k], F64, k)
    assert g.keys() == g_ref.keys()
    for k in g_ref:
        assert g_ref[k] is not None and g[k] is not None, f"no gradient for {k}"
        close_or_zero(g[k], g_ref[k], f"d{k}")


def test_set_backend_reaches_every_fused_module():
    m = small()
    fused = [s for s in m.modules() if s is not m and hasattr(s, "backend")]
    kinds = {type(s).__name__ for s in fused}
    assert {"DynamicImage", "MultiscaleAttention", "TemporalFilter", "STFM", "TokenPool"} <= kinds
    assert all(s.backend == "auto" for s in fused)
    assert m.set_backend("reference") is m
    assert all(s.backend == "reference" for s in fused) and m.backend == "reference"
    m.backend = "cpu"  # the property form (fxkernels.testing.twin sets it this way)
    assert all(s.backend == "cpu" for s in fused)
    with pytest.raises(ValueError, match="backend must be one of"):
        m.set_backend("gpu")


def test_use_backend_context_drives_an_auto_model():
    # models.train switches a model built with "auto" by fxkernels.use_backend: inside, the attention runs
    # its reference; outside, the fused kernels
    mod = importlib.import_module("fxkernels.ops.attention.attention")
    m = small().eval()
    x = clip(dtype=torch.float32)
    for ctx, want in ((fxkernels.use_backend("reference"), len(m.blocks)), (contextlib.nullcontext(), 0)):
        with mock.patch.object(mod, "attention_ref", wraps=mod.attention_ref) as spy, torch.no_grad(), ctx:
            m(x)
        assert spy.call_count == want


# ------------------------------------------------------------------------------ paper-size shapes
def _paper_shapes(mvit):
    with torch.device("meta"):
        m = MTSTWN(mvit=mvit)
    seen = {}
    hooks = [m.stem.register_forward_hook(lambda mod, i, o: seen.__setitem__("stem", tuple(o.shape)))]
    hooks.append(m.norm.register_forward_hook(lambda mod, i, o: seen.__setitem__("F_s", tuple(o.shape))))
    hooks.append(
        m.blocks[0].register_forward_pre_hook(lambda mod, a: seen.__setitem__("tokens", tuple(a[0].shape)))
    )
    for i, b in enumerate(m.blocks):
        if b.stfm is not None:
            hooks.append(
                b.stfm.register_forward_hook(
                    lambda mod, a, o, i=i: seen.__setitem__(f"stfm{i}", tuple(o.shape))
                )
            )
    with torch.device("meta"):
        out = m(torch.empty(2, 3, 30, 224, 224))
    for h in hooks:
        h.remove()
    return m, seen, {k: tuple(v.shape) for k, v in out.items()}


@pytest.mark.parametrize("mvit", ["v2", "v1"])
def test_paper_size_shapes_on_meta(mvit):
    m, seen, out = _paper_shapes(mvit)
    assert seen["stem"] == (2, 96, 15, 56, 56)
    assert seen["tokens"] == (2, 15 * 56 * 56, 96)
    assert seen["F_s"] == (2, 735, 768)
    assert out == {"ex": (2, 6), "re": (2, 6), "joint": (2, 36), "mask": (2, 1, 56, 56)}
    # STFM on the attention residual of blocks 0 / 4 / 8: width dim_out (v2) or dim_in (v1)
    widths = (192, 384, 768) if mvit == "v2" else (96, 192, 384)
    grids = ((28, 28), (14, 14), (7, 7))
    assert {k: v for k, v in seen.items() if k.startswith("stfm")} == {
        f"stfm{i}": (2, w, 15, *g) for i, w, g in zip((0, 4, 8), widths, grids)
    }


def test_paper_size_block_plan_and_parameters():
    with torch.device("meta"):
        m = MTSTWN()
    heads = [b.attn.num_heads for b in m.blocks]
    assert heads == [2] * 4 + [4] * 4 + [8] * 4
    assert [b.attn.output_dim for b in m.blocks] == [192] * 4 + [384] * 4 + [768] * 4
    assert {b.attn.head_dim for b in m.blocks} == {96}
    kv = [tuple(b.attn.pool_k.pool.stride) for b in m.blocks]
    assert kv == [(1, 4, 4)] * 4 + [(1, 2, 2)] * 4 + [(1, 1, 1)] * 4
    q = [tuple(b.attn.pool_q.pool.stride) for b in m.blocks]
    assert q == [(1, 2, 2) if i in (0, 4, 8) else (1, 1, 1) for i in range(12)]
    assert {tuple(b.attn.pool_q.pool.kernel_size) for b in m.blocks} == {(3, 3, 3)}
    # rel-pos tables sized from each block's input grid (section 4.5's table)
    assert [b.attn.rel_pos_h.shape[0] for b in m.blocks] == [55] * 4 + [27] * 4 + [27] + [13] * 3
    assert {b.attn.rel_pos_t.shape[0] for b in m.blocks} == {29}
    assert [b.stochastic_depth.p for b in m.blocks] == pytest.approx([0.2 * i / 11 for i in range(12)])
    gens = [tuple(b.stfm.stfe.temporal.filter_gen.weight.shape[:2]) for b in m.blocks if b.stfm is not None]
    assert gens == [(1024, 960), (2048, 1920), (4096, 3840)]
    assert num_parameters(m) == 90_539_584  # the figure in docs/models/mtstwn.md
    with torch.device("meta"):
        assert num_parameters(MTSTWN(mvit="v1")) == 55_935_760


# ------------------------------------------------------------------------------ ablation switches
def _count(m, cls):
    return sum(isinstance(s, cls) for s in m.modules())


def test_switches_build_the_right_modules():
    full = small()
    assert _count(full, fxkernels.STFM) == 3 and full.asam is not None and full.pos_encoding is None
    assert all(
        b.attn.rel_pos_h is not None and b.attn.residual_pool and b.proj_after_attn for b in full.blocks
    )
    no_stfm = small(stfm=False)
    assert _count(no_stfm, fxkernels.STFM) == 0 and all(b.stfm is None for b in no_stfm.blocks)
    no_asam = small(asam=False)
    assert no_asam.asam is None and _count(no_asam, fxkernels.DynamicImage) == 0
    assert not any(isinstance(s, torch.nn.Conv2d) and s.in_channels == 3 for s in no_asam.modules())
    assert "mask" not in no_asam(clip(dtype=torch.float32))
    v1 = small(mvit="v1")
    assert v1.pos_encoding is not None and not any("rel_pos" in n for n, _ in v1.named_parameters())
    assert all(not b.attn.residual_pool and not b.proj_after_attn for b in v1.blocks)
    assert v1.pos_encoding.temporal_pos.shape == (3, 12) and v1.pos_encoding.spatial_pos.shape == (256, 12)
    no_mtl = small(mtl=False)
    assert no_mtl.branch_ex is None and no_mtl.branch_re is None and no_mtl.head.out_features == 36
    assert _count(no_mtl, torch.nn.TransformerEncoderLayer) == 0
    out = no_mtl(clip(dtype=torch.float32))
    assert set(out) == {"joint", "mask"} and out["joint"].shape == (2, 36)
    enc = full.branch_ex.encoder
    assert not enc.norm_first and enc.self_attn.batch_first and enc.linear1.out_features == 4 * 96
    assert enc.activation is F.relu and enc.dropout.p == 0.1


@pytest.mark.parametrize("mvit", ["v2", "v1"])
def test_blocks_load_torchvision_block_state_dicts(mvit):
    # the encoder blocks have torchvision MViT's MultiscaleBlock layout: its state dicts load strictly
    m = small(mvit=mvit, stfm=False)
    flags = dict(residual_pool=mvit == "v2", residual_with_cls_embed=mvit == "v1", rel_pos_embed=mvit == "v2")
    flags["proj_after_attn"] = mvit == "v2"
    norm = lambda d: torch.nn.LayerNorm(d, eps=1e-6)  # noqa: E731
    grid = m.grid
    for b in m.blocks:
        a = b.attn
        cnf = tvm.MSBlockConfig(a.num_heads, b.norm1.normalized_shape[0], b.mlp[3].out_features, [3] * 3,
                                [3] * 3, list(a.pool_q.pool.stride), list(a.pool_k.pool.stride))  # fmt: skip
        tv = tvm.MultiscaleBlock(list(grid), cnf, **flags, norm_layer=norm)
        sd = tv.state_dict()
        assert {k: v.shape for k, v in b.state_dict().items()} == {k: v.shape for k, v in sd.items()}
        b.load_state_dict(sd, strict=True)
        grid = tuple(g // s for g, s in zip(grid, cnf.stride_q))


# ------------------------------------------------------------------------------ the arithmetic
def test_dynamic_image_weights_of_thirty_frames():
    a = alphas(30)
    assert a[0].item() == pytest.approx(-63.845, abs=1e-3) and a[-1].item() == pytest.approx(0.967, abs=1e-3)
    assert a.sum().item() == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("mask_act", ["none", "sigmoid"])
def test_asam_grey_stem_and_mask(mask_act):
    m = small(mask_act=mask_act, backend="reference").double().eval()
    x = clip(B=1)
    seen = {}
    m.stem.register_forward_hook(lambda mod, i, o: seen.update(stem_in=i[0], stem_out=o))
    m.patch_embed.register_forward_pre_hook(lambda mod, a: seen.update(embed_in=a[0]))
    with torch.no_grad():
        out = m(x)
    grey = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert_close(seen["stem_in"][:, 0], grey, F64, "grey")
    di = (x * alphas(6).view(1, 1, 6, 1, 1)).sum(2)  # RGB dynamic image over time, no rescaling
    mask = F.conv2d(di, m.asam.conv.weight, m.asam.conv.bias, stride=4, padding=3)
    mask = mask.sigmoid() if mask_act == "sigmoid" else mask
    assert out["mask"].shape == (1, 1, 16, 16)
    assert_close(out["mask"], mask, F64, "mask")
    # eq. 4: the mask scales every channel and time step of the stem output
    assert_close(seen["embed_in"], seen["stem_out"] * mask[:, :, None], F64, "masked stem")


def test_v1_positional_embedding():
    m = small(mvit="v1", backend="reference").double().eval()
    pe = m.pos_encoding
    seen = {}
    m.patch_embed.register_forward_hook(lambda mod, i, o: seen.update(embed=o))
    m.blocks[0].register_forward_pre_hook(lambda mod, a: seen.update(tokens=a[0], thw=a[1]))
    with torch.no_grad():
        m(clip(B=1))
    e = seen["embed"]  # (1, 12, 3, 16, 16)
    assert tuple(seen["thw"]) == (3, 16, 16)
    t, h, w = 2, 5, 11
    n = (t * 16 + h) * 16 + w
    want = e[0, :, t, h, w] + pe.temporal_pos[t] + pe.spatial_pos[h * 16 + w]
    assert_close(seen["tokens"][0, n], want, F64, "token + pos")


def test_joint_is_the_outer_product_of_the_branch_softmaxes():
    m = small().double().eval()
    with torch.no_grad():
        out = m(clip())
    pe, pr = out["ex"].softmax(1), out["re"].softmax(1)
    for i in range(6):
        for j in range(6):
            assert_close(out["joint"][:, 6 * i + j], pe[:, i] * pr[:, j], F64, f"joint[{i},{j}]")
    assert_close(out["joint"].sum(1), torch.ones(2, dtype=F64), F64, "sum")


def test_non_square_class_counts():
    m = small(num_ex=3, num_re=4).eval()
    with torch.no_grad():
        out = m(clip(dtype=torch.float32))
    assert out["ex"].shape == (2, 3) and out["re"].shape == (2, 4) and out["joint"].shape == (2, 12)
    assert torch.allclose(
        out["joint"].view(2, 3, 4)[:, 2, 1], out["ex"].softmax(1)[:, 2] * out["re"].softmax(1)[:, 1]
    )


# ------------------------------------------------------------------------------ loss
@pytest.mark.parametrize("protocol,beta,alpha", [("36", 1.0, 1.0), ("6E", 1.0, 0.1), ("6R", 0.1, 1.0)])
def test_loss_weights_per_protocol(protocol, beta, alpha):
    ex = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    re = torch.tensor([[0.0, 1.0], [3.0, 0.0]])
    out = {"ex": ex, "re": re, "joint": torch.zeros(2, 6)}
    y_ex, y_re = torch.tensor([0, 2]), torch.tensor([1, 1])
    ce_ex = (-math.log(math.e**2 / (math.e**2 + 2)) - math.log(1 / 3)) / 2
    ce_re = (-math.log(math.e / (1 + math.e)) - math.log(1 / (1 + math.e**3))) / 2
    loss, parts = mtstwn_loss(out, y_ex, y_re, protocol)
    assert parts == {"ex": pytest.approx(ce_ex), "re": pytest.approx(ce_re)}
    assert isinstance(parts["ex"], float)
    assert loss.item() == pytest.approx(beta * ce_ex + alpha * ce_re)
    loss0, _ = mtstwn_loss(out, y_ex, y_re, protocol, weights=(1.0, 0.0))
    assert loss0.item() == pytest.approx(ce_ex)


def test_loss_without_branches_is_joint_ce():
    logits = torch.randn(3, 36, requires_grad=True)
    y_ex, y_re = torch.tensor([0, 5, 2]), torch.tensor([4, 5, 0])
    loss, parts = mtstwn_loss({"joint": logits}, y_ex, y_re, "6E")
    want = F.cross_entropy(logits, torch.tensor([4, 35, 12]))
    assert loss.item() == pytest.approx(want.item()) and parts == {"joint": pytest.approx(want.item())}
    loss.backward()
    assert logits.grad is not None


def test_loss_backpropagates_through_the_model():
    m = small(drop_path=0.1)
    out = m(clip(dtype=torch.float32))
    loss, _ = mtstwn_loss(out, torch.tensor([1, 2]), torch.tensor([3, 4]))
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert not missing


def test_loss_bad_labels():
    out = {"ex": torch.zeros(2, 6), "re": torch.zeros(2, 6), "joint": torch.zeros(2, 36)}
    good = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"experienced must be an int64 tensor of shape \(B,\) = \(2,\)"):
        mtstwn_loss(out, torch.tensor([0.0, 1.0]), good)
    with pytest.raises(ValueError, match=r"required must have shape \(B,\) = \(2,\)"):
        mtstwn_loss(out, good, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"required must hold class indices in \[0, 6\)"):
        mtstwn_loss(out, good, torch.tensor([0, 6]))
    with pytest.raises(ValueError, match=r"required must hold class indices in \[0, 6\)"):
        mtstwn_loss({"joint": torch.zeros(2, 36)}, good, torch.tensor([0, 6]))  # would alias class 6*0+6
    with pytest.raises(ValueError, match="protocol must be one of"):
        mtstwn_loss(out, good, good, "6X")


# ------------------------------------------------------------------------------ predictions, metrics
def test_predictions():
    ex = torch.tensor([[0.1, 3.0, 0.0], [2.0, 0.0, 1.0]])
    re = torch.tensor([[0.0, 0.0, 0.0, 5.0], [0.0, 1.0, 0.0, 0.0]])
    p = mtstwn_predictions({"ex": ex, "re": re, "joint": torch.zeros(2, 12)})
    assert p["ex"].tolist() == [1, 0] and p["re"].tolist() == [3, 1] and p["joint"].tolist() == [7, 1]
    joint = torch.zeros(2, 36)
    joint[0, 35], joint[1, 8] = 1.0, 1.0
    p = mtstwn_predictions({"joint": joint})
    assert p["ex"].tolist() == [5, 1] and p["re"].tolist() == [5, 2] and p["joint"].tolist() == [35, 8]
    p = mtstwn_predictions({"joint": torch.eye(12)[[5, 11]]}, num_re=4)
    assert p["ex"].tolist() == [1, 2] and p["re"].tolist() == [1, 3]


def test_metrics_hand_case():
    y_ex = torch.tensor([0, 0, 1, 1])
    y_re = torch.tensor([1, 1, 1, 0])
    pred = {"ex": torch.tensor([0, 1, 1, 1]), "re": torch.tensor([1, 1, 0, 0])}
    pred["joint"] = 2 * pred["ex"] + pred["re"]
    res = mtstwn_metrics(pred, y_ex, y_re, num_ex=2, num_re=2)
    # 6E: ex acc 3/4; class 0: TP 1, FN 1 -> F1 2/3, recall 1/2; class 1: TP 2, FP 1 -> F1 4/5, recall 1
    assert res["6E"] == {"acc": pytest.approx(0.75), "f1": pytest.approx((2 / 3 + 0.8) / 2),
                         "recall": pytest.approx(0.75)}  # fmt: skip
    # 6R: re acc 3/4; class 1: TP 2, FN 1 -> F1 4/5, recall 2/3; class 0: TP 1, FP 1 -> F1 2/3, recall 1
    assert res["6R"] == {"acc": pytest.approx(0.75), "f1": pytest.approx((0.8 + 2 / 3) / 2),
                         "recall": pytest.approx((2 / 3 + 1) / 2)}  # fmt: skip
    # 36: true joint [1, 1, 3, 2], predicted [1, 3, 2, 2]: acc 2/4; class 1: TP 1 FN 1 (F1 2/3, rec 1/2);
    # class 2: TP 1 FP 1 (F1 2/3, rec 1); class 3: TP 0 FP 1 FN 1 (F1 0, rec 0); class 0 absent everywhere
    assert res["36"] == {"acc": pytest.approx(0.5), "f1": pytest.approx((2 / 3 + 2 / 3 + 0) / 3),
                         "recall": pytest.approx((0.5 + 1 + 0) / 3)}  # fmt: skip
    with pytest.raises(ValueError, match="pred must have 'ex', 're' and 'joint'"):
        mtstwn_metrics({"ex": pred["ex"]}, y_ex, y_re)


# ------------------------------------------------------------------------------ bad inputs
def test_bad_input():
    m = small()
    want = r"x must have shape \(B, 3, frames=6, 64, 64\)"
    for shape in ((2, 3, 7, 64, 64), (2, 1, 6, 64, 64), (2, 3, 6, 64, 32), (3, 6, 64, 64)):
        with pytest.raises(ValueError, match=want):
            m(torch.rand(shape))
    with pytest.raises(ValueError, match=r"floating-point tensor of shape \(B, 3, frames=6, 64, 64\)"):
        m(torch.zeros(2, 3, 6, 64, 64, dtype=torch.uint8))
    bad = [
        (dict(mvit="v3"), "mvit must be one of"),
        (dict(mask_act="relu"), "mask_act must be one of"),
        (dict(depths=(1, 1)), "depths must be 3 positive ints"),
        (dict(num_heads=(1, 5, 2)), r"divisible by num_heads\[1\] = 5"),
        (dict(branch_heads=5), "must be divisible by branch_heads = 5"),
        (dict(backend="gpu"), "backend must be one of"),
        (dict(drop_path=1.5), r"drop_path must be a float in \[0, 1\)"),
        (dict(size=8), "size must be >= 16"),
        (dict(asam=1), "asam must be a bool"),
    ]
    for kw, msg in bad:
        with pytest.raises(ValueError, match=msg):
            small(**kw)
