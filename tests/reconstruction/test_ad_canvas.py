"""AD on fields of view cut from larger specimens and on islands in vacuum: the
default free border (reconstruction/canvas.py), the data-derived TV weight and
the rejection of non-finite trial steps.

The truth is simulated on a field twice the size of the images and cropped
after propagation, so the images carry the fringes of specimen outside them.
"""

import math
import warnings

import numpy as np
import pytest
import torch

from hyperspy_lorentz.physics import magnetisation, textures
from hyperspy_lorentz.physics.forward import NonFiniteError, simulate_images
from hyperspy_lorentz.reconstruction import ad as ad_mod
from hyperspy_lorentz.reconstruction.ad import reconstruct_ad
from hyperspy_lorentz.reconstruction.metrics import phase_accuracy

PIX = 2.5  # nm
KEV = 200.0


@pytest.fixture(scope="module")
def lattice():
    """A 128 x 128 window onto a 256 x 256 skyrmion lattice (70 nm period)."""
    sk = textures.skyrmion_lattice((256, 256), period=70, pixel_size=PIX)
    phase = magnetisation.magnetic_phase(sk.mx, sk.my, ms=4e5, thickness=50, pixel_size=PIX,
                                         padding=1)
    return phase


def window(images, n=128):
    o = (images.shape[-1] - n) // 2
    return images[..., o:o + n, o:o + n]


def fit(images, df, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return reconstruct_ad(images, df, pixel_size=PIX, beam_energy=KEV, seed=0, **kw)


def test_window_of_a_lattice_needs_the_free_border(lattice):
    df = np.array([-1e5, 0.0, 1e5])
    images = window(simulate_images(lattice, None, df, PIX, KEV))
    truth = window(lattice)
    free = fit(images, df)
    assert free.parameters["padding"] == "free"
    assert phase_accuracy(free.phase, truth) > 0.98  # 0.994 for 256 px cut from 512
    # periodic boundaries wrap the opposite edge's fringes into the model
    periodic = fit(images, df, padding="periodic")
    assert phase_accuracy(periodic.phase, truth) < phase_accuracy(free.phase, truth) - 0.1
    # the canvas is returned on request: its window is the phase
    hc, wc = free.parameters["canvas_shape"]
    t, l = free.parameters["canvas_border"]
    assert free.canvas_phase.shape == (hc, wc) and hc > 128 and wc > 128
    np.testing.assert_allclose(free.canvas_phase[t:t + 128, l:l + 128], free.phase)
    assert periodic.canvas_phase is None


def test_low_dose_window_adapts_the_weight_to_the_data(lattice):
    """100 e-/px: the fit at the default weight explains more than its degrees of
    freedom allow; the data-derived weight is larger and the phase more accurate."""
    df = np.array([-3e5, -1.5e5, 0.0, 1.5e5, 3e5])
    clean = window(simulate_images(lattice, None, df, PIX, KEV))
    counts = np.random.default_rng(0).poisson(clean * 100.0).astype(float)
    truth = window(lattice)
    auto = fit(counts, df)
    rule = auto.parameters["regularization_rule"]
    assert rule["refit"] and rule["reduced_chi2_before"] < rule["threshold"]
    assert auto.parameters["regularization"] > 1.5 * ad_mod.DEFAULT_TV_WEIGHT
    fixed = fit(counts, df, regularization=ad_mod.DEFAULT_TV_WEIGHT)
    assert phase_accuracy(auto.phase, truth) > phase_accuracy(fixed.phase, truth) + 0.01
    assert phase_accuracy(auto.phase, truth) > 0.97


@pytest.mark.parametrize("field", ["isolated", "window"])
@pytest.mark.parametrize("mean_inner_potential", [0.0, 25.0])
def test_islands_in_vacuum_and_their_window(field, mean_inner_potential):
    """A spin-ice-like array of permalloy islands (hyperspy_lorentz.data), 1000 e-/px,
    magnetic phase alone or with the electrostatic phase of the islands: whole in
    vacuum, and a window onto a larger array."""
    from hyperspy_lorentz import data

    s = data.island_array(shape=(128, 128), field=field, seed=0,
                          mean_inner_potential=mean_inner_potential)
    sim = s.metadata.Simulation
    res = fit(np.asarray(s.data, float), np.asarray(sim.defocus, float))
    assert phase_accuracy(res.phase, sim.phase) > 0.98


def test_nonfinite_trial_steps_are_rejected_not_raised():
    """A trial step whose model input overflows counts as an infinite loss."""
    calls = {"bad": 0}

    def loss(x):
        if float(x.detach().abs().max()) > 2.0:  # a step too far: the model refuses it
            calls["bad"] += 1
            raise NonFiniteError("amplitude must be finite")
        return ((x - 1.5) ** 2).sum()

    opt = ad_mod._Optimiser(loss, torch.zeros(3, dtype=torch.float64), method="lbfgs",
                            learning_rate=1e4, history=5, max_iterations=50, tolerance=1e-12,
                            window=3, progress=None)
    opt.run()
    assert calls["bad"] > 0
    np.testing.assert_allclose(opt.best_x.numpy(), 1.5, atol=1e-4)
    assert math.isfinite(opt.best_loss)
