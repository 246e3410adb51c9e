"""Activations that autograd recomputes in the backward pass instead of keeping (selective recomputation).

A convolution keeps its input for the backward pass, and so does the norm before it: a
conv -> norm -> ReLU -> conv chain keeps the norm's input *and* the ReLU's output. The ReLU's output
is cheap to recompute from the norm's input, which autograd keeps anyway. A layer *offers* such an
output with `offer(y, recompute)`; inside a `RecomputeScope`, an operation that saves exactly that
tensor for its backward pass saves the recipe instead, and autograd calls `recompute()` when the
backward pass reads it. So y is freed once the forward pass no longer uses it, at the cost of
recomputing it once per backward use.

`recompute()` must return y exactly: the same operations on the same tensors (deterministic on
CPU). A saved tensor is replaced only when it is the offered tensor itself or a view with the same
shape, strides and offset, and neither has been modified in place since the offer (version counter).
Outside a scope, or with grad disabled, `offer` does nothing.

The recomputation runs without grad, so a graph saved this way supports one backward pass, not
double backward (`create_graph=True`); no training loss here differentiates twice.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self, TypeVar

import torch
from torch import Tensor

_local = threading.local()
R = TypeVar("R")


@dataclass(frozen=True)
class _Offer:
    tensor: weakref.ref
    version: int
    recompute: Callable[[], Tensor]

    def replaces(self, saved: Tensor) -> bool:
        offered = self.tensor()
        return (
            offered is not None
            and offered._version == self.version
            and saved._version == self.version
            and saved.shape == offered.shape
            and saved.stride() == offered.stride()
            and saved.storage_offset() == offered.storage_offset()
        )


class _Recipe:
    __slots__ = ("recompute",)

    def __init__(self, recompute: Callable[[], Tensor]):
        self.recompute = recompute


class RecomputeScope:
    """Context manager: inside it, tensors passed to `offer` are recomputed rather than kept by autograd.

    Scopes nest (the innermost one takes the offers) and are per thread.
    """

    def __init__(self) -> None:
        self._offers: dict[int, _Offer] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)

    def __enter__(self) -> Self:
        _scopes().append(self)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
        _scopes().remove(self)
        self._offers.clear()

    def _offer(self, tensor: Tensor, recompute: Callable[[], Tensor]) -> None:
        self._offers[tensor.untyped_storage().data_ptr()] = _Offer(weakref.ref(tensor), tensor._version, recompute)

    def _recipe(self, saved: Tensor) -> Callable[[], Tensor] | None:
        if saved.layout != torch.strided or saved.device.type == "meta" or not self._offers:
            return None
        offer = self._offers.get(saved.untyped_storage().data_ptr())
        return offer.recompute if offer is not None and offer.replaces(saved) else None

    def _pack(self, saved: Tensor) -> Tensor | _Recipe:
        recompute = self._recipe(saved)
        return saved if recompute is None else _Recipe(recompute)


def _unpack(packed: Tensor | _Recipe) -> Tensor:
    if isinstance(packed, _Recipe):
        with torch.no_grad():
            return packed.recompute()
    return packed


def _scopes() -> list[RecomputeScope]:
    if not hasattr(_local, "scopes"):
        _local.scopes = []
    return _local.scopes


def recomputing_now() -> bool:
    """Whether offers are taken here: a `RecomputeScope` is active on this thread and grad is enabled."""
    return bool(_scopes()) and torch.is_grad_enabled()


def offer(tensor: Tensor, recompute: Callable[[], Tensor]) -> None:
    """Let the innermost active `RecomputeScope` recompute `tensor` with `recompute()` wherever autograd saves it."""
    if recomputing_now():
        _scopes()[-1]._offer(tensor, recompute)


def offer_derived(output: Tensor, source: Tensor, fn: Callable[[Tensor], Tensor]) -> None:
    """`output = fn(source)` (e.g. rows of `source`): when `source` is on offer, offer `output` too,
    recomputed as `fn` of `source`'s recomputation. `fn` must not depend on anything modified later."""
    if not recomputing_now():
        return
    scopes = _scopes()
    recompute_source = scopes[-1]._recipe(source)
    if recompute_source is not None:
        scopes[-1]._offer(output, lambda: fn(recompute_source()))


def recomputing(forward: Callable[..., R]) -> Callable[..., R]:
    """Decorator for a module's `forward`: run it in a new `RecomputeScope` when the module's `recompute` is true."""

    @functools.wraps(forward)
    def wrapper(module: Any, *args: Any, **kwargs: Any) -> R:
        if not module.recompute:
            return forward(module, *args, **kwargs)
        with RecomputeScope():
            return forward(module, *args, **kwargs)

    return wrapper
