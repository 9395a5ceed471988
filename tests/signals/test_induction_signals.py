"""ElectronPhase.induction and MagneticInduction, against the magnetisation they came from."""

import hyperspy.api as hs
import numpy as np
import pytest
from scipy import constants

from hyperspy_lorentz.physics import magnetisation, textures
from hyperspy_lorentz.signals.electron_phase import ElectronPhase
from hyperspy_lorentz.signals.magnetic_induction import MagneticInduction

MU0 = constants.mu_0
PIXEL = 2.0  # nm
MS = 8.0e5  # A/m
T = 20.0  # nm


def _phase_signal(phase, pixel=PIXEL):
    s = ElectronPhase(phase)
    for ax, name in zip(s.axes_manager.signal_axes, "xy"):
        ax.scale, ax.units, ax.name = pixel, "nm", name
    return s


@pytest.fixture(scope="module")
def film():
    """A disc magnetised at 30 degrees from +x: (phase signal, direction, centre mask)."""
    angle = np.deg2rad(30)
    tex = textures.uniform_island((128, 128), direction=np.rad2deg(angle), geometry="disc",
                                  radius=30 * PIXEL, pixel_size=PIXEL)
    # Padding 4: periodic copies of the disc far enough for their fields to be < 1 %.
    phase = magnetisation.magnetic_phase(tex.mx, tex.my, ms=MS, thickness=T, pixel_size=PIXEL, padding=4)
    yy, xx = np.mgrid[-64:64, -64:64]
    centre = np.hypot(yy, xx) < 15
    return _phase_signal(phase), angle, centre


def test_uniformly_magnetised_disc_induction_points_along_m(film):
    # Analytic oracle: inside a uniformly magnetised disc (a 2-D cylinder) the
    # projected induction is uniform, along m, of magnitude mu0 Ms t / 2 (the
    # demagnetising factor of a cylinder across its axis is 1/2).
    phase, angle, centre = film
    b = phase.induction()
    assert isinstance(b, MagneticInduction)
    assert b.units == "T nm"
    bx, by = b.bx.data[centre], b.by.data[centre]
    expected = MU0 * MS * T / 2  # T nm
    mag = np.hypot(bx, by)
    np.testing.assert_allclose(mag.mean(), expected, rtol=0.02)
    direction = np.arctan2(by.mean(), bx.mean())
    assert abs(direction - angle) < np.deg2rad(2)


def test_thickness_gives_tesla(film):
    phase, angle, centre = film
    b = phase.induction(thickness=T)
    assert b.units == "T"
    np.testing.assert_allclose(b.magnitude().data[centre].mean(), MU0 * MS / 2, rtol=0.02)


@pytest.mark.parametrize("thickness", [0, -5, float("nan")])
def test_bad_thickness(film, thickness):
    with pytest.raises(ValueError, match="thickness"):
        film[0].induction(thickness=thickness)


@pytest.mark.parametrize("thickness", [f"{T:g} nm", f"{T:g}nm", f"{T / 1000:g} um", str(T)])
def test_thickness_as_a_quantity_string(film, thickness):
    b = film[0].induction(thickness=thickness)
    assert b.metadata.Signal.Induction.thickness == pytest.approx(T)
    np.testing.assert_allclose(b.data, film[0].induction(thickness=T).data)


@pytest.mark.parametrize("thickness", ["twenty", "20 kg", "-20 nm", [20.0]])
def test_bad_thickness_strings_name_the_argument(film, thickness):
    with pytest.raises(ValueError, match=r"thickness.*nm"):
        film[0].induction(thickness=thickness)


def test_uncalibrated_phase_raises():
    with pytest.raises(ValueError, match="pixel size"):
        ElectronPhase(np.zeros((16, 16))).induction()


def test_magnitude_angle_components(film):
    b = film[0].induction()
    np.testing.assert_allclose(b.magnitude().data, np.hypot(b.bx.data, b.by.data))
    np.testing.assert_allclose(b.angle().data, np.arctan2(b.by.data, b.bx.data))
    assert b.bx.axes_manager.signal_axes[0].scale == PIXEL


def test_extra_navigation_axis_one_map_per_series(film):
    phase, _, centre = film
    stack = hs.stack([phase, phase * 2.0], new_axis_name="field")
    stack.set_signal_type("electron_phase")
    b = stack.induction()
    assert b.axes_manager.navigation_shape == (2, 2)  # component, field
    assert b.axes_manager["component"].size == 2
    assert b.axes_manager["field"].size == 2
    m = b.magnitude()
    np.testing.assert_allclose(m.inav[1].data[centre], 2 * m.inav[0].data[centre], rtol=1e-10)
    colour = b.get_color_signal()
    assert colour.axes_manager.navigation_shape == (2,)


def test_colour_signal_is_rgb_and_direction_dependent(film):
    b = film[0].induction()
    c = b.get_color_signal()
    assert c.data.dtype.names == ("R", "G", "B")
    assert c.axes_manager.signal_shape == (128, 128)
    # Reversing the field changes the colour (hue half a cycle away), not the brightness.
    reversed_ = _phase_signal(-film[0].data).induction().get_color_signal(
        max_magnitude=c.metadata.Signal.Colour.max_magnitude
    )
    centre = film[2]
    a = np.stack([c.data[k][centre].mean() for k in "RGB"])
    r = np.stack([reversed_.data[k][centre].mean() for k in "RGB"])
    assert np.abs(a - r).max() > 40


def test_plot_has_colour_wheel_and_arrows(film):
    import matplotlib.pyplot as plt

    b = film[0].induction()
    fig = b.plot(arrows=True)
    assert len(fig.axes) >= 2  # the image and the wheel inset
    plt.close("all")


def test_lazy_phase_gives_lazy_induction(film):
    lazy = film[0].as_lazy()
    b = lazy.induction()
    assert b._lazy
    b.compute()
    np.testing.assert_allclose(b.data, film[0].induction().data)


def test_save_load_round_trip(film, tmp_path):
    b = film[0].induction()
    b.save(tmp_path / "b.hspy")
    t = hs.load(tmp_path / "b.hspy")
    assert isinstance(t, MagneticInduction)
    assert t.units == "T nm"
    np.testing.assert_allclose(t.data, b.data)
