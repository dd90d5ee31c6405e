"""The kernel test harness: backend discovery, the tolerance table and backend-vs-reference checks.

Importable outside the test suite (pytest is imported only by `backend_params`). A family's test is a few lines:

    @pytest.mark.parametrize("device,backend", backend_params())
    def test_matches_reference(device, backend):
        inputs = {"x": torch.randn(2, 3, 8, 8, device=device), "weight": torch.randn(3, 8, device=device)}
        check_op(lambda x, weight: my_op(x, weight, backend=backend), my_op_ref, inputs)

`check_op` runs the reference in float64 on the same values and the op on the inputs as given, each under the
same random upstream gradient, and compares every output and the gradient of every floating-point input with
`assert_close` (one tolerance row per dtype, NaN / +-Inf required at the same places). Run the checks inside
`poison_uninitialized()` (tests/ops and tests/nn do it for every test) so that an output element no kernel
writes is NaN instead of whatever the allocator handed out.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch

# One tolerance row per dtype: a backend's output vs the reference evaluated in float64 on the same inputs.
#   rms:  bound on the relative RMS error ||a - b|| / ||b||
#   atol/rtol: elementwise bound |a - b| <= atol + rtol * max|b| (catches a few wrong elements that RMS hides)
TOLERANCES = {
    torch.float64: {"rms": 1e-12, "atol": 1e-12, "rtol": 1e-10},
    torch.float32: {"rms": 1e-5, "atol": 1e-5, "rtol": 1e-4},
    torch.float16: {"rms": 2e-3, "atol": 1e-3, "rtol": 1e-2},
    torch.bfloat16: {"rms": 1.5e-2, "atol": 1e-2, "rtol": 6e-2},
}

Scale = Union[float, Mapping[str, float]]


# ------------------------------------------------------------------------------------------ comparison
def errors(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """(max-abs error, relative RMS error) of `actual` against `expected`, computed in float64."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    diff = a - e
    max_abs = diff.abs().max().item() if diff.numel() else 0.0
    denom = e.norm().item()
    rel_rms = diff.norm().item() / denom if denom > 0 else diff.norm().item()
    return max_abs, rel_rms


def _first_index(mask: torch.Tensor) -> tuple:
    return tuple(int(i) for i in mask.nonzero()[0]) if mask.any() else ()


def assert_close(actual, expected, dtype=None, name: str = "output", scale: float = 1.0):
    """Assert `actual` matches `expected` within the tolerance row of `dtype` (default: actual's dtype).

    Shapes must be equal; NaN must appear at exactly the same places, and so must +Inf and -Inf; the finite
    rest is held to the max-abs and relative-RMS bounds of TOLERANCES[dtype], both multiplied by `scale`
    (e.g. for long reductions). None matches only None.
    """
    if actual is None or expected is None:
        assert actual is None and expected is None, f"{name}: one of actual/expected is None"
        return
    assert tuple(actual.shape) == tuple(expected.shape), (
        f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
    )
    dtype = dtype or actual.dtype
    tol = TOLERANCES[dtype]
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    inf_a, inf_e = torch.isinf(a), torch.isinf(e)
    if nan_a.any() or nan_e.any() or inf_a.any() or inf_e.any():
        assert torch.equal(nan_a, nan_e), (
            f"{name}: non-finite values differ: NaN at {int(nan_a.sum())} places in actual, "
            f"{int(nan_e.sum())} expected; first difference at {_first_index(nan_a != nan_e)}"
        )
        sign_a, sign_e = torch.where(inf_a, torch.sign(a), 0), torch.where(inf_e, torch.sign(e), 0)
        assert torch.equal(sign_a, sign_e), (
            f"{name}: non-finite values differ: +-Inf at {int(inf_a.sum())} places in actual, "
            f"{int(inf_e.sum())} expected; first difference at {_first_index(sign_a != sign_e)}"
        )
        finite = ~(nan_e | inf_e)
        a, e = a[finite], e[finite]
    max_abs, rel_rms = errors(a, e)
    ref_max = e.abs().max().item() if e.numel() else 0.0
    bound = scale * (tol["atol"] + tol["rtol"] * ref_max)
    ok = rel_rms <= scale * tol["rms"] and max_abs <= bound
    assert ok, (
        f"{name}: max-abs error {max_abs:.3e} (bound {bound:.3e}), relative RMS error {rel_rms:.3e} "
        f"(bound {scale * tol['rms']:.3e}), dtype {dtype}, shape {tuple(actual.shape)}"
    )


# ----------------------------------------------------------------------------------- backend discovery
def devices() -> list[str]:
    """The device types the tests run on here: "cpu", and "cuda" when a GPU is visible."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def kernel_backends(device: str) -> list[str]:
    """The non-reference backends that can run on tensors of `device` here (Triton on CPU tensors only under
    TRITON_INTERPRET=1, the way the tests run it without a GPU)."""
    from . import backends

    available = backends()
    if device == "cpu":
        out = ["cpu"] if available["cpu"] else []
        if available["triton"] and os.environ.get("TRITON_INTERPRET") == "1":
            out.append("triton")
        return out
    return [b for b in ("triton", "cuda") if available[b]]


def backend_params(reference: bool = False) -> list:
    """`pytest.param(device, backend, id="device-backend")` for every device and kernel backend here; with
    `reference=True` also ("cpu", "reference"), for tests that hold every backend to a rule."""
    import pytest

    params = [pytest.param(d, b, id=f"{d}-{b}") for d in devices() for b in kernel_backends(d)]
    return params + ([pytest.param("cpu", "reference", id="cpu-reference")] if reference else [])


# ------------------------------------------------------------------------------------ running an op
@dataclass
class Run:
    """One forward + backward: `outputs` (a tuple, detached), `grads` (input name -> gradient, None for
    inputs that got none) and the `upstream` gradients used (one per floating-point output, else None)."""

    outputs: tuple
    grads: dict = field(default_factory=dict)
    upstream: tuple = ()


def _is_float(v) -> bool:
    return isinstance(v, torch.Tensor) and v.is_floating_point()


def to_device(inputs: Mapping[str, Any], device) -> dict:
    """`inputs` with every tensor moved to `device` (strides kept where the layout allows)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def random_upstream(outputs: Sequence, dtype=torch.float64) -> tuple:
    """A standard-normal gradient in `dtype` for every floating-point output (None for the others)."""
    return tuple(
        torch.randn(o.shape, dtype=dtype, device=o.device) if _is_float(o) else None for o in outputs
    )


def _as_tuple(out) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _backward(outputs: tuple, upstream) -> tuple:
    """Backward from `outputs` under `upstream` (None: random_upstream); returns the upstream tuple used."""
    upstream = _as_tuple(random_upstream(outputs) if upstream is None else upstream)
    assert len(upstream) == len(outputs), f"{len(upstream)} upstream gradients for {len(outputs)} outputs"
    pairs = [
        (o, g.to(o.device, o.dtype))
        for o, g in zip(outputs, upstream)
        if g is not None and isinstance(o, torch.Tensor) and o.requires_grad
    ]
    if pairs:
        torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
    return upstream


def run_with_grads(
    fn: Callable, inputs: Mapping[str, Any], upstream=None, *, no_grad: Sequence[str] = ()
) -> Run:
    """`fn(**inputs)` forward and backward.

    Every floating-point tensor input (except the names in `no_grad`) becomes a leaf that requires grad,
    with its strides kept (a view's layout is what the op sees); other inputs (index tensors, ints, None)
    pass as they are. `upstream`: one tensor, a sequence with one entry per output (None for outputs that
    get none), or None for a fresh standard-normal gradient per floating-point output, in its dtype.
    """
    leaves = {
        k: v.detach().requires_grad_(True) if _is_float(v) and k not in no_grad else v
        for k, v in inputs.items()
    }
    outputs = _as_tuple(fn(**leaves))
    upstream = _backward(outputs, upstream)
    grads = {k: v.grad for k, v in leaves.items() if _is_float(v) and k not in no_grad}
    detached = tuple(o.detach() if isinstance(o, torch.Tensor) else o for o in outputs)
    return Run(detached, grads, upstream)


def _scale_of(scale: Scale, name: str) -> float:
    return scale.get(name, 1.0) if isinstance(scale, Mapping) else scale


def output_names(n: int, names: Optional[Sequence[str]] = None) -> list[str]:
    if names is not None:
        assert len(names) == n, f"{n} outputs, {len(names)} names {tuple(names)}"
        return list(names)
    return ["y"] if n == 1 else [f"y{i}" for i in range(n)]


def assert_runs_close(
    got: Run,
    want: Run,
    dtype: torch.dtype,
    scale: Scale = 1.0,
    out_names: Optional[Sequence[str]] = None,
    check_dtype: bool = True,
):
    """Every output and every input gradient of `got` vs `want` (see `check_op`)."""
    assert len(got.outputs) == len(want.outputs), f"{len(got.outputs)} outputs, expected {len(want.outputs)}"
    for name, a, e in zip(output_names(len(got.outputs), out_names), got.outputs, want.outputs):
        if _is_float(e):
            assert isinstance(a, torch.Tensor), f"{name}: got {type(a).__name__}, expected a tensor"
            if check_dtype:
                assert a.dtype == dtype, f"{name}: dtype {a.dtype}, expected {dtype}"
            assert_close(a, e, dtype, name, _scale_of(scale, name))
        elif isinstance(e, torch.Tensor):  # indices and the like: exactly equal
            assert isinstance(a, torch.Tensor) and a.dtype == e.dtype and torch.equal(a.cpu(), e.cpu()), (
                f"{name}: differs from the reference"
            )
        else:
            assert a == e, f"{name}: {a!r} != expected {e!r}"
    assert set(got.grads) == set(want.grads), f"inputs {sorted(got.grads)} != {sorted(want.grads)}"
    for k, e in want.grads.items():
        a, name = got.grads[k], f"d{k}"
        if e is None and a is None:
            continue  # neither depends on this input
        assert a is not None, f"{name} missing"
        if e is None:  # the reference does not depend on it: the gradient must be exactly 0
            assert not a.any(), f"{name}: nonzero where the reference has no gradient"
            continue
        if check_dtype:
            assert a.dtype == dtype, f"{name}: dtype {a.dtype}, expected {dtype}"
        assert_close(a, e, dtype, name, _scale_of(scale, name))


def _reference_inputs(inputs: Mapping[str, Any], ref_dtype) -> dict:
    if ref_dtype is None:
        return dict(inputs)
    return {k: v.detach().to(ref_dtype) if _is_float(v) else v for k, v in inputs.items()}


def check_op(
    fn: Callable,
    ref: Callable,
    inputs: Mapping[str, Any],
    *,
    dtype: Optional[torch.dtype] = None,
    scale: Scale = 1.0,
    out_names: Optional[Sequence[str]] = None,
    upstream=None,
    ref_dtype: Optional[torch.dtype] = torch.float64,
    no_grad: Sequence[str] = (),
    check_dtype: bool = True,
) -> tuple[Run, Run]:
    """Check `fn(**inputs)` against `ref(**inputs)`: every output and the gradient of every input.

    inputs:    name -> tensor / None / any other argument; floating-point tensors (minus `no_grad`) get
               gradients, and are converted to `ref_dtype` (None: used as given, e.g. eager vs compiled)
               for the reference.
    dtype:     the tolerance row (default: the dtype of the first floating-point input); with check_dtype,
               every floating-point output and gradient must have it.
    scale:     loosens the row, one float for everything or {name: factor} for some outputs ("y", "y0", ..
               or `out_names`) and gradients ("d" + input name).
    upstream:  the upstream gradient(s), in float64; default: standard normal of each output's shape.
    Outputs that are not floating-point (indices) must equal the reference's exactly. Returns (got, want).
    """
    if dtype is None:
        dtype = next((v.dtype for v in inputs.values() if _is_float(v)), torch.float32)
    want = run_with_grads(ref, _reference_inputs(inputs, ref_dtype), upstream, no_grad=no_grad)
    got = run_with_grads(fn, inputs, want.upstream, no_grad=no_grad)
    assert_runs_close(got, want, dtype, scale, out_names, check_dtype)
    return got, want


def assert_deterministic(fn: Callable, inputs: Mapping[str, Any], upstream=None, *, no_grad=()) -> Run:
    """Two identical runs of `fn(**inputs)` (forward and backward) give bitwise-identical results."""
    first = run_with_grads(fn, inputs, upstream, no_grad=no_grad)
    second = run_with_grads(fn, inputs, first.upstream, no_grad=no_grad)
    for i, (a, b) in enumerate(zip(first.outputs, second.outputs)):
        assert torch.equal(a, b), f"output {i} differs between two identical runs"
    for k, a in first.grads.items():
        b = second.grads[k]
        assert (a is None) == (b is None) and (a is None or torch.equal(a, b)), (
            f"d{k} differs between two identical runs"
        )
    return first


def gradcheck(fn: Callable, inputs: Mapping[str, Any], **kwargs) -> bool:
    """torch.autograd.gradcheck of `fn(**inputs)` with respect to every floating-point tensor input (use
    float64 inputs); the other inputs are held fixed. `kwargs` go to gradcheck (eps, atol, rtol, ...)."""
    keys = [k for k, v in inputs.items() if _is_float(v)]
    fixed = {k: v for k, v in inputs.items() if k not in keys}

    def call(*tensors):
        return fn(**dict(zip(keys, tensors)), **fixed)

    args = tuple(inputs[k].detach().requires_grad_(True) for k in keys)
    return torch.autograd.gradcheck(call, args, **kwargs)


# --------------------------------------------------------------------------------------------- modules
def _module_run(module: Callable, params: dict, args: tuple, arg_names: list, upstream) -> Run:
    for p in params.values():
        p.grad = None
    leaves = tuple(a.detach().requires_grad_(True) if _is_float(a) else a for a in args)
    outputs = _as_tuple(module(*leaves))
    upstream = _backward(outputs, upstream)
    grads = {n: a.grad for n, a in zip(arg_names, leaves) if _is_float(a)}
    grads.update({name: p.grad for name, p in params.items()})
    for p in params.values():
        p.grad = None
    return Run(tuple(o.detach() for o in outputs), grads, upstream)


def check_module(
    module: torch.nn.Module,
    reference: Callable,
    *args,
    dtype: Optional[torch.dtype] = None,
    scale: Scale = 1.0,
    upstream=None,
    arg_names: Optional[Sequence[str]] = None,
) -> tuple[Run, Run]:
    """`module(*args)` vs `reference(*args)` on the same values: outputs, input and parameter gradients.

    reference: a module with the same parameter names (e.g. a copy on the reference backend), or a function
    computing the same thing from `module`'s own parameters. The reference runs first, forward and backward
    (BatchNorm running stats update in between, as they would in training). Gradient names: "d" + `arg_names`
    (default "x", or "x0", "x1", ...) for the inputs, "d" + parameter name for the parameters (a compiled
    module's "_orig_mod." prefix dropped); every parameter must get a gradient.
    """
    dtype = dtype or next(a.dtype for a in args if _is_float(a))
    arg_names = list(arg_names or (["x"] if len(args) == 1 else [f"x{i}" for i in range(len(args))]))
    params = {n.removeprefix("_orig_mod."): p for n, p in module.named_parameters()}
    ref_params = params
    if isinstance(reference, torch.nn.Module):
        ref_params = {n.removeprefix("_orig_mod."): p for n, p in reference.named_parameters()}
    assert list(params) == list(ref_params), "module and reference have different parameters"
    want = _module_run(reference, ref_params, args, arg_names, upstream)
    got = _module_run(module, params, args, arg_names, want.upstream)
    for name in params:
        assert got.grads[name] is not None, f"no grad for {name}"
    assert_runs_close(got, want, dtype, scale, check_dtype=False)
    return got, want


def twin(module: torch.nn.Module, backend: str) -> torch.nn.Module:
    """A deep copy of `module` whose every fxkernels layer (every submodule with a `backend`) uses `backend`."""
    import copy

    m = copy.deepcopy(module)
    for sub in m.modules():
        if hasattr(sub, "backend"):
            sub.backend = backend
    return m


# ----------------------------------------------------------------------------- poisoned allocations
@contextlib.contextmanager
def poison_uninitialized():
    """Within the block torch.empty / at::empty (also called from the C++ kernels and the Triton launchers)
    return memory filled with NaN (the largest value for integer dtypes), so an output element that a kernel
    never writes shows as NaN in a comparison instead of a stale value that happens to look right.

    Uses PyTorch's deterministic mode (`torch.use_deterministic_algorithms`) with
    `torch.utils.deterministic.fill_uninitialized_memory`; warn_only=True so that the torch ops without a
    deterministic implementation warn instead of raising. The previous settings are restored on exit.
    """
    import torch.utils.deterministic as det

    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        det.fill_uninitialized_memory,
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    det.fill_uninitialized_memory = True
    try:
        yield
    finally:
        det.fill_uninitialized_memory = saved[2]
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
