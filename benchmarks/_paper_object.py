"""Loader and simulator for the AD-LTEM paper's test object (benchmarks only).

The object (Zhou, Cherukara & Phatak, npj Comput. Mater. 7, 141 (2021)) lives in
``../shared/data/ad_ltem_paper`` beside the repository (or
``$HYPERSPY_LORENTZ_SHARED/data/ad_ltem_paper``); it is read from there and never
copied into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

#: Simulation settings of the paper's notebooks.
PIXEL_SIZE = 5.0  # nm
BEAM_ENERGY = 200.0  # keV
CS = 1.0  # mm
THETA_C = 0.01  # mrad
DEFOCUS_SPREAD = 500.0  # nm


def paper_object_dir():
    """Directory of ``design_tphi.tiff`` / ``design_amp.tiff``."""
    env = os.environ.get("HYPERSPY_LORENTZ_SHARED")
    root = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"
    return root / "data" / "ad_ltem_paper"


def load_paper_object():
    """The paper's phase (rad) and amplitude, 512 x 512 float64 arrays.

    Raises
    ------
    FileNotFoundError
        If the shared data directory is absent.
    """
    import tifffile

    d = paper_object_dir()
    ph, amp = d / "design_tphi.tiff", d / "design_amp.tiff"
    if not ph.exists() or not amp.exists():
        raise FileNotFoundError(
            f"the paper's test object was not found in {d}; it lives in ../shared beside "
            f"the repository (or set HYPERSPY_LORENTZ_SHARED)")
    return (np.asarray(tifffile.imread(ph), dtype=np.float64),
            np.asarray(tifffile.imread(amp), dtype=np.float64))


def simulate_series(phase, amplitude, defocus, noise, seed=0, shifts=None):
    """Focal series with the paper's settings and noise ``I ~ Normal(I, s I)``.

    Parameters
    ----------
    phase, amplitude : ndarray
        Exit wave.
    defocus : sequence of float
        Defocus, nm.
    noise : float
        Relative noise ``s`` (0.1 for the paper's "10 %").
    seed : int
        Seed of the noise.
    shifts : array_like (N, 2), optional
        Image drift ``(dy, dx)`` in pixels.
    """
    from hyperspy_lorentz.physics.forward import simulate_images

    images = simulate_images(phase, amplitude, defocus, PIXEL_SIZE, beam_energy=BEAM_ENERGY,
                             cs=CS, theta_c=THETA_C, defocus_spread=DEFOCUS_SPREAD,
                             shifts=shifts)
    if noise:
        images = np.random.default_rng(seed).normal(images, noise * images)
    return images
