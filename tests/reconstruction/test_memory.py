"""Tests of the peak-memory estimates (reconstruction/memory.py).

More tests of :func:`estimate_memory` and :func:`check_memory` (TIE scaling,
the advice of the error) are in tests/signals/test_lazy_distributed.py.
"""

import pytest
import torch

from hyperspy_lorentz.physics.forward import ForwardModel
from hyperspy_lorentz.reconstruction import ad, memory

GIB = 2**30
MIB = 2**20


@pytest.mark.parametrize("shape, n, kw", [
    ((512, 512), 5, dict(refine=("amplitude",))),
    ((1024, 1024), 2, dict(refine=())),
    ((300, 451), 3, dict(refine=("amplitude", "defocus", "shifts"))),
    ((256, 384), 4, dict(refine=("theta_c",), dtype="float64")),
    ((301, 257), 5, dict(refine=("amplitude",), padding="reflect")),
    ((97, 1001), 2, dict(refine=(), padding="edge", dtype="float64")),
])
def test_ad_estimate_is_the_kernels(shape, n, kw):
    """One formula: memory.estimate_memory(method="ad") is ad.estimate_memory."""
    assert memory.estimate_memory(shape, n, "ad", **kw) == ad.estimate_memory(shape, n, **kw)
    # also through check_memory, which returns the estimate when it fits
    assert memory.check_memory(shape, n, "ad", available=2**50, **kw) == ad.estimate_memory(
        shape, n, **kw)


def test_ad_default_refine_is_the_kernels_default():
    # reconstruct_ad refines DEFAULT_REFINE when refine is not given; so does the estimate
    assert memory.estimate_memory((512, 512), 3, "ad") == ad.estimate_memory((512, 512), 3)
    assert memory.estimate_memory((512, 512), 3, "ad") == ad.estimate_memory(
        (512, 512), 3, refine=ad.DEFAULT_REFINE)
    # an explicit () is no refinement, not the default
    assert memory.estimate_memory((512, 512), 3, "ad", refine=()) < memory.estimate_memory(
        (512, 512), 3, "ad")


@pytest.mark.parametrize("shape", [(64, 64), (97, 130), (301, 257), (512, 768), (1000, 999)])
@pytest.mark.parametrize("padding", [None, "reflect", "edge"])
def test_ad_padding_rule_is_the_forward_models(shape, padding):
    """The estimate's padded grid is the one ForwardModel really propagates."""
    model = ForwardModel(shape, 5.0, 200.0, padding=padding, dtype=torch.float32)
    assert ad._padded_shape(*shape, padding) == tuple(model.padded_shape)


def test_ad_estimate_covers_the_measured_peaks():
    """The peaks measured with benchmarks/bench_ad.py --memory-only (float32, CPU,
    fits of 15+ iterations, L-BFGS history full; see ad.MEMORY_COEFFICIENTS) are
    covered, and the largest is not over-estimated by more than 1.5 x."""
    measured = [  # (shape, n, refine, peak added, bytes)
        ((256, 256), 5, ("amplitude",), 46.4 * MIB),
        ((512, 512), 5, ("amplitude",), 181.0 * MIB),
        ((1024, 1024), 2, ("amplitude",), 540.7 * MIB),
        ((1024, 1024), 5, ("amplitude",), 728.6 * MIB),
        ((1024, 1024), 5, (), 668.5 * MIB),
        ((512, 512), 5, ("amplitude", "defocus", "shifts"), 272.3 * MIB),
        ((1024, 1024), 2, ("amplitude", "defocus", "shifts"), 849.3 * MIB),
        ((1024, 1024), 5, ("amplitude", "defocus", "shifts"), 1020.6 * MIB),
        ((2048, 2048), 5, ("amplitude",), 2.408 * GIB),
    ]
    # measured with periodic boundaries (no canvas): the free border's canvas adds
    # its area on top, which the estimate scales by (tested in test_ad.py)
    for shape, n, refine, peak in measured:
        est = memory.estimate_memory(shape, n, "ad", refine=refine, padding="periodic")
        assert est >= peak, (shape, n, refine)
    big = memory.estimate_memory((2048, 2048), 5, "ad", refine=("amplitude",),
                                 padding="periodic")
    assert big <= 1.5 * 2.408 * GIB
