"""The figures of MagneticInduction.plot and LorentzFocalSeries.plot: what a user sees.

The Agg backend is set in tests/conftest.py. HyperSpy draws its image as an
*animated* artist (blitting) on top of everything that is not animated, so an
overlay that is not animated, or is below the image, is invisible: the arrows
are checked both by their artist's properties and in the rendered pixels.
"""

import hyperspy.api as hs
import matplotlib.pyplot as plt
import numpy as np
import pytest

from hyperspy_lorentz.signals.electron_phase import ElectronPhase
from hyperspy_lorentz.simulation import simulate_focal_series

PIXEL = 2.0  # nm


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _phase(data):
    s = ElectronPhase(np.asarray(data, dtype=float))
    for ax, name in zip(s.axes_manager.signal_axes, "xy"):
        ax.scale, ax.units, ax.name = PIXEL, "nm", name
    return s


def _vortex_phase(n=64):
    y, x = np.mgrid[:n, :n] - n / 2
    return 0.5 * np.exp(-(x**2 + y**2) / (n / 4) ** 2)


def _uniform_induction():
    """A phase ramp along y: a uniform induction along +x (B_x = -hbar/e dphi/dy ... > 0)."""
    y = np.arange(64)[:, None] * np.ones((1, 64))
    return _phase(-0.01 * y).induction()


def _image_artist(ax):
    return (ax.images or ax.collections)[0]


def _inside(bbox, outer, tol=0.5):
    return (bbox.x0 >= outer.x0 - tol and bbox.y0 >= outer.y0 - tol
            and bbox.x1 <= outer.x1 + tol and bbox.y1 <= outer.y1 + tol)


def _child_axes(fig, label):
    found = []
    for ax in fig.axes:
        for child in [ax, *ax.child_axes]:
            if child.get_label() == label:
                found.append(child)
    return found


def _rendered(fig):
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3]


def _white_fraction(fig, ax):
    """Fraction of near-white pixels inside the image axes of the rendered figure."""
    rgb = _rendered(fig)
    box = ax.get_window_extent()
    h = rgb.shape[0]
    x0, x1 = int(box.x0) + 2, int(box.x1) - 2
    y0, y1 = h - int(box.y1) + 2, h - int(box.y0) - 2
    region = rgb[y0:y1, x0:x1]
    return np.mean(np.all(region > 245, axis=-1))


# ------------------------------------------------------------ MagneticInduction
class TestInductionPlot:
    def test_arrows_are_drawn_over_the_image(self):
        b = _uniform_induction()
        fig = b.plot(arrows=True, scalebar=False)
        ax = fig.axes[0]
        image = _image_artist(ax)
        quivers = [c for c in ax.collections if type(c).__name__ == "Quiver"]
        assert len(quivers) == 1
        q = quivers[0]
        assert q.get_visible()
        # HyperSpy draws animated artists last, sorted by zorder: the arrows must be
        # animated when the image is, and above it
        assert q.get_animated() == image.get_animated()
        assert q.get_zorder() > image.get_zorder()
        assert np.all(q.U > 0) and np.allclose(q.V, 0)  # along +x, as the field

    def test_arrows_are_visible_in_the_rendered_figure(self):
        b = _uniform_induction()
        with_arrows = b.plot(arrows=True, scalebar=False)
        white_with = _white_fraction(with_arrows, with_arrows.axes[0])
        plt.close("all")
        without = b.plot(arrows=False, scalebar=False)
        white_without = _white_fraction(without, without.axes[0])
        assert white_without < 0.001
        assert white_with > 0.01

    def test_colour_wheel_is_inside_the_figure(self):
        fig = _phase(_vortex_phase()).induction().plot()
        fig.canvas.draw()
        wheels = _child_axes(fig, "colour wheel")
        assert len(wheels) == 1
        wheel = wheels[0]
        assert wheel.get_visible() and wheel.images
        assert _inside(wheel.get_window_extent(), fig.bbox)
        # and beside the image, not over it
        image_box = fig.axes[0].get_window_extent()
        assert wheel.get_window_extent().x0 >= image_box.x1 - 0.5

    def test_no_wheel_when_asked(self):
        fig = _phase(_vortex_phase()).induction().plot(wheel=False)
        assert not _child_axes(fig, "colour wheel")

    @pytest.mark.parametrize("thickness, unit", [(None, "T nm"), (40.0, "T")])
    def test_title_and_magnitude_legend_with_the_unit(self, thickness, unit):
        b = _phase(_vortex_phase()).induction(thickness=thickness)
        fig = b.plot()
        title = fig.axes[0].get_title()
        assert "Signal" not in title and "colour map" not in title
        assert title == f"{b.metadata.General.title} ({unit})"
        bars = _child_axes(fig, "magnitude bar")
        assert len(bars) == 1
        bar = bars[0]
        assert bar.get_ylabel() == f"|B| ({unit})"
        fig.canvas.draw()
        assert _inside(bar.get_window_extent(), fig.bbox)
        # the bar spans 0 .. the magnitude at full brightness
        top = b.get_color_signal().metadata.Signal.Colour.max_magnitude
        assert bar.get_ylim() == pytest.approx((0.0, top))

    @pytest.mark.parametrize("max_magnitude", [2.0, "2 T nm", "0.002 T um"])
    def test_max_magnitude_sets_the_legend(self, max_magnitude):
        b = _phase(_vortex_phase()).induction()
        fig = b.plot(max_magnitude=max_magnitude)
        assert _child_axes(fig, "magnitude bar")[0].get_ylim() == pytest.approx((0.0, 2.0))

    def test_arrows_and_title_follow_the_navigation(self):
        phase = _phase(-0.01 * np.arange(64)[:, None] * np.ones((1, 64)))
        stack = hs.stack([phase, phase * 2.0], new_axis_name="field")
        stack.set_signal_type("electron_phase")
        stack.axes_manager["field"].units = "mT"
        stack.axes_manager["field"].scale = 50.0
        b = stack.induction()
        fig = b.plot(arrows=True, navigator=None)
        ax = fig.axes[0]
        q = [c for c in ax.collections if type(c).__name__ == "Quiver"][0]
        u0 = q.U.copy()
        assert ax.get_title().endswith("field 0 mT")
        ax.hspy_fig.axes_manager.indices = (1,)
        assert ax.get_title().endswith("field 50 mT")
        np.testing.assert_allclose(q.U, 2 * u0)
        assert not [t for t in ax.texts if t.get_text() in ("(0,)", "(1,)")]


    def test_lazy_induction_plots_the_same_figure(self):
        b = _uniform_induction().as_lazy()
        fig = b.plot(arrows=True)
        assert fig is not None  # HyperSpy's lazy plot would show the raw components
        ax = fig.axes[0]
        assert ax.get_title().endswith("(T nm)")
        assert [c for c in ax.collections if type(c).__name__ == "Quiver"]
        assert _child_axes(fig, "colour wheel") and _child_axes(fig, "magnitude bar")


# ------------------------------------------------------------ LorentzFocalSeries
def _series(defocus):
    y, x = np.mgrid[:32, :32]
    return simulate_focal_series(0.3 * np.sin(x / 5.0) * np.cos(y / 4.0), defocus=defocus, scale=4.0)


class TestFocalSeriesPlot:
    @pytest.mark.parametrize(
        "defocus, first, last, unit, ticks",
        [
            ((-3e5, 0.0, 3e5), "-300 µm", "+300 µm", "µm", "-300"),
            ((-1.6e6, 0.0, 1.6e6), "-1.6 mm", "+1.6 mm", "mm", "-1.5"),
            ((-400.0, 0.0, 400.0), "-400 nm", "+400 nm", "nm", "-400"),
        ],
    )
    def test_defocus_in_a_readable_unit(self, defocus, first, last, unit, ticks):
        s = _series(defocus)
        s.plot()
        image_ax = s._plot.signal_plot.ax
        assert image_ax.get_title().endswith(f"defocus {first}")
        assert not [t for t in image_ax.texts if t.get_text().startswith("(")]  # no "(0,)"
        nav = s._plot.navigator_plot
        nav.figure.canvas.draw()
        assert nav.ax.get_xlabel() == f"defocus ({unit})"
        labels = [t.get_text() for t in nav.ax.get_xticklabels()]
        assert ticks in labels
        assert not any(len(label.lstrip("-−")) > 5 for label in labels)  # no -300000
        s.axes_manager.indices = (2,)
        assert image_ax.get_title().endswith(f"defocus {last}")
        assert s.axes_manager["defocus"].units == "nm"  # the axis itself is unchanged

    def test_lazy_series(self):
        s = _series((-3e5, 0.0, 3e5)).as_lazy()
        s.plot()
        assert s._plot.signal_plot.ax.get_title().endswith("defocus -300 µm")
        assert s._plot.navigator_plot.ax.get_xlabel() == "defocus (µm)"

    def test_title_keeps_the_signal_title_and_other_axes(self):
        s = hs.stack([_series((-3e5, 0.0, 3e5))] * 2, new_axis_name="time")
        s.axes_manager["time"].units = "s"
        s.axes_manager["time"].scale = 10.0
        s.metadata.General.title = "Sweep"
        s.plot(navigator=None)
        title = s._plot.signal_plot.ax.get_title()
        assert title.startswith("Sweep") and title.endswith("defocus -300 µm, time 0 s")

    def test_plot_indices_can_still_be_asked_for(self):
        s = _series((-3e5, 0.0, 3e5))
        s.plot(plot_indices=True)
        assert [t for t in s._plot.signal_plot.ax.texts if t.get_text() == "(0,)"]
