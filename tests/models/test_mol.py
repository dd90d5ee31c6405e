"""MOL reference model (models/mol.py): layout, official state dicts, batched vs published forward, backends, loss."""

import copy

import pytest
import torch
import torch.nn.functional as F

import fxkernels
from fxkernels.testing import assert_close
from models.mol import MOL, mol_loss, published_forward
from tests.nn.test_fcc import official_state_dict

KERNEL_BACKENDS = [b for b in ("cpu",) if fxkernels.backends()[b]]


def official_layout(num_classes=5, t=8):
    """(key -> shape) of an official MOL checkpoint, written from the published architecture (issue 4),
    independently of models/mol.py."""
    spec = {}
    for i, (o, c, k) in enumerate([(8, 1, 4), (32, 8, 3), (64, 32, 2), (128, 64, 1)]):
        spec[f"conv_stack.conv_stack.{i}.weight"] = (o, c, k, k)
        spec[f"conv_stack.conv_stack.{i}.bias"] = (o,)
    parc = official_state_dict(64, 32)
    for j in (1, 2):
        for key, v in parc.items():
            spec[f"FCC_{j}.{key}"] = tuple(v.shape)
        for conv in ("conv1", "conv2"):
            spec[f"CCC_{j}.{conv}.weight"] = (256, 1, 256)
            spec[f"CCC_{j}.{conv}.bias"] = (256,)
    convs = {
        "conv1": (1, 64, 6), "conv2": (64, 128, 4), "conv3": (128, 256, 2), "conv_redir": (256, 32, 1),
        "conv3_1": (729, 256, 3), "conv4": (256, 512, 3), "conv4_1": (512, 512, 3), "conv5": (512, 512, 3),
        "conv5_1": (512, 512, 3), "conv6": (512, 1024, 3), "conv6_1": (1024, 1024, 3),
    }  # fmt: skip
    for name, (i, o, k) in convs.items():
        spec[f"flownet.{name}.0.weight"] = (o, i, k, k)
        for p in ("weight", "bias", "running_mean", "running_var"):
            spec[f"flownet.{name}.1.{p}"] = (o,)
        spec[f"flownet.{name}.1.num_batches_tracked"] = ()
    for lvl, (i, o) in zip(
        range(5, -1, -1), [(1024, 512), (1026, 256), (770, 128), (386, 128), (258, 64), (130, 32)]
    ):
        spec[f"flownet.deconv{lvl}.0.weight"] = (i, o, 4, 4)
    for lvl, i in zip(range(6, -1, -1), [1024, 1026, 770, 386, 258, 130, 35]):
        spec[f"flownet.predict_flow{lvl}.weight"] = (2, i, 3, 3)
    for lvl in range(6, 0, -1):
        spec[f"flownet.upsampled_flow{lvl}_to_{lvl - 1}.weight"] = (2, 2, 4, 4)
    spec.update({
        "mer_3dcnn.conv3d.weight": (32, 128, 2, 2, 5), "mer_3dcnn.conv3d.bias": (32,),
        "mer_3dcnn.fc1.weight": (256, 512 * (t - 3)), "mer_3dcnn.fc1.bias": (256,),
        "mer_3dcnn.fc2.weight": (num_classes, 256), "mer_3dcnn.fc2.bias": (num_classes,),
        "ldm_predictor.convldm.weight": (32, 128, 3, 3), "ldm_predictor.convldm.bias": (32,),
        "ldm_predictor.fc1.weight": (512, 6272), "ldm_predictor.fc1.bias": (512,),
        "ldm_predictor.fc2.weight": (136, 512), "ldm_predictor.fc2.bias": (136,),
    })  # fmt: skip
    return spec


def random_official_state(spec, seed=3):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in spec.items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(11)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        else:
            fan = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
            sd[key] = torch.randn(shape, generator=g) / fan**0.5
    return sd


def clip(B=1, t=4, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 1, t, 128, 128, generator=g, dtype=torch.float64).to(dtype)


def test_official_layout_and_strict_load():
    spec = official_layout()
    model = MOL(5)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = {k: v for k, v in spec.items() if ".ffn." not in k}  # the official FCC's unused ffn is dropped
    assert ours == expected
    sd = random_official_state(spec)
    model.load_state_dict(sd, strict=True)  # an official checkpoint (with its ffn entries) loads as is
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_state_dict_round_trip(tmp_path):
    a = MOL(3, t=4).eval()
    torch.save(a.state_dict(), tmp_path / "mol.pt")
    b = MOL(3, t=4).eval()
    b.load_state_dict(torch.load(tmp_path / "mol.pt"), strict=True)
    x = clip()
    with torch.no_grad():
        for ya, yb in zip(a(x), b(x)):
            assert torch.equal(ya, yb)


@pytest.mark.parametrize("semantics", ["official", "paper"])
def test_output_shapes(semantics):
    model = MOL(4, semantics=semantics, t=4).eval()
    with torch.no_grad():
        logits, flow, ldm = model(clip(B=2, t=4))
    assert logits.shape == (2, 4) and flow.shape == (2, 2, 128, 128, 3) and ldm.shape == (2, 136, 3)


def test_eval_matches_published_pair_loop():
    # batched pairs (conv stack / FlowNet encoder once per frame) == the published per-pair structure
    torch.manual_seed(0)
    model = MOL(5, t=4, backend="reference").double().eval()
    model.load_state_dict(random_official_state(official_layout(5, 4)), strict=True)
    model.double()
    x = clip(B=2, t=4, dtype=torch.float64)
    with torch.no_grad():
        ours = model(x)
        theirs = published_forward(model, x, ccc_loop=False)
    for name, a, b in zip(("logits", "flow", "landmarks"), ours, theirs):
        assert_close(a, b, torch.float64, name)


def test_published_forward_ccc_loop_matches():
    # the per-node Conv1d loop and the per-displacement correlation loop agree with the vectorised version
    torch.manual_seed(0)
    model = MOL(5, t=4, backend="reference").double().eval()
    x = clip(B=1, t=4, dtype=torch.float64)
    with torch.no_grad():
        a = published_forward(model, x, ccc_loop=True)
        b = model(x)
    for name, u, v in zip(("logits", "flow", "landmarks"), a, b):
        assert_close(u, v, torch.float64, name)


def run_step(model, x, batch, seed=0):
    torch.manual_seed(seed)  # same dropout masks for both models
    out = model(x)
    loss, _ = mol_loss(out, batch)
    loss.backward()
    return [o.detach() for o in out], {n: p.grad for n, p in model.named_parameters()}


def synthetic_targets(B, t, num_classes, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    ldm = torch.rand(B, 136, t, generator=g, dtype=torch.float64) * 60 + 30
    return {
        "label": torch.randint(0, num_classes, (B,), generator=g),
        "flow": torch.randn(B, 2, 128, 128, t - 1, generator=g, dtype=torch.float64).to(dtype),
        "landmarks": ldm.to(dtype),
    }


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("semantics", ["official", "paper"])
def test_kernels_match_reference_backend(semantics, backend):
    # the whole model, training mode: outputs and every parameter gradient, fxkernels vs plain PyTorch
    torch.manual_seed(0)
    ref = MOL(3, semantics=semantics, backend="reference", t=4).double().train()
    ker = copy.deepcopy(ref)
    for m in ker.modules():
        if hasattr(m, "backend"):
            m.backend = backend
    x = clip(B=2, t=4, dtype=torch.float64)
    batch = synthetic_targets(2, 4, 3, torch.float64)
    y_ref, g_ref = run_step(ref, x, batch)
    y, g = run_step(ker, x, batch)
    for name, a, b in zip(("logits", "flow", "landmarks"), y, y_ref):
        assert_close(a, b, torch.float64, name)
    assert g.keys() == g_ref.keys()
    for name in g_ref:
        assert g[name] is not None, f"no gradient for {name}"
        assert_close(g[name], g_ref[name], torch.float64, f"d{name}")


def test_bad_input():
    model = MOL(5, t=4)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, t=4, 128, 128\)"):
        model(torch.rand(1, 1, 5, 128, 128))
    with pytest.raises(ValueError, match="x must have shape"):
        model(torch.rand(1, 1, 4, 64, 64))
    with pytest.raises(ValueError, match="semantics"):
        MOL(5, semantics="other")
    with pytest.raises(ValueError, match="t must be >= 4"):
        MOL(5, t=3)


# ------------------------------------------------------------------------------------------------ loss
def test_mol_loss_hand_case():
    B, t, C = 2, 3, 4
    pts = torch.zeros(B, 68, 2, t)
    pts[:, 36:42, 0], pts[:, 42:48, 0] = 10.0, 30.0  # pupils 20 px apart in every frame
    gt = pts.flatten(1, 2)  # (B, 136, t)
    logits = torch.randn(B, C)
    label = torch.tensor([1, 3])
    flow_gt = torch.zeros(B, 2, 128, 128, t - 1)
    outputs = (logits, flow_gt + 0.5, gt[..., 1:] + 1.0)  # every coordinate off by 1 px
    total, parts = mol_loss(outputs, {"label": label, "flow": flow_gt, "landmarks": gt})
    ce = F.cross_entropy(logits, label)
    # eq. 8: (|dx| + |dy|) / d = 2 / 20 per landmark and frame; eq. 7: MSE = 0.25
    assert parts["landmarks"].item() == pytest.approx(0.1)
    assert parts["flow"].item() == pytest.approx(0.25)
    assert total.item() == pytest.approx(ce.item() + 0.1 * 0.25 + 68 * 0.1, rel=1e-6)


def test_mol_loss_masks_missing_ground_truth():
    B, t = 2, 3
    logits = torch.randn(B, 3, requires_grad=True)
    flow = torch.randn(B, 2, 128, 128, t - 1, requires_grad=True)
    ldm = torch.randn(B, 136, t - 1, requires_grad=True)
    batch = {
        "label": torch.tensor([0, 2]),
        "flow": torch.zeros(B, 2, 128, 128, t - 1),
        "landmarks": torch.zeros(B, 136, t),
        "has_flow": torch.tensor([True, False]),
        "has_landmarks": torch.tensor([False, False]),
    }
    total, parts = mol_loss((logits, flow, ldm), batch)
    assert parts["landmarks"].item() == 0.0
    assert parts["flow"].item() == pytest.approx(flow[0].detach().pow(2).mean().item(), rel=1e-5)
    total.backward()
    assert torch.isfinite(total) and (flow.grad[1] == 0).all() and (ldm.grad == 0).all()


def test_mol_loss_rejects_ground_truth_of_another_shape():
    B, t = 2, 3
    outputs = (torch.randn(B, 3), torch.zeros(B, 2, 128, 128, t - 1), torch.zeros(B, 136, t - 1))
    good = {
        "label": torch.tensor([0, 2]),
        "flow": torch.zeros(B, 2, 128, 128, t - 1),
        "landmarks": torch.zeros(B, 136, t),
    }
    mol_loss(outputs, good)
    # a flow for one pair would broadcast over all t-1 pairs; landmarks of t-1 frames would misalign by one frame
    for key, bad in (("flow", torch.zeros(B, 2, 128, 128, 1)), ("landmarks", torch.zeros(B, 136, t - 1)),
                     ("has_flow", torch.ones(B + 1, dtype=torch.bool))):  # fmt: skip
        with pytest.raises(ValueError, match=rf"batch\['{key}'\] must have shape"):
            mol_loss(outputs, {**good, key: bad})
    with pytest.raises(ValueError, match="batch has no 'landmarks'"):
        mol_loss(outputs, {"label": good["label"], "flow": good["flow"]})
