"""Unit conversion: every spelling vendors and users write, against known factors."""

import numpy as np
import pytest

from hyperspy_lorentz.units import to_nm, to_unit


@pytest.mark.parametrize(
    "value, units, nm",
    [
        (250, "pm", 0.25),
        (1.5, "nm", 1.5),
        (1.5, "um", 1500.0),
        (1.5, "µm", 1500.0),  # micro sign U+00B5
        (1.5, "μm", 1500.0),  # Greek mu U+03BC
        (2, "Å", 0.2),
        (2, "A", 0.2),
        (1e-9, "m", 1.0),
        (1.6, "mm", 1.6e6),
        (3, "micron", 3000.0),
    ],
)
def test_to_nm(value, units, nm):
    assert to_nm(value, units) == nm  # exact: results are rounded to 12 significant digits


def test_arrays_and_scalars_keep_their_kind():
    assert isinstance(to_nm(1, "um"), float)
    np.testing.assert_array_equal(to_nm([-1.6, 0, 1.6], "mm"), [-1.6e6, 0, 1.6e6])


def test_other_dimensions():
    assert to_unit(0.01, "mrad", "rad") == pytest.approx(1e-5)


@pytest.mark.parametrize("units", ["", "<undefined>", None])
def test_missing_unit_names_the_fix(units):
    with pytest.raises(ValueError, match="units"):
        to_nm(1.0, units)


@pytest.mark.parametrize("units", ["kg", "furlongs_per_fortnight"])
def test_wrong_unit(units):
    with pytest.raises(ValueError, match="Cannot convert"):
        to_nm(1.0, units)
