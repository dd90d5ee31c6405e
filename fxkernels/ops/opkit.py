"""The op kit: one way to define a fused fxkernels op.

A family writes its math (the reference, the kernels and their launchers) and declares each op once::

    spatial_correlation_op = FusedOp(
        "spatial_correlation", KERNELS,
        forward=_forward,              # (f1: Tensor, f2: Tensor, patch: int, dilation: int, backend: str) -> Tensor
        fake=_forward_fake,            # the same signature, shapes only
        backward=_backward,            # (dout: Tensor, f1: Tensor, ..., backend: str) -> tuple[Tensor, Tensor]
        backward_fake=_backward_fake,
        setup=_setup,                  # (ctx, args, output): save what the gradient needs
        grads=_grads,                  # (ctx, bwd, *grad_outputs) -> one gradient (or None) per arg
    )

`FusedOp` registers the custom ops ``fxkernels::<name>`` and ``fxkernels::<name>_backward`` (schemas from the
annotations), their fakes and the autograd, and builds an eager ``torch.autograd.Function`` around the same
launches. Calling the op runs that Function in eager mode (no custom-op dispatch: about 30 us less per call)
and the registered op under ``torch.compile``, so both paths share `setup` and `grads`; `grads` receives
`bwd`, the backward launch to call (the plain function in eager mode, the registered backward op while
compiling), with the backend already bound. `backend` is always the ops' last argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .._backend import resolve as _resolve

_FAKE_KEY = torch._C._TorchDispatchModeKey.FAKE


def _fake_mode():
    return torch._C._get_dispatch_mode(_FAKE_KEY)


# name -> FusedOp of every op defined with the kit (`python -m fxkernels` and the tests list them from here)
REGISTRY: dict = {}


class FusedOp:
    """One fused op: custom ops + fakes + registered autograd + eager autograd.Function + compile switch.

    Args:
        name: the op name; registered as ``fxkernels::<name>`` (and ``fxkernels::<name>_backward``). A name
            starting with "_" is a family's private helper op: registered like the others, not exported.
        kernels: backend -> the compiled kernel serving it (C++ name for "cpu"/"cuda", True for "triton"):
            what `resolve` checks availability against.
        forward: the fused forward, annotated for `torch.library.custom_op`, `backend: str` last.
        fake: the forward's fake implementation (same signature).
        backward: the fused backward (tensor outputs only: a gradient that is not needed travels as an empty
            tensor), annotated, `backend: str` last; or the `backward` of another FusedOp to share its op.
        backward_fake: the backward's fake implementation (not needed when sharing).
        eager_backward: optional variant of `backward` for the eager path, same signature, free to return
            what a registered op cannot (None for a gradient not needed, a gradient laid out like its input).
        setup: ``setup(ctx, args, output)`` with args = the forward's arguments without `backend`.
        grads: ``grads(ctx, bwd, *grad_outputs)`` -> one gradient or None per forward argument without
            `backend`. `ctx.backend` holds the backend.
        An op without `backward` is not differentiable (e.g. an index-valued op).
    """

    def __init__(
        self,
        name: str,
        kernels: dict,
        *,
        forward: Callable,
        fake: Callable,
        backward=None,
        backward_fake: Optional[Callable] = None,
        eager_backward: Optional[Callable] = None,
        setup: Optional[Callable] = None,
        grads: Optional[Callable] = None,
    ):
        self.name, self.kernels = name, kernels
        self.module = forward.__module__  # the family module defining the op
        self._forward = forward
        self.registered = torch.library.custom_op(f"fxkernels::{name}", forward, mutates_args=())
        self.registered.register_fake(fake)
        REGISTRY[name] = self
        self.backward = None
        self._fn = None
        if backward is None:
            return
        if isinstance(backward, _Backward):
            self.backward = backward
        else:
            self.backward = _Backward(name, backward, backward_fake, eager_backward)
        self._setup, self._grads = setup, grads
        self.registered.register_autograd(self._registered_backward, setup_context=self._registered_setup)
        self._fn = self._make_function()

    # ---------------------------------------------------------------------------------------------- calls
    def __call__(self, *args):
        """Run the op (args as the forward's, backend last): eager autograd.Function, or the registered op
        while compiling."""
        if torch.compiler.is_compiling() or _fake_mode() is not None:
            return self.registered(*args)  # tracing or fake tensors: the fakes give the shapes
        if self._fn is None:
            return self._forward(*args)
        return self._fn.apply(*args)

    def resolve(self, backend: str, device: torch.device, why_not: Optional[Callable] = None) -> str:
        """The concrete backend for tensors on `device` (errors name this op).

        why_not(candidate) -> None if the fused backend `candidate` takes this call, else the reason (e.g.
        "the fused backends take k <= 255, got k=300"): "auto" then skips it, an explicit request raises a
        ValueError with the reason.
        """
        return _resolve(backend, device, self.name, self.kernels, why_not)

    # ------------------------------------------------------------------------------------------ autograd
    def _registered_setup(self, ctx, inputs, output):
        ctx.backend = inputs[-1]
        self._setup(ctx, inputs[:-1], output)

    def _registered_backward(self, ctx, *grad_outputs):
        bwd = self.backward.bound(self.backward.registered, ctx.backend)
        return (*self._grads(ctx, bwd, *grad_outputs), None)

    def _make_function(self):
        op = self

        class Function(torch.autograd.Function):
            @staticmethod
            def forward(ctx, *args):
                out = op._forward(*args)
                ctx.backend = args[-1]
                op._setup(ctx, args[:-1], out)
                return out

            @staticmethod
            def backward(ctx, *grad_outputs):
                bwd = op.backward.bound(op.backward.eager, ctx.backend)
                return (*op._grads(ctx, bwd, *grad_outputs), None)

        Function.__name__ = Function.__qualname__ = f"{self.name}_function"
        return Function


class _Backward:
    """The backward op of a FusedOp (shareable between ops with one backward, e.g. FCC's two forwards)."""

    def __init__(self, name: str, fn: Callable, fake: Optional[Callable], eager: Optional[Callable] = None):
        if fake is None:
            raise ValueError(f"fxkernels op kit: {name}: backward_fake is required with backward")
        self.eager = fn if eager is None else eager
        self.registered = torch.library.custom_op(f"fxkernels::{name}_backward", fn, mutates_args=())
        self.registered.register_fake(fake)

    @staticmethod
    def bound(fn: Callable, backend: str) -> Callable:
        return lambda *args: fn(*args, backend)


def empty_if_none(t: Optional[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Custom ops return tensors only: a gradient that is not computed travels as an empty tensor."""
    return like.new_empty(0) if t is None else t


@dataclass
class DemoCase:
    """One row of `python -m fxkernels demo`: a family's `demo.py` returns a list of them from
    `demo_cases(device, tiny)`, at its model's shape (tiny: a quick self-check)."""

    name: str  # the op (or pipeline) shown in the table
    shape: str  # what is timed, as printed in the table
    inputs: tuple  # the differentiable inputs, in fn's order
    fn: Callable  # fn(backend, inputs) -> one output tensor
    kernels: dict  # the family's KERNELS table (backend availability)


def dims(t: torch.Tensor) -> str:
    """'2x3x4' for a (2, 3, 4) tensor."""
    return "x".join(str(s) for s in t.shape)


__all__ = ["FusedOp", "REGISTRY", "empty_if_none", "DemoCase", "dims"]
