"""The magnetic induction signal class: in-plane B (or B t) maps."""

from __future__ import annotations

import numpy as np
from hyperspy.signals import LazySignal2D, Signal2D

from hyperspy_lorentz.signals import _common

__all__ = ["MagneticInduction", "LazyMagneticInduction", "make_induction_signal"]

COMPONENT_AXIS = "component"


def make_induction_signal(stacked, like, units, thickness=None, title=None):
    """Wrap an array ``(..., 2, H, W)`` of (B_x, B_y) as a :class:`MagneticInduction`.

    Parameters
    ----------
    stacked : BaseSignal or array
        Data whose last three array axes are (component, y, x); leading axes
        match the navigation axes of ``like``.
    like : BaseSignal
        Signal whose navigation and signal axes (and metadata) the result copies.
    units : str
        ``"T nm"`` (integrated induction) or ``"T"``.
    thickness : float or None
        Thickness used (nm), recorded in the metadata.
    title : str or None
        Title of the result.
    """
    data = getattr(stacked, "data", stacked)
    axes = like.axes_manager._get_axes_dicts()
    n_nav = like.axes_manager.navigation_dimension
    component = {
        "_type": "UniformDataAxis",
        "name": COMPONENT_AXIS,
        "units": None,
        "navigate": True,
        "size": 2,
        "scale": 1.0,
        "offset": 0.0,
    }
    axes = axes[:n_nav] + [component] + axes[n_nav:]
    metadata = like.metadata.as_dictionary()
    metadata.setdefault("General", {})["title"] = title or (
        "Integrated in-plane induction B t" if thickness is None else "In-plane induction B"
    )
    metadata.setdefault("Signal", {})
    metadata["Signal"]["signal_type"] = "magnetic_induction"
    metadata["Signal"]["quantity"] = f"Induction ({units})"
    metadata["Signal"]["Induction"] = {
        "units": units,
        "thickness": thickness,
        "components": ["x", "y"],
    }
    cls = LazyMagneticInduction if like._lazy else MagneticInduction
    return cls(data, axes=axes, metadata=metadata, original_metadata=like.original_metadata.as_dictionary())


class MagneticInduction(Signal2D):
    """In-plane magnetic induction maps.

    The navigation axis ``component`` holds ``B_x`` (index 0) and ``B_y``
    (index 1), physical components along the image's ``+x`` (right) and ``+y``
    (down) directions. Units are given by ``metadata.Signal.Induction.units``:
    ``"T nm"`` for the integrated induction ``B t``, ``"T"`` when a thickness was
    given. Other navigation axes (one map per focal series) may follow.
    """

    _signal_type = "magnetic_induction"
    _signal_dimension = 2
    _lazy = False

    # ----------------------------------------------------------- components
    def _component_index(self):
        for i, ax in enumerate(self.axes_manager.navigation_axes):
            if ax.name == COMPONENT_AXIS and ax.size == 2:
                return ax.index_in_array
        raise ValueError(
            "This signal has no navigation axis 'component' of size 2 (B_x, B_y). "
            "Make induction maps with ElectronPhase.induction()."
        )

    @property
    def units(self):
        """Units of the induction: ``"T nm"`` or ``"T"``."""
        return self.metadata.get_item("Signal.Induction.units", "T nm")

    def _component_signal(self, i, title):
        from hyperspy.signals import Signal2D as _S2D

        idx = self._component_index()
        data = self.data[(slice(None),) * idx + (i,)]
        axes = self.axes_manager._get_axes_dicts()
        del axes[idx]
        md = self.metadata.as_dictionary()
        md["General"]["title"] = title
        md["Signal"]["signal_type"] = ""
        md["Signal"]["quantity"] = f"{title} ({self.units})"
        out = _S2D(data, axes=axes, metadata=md)
        if self._lazy:
            out = out.as_lazy()
        return out

    @property
    def bx(self):
        """``B_x`` (along +x, image right) as a Signal2D."""
        return self._component_signal(0, "B_x")

    @property
    def by(self):
        """``B_y`` (along +y, image down) as a Signal2D."""
        return self._component_signal(1, "B_y")

    def magnitude(self):
        """Magnitude ``sqrt(B_x^2 + B_y^2)`` as a Signal2D, same units."""
        bx, by = self.bx, self.by
        out = bx._deepcopy_with_new_data(np.hypot(bx.data, by.data) if not self._lazy else (bx.data**2 + by.data**2) ** 0.5)
        out.metadata.General.title = "|B|"
        out.metadata.Signal.quantity = f"|B| ({self.units})"
        return out

    def angle(self):
        """Direction ``atan2(B_y, B_x)`` in rad as a Signal2D.

        The angle is measured from +x towards +y (image right towards down,
        i.e. clockwise on screen), in ``(-pi, pi]``.
        """
        bx, by = self.bx, self.by
        import dask.array as da

        lib = da if self._lazy else np
        out = bx._deepcopy_with_new_data(lib.arctan2(by.data, bx.data))
        out.metadata.General.title = "Induction direction"
        out.metadata.Signal.quantity = "Angle (rad)"
        return out

    # ---------------------------------------------------------------- colour
    def _components(self):
        """``(B_x, B_y)`` as NumPy arrays ``(*navigation, H, W)`` (computed if lazy)."""
        bx, by = self.bx, self.by
        if self._lazy:
            bx.compute(show_progressbar=False)
            by.compute(show_progressbar=False)
        return bx, np.asarray(bx.data, dtype=float), np.asarray(by.data, dtype=float)

    def get_color_signal(self, max_magnitude=None, cmap=None):
        """Colour image of the induction: direction as hue, magnitude as value.

        The hue comes from a perceptually uniform cyclic colour map (colorcet's
        ``CET_C6`` by default), the brightness from the magnitude scaled by
        ``max_magnitude``.

        Parameters
        ----------
        max_magnitude : float, str or None
            Magnitude shown at full brightness, in the signal's units (T nm, or T
            when a thickness was given). ``None``: the largest magnitude of the
            whole signal.
        cmap : str or matplotlib colormap or None
            Cyclic colour map for the direction.

        Returns
        -------
        hyperspy.signals.Signal2D
            An ``rgb8`` signal with the navigation axes other than ``component``;
            ``metadata.Signal.Colour`` records ``max_magnitude`` and its units.
        """
        from hyperspy_lorentz.physics.colour import induction_to_rgb

        like, bx, by = self._components()
        if max_magnitude is None:
            max_magnitude = float(np.nanmax(np.hypot(bx, by))) if bx.size else 0.0
            max_magnitude = max_magnitude if np.isfinite(max_magnitude) and max_magnitude > 0 else 1.0
        else:
            max_magnitude = _common.as_number("max_magnitude", max_magnitude, self.units, positive=True)
        nav_shape = bx.shape[:-2]
        rgb = np.empty(bx.shape + (3,), dtype=np.uint8)
        for index in np.ndindex(*nav_shape):
            colour = induction_to_rgb(bx[index], by[index], max_magnitude=max_magnitude, cmap=cmap)
            rgb[index] = np.clip(np.round(colour * 255), 0, 255).astype(np.uint8)
        title = self.metadata.get_item("General.title") or "In-plane induction"
        return _rgb_signal(rgb, like, max_magnitude, self.units, title)

    def plot(self, arrows=False, arrow_step=None, max_magnitude=None, cmap=None, wheel=True, **kwargs):
        """Show the colour image of the induction with its legends.

        The image is the colour map of :meth:`~hyperspy_lorentz.signals.magnetic_induction.MagneticInduction.get_color_signal` (direction as hue,
        magnitude as brightness). Beside it: the colour wheel (the hue of each
        direction, ``+x`` right and ``+y`` down as in the image) and a grey scale
        bar that gives the magnitude of each brightness, in the signal's units
        (T nm for the integrated induction ``B t``, T when a thickness was
        given). The title names the navigation position where there is one, and
        arrows (if asked for) follow the navigation.

        Parameters
        ----------
        arrows : bool
            Overlay white arrows along the induction, their length proportional
            to the magnitude (``max_magnitude`` spans 0.9 ``arrow_step``).
        arrow_step : int or None
            Pixels between arrows (default: 1/16 of the image width).
        max_magnitude : float, str or None
            Magnitude at full brightness, in the signal's units (see
            :meth:`~hyperspy_lorentz.signals.magnetic_induction.MagneticInduction.get_color_signal`).
        cmap : str or matplotlib colormap or None
            Cyclic colour map for the direction.
        wheel : bool
            Draw the colour wheel (the magnitude bar is always drawn).
        **kwargs
            Passed to HyperSpy's ``plot`` of the colour signal (e.g.
            ``scalebar=False``, ``navigator="slider"``).

        Returns
        -------
        matplotlib.figure.Figure
            The figure of the image (a ``SubFigure`` where HyperSpy draws the
            navigator and the image into one window).
        """
        if arrow_step is not None:
            arrow_step = int(_common.as_number("arrow_step", arrow_step, "pixels", positive=True))
        colour = self.get_color_signal(max_magnitude=max_magnitude, cmap=cmap)
        max_magnitude = float(colour.metadata.Signal.Colour.max_magnitude)
        kwargs.setdefault("plot_indices", False)  # the title names the position
        colour.plot(**kwargs)
        plot = colour._plot.signal_plot
        base = f"{colour.metadata.General.title} ({self.units})"
        _common.show_position_in_title(plot, colour.axes_manager, base)
        _add_legends(plot, max_magnitude, self.units, cmap, wheel)
        if arrows:
            _add_arrows(plot, colour, self, max_magnitude, arrow_step)
        _common.tidy_layout(plot.figure)
        plot.figure.canvas.draw_idle()
        return plot.figure


def _add_legends(plot, max_magnitude, units, cmap, wheel):
    """Colour wheel and magnitude bar in a column to the right of the image."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import SubFigure
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    from hyperspy_lorentz.physics.colour import colour_wheel

    fig, ax = plot.figure, plot.ax
    if not isinstance(fig, SubFigure):
        # make room for the legend column rather than shrinking the image
        w, h = fig.get_size_inches()
        fig.set_size_inches(w * 1.35, h, forward=True)
    column = make_axes_locatable(ax).append_axes("right", size="35%", pad=0.1)
    column.set_axis_off()
    column.set_label("legend column")
    if wheel:
        wheel_ax = column.inset_axes([0.0, 0.52, 1.0, 0.40])
        wheel_ax.imshow(colour_wheel(128, cmap=cmap))
        wheel_ax.set_axis_off()
        wheel_ax.set_title("B direction", fontsize=8)
        wheel_ax.set_label("colour wheel")
    bar_ax = column.inset_axes([0.30, 0.04, 0.14, 0.40])
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0.0, max_magnitude), cmap="gray"), cax=bar_ax)
    bar.set_label(f"|B| ({units})", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    bar_ax.set_label("magnitude bar")


def _add_arrows(plot, colour, induction, max_magnitude, arrow_step):
    """A quiver over the image, drawn with it (animated, above it) and following the navigation."""
    _, bx, by = induction._components()
    ny, nx = bx.shape[-2:]
    step = arrow_step or max(1, nx // 16)
    iy = np.arange(step // 2, ny, step)
    ix = np.arange(step // 2, nx, step)
    sx, sy = colour.axes_manager.signal_axes
    x, y = np.meshgrid(sx.axis[ix], sy.axis[iy])
    u_all = bx[..., iy[:, None], ix[None, :]]
    v_all = by[..., iy[:, None], ix[None, :]]
    am = colour.axes_manager

    def current():
        index = tuple(am.indices[::-1])
        return u_all[index], v_all[index]

    ax = plot.ax
    image = (ax.images or ax.collections)[0]
    u, v = current()
    # max_magnitude spans 0.9 of the distance between arrows, in data units
    length = 0.9 * step * abs(sx.scale)
    quiver = ax.quiver(
        x, y, u, v, color="white", pivot="middle", angles="xy", scale_units="xy",
        scale=max_magnitude / length, zorder=image.get_zorder() + 2,
        animated=image.get_animated(),
    )
    quiver.set_label("induction arrows")
    plot.arrows = quiver

    def update():
        if plot.ax is None:
            return
        quiver.set_UVC(*current())
        plot.render_figure()

    if am.navigation_dimension:
        am.events.indices_changed.connect(update, [])
        plot.events.closed.connect(lambda: am.events.indices_changed.disconnect(update), [])


def _rgb_signal(rgb, like, max_magnitude, units, title):
    """An rgb8 Signal2D from a uint8 array (..., H, W, 3), axes copied from ``like``."""
    from hyperspy.signals import Signal2D as _S2D

    from rsciio.utils.rgb import regular_array2rgbx

    structured = regular_array2rgbx(np.ascontiguousarray(rgb))
    axes = like.axes_manager._get_axes_dicts()
    md = like.metadata.as_dictionary()
    md["General"]["title"] = title
    md["Signal"]["signal_type"] = ""
    md["Signal"]["Colour"] = {"max_magnitude": float(max_magnitude), "units": units}
    return _S2D(structured, axes=axes, metadata=md)


class LazyMagneticInduction(LazySignal2D, MagneticInduction):
    """Lazy (dask-backed) version of :class:`MagneticInduction`."""

    _lazy = True

    # The plot shows the (computed) colour signal, not the lazy data: HyperSpy's
    # lazy plot, first in the method order, would plot the components instead.
    plot = MagneticInduction.plot

