"""Fixtures for the reconstruction tests.

The focal series are simulated with a small, independent NumPy Fresnel
propagator (not the package's forward model), so it is an independent oracle
for the sign and scale conventions of docs/conventions.rst: the image wave at
defocus ``df`` (nm, positive = overfocus = propagation downstream) is

    psi_df = ifft2( fft2(A exp(i phi)) * exp(-i pi lambda df q^2) ).
"""

from types import SimpleNamespace

import numpy as np
import pytest

#: Relativistic electron wavelength at 200 kV, nm.
WAVELENGTH_200KV = 0.0025079


def fresnel_intensity(phase, amplitude=None, defocus=0.0, pixel_size=5.0,
                      wavelength=WAVELENGTH_200KV):
    """Intensity of the exit wave ``A exp(i phase)`` at ``defocus`` (nm)."""
    phase = np.asarray(phase, dtype=float)
    amp = np.ones_like(phase) if amplitude is None else np.asarray(amplitude, float)
    psi = amp * np.exp(1j * phase)
    qy = np.fft.fftfreq(phase.shape[0], d=pixel_size)[:, None]
    qx = np.fft.fftfreq(phase.shape[1], d=pixel_size)[None, :]
    kernel = np.exp(-1j * np.pi * wavelength * defocus * (qx**2 + qy**2))
    return np.abs(np.fft.ifft2(np.fft.fft2(psi) * kernel)) ** 2


def focal_series(phase, defoci, amplitude=None, pixel_size=5.0,
                 wavelength=WAVELENGTH_200KV):
    """Stack of intensities (N, H, W) at the given defocus values (nm)."""
    return np.array([
        fresnel_intensity(phase, amplitude, d, pixel_size, wavelength)
        for d in defoci
    ])


def gaussian(n=128, pixel_size=5.0, amplitude=1.0, sigma=60.0, center=(0.0, 0.0)):
    """Gaussian bump (rad) of width ``sigma`` (nm) centred at ``center`` (y, x) nm
    from the image centre."""
    y, x = (np.mgrid[:n, :n] - n / 2) * pixel_size
    return amplitude * np.exp(
        -((y - center[0]) ** 2 + (x - center[1]) ** 2) / (2 * sigma**2)
    )


def fourier_shift(field, shift):
    """Periodic sub-pixel shift of a smooth real field by ``(dy, dx)`` px."""
    from scipy import ndimage

    return np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(field), shift)).real


@pytest.fixture
def sim():
    """Simulation helpers: ``intensity`` (the Fresnel propagator), ``series``,
    ``gaussian``, ``fourier_shift`` and ``wavelength`` (nm, 200 kV)."""
    return SimpleNamespace(
        intensity=fresnel_intensity,
        series=focal_series,
        gaussian=gaussian,
        fourier_shift=fourier_shift,
        wavelength=WAVELENGTH_200KV,
    )


@pytest.fixture
def rng():
    return np.random.default_rng(20240607)
