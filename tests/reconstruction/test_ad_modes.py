"""The defocus modes and the tilt of the AD bootstrap (reconstruction/ad/modes.py).

Oracles: the propagation identity ``T(df + c) P(-c) psi = T(df) psi`` (exact), the
first-order (TIE) invariance of the images under ``df -> s df``, ``phi -> phi / s``,
and the Fourier shift theorem for a phase ramp (``exp(2 pi i k.r)`` moves the image at
defocus ``df`` by ``lambda df k``), each checked against the forward model.
"""

import numpy as np
import torch

from hyperspy_lorentz.physics import optics
from hyperspy_lorentz.physics.forward import ForwardModel
from hyperspy_lorentz.reconstruction.ad.modes import compensate, mode_coefficients, mode_design

N, PIX, KEV = 128, 2.5, 200.0
WL = optics.wavelength(KEV)
DF = np.array([-300e3, 0.0, 300e3])


def _specimen(strength=2.0):
    y, x = np.mgrid[:N, :N].astype(float)
    phase = strength * np.exp(-((x - 64) ** 2 + (y - 60) ** 2) / 200.0) \
        + 0.5 * np.sin(2 * np.pi * x / 32.0)
    amp = 1.0 - 0.3 * np.exp(-((x - 50) ** 2 + (y - 70) ** 2) / 100.0)
    return torch.tensor(phase), torch.tensor(amp)


def _model():
    return ForwardModel((N, N), (PIX, PIX), KEV, cs=1.0, theta_c=0.0, defocus_spread=0.0,
                        padding=None, dtype=torch.float64)


def test_offset_compensation_gives_the_same_images():
    phase, amp = _specimen()
    model = _model()
    before = model(phase, amp, torch.tensor(DF)).numpy()
    moved = compensate(dict(phase=phase, amplitude=amp), DF, (0.0, 0.02), WL, (PIX, PIX), True)
    np.testing.assert_allclose(moved["defocus"], DF + 0.02 * 300e3)
    after = model(moved["phase"], moved["amplitude"], torch.tensor(moved["defocus"])).numpy()
    assert np.abs(after - before).max() < 1e-10 * before.mean()
    # without the compensation the images change at the per-cent level
    plain = model(phase, amp, torch.tensor(moved["defocus"])).numpy()
    assert np.abs(plain - before).max() > 1e-2 * before.mean()


def test_scale_compensation_keeps_weak_phase_images_to_first_order():
    phase, amp = _specimen(strength=0.05)
    phase = phase * 0.1
    model = _model()
    before = model(phase, None, torch.tensor(DF)).numpy()
    moved = compensate(dict(phase=phase, amplitude=None), DF, (0.04, 0.0), WL, (PIX, PIX), False)
    np.testing.assert_allclose(moved["defocus"], DF * 1.04)
    after = model(moved["phase"], None, torch.tensor(moved["defocus"])).numpy()
    plain = model(phase, None, torch.tensor(moved["defocus"])).numpy()
    # contrast change without compensation ~ 4 %, with it second order
    assert np.abs(after - before).max() < 0.1 * np.abs(plain - before).max()


def test_mode_coefficients_split_a_change_into_scale_and_offset():
    df = np.array([-600e3, -300e3, 0.0, 300e3, 600e3])
    design = mode_design(df)
    change = design @ np.array([0.03, -0.01])
    np.testing.assert_allclose(mode_coefficients(df, change), [0.03, -0.01], atol=1e-12)
    # the offset is in units of the largest |defocus|
    np.testing.assert_allclose(design[:, 1], 600e3)


def test_phase_ramp_moves_the_image_by_lambda_df_k():
    """The tilt the bootstrap turns into a phase ramp: an exact periodic ramp of m
    cycles across the field moves the image at defocus df by lambda df k / pixel."""
    phase, amp = _specimen()
    model = _model()
    m = 3
    k = m / (N * PIX)  # cycles / nm, periodic on the grid
    x = np.arange(N) * PIX
    ramp = torch.tensor(np.broadcast_to(2 * np.pi * k * x[None, :], (N, N)).copy())
    ramped = model(phase + ramp, amp, torch.tensor(DF)).numpy()
    shift_px = WL * DF * k / PIX
    shifts = torch.tensor(np.stack([np.zeros(3), shift_px], axis=1))
    drifted = model(phase, amp, torch.tensor(DF), shifts=shifts).numpy()
    # exact but for Cs (its q^4 term seen at q + k): 1.5e-8 here
    assert np.abs(ramped - drifted).max() < 1e-6 * drifted.mean()
    assert np.abs(shift_px).max() > 0.5  # a real move, not a no-op
