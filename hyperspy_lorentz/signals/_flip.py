"""Flip/unflip separation of magnetic and electrostatic phase, for signals.

Turning the specimen over reverses the sign of its magnetic phase and mirrors
the images, while the electrostatic phase stays. The flipped series is mirrored
and registered onto the unflipped one (kernels of
:mod:`hyperspy_lorentz.reconstruction.flip`), both are reconstructed with the
same method, and half their difference and half their sum are returned.
"""

from __future__ import annotations

import numpy as np


def reconstruct_flip_pair(
    unflipped,
    flipped,
    *,
    method,
    show_progressbar=None,
    flip_axis="x",
    rotation=False,
    upsample=20,
    interpolation="spline",
    **kwargs,
):
    """Return ``(magnetic, electrostatic)`` ElectronPhase signals; see reconstruct_phase."""
    from hyperspy_lorentz.reconstruction.flip import (
        check_flipped_series,
        register_flipped,
        separate_phases,
    )
    from hyperspy_lorentz.signals.focal_series import LorentzFocalSeries

    if not isinstance(flipped, LorentzFocalSeries):
        raise ValueError(
            "flipped must be a LorentzFocalSeries (the same specimen turned upside down); "
            "make one with s.set_signal_type('lorentz_focal_series')."
        )
    for s, name in ((unflipped, "This series"), (flipped, "The flipped series")):
        if s.axes_manager.navigation_dimension > 1:
            raise ValueError(
                f"{name} has navigation axes besides 'defocus'; flip/unflip separation works "
                "on one focal series at a time: select one, e.g. s.inav[:, i]."
            )
        if s._lazy:
            raise ValueError(f"{name} is lazy; load it into memory with s.compute() first.")
    p_u = unflipped._series_inputs(single_image=(method == "sitie"))
    try:
        p_f = flipped._series_inputs(single_image=(method == "sitie"))
    except ValueError as exc:  # say which of the two series is at fault
        raise ValueError(f"The flipped series (flipped=...) cannot be used: {exc}") from None
    check_flipped_series(
        unflipped.data.shape, flipped.data.shape, defocus=p_u["defocus_nm"], flipped_defocus=p_f["defocus_nm"]
    )
    if not np.isclose(p_u["pixel_size_nm"], p_f["pixel_size_nm"], rtol=1e-3):
        raise ValueError(
            f"The pixel sizes differ ({p_u['pixel_size_nm']} nm and {p_f['pixel_size_nm']} nm); "
            "rebin or recalibrate the flipped series to match."
        )

    from hyperspy_lorentz.signals._series import series_array

    ref = series_array(unflipped)
    flp = series_array(flipped)
    aligned, reg = register_flipped(
        ref, flp, flip_axis=flip_axis, rotation=rotation, upsample=upsample,
        defocus=p_u["defocus_nm"], flipped_defocus=p_f["defocus_nm"], interpolation=interpolation,
    )
    aligned_series = unflipped._deepcopy_with_new_data(
        np.moveaxis(np.asarray(aligned, dtype=float), -3, unflipped._defocus_axis().index_in_array)
        if aligned.ndim == 3 else np.asarray(aligned, dtype=float)
    )
    # Nothing else of the unflipped signal is carried over to the flipped one.
    aligned_series.metadata.General.title = "Flipped series, aligned"
    # register_flipped keeps each aligned image within the range of the recorded
    # one (its interpolation cannot make valid counts negative); check it before
    # the first, possibly long, reconstruction rather than after it.
    aligned_series._check_images()

    phase_u = unflipped.reconstruct_phase(method=method, show_progressbar=show_progressbar, **kwargs)
    # One linear operator for both series: the separation is a difference, so a
    # cut-off or boundary chosen apart for each series leaks the (often larger)
    # electrostatic phase into the magnetic one. The TIE and SITIE take the
    # unflipped series' own choices (those the user did not set).
    shared = _shared_settings(method, phase_u, kwargs)
    phase_f = aligned_series.reconstruct_phase(method=method, show_progressbar=show_progressbar,
                                               **kwargs, **shared)
    magnetic, electrostatic = separate_phases(phase_u.data, phase_f.data)

    flip_record = {
        "flip_axis": flip_axis,
        "shared_settings": sorted(shared),
        "drift": np.asarray(reg.get("drift", (np.nan, np.nan)), dtype=float),
        "registration_shift": np.asarray(reg.get("shift", (np.nan, np.nan)), dtype=float),
        "registration_rotation": float(reg.get("rotation", 0.0)),
        "estimated_on": str(reg.get("estimated_on", "")),
        "registration_correlation": float(reg.get("correlation", np.nan)),
    }
    out = []
    for data, title in ((magnetic, "Magnetic phase"), (electrostatic, "Electrostatic phase")):
        s = phase_u._deepcopy_with_new_data(np.asarray(data))
        s.metadata.General.title = f"{title} ({method.upper()}, flip/unflip)"
        s.metadata.Signal.Reconstruction.add_dictionary({"flip": flip_record})
        out.append(s)
    return tuple(out)


#: Settings of the unflipped reconstruction reused for the flipped one, per method.
SHARED_SETTINGS = {"tie": ("qc", "boundary"), "sitie": ("qc",)}


def _shared_settings(method, phase_u, kwargs):
    """The automatic choices of the unflipped reconstruction that the flipped one reuses."""
    record = phase_u.metadata.Signal.Reconstruction
    out = {}
    for key in SHARED_SETTINGS.get(method, ()):
        if kwargs.get(key) is None and record.has_item(key):
            value = record.get_item(key)
            out[key] = tuple(value) if isinstance(value, (list, tuple, np.ndarray)) else value
    return out
