"""The op kit (fxkernels/ops/opkit.py): one FusedOp defines the custom ops, fakes, autograd, eager Function and
the compile switch; `resolve` names the real op; the family list exports every op and module."""

import importlib

import pytest
import torch
from torch import Tensor

import fxkernels
from fxkernels._families import FAMILIES
from fxkernels.ops.opkit import REGISTRY, FusedOp
from fxkernels.testing import assert_close

CPU_KERNELS = {"cpu": "fcc_fwd"}  # any kernel compiled into _C: the toy op's availability follows it
CALLS = []


def _fwd(x: Tensor, w: Tensor, p: int, backend: str) -> Tensor:
    CALLS.append(("fwd", backend))
    return x * w**p


def _fake(x, w, p, backend):
    return torch.empty_like(x)


def _bwd(dy: Tensor, x: Tensor, w: Tensor, p: int, backend: str) -> tuple[Tensor, Tensor]:
    CALLS.append(("bwd", backend))
    return dy * w**p, (dy * x * p * w ** (p - 1)).sum(0)


def _bwd_fake(dy, x, w, p, backend):
    return torch.empty_like(x), torch.empty_like(w)


def _setup(ctx, args, output):
    x, w, p = args
    ctx.save_for_backward(x, w)
    ctx.p = p


def _grads(ctx, bwd, dy):
    x, w = ctx.saved_tensors
    dx, dw = bwd(dy, x, w, ctx.p)
    return dx, dw, None


TOY = FusedOp(
    "_opkit_test_scale",
    CPU_KERNELS,
    forward=_fwd,
    fake=_fake,
    backward=_bwd,
    backward_fake=_bwd_fake,
    setup=_setup,
    grads=_grads,
)


def _inputs():
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, dtype=torch.float64, requires_grad=True)
    return x, w


def test_eager_and_compiled_paths_give_the_autograd_values():
    x, w = _inputs()
    g = torch.randn(3, 5, dtype=torch.float64)
    (x * w**3).backward(g)
    want = (x.grad.clone(), w.grad.clone())
    for fn in (TOY, torch.compile(TOY, fullgraph=True)):
        x.grad = w.grad = None
        CALLS.clear()
        fn(x, w, 3, "cpu").backward(g)
        assert_close(x.grad, want[0], name="dx")
        assert_close(w.grad, want[1], name="dw")
        assert ("bwd", "cpu") in CALLS  # the backward got the backend bound


def test_eager_call_bypasses_the_custom_op_dispatch():
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    x, w = _inputs()
    with Record():
        TOY(x, w, 2, "cpu").sum().backward()
    assert not any("_opkit_test_scale" in s for s in seen), seen
    # the registered ops exist for torch.compile and opcheck
    torch.library.opcheck(torch.ops.fxkernels._opkit_test_scale.default, (x, w, 2, "cpu"))


def test_resolve_names_the_op_and_applies_limits():
    assert TOY.resolve("auto", torch.device("cpu")) == ("cpu" if fxkernels.backends()["cpu"] else "reference")
    assert TOY.resolve("auto", torch.device("cpu"), lambda be: "too big") == "reference"
    if fxkernels.backends()["cpu"]:
        with pytest.raises(ValueError, match=r"fxkernels\._opkit_test_scale: too big"):
            TOY.resolve("cpu", torch.device("cpu"), lambda be: "too big")
        with fxkernels.use_backend("cpu"):  # a default, not an explicit request: falls back quietly
            assert TOY.resolve("auto", torch.device("cpu"), lambda be: "too big") == "reference"
    with pytest.raises(RuntimeError, match=r"fxkernels\._opkit_test_scale: backend 'cuda'"):
        TOY.resolve("cuda", torch.device("cpu"))


@pytest.mark.parametrize(
    "fn, name",
    [
        pytest.param(lambda: fxkernels.channel_edge_conv, "channel_edge_conv", id="channel_edge_conv"),
        pytest.param(lambda: fxkernels.spatial_edge_conv, "spatial_edge_conv", id="spatial_edge_conv"),
    ],
)
def test_family_errors_carry_the_real_op_name(fn, name):
    x = torch.randn(1, 4, 6)
    nbr = torch.zeros(1, 6 if name.startswith("spatial") else 4, 2, dtype=torch.int64)
    w = torch.randn(3, 6)
    with pytest.raises(RuntimeError, match=rf"fxkernels\.{name}: backend 'cuda'"):
        fn()(x, nbr, w, w, backend="cuda")


def test_every_family_op_is_registered_and_exported():
    for family in FAMILIES:
        mod = importlib.import_module(f"fxkernels.ops.{family}")
        for name in mod.OPS:
            assert getattr(fxkernels, name) is getattr(mod, name)
            assert getattr(fxkernels.ops, name) is getattr(mod, name)
    public = {n for n in REGISTRY if not n.startswith("_")}
    assert public == set(fxkernels.ops.OP_FAMILIES)
    for name in public:
        assert hasattr(torch.ops.fxkernels, name)
        assert callable(getattr(fxkernels, name))
    assert {"FCC", "CCC", "SpatialCorrelation", "STFM"} <= set(fxkernels.__all__)


def test_fake_tensors_take_the_registered_ops_with_their_fakes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x, w = _inputs()
        CALLS.clear()
        y = TOY(x, w, 2, "cpu")
        y.sum().backward()
        assert y.shape == x.shape and x.grad.shape == x.shape and not CALLS  # no kernel ran
        xc = torch.randn(2, 5, 7, requires_grad=True)
        nbr = torch.zeros(2, 5, 3, dtype=torch.int64)
        w1 = torch.randn(4, 7)
        assert fxkernels.channel_edge_conv(xc, nbr, w1, w1).shape == (2, 5, 4)
        assert fxkernels.knn_cosine(xc, 3).shape == (2, 5, 3)
        x4 = torch.randn(2, 3, 6, 5)
        assert fxkernels.circular_conv2d(x4, torch.randn(3, 6), torch.randn(3, 5)).shape == x4.shape
        assert fxkernels.spatial_correlation(x4, x4, 3, 1).shape == (2, 9, 6, 5)
