"""STT (models/stt.py): fused backends vs the reference backend (fp64, every parameter gradient), the paper-size
shapes on the meta device, torchvision resnet18 weights in the backbone, metrics, errors."""

import pytest
import torch

from fxkernels.testing import check_module, twin
from models.stt import STT, stt_metrics
from tests.conftest import BACKEND_PARAMS

SMALL = {"frames": 3, "size": 32, "dim": 32, "num_heads": 4, "depth": 2}


def num_parameters(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("device,backend", BACKEND_PARAMS)
@pytest.mark.parametrize("stage", ["layer3", "layer4"])
def test_fused_backends_match_reference(stage, device, backend):
    torch.manual_seed(0)
    # drop_path 0: the two models would draw different stochastic-depth masks; BatchNorm in training mode
    m_ref = STT(backbone_stage=stage, drop_path=0.0, backend="reference", **SMALL).to(device).double().train()
    x = torch.rand(2, 3, 3, 32, 32, dtype=torch.float64, device=device)
    check_module(twin(m_ref, backend), m_ref, x)


def _shapes(stage):
    with torch.device("meta"):
        m = STT(backbone_stage=stage)
    seen = {}
    m.backbone.register_forward_hook(lambda mod, a, o: seen.__setitem__("trunk", tuple(o.shape)))
    m.blocks[0].register_forward_pre_hook(lambda mod, a: seen.__setitem__("tokens", tuple(a[0].shape)))
    with torch.device("meta"):
        out = m(torch.empty(32, 16, 3, 112, 112))
    return m, seen, tuple(out.shape)


def test_paper_size_shapes_on_meta():
    m, seen, out = _shapes("layer3")
    assert seen == {"trunk": (32 * 16, 256, 7, 7), "tokens": (32, 1 + 16 * 49, 512)} and out == (32, 7)
    # the attentions: spatial (B*F, 8, 49, 49, 64), temporal (B*N, 8, 17, 17, 64)
    assert [(b.space.num_heads, b.space.head_dim) for b in m.blocks] == [(8, 64)] * 4
    assert [b.drop_path.p for b in m.blocks] == pytest.approx([0.0, 0.1 / 3, 0.2 / 3, 0.1])
    m4, seen4, out4 = _shapes("layer4")
    assert seen4 == {"trunk": (32 * 16, 512, 4, 4), "tokens": (32, 1 + 16 * 16, 512)} and out4 == (32, 7)
    # resnet18 to layer3 (2,782,784) + proj + cls/pos (1 + 49 + 17 rows) + 4 blocks + norm + head
    block = (
        2 * (2 * 512 + 512 * 1536 + 1536 + 512 * 512 + 512) + 2 * 512 + 512 * 2048 + 2048 + 2048 * 512 + 512
    )
    want = 2_782_784 + 256 * 512 + 512 + 512 * (1 + 49 + 17) + 4 * block + 2 * 512 + 512 * 7 + 7
    assert num_parameters(m) == want == 19_769_415  # the figure in docs/models/stt.md


def test_torchvision_resnet18_weights_load_into_the_backbone():
    torchvision = pytest.importorskip("torchvision")
    tv = torchvision.models.resnet18().eval()
    m = STT(**SMALL).eval()
    m.load_backbone(tv.state_dict())  # fc and layer4 are ignored at "layer3"
    x = torch.rand(4, 3, 32, 32)
    want = tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x)))))))
    torch.testing.assert_close(m.backbone(x), want, rtol=0, atol=0)
    m4 = STT(backbone_stage="layer4", **SMALL).eval()
    m4.load_backbone(tv.state_dict())
    torch.testing.assert_close(m4.backbone(x), tv.layer4(want), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="Missing key"):
        m.load_backbone({k: v for k, v in tv.state_dict().items() if not k.startswith("layer2")})


def test_set_backend_reaches_every_block():
    m = STT(**SMALL)
    m.set_backend("reference")
    assert m.backend == "reference" and {b.space.backend for b in m.blocks} == {"reference"}
    with pytest.raises(ValueError, match="backend must be one of"):
        m.set_backend("gpu")


def test_metrics_are_uar_and_war():
    y, p = [0, 0, 0, 1, 2, 2], [0, 0, 1, 1, 2, 0]
    m = stt_metrics(y, p, 3)
    assert m["war"] == pytest.approx(4 / 6)
    assert m["uar"] == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)


@pytest.mark.parametrize(
    "make,match",
    [
        pytest.param(lambda: STT(backbone_stage="layer2"), "backbone_stage", id="stage"),
        pytest.param(lambda: STT(size=100), "multiple of 16", id="size"),
        pytest.param(lambda: STT(depth=0), "depth", id="depth"),
        pytest.param(lambda: STT(backend="gpu"), "backend", id="backend"),
        pytest.param(lambda: STT(**SMALL)(torch.rand(2, 4, 3, 32, 32)), r"frames=3, 3, 32, 32", id="frames"),
        pytest.param(lambda: STT(**SMALL)(torch.rand(2, 3, 32, 32)), "must have shape", id="rank"),
        pytest.param(
            lambda: STT(**SMALL)(torch.ones(2, 3, 3, 32, 32, dtype=torch.long)), "floating", id="int"
        ),
    ],
)
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()
