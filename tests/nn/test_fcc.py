"""FCC modules: every backend vs the module's reference-backend twin; ParCFCC vs the official structure."""

import pytest
import torch
import torch.nn.functional as F

import fxkernels
from fxkernels.testing import assert_close
from tests.conftest import BACKEND_PARAMS
from tests.nn.common import check_compile_fullgraph, check_vs_reference_backend


def build(kind, **kw):
    if kind == "FCCV":
        return fxkernels.FCCV(5, 9, **kw), (2, 5, 9, 7)
    if kind == "FCCH":
        return fxkernels.FCCH(5, 7, **kw), (2, 5, 9, 7)
    if kind == "FCC":
        return fxkernels.FCC(6, 9, 11, **kw), (2, 6, 9, 11)
    if kind == "FCC-residual":
        return fxkernels.FCC(4, 8, 8, residual=True, **kw), (2, 4, 8, 8)
    if kind == "ParCFCC-crop":
        return fxkernels.ParCFCC(dim=3, meta_kernel_size=12, **kw), (2, 6, 10, 10)
    if kind == "ParCFCC-bilinear":
        return fxkernels.ParCFCC(3, 12, "interpolation_bilinear", **kw), (2, 6, 9, 7)
    if kind == "ParCFCC-midmix":
        return fxkernels.ParCFCC(3, 12, mid_mix=True, **kw), (2, 6, 10, 10)
    if kind == "ParCFCC-nope-nobias":
        return fxkernels.ParCFCC(3, 12, use_pe=False, bias=False, **kw), (2, 6, 10, 10)
    raise KeyError(kind)


KINDS = [
    "FCCV",
    "FCCH",
    "FCC",
    "FCC-residual",
    "ParCFCC-crop",
    "ParCFCC-bilinear",
    "ParCFCC-midmix",
    "ParCFCC-nope-nobias",
]


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("kind", KINDS)
def test_module_matches_reference_backend(kind, device, backend):
    check_vs_reference_backend(build, kind, device, backend)


@pytest.mark.parametrize("kind", KINDS)
def test_module_compile_fullgraph(kind):
    check_compile_fullgraph(build, kind)


def test_use_backend_context_routes_modules():
    m, shape = build("FCC")
    x = torch.randn(shape)
    with fxkernels.use_backend("reference"):
        y_ref = m(x)
    assert_close(m(x), y_ref, torch.float32, "auto vs reference")


# -------------------------------------------------------------------------------- ParCFCC (official)
def official_parc_forward(
    sd, x, dim, M, method="crop", use_pe=True, mid_mix=False, bias=True, training=False
):
    """Our own re-creation of the official MOL/ParC block's forward (the structure ParCFCC's docstring in
    fxkernels/nn/fcc.py describes), written with F.conv2d."""
    x1, x2 = torch.chunk(x, 2, dim=1)
    r1, r2 = x1, x2
    S_h, S_w = x.shape[2], x.shape[3]

    def inst(t, h, w):
        if method == "crop":
            return t[:, :, :h, :w]
        return F.interpolate(t, (h, w), mode="bilinear", align_corners=True)

    k1h, k1w = inst(sd["meta_kernel_1_H"], S_h, 1), inst(sd["meta_kernel_1_W"], 1, S_w)
    k2h, k2w = inst(sd["meta_kernel_2_H"], S_h, 1), inst(sd["meta_kernel_2_W"], 1, S_w)
    bias_of = (lambda n: sd[f"meta_{n}_bias"]) if bias else (lambda n: None)  # noqa: E731
    if use_pe:
        pe1h = inst(sd["meta_pe_1_H"], S_h, 1).expand(1, dim, S_h, S_w)
        pe1w = inst(sd["meta_pe_1_W"], 1, S_w).expand(1, dim, S_h, S_w)
        pe2h = inst(sd["meta_pe_2_H"], S_h, 1).expand(1, dim, S_h, S_w)
        pe2w = inst(sd["meta_pe_2_W"], 1, S_w).expand(1, dim, S_h, S_w)
        x1, x2 = x1 + pe1h, x2 + pe1w

    def bn(t, n):
        return F.batch_norm(
            t, sd[f"pre_Norm_{n}.running_mean"].clone(), sd[f"pre_Norm_{n}.running_var"].clone(),
            sd[f"pre_Norm_{n}.weight"], sd[f"pre_Norm_{n}.bias"], training, 0.1, 1e-5,
        )  # fmt: skip

    x1, x2 = bn(x1, 1), bn(x2, 2)
    x1 = F.conv2d(torch.cat((x1, x1[:, :, :-1, :]), dim=2), k1h, bias_of("1_H"), groups=dim)
    x2 = F.conv2d(torch.cat((x2, x2[:, :, :, :-1]), dim=3), k1w, bias_of("1_W"), groups=dim)
    if mid_mix:
        x1, x2 = torch.chunk(F.channel_shuffle(torch.cat((x1, x2), dim=1), 2), 2, dim=1)
    if use_pe:
        x1, x2 = x1 + pe2w, x2 + pe2h
    x1 = F.conv2d(torch.cat((x1, x1[:, :, :, :-1]), dim=3), k2w, bias_of("2_W"), groups=dim)
    x2 = F.conv2d(torch.cat((x2, x2[:, :, :-1, :]), dim=2), k2h, bias_of("2_H"), groups=dim)
    return torch.cat((r1 + x1, r2 + x2), dim=1)


def official_state_dict(dim, M, use_pe=True, bias=True):
    g = torch.Generator().manual_seed(1)
    sd = {}
    for n in ("1_H", "2_H"):
        sd[f"meta_kernel_{n}"] = torch.randn(dim, 1, M, 1, generator=g) / M**0.5
    for n in ("1_W", "2_W"):
        sd[f"meta_kernel_{n}"] = torch.randn(dim, 1, 1, M, generator=g) / M**0.5
    for n in ("1_H", "1_W", "2_H", "2_W"):
        if bias:
            sd[f"meta_{n}_bias"] = torch.randn(dim, generator=g)
        if use_pe:
            shape = (1, dim, M, 1) if n.endswith("H") else (1, dim, 1, M)
            sd[f"meta_pe_{n}"] = torch.randn(*shape, generator=g)
    for k in (1, 2):
        sd[f"pre_Norm_{k}.weight"] = torch.rand(dim, generator=g) + 0.5
        sd[f"pre_Norm_{k}.bias"] = torch.randn(dim, generator=g)
        sd[f"pre_Norm_{k}.running_mean"] = torch.randn(dim, generator=g)
        sd[f"pre_Norm_{k}.running_var"] = torch.rand(dim, generator=g) + 0.5
        sd[f"pre_Norm_{k}.num_batches_tracked"] = torch.tensor(7)
    # the unused feed-forward net of the official module
    sd["ffn.0.weight"] = torch.randn(4 * dim, 2 * dim, 1, 1, generator=g)
    sd["ffn.0.bias"] = torch.randn(4 * dim, generator=g)
    return sd


PARC_CFGS = [
    pytest.param({}, id="crop"),
    pytest.param({"instance_kernel_method": "interpolation_bilinear"}, id="bilinear"),
    pytest.param({"mid_mix": True}, id="mid_mix"),
    pytest.param({"use_pe": False, "bias": False}, id="no-pe-no-bias"),
]


@pytest.mark.parametrize(
    "backend", ["reference"] + [p.values[1] for p in BACKEND_PARAMS if p.values[0] == "cpu"]
)
@pytest.mark.parametrize("cfg", PARC_CFGS)
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_parcfcc_loads_official_state_dict(cfg, training, backend):
    dim, M = 4, 16
    use_pe, bias = cfg.get("use_pe", True), cfg.get("bias", True)
    sd = official_state_dict(dim, M, use_pe, bias)
    m = fxkernels.ParCFCC(dim, M, backend=backend, **cfg).double()
    result = m.load_state_dict(
        {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}, strict=True
    )
    assert not result.missing_keys and not result.unexpected_keys
    m.train(training)
    x = torch.randn(3, 2 * dim, 14, 14, dtype=torch.float64)
    want = official_parc_forward(
        {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}, x, dim, M,
        cfg.get("instance_kernel_method", "crop"), use_pe, cfg.get("mid_mix", False), bias, training,
    )  # fmt: skip
    assert_close(m(x), want, torch.float64, "ParCFCC vs official forward")


def test_parcfcc_parameter_names_and_shapes():
    m = fxkernels.ParCFCC()
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes["meta_kernel_1_H"] == (64, 1, 32, 1)
    assert shapes["meta_kernel_2_W"] == (64, 1, 1, 32)
    assert shapes["meta_pe_1_H"] == (1, 64, 32, 1)
    assert shapes["meta_pe_2_W"] == (1, 64, 1, 32)
    assert shapes["meta_1_W_bias"] == (64,)
    assert "pre_Norm_1.running_var" in shapes and "pre_Norm_2.weight" in shapes
    assert not any(k.startswith("ffn") for k in shapes)


def test_parcfcc_errors():
    with pytest.raises(ValueError, match="instance_kernel_method"):
        fxkernels.ParCFCC(4, 8, "nearest")
    m = fxkernels.ParCFCC(4, 8)
    with pytest.raises(ValueError, match="2\\*dim=8"):
        m(torch.randn(1, 6, 8, 8))
    with pytest.raises(ValueError, match="meta_kernel_size"):
        m(torch.randn(1, 8, 10, 10))
    with pytest.raises(ValueError, match="FCC: x must have shape"):
        fxkernels.FCC(4, 8, 8)(torch.randn(1, 4, 8, 9))
