"""The defocus sign of PyLorentz / the AD-LTEM notebooks against ours.

PyLorentz (and the AD-LTEM paper's notebooks, which use its microscope model)
write the objective transfer function in Kirkland's form,

    T(q) = exp(-i chi(q)) E(q),   chi = pi lambda q^2 (Cs lambda^2 q^2 / 2 - df'),
    E = exp(-[(pi lambda D)^2 q^4 / 2 + (pi theta / lambda)^2 (Cs lambda^3 q^3 - df' lambda q)^2] / u),
    u = 1 + 2 (pi theta D)^2 q^2,

(Kirkland, *Advanced Computing in Electron Microscopy*, 2nd ed., sec. 3.3;
the quasi-coherent envelope as in De Graef, *Introduction to Conventional TEM*,
ch. 10). Written here from those formulas in NumPy -- not from PyLorentz's
code -- the image of that model at ``df'`` must be ours at ``-df'``
(:ref:`conventions`), to float64 round-off. PyLorentz labels its image at
``df' < 0`` "under": that image is ours at ``+|df'|``, an *overfocus* image,
in which a positive phase bump (a converging lens) is bright.
"""

import math

import numpy as np
import pytest

from hyperspy_lorentz.physics.forward import simulate_images

# CODATA 2018 (SI-exact h, e, c), as hyperspy_lorentz.physics.optics uses: the
# check is of the sign of the defocus, not of the constants (a 6e-10 relative
# change of lambda moves chi by ~1e-7 rad at 1 mm defocus).
H, E, M0, C = 6.62607015e-34, 1.602176634e-19, 9.1093837015e-31, 299792458.0

SHAPE = (96, 128)
PIXEL = 2.5  # nm
KEV = 200.0
CS_MM = 1.0
THETA_MRAD = 0.01
SPREAD_NM = 500.0


def wavelength_nm(kev):
    """Relativistic wavelength, h / sqrt(2 m0 e V (1 + e V / (2 m0 c^2)))."""
    v = kev * 1e3
    return H / math.sqrt(2 * M0 * E * v * (1 + E * v / (2 * M0 * C**2))) * 1e9


def kirkland_images(psi, df_kirkland, pixel, kev, cs_mm, theta_mrad, spread_nm):
    """Images |F^-1[F[psi] exp(-i chi) E]|^2 of Kirkland's form, df' > 0 = underfocus."""
    lam = wavelength_nm(kev)
    qy = np.fft.fftfreq(psi.shape[0], d=pixel)
    qx = np.fft.fftfreq(psi.shape[1], d=pixel)
    q2 = qy[:, None] ** 2 + qx[None, :] ** 2
    q = np.sqrt(q2)
    cs = cs_mm * 1e6  # nm
    theta = theta_mrad * 1e-3  # rad
    spectrum = np.fft.fft2(psi)
    out = []
    for dfk in np.atleast_1d(df_kirkland):
        chi = math.pi * lam * q2 * (0.5 * cs * lam**2 * q2 - dfk)
        u = 1 + 2 * (math.pi * theta * spread_nm) ** 2 * q2
        env = np.exp(-((math.pi * lam * spread_nm) ** 2 * q2**2 / 2
                       + (math.pi * theta / lam) ** 2 * (cs * lam**3 * q**3 - dfk * lam * q) ** 2) / u)
        out.append(np.abs(np.fft.ifft2(spectrum * np.exp(-1j * chi) * env)) ** 2)
    return np.array(out)


def _exit_wave(seed=0):
    """A smooth, periodic phase (~1 rad) and amplitude (a few % of absorption)."""
    rng = np.random.default_rng(seed)
    qy = np.fft.fftfreq(SHAPE[0])[:, None]
    qx = np.fft.fftfreq(SHAPE[1])[None, :]
    low = np.exp(-(qy**2 + qx**2) / (2 * 0.04**2))
    phase = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal(SHAPE)) * low))
    phase *= 1.0 / phase.std()
    amp = 1.0 - 0.05 * np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal(SHAPE)) * low)) ** 2
    return phase, amp


def _relative_difference(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("df_kirkland", [2e4, -2e4, 3e5, -3e5, 1.2e6, -1.2e6])
def test_kirkland_form_at_df_is_ours_at_minus_df(df_kirkland):
    phase, amp = _exit_wave()
    theirs = kirkland_images(amp * np.exp(1j * phase), df_kirkland, PIXEL, KEV, CS_MM,
                             THETA_MRAD, SPREAD_NM)
    ours = simulate_images(phase, amp, [-df_kirkland], PIXEL, KEV, cs=CS_MM, theta_c=THETA_MRAD,
                           defocus_spread=SPREAD_NM, padding=None, dtype=np.float64)
    assert ours.dtype == np.float64
    assert _relative_difference(ours, theirs) < 1e-9
    # and not at +df: the sign matters (the test would see a wrong sign)
    same_sign = simulate_images(phase, amp, [df_kirkland], PIXEL, KEV, cs=CS_MM, theta_c=THETA_MRAD,
                                defocus_spread=SPREAD_NM, padding=None, dtype=np.float64)
    assert _relative_difference(same_sign, theirs) > 1e-3


def test_pylorentz_series_under_in_over_is_ours_over_in_under():
    """PyLorentz's (under, in, over) = its (-d, 0, +d) = ours (+d, 0, -d)."""
    phase, amp = _exit_wave(seed=1)
    d = 2e5
    pylorentz_values = np.array([-d, 0.0, d])  # labelled under, in, over by PyLorentz
    theirs = kirkland_images(amp * np.exp(1j * phase), pylorentz_values, PIXEL, KEV, CS_MM,
                             THETA_MRAD, SPREAD_NM)
    ours = simulate_images(phase, amp, -pylorentz_values, PIXEL, KEV, cs=CS_MM, theta_c=THETA_MRAD,
                           defocus_spread=SPREAD_NM, padding=None, dtype=np.float64)
    assert _relative_difference(ours, theirs) < 1e-9


def _bump(amplitude=0.5, sigma_px=6.0):
    y, x = np.indices(SHAPE, dtype=float)
    r2 = (y - SHAPE[0] / 2) ** 2 + (x - SHAPE[1] / 2) ** 2
    return amplitude * np.exp(-r2 / (2 * sigma_px**2))


@pytest.mark.parametrize("df", [1e4, 1e5])
def test_our_overfocus_makes_a_positive_phase_bump_bright(df):
    """A phase maximum is a converging lens: bright downstream, i.e. in overfocus (df > 0)."""
    phase = _bump()
    over, under = simulate_images(phase, None, [df, -df], PIXEL, KEV, cs=CS_MM, theta_c=THETA_MRAD,
                                  defocus_spread=SPREAD_NM, padding=None, dtype=np.float64)
    cy, cx = SHAPE[0] // 2, SHAPE[1] // 2
    # first order: I(df) = 1 - (lambda df / 2 pi) lap(phi), lap(phi) < 0 at the top of the bump
    lam = wavelength_nm(KEV)
    lap = -phase[cy, cx] * 2 / (6.0 * PIXEL) ** 2
    bright = -lam * df / (2 * math.pi) * lap  # 0.018 at 10 um, 0.18 at 100 um
    centre = (slice(cy - 2, cy + 3), slice(cx - 2, cx + 3))
    assert over[centre].mean() > 1 + bright / 2
    assert under[centre].mean() < 1 - bright / 2
    if df < 5e4:  # where the first order holds
        assert over[cy, cx] - 1 == pytest.approx(bright, rel=0.05)
        assert under[cy, cx] - 1 == pytest.approx(-bright, rel=0.05)


def test_pylorentz_under_image_is_our_overfocus_image():
    """PyLorentz's "under" image (its df' = -d) shows the phase bump bright: it is overfocus."""
    phase = _bump()
    d = 1e5
    (under_label,) = kirkland_images(np.exp(1j * phase), [-d], PIXEL, KEV, CS_MM, THETA_MRAD,
                                     SPREAD_NM)
    (ours_over,) = simulate_images(phase, None, [d], PIXEL, KEV, cs=CS_MM, theta_c=THETA_MRAD,
                                   defocus_spread=SPREAD_NM, padding=None, dtype=np.float64)
    cy, cx = SHAPE[0] // 2, SHAPE[1] // 2
    assert under_label[cy, cx] > 1.02
    assert _relative_difference(ours_over, under_label) < 1e-9
