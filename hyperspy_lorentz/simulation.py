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
        return np.ascontiguousarray(data, dtype=float), size
    arr = np.ascontiguousarray(x, dtype=float)  # views such as np.flip(...) included
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (H, W), got shape {arr.shape}.")
    return arr, None


_PADDINGS = ("edge", "reflect", "periodic", None)


def _window(window, shape):
    """``(top, left, height, width)`` of the field of view, checked against ``shape``."""
    h, w = shape
    if window is None:
        return (0, 0, h, w)
    try:
        top, left, wh, ww = (int(v) for v in window)
    except (TypeError, ValueError):
        raise ValueError(f"window must be (top, left, height, width) in pixels, not {window!r}.") from None
    if any(int(v) != v for v in window):
        raise ValueError(f"window must hold whole pixels, not {window!r}.")
    if wh < 1 or ww < 1 or top < 0 or left < 0 or top + wh > h or left + ww > w:
        raise ValueError(
            f"window {tuple(window)} (top, left, height, width) does not fit in the {h} x {w} "
            "phase: the exit wave must cover the whole field of view."
        )
    return (top, left, wh, ww)


def _default_pad_width(shape, scale, beam_energy, defocus, cs, theta_c, defocus_spread, shifts):
    """Pixels of padding per side: the Fresnel spread of the series (and the drift), at
    least a quarter of the image."""
    from hyperspy_lorentz.reconstruction.canvas import fresnel_spread

    spread = fresnel_spread(scale, beam_energy, defocus, cs, theta_c, defocus_spread)
    drift = 0.0 if shifts is None else float(np.abs(shifts).max(initial=0.0))
    return tuple(max(int(np.ceil(s / scale + drift)) + 1, (n + 3) // 4) for s, n in zip(spread, shape))


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
    padding="edge",
    pad_width=None,
    window=None,
):
    """Simulate a Lorentz TEM through-focus series of a known exit wave.

    Images are ``I_k = |F^-1[F[A exp(i phi)] T_k]|^2`` with the transfer function
    of :mod:`hyperspy_lorentz.physics.optics` (partial coherence included), then
    optional drift, Poisson (``dose``) or relative Gaussian (``noise``) noise.

    **Boundaries.** The default treats the exit wave as an *isolated specimen*:
    beyond the array the phase and amplitude go on as at its edge (vacuum around
    an element, the ``padding=2`` default of
    :func:`~hyperspy_lorentz.physics.magnetisation.magnetic_phase`), so nothing
    wraps around the frame. A texture that repeats across the array (a periodic
    cell, ``magnetic_phase(..., padding=1)``) needs ``padding="periodic"``. For a
    micrograph-like *window* onto a specimen that goes on beyond the field of
    view, give the exit wave over a larger field and the field of view as
    ``window`` (see :mod:`hyperspy_lorentz.data`).

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
    padding : {"edge", "reflect", "periodic", None}
        Boundaries of the propagation. ``"edge"`` (default): the exit wave is
        extended by repeating its edge pixels before the (periodic) FFT
        propagation and the images are cropped back -- an isolated specimen with
        vacuum (constant phase) around it. ``"reflect"``: mirror extension.
        ``"periodic"`` (or ``None``): no padding, the exit wave is one period of
        an infinitely repeated specimen; right only when the phase really is
        periodic across the array (``magnetic_phase(..., padding=1)`` of a
        commensurate texture), otherwise the jump between opposite edges puts
        wrap-around fringes along the frame.
    pad_width : int or (int, int) or None
        Padding per side, pixels, for ``"edge"`` / ``"reflect"``. ``None``: the
        lateral Fresnel spread of the series
        (:func:`~hyperspy_lorentz.reconstruction.canvas.fresnel_spread`) plus the
        largest drift, at least a quarter of the image.
    window : (int, int, int, int) or None
        Field of view ``(top, left, height, width)``, pixels, of the images within
        the ``phase`` / ``amplitude`` grid. The exit wave is propagated over the
        whole grid and the images are cropped to the window *after* propagation
        and drift, so specimen outside the field of view deflects electrons into
        it, as in a micrograph; noise is applied to the cropped images, and the
        truth in the metadata is cropped to the window. ``None``: the whole grid.

    Returns
    -------
    LorentzFocalSeries
        Calibrated: ``defocus`` navigation axis (nm), pixel size (nm), beam energy
        and microscope parameters in the metadata. The ground truth (phase,
        amplitude, defocus, shifts, dose, noise, padding, field of view) is
        kept in ``metadata.Simulation``; phase and amplitude are those of the
        field of view.

    Examples
    --------
    >>> import numpy as np, hyperspy_lorentz as hl
    >>> y, x = np.mgrid[-64:64, -64:64]
    >>> phi = 2 * np.exp(-(x**2 + y**2) / 200)
    >>> s = hl.simulate_focal_series(phi, defocus=[-50e3, 0, 50e3], scale=5.0)
    >>> s.axes_manager["defocus"].axis
    array([-50000.,      0.,  50000.])
    >>> s.metadata.Simulation.padding
    'edge'
    >>> big = 2 * np.exp(-(np.mgrid[-128:128, -128:128] ** 2).sum(0) / 200)
    >>> w = hl.simulate_focal_series(big, defocus=[-50e3, 50e3], scale=5.0,
    ...                              window=(64, 64, 128, 128))
    >>> w.data.shape, w.metadata.Simulation.phase.shape
    ((2, 128, 128), (128, 128))
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
    if padding not in _PADDINGS:
        raise ValueError(
            f"padding must be 'edge' (isolated specimen, the default), 'reflect' or 'periodic' "
            f"(None), not {padding!r}."
        )
    periodic = padding in (None, "periodic")
    if amp is not None and amp.shape != phi.shape:
        raise ValueError(f"amplitude must have the shape of the phase {phi.shape}, not {amp.shape}.")
    top, left, wh, ww = _window(window, phi.shape)
    astig, astig_angle = (0.0, 0.0) if astigmatism is None else (float(astigmatism[0]), float(astigmatism[1]))
    if shifts is not None:
        shifts = np.asarray(shifts, dtype=float)
        if shifts.shape != (defocus.size, 2):
            raise ValueError(f"shifts must have shape ({defocus.size}, 2) (dy, dx per image), got {shifts.shape}.")
        if not np.all(np.isfinite(shifts)):
            raise ValueError("shifts must be finite (pixels).")
    if periodic:
        if pad_width is not None:
            raise ValueError("pad_width needs padding='edge' or 'reflect'; a periodic specimen is not padded.")
    elif pad_width is None:
        pad_width = _default_pad_width(phi.shape, scale, beam_energy, defocus, cs, theta_c,
                                       defocus_spread, shifts)
        if padding == "reflect":  # a mirror cannot be wider than the image (FFT sizes round up)
            pad_width = tuple(min(p, n // 2) for p, n in zip(pad_width, phi.shape))

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
        padding=None if periodic else padding,
        pad_width=None if periodic else pad_width,
    )
    images = np.asarray(images, dtype=float)[:, top:top + wh, left:left + ww]
    phi = phi[top:top + wh, left:left + ww]
    amp = None if amp is None else amp[top:top + wh, left:left + ww]
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
            "padding": "periodic" if periodic else padding,
            "field_of_view": [top, left, wh, ww],
            "units": "phase rad, defocus nm, shifts px (dy, dx), dose e-/pixel, "
                     "field_of_view px (top, left, height, width) in the simulated field",
        },
    )
    return s
