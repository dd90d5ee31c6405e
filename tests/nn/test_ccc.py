"""CCC modules: every backend vs the module's reference-backend twin; MOLF5C vs the official structure."""

import pytest
import torch
import torch.nn.functional as F

import fxkernels
from fxkernels.ops.ccc.reference import edge_conv_loop
from fxkernels.testing import assert_close
from tests.conftest import BACKEND_PARAMS
from tests.nn.common import check_compile_fullgraph, check_vs_reference_backend
from tests.nn.test_fcc import official_parc_forward, official_state_dict


def build(kind, **kw):
    if kind == "CCC-channel":
        return fxkernels.CCC(5, 4, k=3, channels=6, **kw), (2, 6, 5, 4)
    if kind == "CCC-channel-no-out-conv":
        return fxkernels.CCC(3, 5, k=4, out_conv=False, **kw), (2, 7, 3, 5)
    if kind == "CCC-spatial":
        return fxkernels.CCC(4, 4, k=4, graph="spatial", out_conv=False, **kw), (2, 5, 4, 4)
    if kind == "F5C":
        return fxkernels.F5C(6, 5, 5, k=3, **kw), (2, 6, 5, 5)
    if kind == "F5C-spatial":
        return fxkernels.F5C(4, 4, 6, k=2, graph="spatial", out_conv=False, **kw), (2, 4, 4, 6)
    if kind == "MOLF5C":
        return fxkernels.MOLF5C(dim=3, height=6, width=6, k=4, meta_kernel_size=8, **kw), (2, 6, 6, 6)
    raise KeyError(kind)


KINDS = ["CCC-channel", "CCC-channel-no-out-conv", "CCC-spatial", "F5C", "F5C-spatial", "MOLF5C"]


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("kind", KINDS)
def test_module_matches_reference_backend(kind, device, backend):
    check_vs_reference_backend(build, kind, device, backend)


@pytest.mark.parametrize("kind", KINDS)
def test_module_compile_fullgraph(kind):
    check_compile_fullgraph(build, kind)


def test_ccc_lazy_out_conv_infers_channels():
    m = fxkernels.CCC(4, 4, k=2, backend="reference")
    y = m(torch.randn(2, 9, 4, 4))
    assert y.shape == (2, 9, 4, 4) and m.out_conv.weight.shape == (9, 9, 1, 1)


def test_ccc_official_parameter_layout():
    m = fxkernels.CCC(16, 16, graph="spatial", out_conv=False)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "conv1.weight": (256, 1, 256),
        "conv1.bias": (256,),
        "conv2.weight": (256, 1, 256),
        "conv2.bias": (256,),
    }


def test_ccc_errors():
    with pytest.raises(ValueError, match="graph must be"):
        fxkernels.CCC(4, 4, graph="nodes")
    with pytest.raises(ValueError, match="k must be a positive int"):
        fxkernels.CCC(4, 4, k=0)
    m = fxkernels.CCC(4, 4, k=2, out_conv=False)
    with pytest.raises(ValueError, match=r"\(H, W\) = \(4, 4\)"):
        m(torch.randn(1, 3, 4, 5))
    with pytest.raises(ValueError, match=r"k must be in \[1, C\]"):
        fxkernels.CCC(4, 4, k=5, out_conv=False)(torch.randn(1, 3, 4, 4))  # channel graph: k > C


# ------------------------------------------------------------------------------ the official composition
def official_ccc_forward(f, conv1, conv2, k):
    """The official MOL CCC, re-created: graph over positions (normalise over C), `topk`, the neighbour
    difference, then the per-node Conv1d loop (edge_conv_loop)."""
    B, C, H, W = f.shape
    x = f.reshape(B, C, H * W)
    xn = F.normalize(x, p=2, dim=1)
    idx = (xn.transpose(2, 1) @ xn).topk(k=k, dim=-1)[1]  # (B, N, k)
    return edge_conv_loop(x, idx, conv1, conv2, graph="spatial").reshape(B, C, H, W)


@pytest.mark.parametrize(
    "backend", ["reference"] + [p.values[1] for p in BACKEND_PARAMS if p.values[0] == "cpu"]
)
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_molf5c_loads_official_state_dicts(training, backend):
    dim, M, S, k = 4, 16, 6, 4
    N = S * S
    g = torch.Generator().manual_seed(3)
    fcc_sd = {
        key: v.double() if v.is_floating_point() else v for key, v in official_state_dict(dim, M).items()
    }
    conv1, conv2 = torch.nn.Conv1d(1, N, N).double(), torch.nn.Conv1d(1, N, N).double()
    for p in (*conv1.parameters(), *conv2.parameters()):
        p.data = torch.randn(p.shape, generator=g, dtype=torch.float64) * N**-0.5
    ccc_sd = {
        f"conv{i}.{n}": getattr(c, n).detach()
        for i, c in ((1, conv1), (2, conv2))
        for n in ("weight", "bias")
    }

    m = fxkernels.MOLF5C(dim, S, S, k, backend=backend, meta_kernel_size=M).double()
    m.load_official(fcc_sd, ccc_sd)
    m.train(training)
    x = torch.randn(3, 2 * dim, S, S, dtype=torch.float64)
    with torch.no_grad():
        z = official_parc_forward(fcc_sd, x, dim, M, training=training)
        want = z + official_ccc_forward(z, conv1, conv2, k)
        got = m(x)
    assert_close(got, want, torch.float64, "MOLF5C vs official forward")
