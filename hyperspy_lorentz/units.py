"""Unit conversion with pint, the unit library HyperSpy itself uses.

Calibrations arrive in whatever unit a vendor wrote (``pm``, ``Å``, ``µm``, ``m``,
``1/nm`` ...). Everything inside hyperspy_lorentz is expressed in the units listed
in :ref:`conventions`; this module converts to them and nothing else.
"""

from __future__ import annotations

import numbers

import numpy as np
import pint

__all__ = ["ureg", "to_unit", "to_nm", "normalise_unit"]

ureg = pint.UnitRegistry()

# Spellings found in vendor files and typed by users that pint does not know.
_ALIASES = {
    "um": "micrometer",
    "µm": "micrometer",
    "μm": "micrometer",  # Greek mu (U+03BC), not the micro sign (U+00B5)
    "micron": "micrometer",
    "microns": "micrometer",
    "å": "angstrom",
    "Å": "angstrom",
    "Å": "angstrom",  # A with ring above (U+00C5), distinct from the angstrom sign
    "A": "angstrom",
    "Ang": "angstrom",
    "ang": "angstrom",
}


def normalise_unit(units: str) -> str:
    """Return a unit string that pint understands.

    Parameters
    ----------
    units : str
        A unit as written by a vendor or a user, e.g. ``"µm"``, ``"Å"``, ``"um"``.

    Returns
    -------
    str
    """
    if not isinstance(units, str):
        raise TypeError(f"units must be a string such as 'nm', not {units!r}.")
    u = units.strip()
    return _ALIASES.get(u, u)


def to_unit(value, units: str, target: str):
    """Convert ``value`` given in ``units`` to ``target``.

    Parameters
    ----------
    value : float or array-like
        The magnitude(s) to convert.
    units : str
        The unit of ``value`` (``"pm"``, ``"nm"``, ``"µm"``, ``"um"``, ``"Å"``, ``"m"`` ...).
    target : str
        The unit wanted.

    Returns
    -------
    float or numpy.ndarray
        ``value`` expressed in ``target``; a float for a scalar input.

    Raises
    ------
    ValueError
        If ``units`` is empty, unknown to pint or not convertible to ``target``.
    """
    if units is None or (isinstance(units, str) and units.strip() in ("", "<undefined>")):
        raise ValueError(
            f"No unit is given, so the value cannot be converted to {target}. "
            "Set the axis units (e.g. s.axes_manager.signal_axes[0].units = 'nm')."
        )
    try:
        q = ureg.Quantity(np.asarray(value, dtype=float), normalise_unit(units))
        out = q.to(normalise_unit(target)).magnitude
    except (pint.errors.UndefinedUnitError, pint.errors.DimensionalityError) as exc:
        raise ValueError(
            f"Cannot convert a value in {units!r} to {target!r}: {exc}. "
            f"Give a length unit such as 'nm', 'um' or 'mm'."
        ) from None
    # pint multiplies by binary conversion factors (250 pm -> 0.24999999999999994 nm);
    # 12 significant digits are far beyond any calibration and give clean numbers.
    out = _round_significant(np.asarray(out, dtype=float))
    if isinstance(value, numbers.Number):
        return float(out)
    return out


def _round_significant(a, digits=12):
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(a == 0, 0, np.floor(np.log10(np.abs(np.where(a == 0, 1, a)))))
    factor = 10.0 ** (digits - 1 - mag)
    return np.where(np.isfinite(a), np.round(a * factor) / factor, a)


def to_nm(value, units: str):
    """Convert a length (or lengths) in ``units`` to nanometres.

    Parameters
    ----------
    value : float or array-like
        Length(s).
    units : str
        Their unit: ``"pm"``, ``"nm"``, ``"µm"``/``"um"``, ``"mm"``, ``"Å"``, ``"m"`` ...

    Returns
    -------
    float or numpy.ndarray
        The length(s) in nm.

    Examples
    --------
    >>> to_nm(1.5, "um")
    1500.0
    >>> to_nm(250, "pm")
    0.25
    """
    return to_unit(value, units, "nm")
