"""Tests of hyperspy_lorentz.physics.optics against independent oracles."""

import math

import numpy as np
import pytest
import torch

from hyperspy_lorentz.physics import optics

# CODATA 2018
M0C2_KEV = 510.99895000


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/physics/conftest.py


# --------------------------------------------------------------------------- oracles
def kirkland_sigma(kev):
    """Kirkland (Advanced Computing in EM, 2nd ed., eq. 5.6).

    sigma = 2 pi / (lambda V) (m0 c^2 + e V) / (2 m0 c^2 + e V)
    """
    lam = optics.wavelength(kev)
    return 2 * math.pi / (lam * kev * 1e3) * (M0C2_KEV + kev) / (2 * M0C2_KEV + kev)


def kirkland_wavelength(kev):
    """lambda = hc / sqrt(E (2 m0c^2 + E)) with hc = 1.23984198 keV nm."""
    hc = 1.239841984  # keV nm
    return hc / math.sqrt(kev * (2 * M0C2_KEV + kev))


def kirkland_chi(q, lam, df_kirkland, cs_mm):
    """Kirkland's chi = pi lambda q^2 (Cs lambda^2 q^2 / 2 - df') with df' > 0 underfocus."""
    cs = cs_mm * 1e6
    return math.pi * lam * q**2 * (0.5 * cs * lam**2 * q**2 - df_kirkland)


def grids(shape=(32, 24), pixel=1.5, dtype=torch.float64):
    return optics.spatial_frequencies(shape, pixel, dtype=dtype)


# --------------------------------------------------------------------------- wavelength / sigma
@pytest.mark.parametrize("kev, pm", [(200, 2.5079), (300, 1.9687), (100, 3.7013), (80, 4.1757)])
def test_wavelength_published(kev, pm):
    assert optics.wavelength(kev) * 1e3 == pytest.approx(pm, abs=2e-4)


@pytest.mark.parametrize("kev", [1, 60, 200, 300, 1000])
def test_wavelength_matches_hc_form(kev):
    assert optics.wavelength(kev) == pytest.approx(kirkland_wavelength(kev), rel=1e-7)


def test_wavelength_is_float():
    assert type(optics.wavelength(200)) is float
    assert type(optics.interaction_constant(200)) is float


def test_interaction_constant_published():
    assert optics.interaction_constant(200) == pytest.approx(0.0072884, rel=2e-5)
    assert optics.interaction_constant(300) == pytest.approx(0.0065262, rel=2e-5)


@pytest.mark.parametrize("kev", [80, 120, 200, 300])
def test_interaction_constant_kirkland(kev):
    assert optics.interaction_constant(kev) == pytest.approx(kirkland_sigma(kev), rel=1e-7)


@pytest.mark.parametrize("bad", [0, -200, 2e5, float("nan"), float("inf"), "abc", None])
def test_bad_beam_energy(bad):
    with pytest.raises(ValueError, match="beam_energy"):
        optics.wavelength(bad)
    with pytest.raises(ValueError, match="beam_energy"):
        optics.interaction_constant(bad)


# --------------------------------------------------------------------------- grids
def test_spatial_frequencies_fftfreq():
    qy, qx = optics.spatial_frequencies((6, 5), (2.0, 0.5), dtype=torch.float64)
    assert qy.shape == qx.shape == (6, 5)
    np.testing.assert_allclose(qy[:, 0].numpy(), np.fft.fftfreq(6, 2.0))
    np.testing.assert_allclose(qx[0].numpy(), np.fft.fftfreq(5, 0.5))
    assert float(qy[0, 0]) == float(qx[0, 0]) == 0.0
    assert qy.dtype == torch.float64
    assert optics.spatial_frequencies((4, 4), 1.0)[0].dtype == torch.float32


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), (1.0, 0.0), (1, 2, 3)])
def test_bad_pixel_size(bad):
    with pytest.raises(ValueError, match="pixel_size"):
        optics.spatial_frequencies((4, 4), bad)


# --------------------------------------------------------------------------- aberrations
def test_chi_is_kirkland_with_reversed_defocus():
    qy, qx = grids()
    lam = optics.wavelength(200)
    q = np.hypot(qy.numpy(), qx.numpy())
    for df in (-3000.0, 0.0, 1500.0):
        chi = optics.aberration_function(qy, qx, lam, df, cs=1.2)
        np.testing.assert_allclose(chi.numpy(), kirkland_chi(q, lam, -df, 1.2), rtol=1e-12,
                                   atol=1e-12)


def test_chi_batched_over_defocus():
    qy, qx = grids()
    lam = optics.wavelength(300)
    dfs = torch.tensor([-2000.0, 100.0, 5000.0], dtype=torch.float64)
    chi = optics.aberration_function(qy, qx, lam, dfs, cs=0.5)
    assert chi.shape == (3,) + qy.shape
    for k, df in enumerate(dfs.tolist()):
        np.testing.assert_allclose(chi[k].numpy(),
                                   optics.aberration_function(qy, qx, lam, df, cs=0.5).numpy())


def test_positive_cs_balanced_by_underfocus():
    # Scherzer: chi is stationary at larger q for df < 0 when Cs > 0
    qy, qx = grids((64, 64), 0.2)
    lam = optics.wavelength(200)
    chi_under = optics.aberration_function(qy, qx, lam, -60.0, cs=1.0)
    chi_over = optics.aberration_function(qy, qx, lam, 60.0, cs=1.0)
    assert float(chi_under.abs().max()) < float(chi_over.abs().max())


def test_astigmatism_definition():
    lam = optics.wavelength(200)
    df, A, alpha = 1000.0, 300.0, 0.4
    r = torch.linspace(0.01, 0.2, 7, dtype=torch.float64)
    for theta, eff in ((alpha, df + A), (alpha + math.pi / 2, df - A), (alpha + math.pi, df + A)):
        qx, qy = r * math.cos(theta), r * math.sin(theta)
        chi = optics.aberration_function(qy, qx, lam, df, astigmatism=A, astigmatism_angle=alpha)
        ref = optics.aberration_function(qy, qx, lam, eff)
        np.testing.assert_allclose(chi.numpy(), ref.numpy(), rtol=1e-12)
    # per-image astigmatism tensors
    qy, qx = grids()
    t64 = dict(dtype=torch.float64)
    chi = optics.aberration_function(qy, qx, lam, torch.tensor([0.0, 10.0], **t64),
                                     astigmatism=torch.tensor([50.0, -20.0], **t64),
                                     astigmatism_angle=torch.tensor([0.1, 1.0], **t64))
    assert chi.shape == (2,) + qy.shape
    for k, (df, a, al) in enumerate([(0.0, 50.0, 0.1), (10.0, -20.0, 1.0)]):
        ref = optics.aberration_function(qy, qx, lam, df, astigmatism=a, astigmatism_angle=al)
        torch.testing.assert_close(chi[k], ref)


# --------------------------------------------------------------------------- envelope
def test_envelope_bounds_and_limits():
    qy, qx = grids((64, 64), 1.0)
    lam = optics.wavelength(200)
    q = np.hypot(qy.numpy(), qx.numpy())
    df, cs, th, D = 2e4, 1.0, 0.05, 800.0
    E = optics.coherence_envelope(qy, qx, lam, df, cs, th, D).numpy()
    assert E.max() <= 1.0 and E.min() > 0.0
    assert E[0, 0] == 1.0
    # pure temporal / pure spatial (independent numpy forms of the textbook envelopes)
    Et_ref = np.exp(-0.5 * (math.pi * lam * D) ** 2 * q**4)
    th_rad = th * 1e-3
    Es_ref = np.exp(-(math.pi * th_rad / lam) ** 2
                    * (cs * 1e6 * lam**3 * q**3 + df * lam * q) ** 2)
    Et = optics.coherence_envelope(qy, qx, lam, df, cs, 0.0, D).numpy()
    Es = optics.coherence_envelope(qy, qx, lam, df, cs, th, 0.0).numpy()
    np.testing.assert_allclose(Et, Et_ref, rtol=1e-12)
    np.testing.assert_allclose(Es, Es_ref, rtol=1e-12, atol=1e-300)
    # both terms damp; the cross term u only softens the product
    assert np.all(E >= Et * Es - 1e-15)
    # more divergence / more focal spread damp more
    E2 = optics.coherence_envelope(qy, qx, lam, df, cs, 2 * th, D).numpy()
    assert np.all(E2 <= E + 1e-15)


def test_envelope_symmetric_in_defocus_without_cs():
    qy, qx = grids()
    lam = optics.wavelength(200)
    a = optics.coherence_envelope(qy, qx, lam, 3e4, 0.0, 0.1, 500.0)
    b = optics.coherence_envelope(qy, qx, lam, -3e4, 0.0, 0.1, 500.0)
    torch.testing.assert_close(a, b)


def test_envelope_bad_input():
    qy, qx = grids()
    with pytest.raises(ValueError, match="theta_c"):
        optics.coherence_envelope(qy, qx, 0.0025, 0.0, 1.0, -0.1, 0.0)
    with pytest.raises(ValueError, match="defocus_spread"):
        optics.coherence_envelope(qy, qx, 0.0025, 0.0, 1.0, 0.1, -5.0)
    with pytest.raises(ValueError, match="wavelength"):
        optics.coherence_envelope(qy, qx, 200.0, 0.0, 1.0, 0.1, 5.0)


# --------------------------------------------------------------------------- aperture
def test_aperture_soft_edge():
    qy, qx = grids((128, 128), 0.5)
    lam = optics.wavelength(200)
    alpha = np.hypot(qy.numpy(), qx.numpy()) * lam * 1e3  # mrad
    a, w = 2.0, 0.4
    ap = optics.objective_aperture(qy, qx, lam, a, edge_width=w).numpy()
    assert np.all(ap[alpha <= a - w / 2] == 1.0)
    assert np.all(ap[alpha >= a + w / 2] == 0.0)
    edge = (alpha > a - w / 2) & (alpha < a + w / 2)
    assert edge.any() and np.all((ap[edge] >= 0) & (ap[edge] <= 1))
    # monotone in angle
    order = np.argsort(alpha.ravel())
    assert np.all(np.diff(ap.ravel()[order]) <= 1e-12)
    hard = optics.objective_aperture(qy, qx, lam, a, edge_width=0.0).numpy()
    np.testing.assert_array_equal(hard, (alpha <= a).astype(float))
    with pytest.raises(ValueError, match="semi_angle"):
        optics.objective_aperture(qy, qx, lam, 0.0)
    with pytest.raises(ValueError, match="edge_width"):
        optics.objective_aperture(qy, qx, lam, 1.0, edge_width=-1.0)


# --------------------------------------------------------------------------- transfer
def test_transfer_function_combines_parts():
    qy, qx = grids()
    lam = optics.wavelength(200)
    dfs = torch.tensor([-500.0, 700.0], dtype=torch.float64)
    T = optics.transfer_function(qy, qx, lam, dfs, cs=1.0, theta_c=0.2, defocus_spread=300.0,
                                 astigmatism=20.0, astigmatism_angle=0.3, aperture=3.0)
    assert T.shape == (2,) + qy.shape and T.dtype == torch.complex128
    chi = optics.aberration_function(qy, qx, lam, dfs, 1.0, 20.0, 0.3)
    E = optics.coherence_envelope(qy, qx, lam, dfs, 1.0, 0.2, 300.0)
    A = optics.objective_aperture(qy, qx, lam, 3.0)
    torch.testing.assert_close(T, (E * A) * torch.exp(-1j * chi))
    T32 = optics.transfer_function(*grids(dtype=torch.float32), lam, 100.0)
    assert T32.shape == (1, 32, 24) and T32.dtype == torch.complex64


def test_transfer_function_differentiable():
    qy, qx = grids((8, 8), 2.0)
    lam = optics.wavelength(200)
    df = torch.tensor([300.0, -200.0], dtype=torch.float64, requires_grad=True)
    th = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    A = torch.tensor([5.0, 9.0], dtype=torch.float64, requires_grad=True)
    ang = torch.tensor([0.2, 0.7], dtype=torch.float64, requires_grad=True)

    def f(df, th, A, ang):
        T = optics.transfer_function(qy, qx, lam, df, cs=1.0, theta_c=th, defocus_spread=100.0,
                                     astigmatism=A, astigmatism_angle=ang)
        return torch.view_as_real(T)

    assert torch.autograd.gradcheck(f, (df, th, A, ang))
