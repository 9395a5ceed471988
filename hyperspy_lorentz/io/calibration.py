"""Read the beam energy and the pixel size of a loaded HyperSpy signal.

These functions only *read* a signal (its ``metadata`` and its signal axes); they
never modify it. They return the value in the units of :ref:`conventions`
(keV, nm) together with where it came from, so that the signal classes can tell
the user which calibration was used:

* ``"file"``: read from the signal as loaded (RosettaSciIO maps the vendor's
  calibration into ``metadata`` and the axes);
* ``None``: nothing usable was found (the value is ``None`` as well).

What RosettaSciIO gives for common vendor files (checked on the RosettaSciIO test
files):

==========================  =====================================  =====================================
file                        beam energy                            pixel size (signal axes)
==========================  =====================================  =====================================
Velox EMD (Thermo Fisher)   ``Optics.AccelerationVoltage`` (V)     ``BinaryResult.PixelSize`` (m), shown
                            mapped to keV                          in a compact unit such as ``pm``
DigitalMicrograph DM3/4     ``Microscope Info.Voltage`` (V)        ``ImageData.Calibrations`` in
                            mapped to keV                          ``nm``/``µm``; uncalibrated images
                                                                   have scale 1 and no unit
TIFF                        not stored                             resolution tags / ImageJ / DM tags
NCEM EMD                    ``microscope.voltage`` (often empty)   dims' units (``[]`` when none)
hspy / zspy                 as saved                               as saved
==========================  =====================================  =====================================
"""

from __future__ import annotations

import math
import re

import numpy as np

from hyperspy_lorentz.units import to_nm

__all__ = ["beam_energy_from_metadata", "pixel_size_nm"]

#: Axis units that mean "no calibration". ``"[]"`` is what the NCEM EMD reader
#: gives for dimensions saved without units.
_NO_UNITS = {"", "<undefined>", "[]", "none", "px", "pix", "pixel", "pixels"}

# Relative tolerance for "square pixels": vendors store one float per axis and
# RosettaSciIO may convert each axis separately (e.g. m -> pm), so allow rounding.
_SQUARE_RTOL = 1e-5

#: Largest beam energy read from a file, keV (the bound of ``set_microscope_parameters``).
MAX_BEAM_ENERGY_KEV = 10000.0
#: Values that say "not recorded" rather than give a wrong number.
_NOT_RECORDED = {"", "n/a", "na", "none", "null", "unknown", "-", "--", "?"}
# A decimal number as vendors write it; float() also takes '1_0', 'nan', 'infinity'.
_NUMBER_RE = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")


def beam_energy_from_metadata(signal):
    """Beam energy recorded in a signal's metadata.

    Reads ``metadata.Acquisition_instrument.TEM.beam_energy``, which HyperSpy
    defines in keV and which RosettaSciIO fills from the vendor's tags (Velox
    ``Optics.AccelerationVoltage``, DigitalMicrograph ``Microscope Info.Voltage``,
    TIA ``High tension``...). The signal is not modified.

    Parameters
    ----------
    signal : hyperspy.signal.BaseSignal
        A loaded signal.

    Returns
    -------
    energy : float or None
        The beam energy in keV, or None if it is not recorded (absent, None, an
        empty string or ``"n/a"``).
    source : {"file", None}
        ``"file"`` when a value was found, otherwise None.

    Raises
    ------
    ValueError
        If a value is recorded but is not a beam energy: not a number (text,
        a boolean, several values), not finite, not positive, or above
        10000 keV (``MAX_BEAM_ENERGY_KEV``; most often volts stored as keV). The
        message names the field and the fix,
        ``s.set_microscope_parameters(beam_energy=...)``.

    Examples
    --------
    >>> import hyperspy.api as hs, numpy as np
    >>> s = hs.signals.Signal2D(np.zeros((4, 4)))
    >>> beam_energy_from_metadata(s)
    (None, None)
    >>> s.metadata.set_item("Acquisition_instrument.TEM.beam_energy", 300)
    >>> beam_energy_from_metadata(s)
    (300.0, 'file')
    """
    md = signal.metadata
    key = "Acquisition_instrument.TEM.beam_energy"
    if not md.has_item(key):
        return None, None
    value = md.get_item(key)
    if isinstance(value, (bytes, np.bytes_)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple, np.ndarray)) and np.size(value) == 1:
        value = np.asarray(value, dtype=object).reshape(-1)[0]
    if value is None or (isinstance(value, str) and value.strip().lower() in _NOT_RECORDED) or (
            isinstance(value, (list, tuple, np.ndarray)) and np.size(value) == 0):
        return None, None
    field = f"metadata.{key}"
    fix = "Set it: s.set_microscope_parameters(beam_energy=200) (keV)."
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    energy = None
    if isinstance(value, str) and _NUMBER_RE.fullmatch(value):
        energy = float(value)
    elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
        energy = float(value)
    if energy is None:
        raise ValueError(f"{field} is {shown}, not a number of keV. {fix}")
    if not math.isfinite(energy) or energy <= 0:
        raise ValueError(f"{field} is {shown}, not a positive beam energy in keV. {fix}")
    if energy > MAX_BEAM_ENERGY_KEV:
        raise ValueError(f"{field} is {energy:g} keV, above any TEM ({MAX_BEAM_ENERGY_KEV:g} keV): was it "
                         f"stored in V? {fix}")
    return energy, "file"


def _units_of(axis) -> str:
    units = axis.units
    if units is None:
        return ""
    return str(units).strip()


def pixel_size_nm(signal):
    """Pixel size of a 2-D signal, in nm, from its signal axes.

    The scale and units of the two signal axes are read and converted to nm with
    :func:`hyperspy_lorentz.units.to_nm` (``pm``, ``nm``, ``um``/``µm``/``μm``,
    ``mm``, ``Å``, ``m``... are understood). The signal is not modified.

    Parameters
    ----------
    signal : hyperspy.signal.BaseSignal
        A signal with two signal axes (e.g. a ``Signal2D`` or a stack of images).

    Returns
    -------
    pixel_size : float or None
        The pixel size in nm, or None if the axes are uncalibrated (no unit --
        ``""``, ``"<undefined>"``, ``"[]"``, ``"px"`` -- and scale 1 on both axes).
    source : {"file", None}
        ``"file"`` when the axes are calibrated (the calibration is that of the
        loaded file, or whatever was set on the axes since), otherwise None.

    Raises
    ------
    ValueError
        If the signal does not have exactly two signal axes; if a signal axis is
        non-uniform; if the pixels are not square (the two axes have different
        scales in nm); if an axis has a scale other than 1 but no unit, or a unit
        that is not a length.

    Examples
    --------
    >>> import hyperspy.api as hs, numpy as np
    >>> s = hs.signals.Signal2D(np.zeros((4, 4)))
    >>> for ax in s.axes_manager.signal_axes:
    ...     ax.scale, ax.units = 250.0, "pm"
    >>> size, source = pixel_size_nm(s)
    >>> round(size, 12), source
    (0.25, 'file')
    """
    axes = list(signal.axes_manager.signal_axes)
    if len(axes) != 2:
        raise ValueError(
            f"A pixel size needs exactly two signal axes (an image), but this signal "
            f"has {len(axes)}. Make the two image dimensions the signal axes, e.g. "
            f"s = s.as_signal2D((0, 1)) or s = s.transpose(signal_axes=2)."
        )
    for i, ax in enumerate(axes):
        if not getattr(ax, "is_uniform", True):
            raise ValueError(
                f"Signal axis {i} ({ax.name!r}) is non-uniform, so the image has no "
                f"single pixel size. Convert it with "
                f"s.axes_manager.signal_axes[{i}].convert_to_uniform_axis() "
                f"(or set a uniform scale) first."
            )

    units = [_units_of(ax) for ax in axes]
    scales = [float(ax.scale) for ax in axes]
    no_unit = [u.lower() in _NO_UNITS for u in units]

    if all(no_unit) and all(np.isclose(sc, 1.0) for sc in scales):
        return None, None
    for i, (ax, sc) in enumerate(zip(axes, scales)):
        if not math.isfinite(sc) or sc <= 0:
            raise ValueError(
                f"Signal axis {i} ({ax.name!r}) has a scale of {sc!r} {units[i]}, not a positive "
                f"pixel size. Set it, e.g. s.axes_manager.signal_axes[{i}].scale = <pixel size> "
                f"(and .units = 'nm')."
            )
    for i, (ax, nu, sc) in enumerate(zip(axes, no_unit, scales)):
        if nu:
            raise ValueError(
                f"Signal axis {i} ({ax.name!r}) has scale {sc:g} but no length unit "
                f"(units={ax.units!r}), so its pixel size is unknown. Set its unit, "
                f"e.g. s.axes_manager.signal_axes[{i}].units = 'nm' (and "
                f".scale = <pixel size in nm>)."
            )

    sizes = []
    for i, (ax, u, sc) in enumerate(zip(axes, units, scales)):
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf: refused below
                sizes.append(to_nm(sc, u))
            problem = None
        except ValueError as exc:
            problem = f"{exc}"
        except Exception:  # noqa: BLE001 - pint's parser raises many kinds of errors on free text
            problem = "it cannot be read as a unit."
        if problem is not None:
            raise ValueError(
                f"Signal axis {i} ({ax.name!r}) has units {u!r}, which is not a "
                f"length: {problem} Set it, e.g. "
                f"s.axes_manager.signal_axes[{i}].units = 'nm'."
            ) from None
    for i, sz in enumerate(sizes):
        if not math.isfinite(sz) or sz <= 0:
            raise ValueError(
                f"Signal axis {i} ({axes[i].name!r}) has a scale of {scales[i]!r} "
                f"{units[i]}, not a positive, finite pixel size in nm. Set it, e.g. "
                f"s.axes_manager.signal_axes[{i}].scale = <pixel size>."
            )
    if not np.isclose(sizes[0], sizes[1], rtol=_SQUARE_RTOL, atol=0.0):
        raise ValueError(
            f"The pixels are not square: signal axis 0 ({axes[0].name!r}) has "
            f"{sizes[0]:.6g} nm per pixel and axis 1 ({axes[1].name!r}) has "
            f"{sizes[1]:.6g} nm. Phase retrieval needs square pixels: if one "
            f"calibration is wrong, set it, e.g. "
            f"s.axes_manager.signal_axes[1].scale = s.axes_manager.signal_axes[0].scale "
            f"(and the same units); otherwise resample the image to square pixels."
        )
    return float(sizes[0]), "file"
