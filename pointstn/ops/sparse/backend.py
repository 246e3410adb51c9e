"""Loading spconv lazily, and choosing its convolution algorithm per device.

This package is the only place in pointstn that imports spconv. The import is deferred to the first
call that needs it (importing spconv-cu120 takes seconds and pulls in cumm), and it is narrowed:
spconv's own deprecation noise is silenced, nothing else is.

Facts this module encodes (DESIGN.md section 4, re-checked by tests/ops/test_spconv_compat.py):
- spconv-cu120 runs on a CPU-only machine, but only with `ConvAlgo.Native`; its default
  implicit-GEMM algorithms call `torch.cuda.current_stream()`. On CUDA we keep spconv's default.
- The CPU-only `spconv` wheel fails every backward pass and races with more than one thread
  (upstream issue #679); it is refused with an explanation.
"""

from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

from pointstn.errors import MissingDependencyError, PointstnError

SPCONV_PACKAGE = "spconv-cu120"
SPCONV_INSTALL = "pip install 'spconv-cu120>=2.3.6,<2.4'"
_FEATURE = "the sparse-convolution decoder"


@dataclass(frozen=True)
class SpconvAPI:
    """The handful of spconv objects pointstn uses, resolved once.

    Attributes:
        tensor_type: `spconv.pytorch.SparseConvTensor`.
        conv_algo: the `spconv.core.ConvAlgo` enum.
        conv_base: `spconv.pytorch.conv.SparseConvolutionBase`, a parameter-free class whose
            `_conv_forward(training, input, weight, bias)` runs one convolution.
        version: spconv's version string.
    """

    tensor_type: type
    conv_algo: Any
    conv_base: type
    version: str


class _DropFxTracingNotice(logging.Filter):
    """Drops torch.fx's one-time "is_fx_tracing will return true ..." notice.

    spconv's `SparseConvTensor` uses torch.fx's `ProxyableClassMeta`, whose constructor calls
    `torch.fx.is_fx_tracing()`, which logs that notice the first time a sparse tensor is built.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("is_fx_tracing will return true")


@functools.cache
def spconv_api() -> SpconvAPI:
    """Import spconv (once per process) and return the objects pointstn uses.

    Raises:
        MissingDependencyError: spconv-cu120 is not installed.
        PointstnError: an unsupported spconv build is installed (the CPU-only `spconv` wheel, or a
            major version other than 2).
    """
    spconv = _import_spconv_quietly()
    from spconv.core import ConvAlgo
    from spconv.cppconstants import CPU_ONLY_BUILD
    from spconv.pytorch import SparseConvTensor
    from spconv.pytorch.conv import SparseConvolutionBase

    version = str(getattr(spconv, "__version__", "unknown"))
    if not version.startswith("2."):
        raise PointstnError(
            f"spconv {version} is installed, but pointstn supports spconv 2.x only; "
            f"install it with: {SPCONV_INSTALL}"
        )
    if CPU_ONLY_BUILD:
        raise PointstnError(
            f"the CPU-only 'spconv' wheel ({version}) is installed; it fails every backward pass and "
            "gives wrong results with more than one thread (upstream issue #679). Replace it: "
            f"pip uninstall spconv && {SPCONV_INSTALL} (it runs on CPU-only machines too)"
        )
    logging.getLogger("torch.fx._symbolic_trace").addFilter(_DropFxTracingNotice())
    return SpconvAPI(
        tensor_type=SparseConvTensor,
        conv_algo=ConvAlgo,
        conv_base=SparseConvolutionBase,
        version=version,
    )


def _import_spconv_quietly() -> ModuleType:
    with warnings.catch_warnings():
        # spconv 2.3 decorates its autograd functions with the deprecated torch.cuda.amp.custom_fwd/bwd.
        warnings.filterwarnings(
            "ignore", message=r"`torch\.cuda\.amp\.custom_(fwd|bwd)", category=FutureWarning
        )
        # ccimport (a build helper spconv imports) calls the deprecated locale.getdefaultlocale.
        warnings.filterwarnings("ignore", message=r"'locale\.getdefaultlocale'", category=DeprecationWarning)
        try:
            import spconv
            import spconv.pytorch
        except ImportError as error:
            raise MissingDependencyError(SPCONV_PACKAGE, _FEATURE, SPCONV_INSTALL) from error
    return spconv


def conv_algorithm(device: torch.device) -> Any:
    """The spconv `ConvAlgo` to run on `device`, or None for spconv's own default.

    CPU: `ConvAlgo.Native` (the only algorithm spconv-cu120 can run without CUDA).
    CUDA: None, i.e. spconv's default (mask implicit GEMM for kernel volumes up to 32, else Native).
    """
    if device.type == "cpu":
        return spconv_api().conv_algo.Native
    if device.type == "cuda":
        return None
    raise ValueError(f"sparse convolution runs on 'cpu' or 'cuda' devices, got '{device.type}'")


@dataclass(frozen=True)
class ConvGeometry:
    """Everything that defines one sparse convolution except its parameters.

    `kernel_size`, `stride`, `padding` are per-axis (D, H, W) tuples.
    """

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int, int]
    stride: tuple[int, int, int]
    padding: tuple[int, int, int]
    subm: bool
    transposed: bool
    inverse: bool
    indice_key: str | None


@functools.cache
def conv_engine(geometry: ConvGeometry, device_type: str) -> Any:
    """A parameter-free spconv convolution object for `geometry` on `device_type` ('cpu'/'cuda').

    The engine holds only the layer geometry and the algorithm; weights are passed at call time,
    so one engine serves every module with the same geometry.
    """
    api = spconv_api()
    return api.conv_base(
        3,
        geometry.in_channels,
        geometry.out_channels,
        list(geometry.kernel_size),
        list(geometry.stride),
        list(geometry.padding),
        1,  # dilation
        1,  # groups
        bias=False,  # bias is added outside spconv: a biased CPU conv in eval mode raises
        subm=geometry.subm,
        transposed=geometry.transposed,
        inverse=geometry.inverse,
        indice_key=geometry.indice_key,
        algo=conv_algorithm(torch.device(device_type)),
    )
