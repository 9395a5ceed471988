"""Simulated focal series: the forward model wrapped as a calibrated signal."""

from __future__ import annotations

import numpy as np

__all__ = ["simulate_focal_series"]


def _as_array(x, name):
    """Array and pixel size (nm or None) from an array or a HyperSpy signal."""
    if x is None:
        return None, None
    if hasattr(x, "axes_manager"):
        if x.axes_manager.navigation_dimension:
            raise ValueError(f"{name} must be a single 2-D map, not a stack (navigation shape "
                             f"{x.axes_manager.navigation_shape}).")
        from hyperspy_lorentz.io.calibration import pixel_size_nm

        size, _ = pixel_size_nm(x)
        data = x.data.compute() if x._lazy else x.data
        return np.asarray(data, dtype=float), size
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (H, W), got shape {arr.shape}.")
    return arr, None


def simulate_focal_series(
    phase,
    amplitude=None,
    defocus=(-1000.0, 0.0, 1000.0),
    scale=None,
    beam_energy=200.0,
    cs=1.0,
    theta_c=0.01,
    defocus_spread=500.0,
    astigmatism=None,
    shifts=None,
    dose=None,
    noise=None,
    seed=None,
    padding=None,
):
    """Simulate a Lorentz TEM through-focus series of a known exit wave.

    Images are ``I_k = |F^-1[F[A exp(i phi)] T_k]|^2`` with the transfer function
    of :mod:`hyperspy_lorentz.physics.optics` (partial coherence included), then
    optional drift, Poisson (``dose``) or relative Gaussian (``noise``) noise.

    Parameters
    ----------
    phase : array-like (H, W) or Signal2D
        Exit-wave phase, rad.
    amplitude : array-like (H, W), Signal2D or None
        Exit-wave amplitude (``None``: uniform 1).
    defocus : sequence of float
        Defocus of each image, nm, positive for overfocus.
    scale : float or None
        Pixel size, nm. ``None`` takes it from ``phase`` when it is a calibrated
        signal.
    beam_energy : float
        Accelerating voltage, keV.
    cs : float
        Spherical aberration, mm.
    theta_c : float
        Beam divergence semi-angle, mrad.
    defocus_spread : float
        Defocus spread, nm.
    astigmatism : (float, float) or None
        Two-fold astigmatism ``(magnitude nm, azimuth degrees)``.
    shifts : array-like (N, 2) or None
        Drift of each image, pixels, ``(dy, dx)``; positive moves the image
        content towards +y / +x.
    dose : float or None
        Electrons per pixel (mean); applies Poisson noise, and the images are in
        electron counts.
    noise : float or None
        Relative Gaussian noise of the AD-LTEM paper, ``I ~ N(I, noise * I)``
        (0.1 for "10 %"). May be combined with neither or with ``dose``.
    seed : int or None
        Seed of the noise, for repeatable series.
    padding : {None, "reflect", "edge"}
        Padding of the exit wave against wrap-around of the periodic FFT
        propagation (see :class:`~hyperspy_lorentz.physics.forward.ForwardModel`);
        ``None`` simulates a periodic specimen.

    Returns
    -------
    LorentzFocalSeries
        Calibrated: ``defocus`` navigation axis (nm), pixel size (nm), beam energy
        and microscope parameters in the metadata. The ground truth (phase,
        amplitude, defocus, shifts, dose, noise) is kept in
        ``metadata.Simulation``.

    Examples
    --------
    >>> import numpy as np, hyperspy_lorentz as hl
    >>> y, x = np.mgrid[-64:64, -64:64]
    >>> phi = 2 * np.exp(-(x**2 + y**2) / 200)
    >>> s = hl.simulate_focal_series(phi, defocus=[-500, 0, 500], scale=5.0)
    >>> s.axes_manager["defocus"].axis
    array([-500.,    0.,  500.])
    """
    from hyperspy_lorentz.physics.forward import simulate_images
    from hyperspy_lorentz.signals.focal_series import LorentzFocalSeries

    phi, size_from_signal = _as_array(phase, "phase")
    amp, _ = _as_array(amplitude, "amplitude")
    if scale is None:
        scale = size_from_signal
    if scale is None:
        raise ValueError("Give the pixel size: scale=... (nm per pixel).")
    scale = float(scale)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale (pixel size) must be a positive number of nm, not {scale}.")
    defocus = np.atleast_1d(np.asarray(defocus, dtype=float))
    if defocus.ndim != 1 or not np.all(np.isfinite(defocus)):
        raise ValueError("defocus must be a sequence of finite values in nm.")
    if dose is not None and (not np.isfinite(dose) or dose <= 0):
        raise ValueError(f"dose must be a positive number of electrons per pixel, not {dose}.")
    if noise is not None and (not np.isfinite(noise) or noise < 0):
        raise ValueError(f"noise must be a non-negative fraction (0.1 for 10 %), not {noise}.")
    astig, astig_angle = (0.0, 0.0) if astigmatism is None else (float(astigmatism[0]), float(astigmatism[1]))
    if shifts is not None:
        shifts = np.asarray(shifts, dtype=float)
        if shifts.shape != (defocus.size, 2):
            raise ValueError(f"shifts must have shape ({defocus.size}, 2) (dy, dx per image), got {shifts.shape}.")

    images = simulate_images(
        phi,
        amp,
        defocus,
        pixel_size=scale,
        beam_energy=beam_energy,
        cs=cs,
        theta_c=theta_c,
        defocus_spread=defocus_spread,
        astigmatism=astig,
        astigmatism_angle=np.deg2rad(astig_angle),
        shifts=shifts,
        padding=padding,
    )
    images = np.asarray(images, dtype=float)
    rng = np.random.default_rng(seed)
    if noise:
        images = rng.normal(images, noise * np.abs(images))
    if dose is not None:
        images = rng.poisson(np.clip(images, 0, None) * dose).astype(float)

    order = np.argsort(defocus)
    if not np.array_equal(order, np.arange(defocus.size)) and not np.array_equal(order, np.arange(defocus.size)[::-1]):
        images = images[order]
        defocus = defocus[order]
        shifts = None if shifts is None else shifts[order]

    s = LorentzFocalSeries(images.astype(np.float32))
    s.metadata.General.title = "Simulated focal series"
    s.set_defocus(defocus, units="nm")
    s.set_microscope_parameters(
        beam_energy=beam_energy, cs=cs, theta_c=theta_c, defocus_spread=defocus_spread,
        pixel_size=scale, astigmatism=astig, astigmatism_angle=astig_angle,
    )
    if dose is not None:
        s.metadata.set_item("Signal.Noise_properties.Variance_linear_model.gain_factor", 1.0)
        s.metadata.set_item("Signal.Noise_properties.Variance_linear_model.gain_offset", 0.0)
    s.metadata.set_item(
        "Simulation",
        {
            "phase": phi,
            "amplitude": np.ones_like(phi) if amp is None else amp,
            "defocus": defocus,
            "shifts": np.zeros((defocus.size, 2)) if shifts is None else shifts,
            "dose": dose,
            "noise": noise,
            "seed": seed,
            "units": "phase rad, defocus nm, shifts px (dy, dx), dose e-/pixel",
        },
    )
    return s
