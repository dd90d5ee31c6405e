"""The test harness itself (fxkernels.testing): each check fails where it must, and the poisoned allocations."""

import pytest
import torch

import fxkernels
from fxkernels.testing import (
    assert_close,
    assert_deterministic,
    backend_params,
    check_module,
    check_op,
    gradcheck,
    kernel_backends,
    poison_uninitialized,
    run_with_grads,
)
from tests.conftest import BACKEND_PARAMS, _order


def scaled_grad(factor):
    """y = x * w whose backward multiplies dx by `factor` (a wrong gradient when factor != 1)."""

    class Op(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(x, w)
            return x * w

        @staticmethod
        def backward(ctx, dy):
            x, w = ctx.saved_tensors
            return factor * dy * w, (dy * x).sum(0)

    return lambda x, w: Op.apply(x, w)


def mul_ref(x, w):
    return x * w


def inputs(dtype=torch.float32):
    return {"x": torch.randn(4, 5, dtype=dtype), "w": torch.randn(5, dtype=dtype)}


# -------------------------------------------------------------------------------------------- assert_close
@pytest.mark.parametrize(
    "actual,expected,match",
    [
        pytest.param([1.0, float("nan")], [1.0, 2.0], "NaN at 1 places", id="nan-extra"),
        pytest.param([float("nan"), 2.0], [1.0, float("nan")], "first difference at", id="nan-moved"),
        pytest.param([float("inf"), 2.0], [float("-inf"), 2.0], "Inf", id="inf-sign"),
        pytest.param([float("inf"), 2.0], [float("nan"), 2.0], "NaN", id="inf-vs-nan"),
        pytest.param([1.0, 2.001], [1.0, 2.0], "max-abs error", id="value"),
        pytest.param([1.0, 2.0, 3.0], [1.0, 2.0], "shape", id="shape"),
    ],
)
def test_assert_close_fails(actual, expected, match):
    with pytest.raises(AssertionError, match=match):
        assert_close(torch.tensor(actual), torch.tensor(expected), torch.float32)


def test_assert_close_passes_matching_nonfinite_and_scale():
    a = torch.tensor([1.0, float("nan"), float("inf"), float("-inf"), 2.0 + 3e-5])
    e = torch.tensor([1.0, float("nan"), float("inf"), float("-inf"), 2.0])
    with pytest.raises(AssertionError):
        assert_close(a, e, torch.float32)
    assert_close(a, e, torch.float32, scale=4.0)
    assert_close(None, None)
    with pytest.raises(AssertionError, match="None"):
        assert_close(None, e)


# ------------------------------------------------------------------------------------------------ check_op
def test_check_op_passes_a_correct_op():
    got, want = check_op(scaled_grad(1.0), mul_ref, inputs())
    assert set(got.grads) == {"x", "w"} and want.grads["x"].dtype == torch.float64
    assert got.upstream[0].dtype == torch.float64  # the reference's upstream, shared by both runs


def test_check_op_catches_a_wrong_input_gradient():
    with pytest.raises(AssertionError, match="^dx: "):
        check_op(scaled_grad(1.001), mul_ref, inputs())


def test_check_op_catches_a_missing_gradient():
    with pytest.raises(AssertionError, match="dw missing"):
        check_op(lambda x, w: x * w.detach(), mul_ref, inputs())


def test_check_op_catches_a_wrong_dtype_and_scales_per_name():
    with pytest.raises(AssertionError, match="y: dtype torch.float64"):
        check_op(lambda x, w: (x * w).double(), mul_ref, inputs())
    noisy = scaled_grad(1 + 5e-5)
    with pytest.raises(AssertionError, match="dx"):
        check_op(noisy, mul_ref, inputs())
    check_op(noisy, mul_ref, inputs(), scale={"dx": 10.0})


def test_check_op_several_outputs_and_index_outputs():
    def ref(x, k):
        v, i = x.topk(k, dim=-1)
        return v * 2, i

    check_op(ref, ref, {"x": torch.randn(3, 6), "k": 2}, out_names=("v", "idx"))
    with pytest.raises(AssertionError, match="idx: differs"):
        check_op(lambda x, k: (ref(x, k)[0], ref(x, k)[1].flip(-1)), ref, {"x": torch.randn(3, 6), "k": 2},
                 out_names=("v", "idx"))  # fmt: skip


def test_check_op_no_grad_and_upstream():
    inp = inputs(torch.float64)
    g = torch.randn(4, 5, dtype=torch.float64)
    got, want = check_op(scaled_grad(1.0), mul_ref, inp, no_grad=("w",), upstream=g)
    assert set(got.grads) == {"x"} and torch.equal(got.upstream[0], g)
    assert_close(got.grads["x"], g * inp["w"])


def test_run_with_grads_keeps_the_input_layout():
    x = torch.randn(6, 4).t()[:, ::2]  # a non-dense view: .clone() would make it contiguous
    strides = []
    run_with_grads(lambda x: strides.append(x.stride()) or x * 2, {"x": x})
    assert strides == [x.stride()]


def test_assert_deterministic_catches_a_random_op():
    with pytest.raises(AssertionError, match="output 0 differs"):
        assert_deterministic(lambda x: x + torch.rand_like(x), {"x": torch.randn(3)})
    assert_deterministic(lambda x: x * 2, {"x": torch.randn(3)})


def test_gradcheck_holds_non_float_inputs_fixed():
    idx = torch.tensor([2, 0])
    x = torch.randn(3, 2, dtype=torch.float64)
    assert gradcheck(lambda x, idx, scale: x[idx] * scale, {"x": x, "idx": idx, "scale": 3.0})


def test_check_module_compares_parameter_gradients():
    m = torch.nn.Linear(4, 3).double()
    x = torch.randn(2, 4, dtype=torch.float64)
    check_module(m, lambda x: x @ m.weight.t() + m.bias, x)
    with pytest.raises(AssertionError, match="dbias"):
        check_module(m, lambda x: x @ m.weight.t() + (2 * m.bias - m.bias.detach()), x)  # same y, 2x dbias
    assert m.weight.grad is None  # gradients are collected and cleared


# -------------------------------------------------------------------------------------- backend discovery
def test_backend_discovery():
    avail = fxkernels.backends()
    assert ("cpu" in kernel_backends("cpu")) == avail["cpu"]
    assert [p.id for p in BACKEND_PARAMS] == [p.id for p in backend_params()]
    assert backend_params(reference=True)[-1].id == "cpu-reference"
    assert all(p.id == "-".join(p.values) for p in backend_params())


def test_model_tests_run_last():
    class Item:
        def __init__(self, path, slow=False):
            self.path, self.slow = path, slow

        def get_closest_marker(self, name):
            return object() if name == "slow" and self.slow else None

    root = __import__("tests.conftest").conftest.TESTS
    order = [
        _order(Item(root / p, s))
        for p, s in (
            ("ops/test_fcc.py", False),
            ("models/test_mol.py", False),
            ("models/test_train.py", True),
        )
    ]
    assert order == [0, 1, 2]


# ---------------------------------------------------------------------------------- poisoned allocations
def test_tests_in_ops_run_poisoned():
    # tests/conftest.py wraps every test under tests/ops and tests/nn in poison_uninitialized()
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.empty(64).isnan().all()
    assert torch.empty(8, 8, dtype=torch.float16).isnan().all()
    assert (torch.empty(8, dtype=torch.int64) == torch.iinfo(torch.int64).max).all()
    assert torch.empty_like(torch.ones(3, 5).t()).isnan().all()
    assert torch.ops.aten.empty.memory_format([16]).isnan().all()  # the op C++ at::empty dispatches to


def test_poison_restores_the_previous_settings():
    import torch.utils.deterministic as det

    torch.use_deterministic_algorithms(False)
    det.fill_uninitialized_memory = False
    try:
        with poison_uninitialized():
            assert torch.empty(4).isnan().all()
        assert not torch.are_deterministic_algorithms_enabled() and not det.fill_uninitialized_memory
    finally:
        torch.use_deterministic_algorithms(True, warn_only=True)
        det.fill_uninitialized_memory = True


def test_poison_shows_an_unwritten_output_element():
    def half_written(x):
        y = torch.empty_like(x)
        y[:-1] = x[:-1] * 2  # forgets the last row
        return y

    with pytest.raises(AssertionError, match="NaN"):
        check_op(half_written, lambda x: x * 2, {"x": torch.randn(4, 3)}, no_grad=("x",))
