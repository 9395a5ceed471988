"""The magnetic induction signal class: in-plane B (or B t) maps."""

from __future__ import annotations

import numpy as np
from hyperspy.signals import LazySignal2D, Signal2D

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
    def get_color_signal(self, max_magnitude=None, cmap=None):
        """Colour image of the induction: direction as hue, magnitude as value.

        The hue comes from a perceptually uniform cyclic colour map (colorcet's
        ``CET_C6`` by default), the brightness from the magnitude scaled by
        ``max_magnitude``.

        Parameters
        ----------
        max_magnitude : float or None
            Magnitude shown at full brightness, in the signal's units. ``None``:
            the largest magnitude of the whole signal.
        cmap : str or matplotlib colormap or None
            Cyclic colour map for the direction.

        Returns
        -------
        hyperspy.signals.Signal2D
            An ``rgb8`` signal with the navigation axes other than ``component``.
        """
        from hyperspy_lorentz.physics.colour import induction_to_rgb

        bx, by = self.bx, self.by
        if self._lazy:
            bx.compute()
            by.compute()
        if max_magnitude is None:
            max_magnitude = float(np.max(np.hypot(bx.data, by.data))) or 1.0
        nav_shape = bx.data.shape[:-2]
        rgb = np.empty(bx.data.shape + (3,), dtype=np.uint8)
        for index in np.ndindex(*nav_shape):
            colour = induction_to_rgb(bx.data[index], by.data[index], max_magnitude=max_magnitude, cmap=cmap)
            rgb[index] = np.clip(np.round(colour * 255), 0, 255).astype(np.uint8)
        return _rgb_signal(rgb, bx, max_magnitude, self.units)

    def plot(self, arrows=False, arrow_step=None, max_magnitude=None, cmap=None, wheel=True, **kwargs):
        """Show the colour image of the induction with a colour-wheel legend.

        Parameters
        ----------
        arrows : bool
            Overlay arrows of the induction direction and magnitude.
        arrow_step : int or None
            Pixels between arrows (default: 1/16 of the image width).
        max_magnitude, cmap
            As in :meth:`get_color_signal`.
        wheel : bool
            Draw the colour wheel legend.
        **kwargs
            Passed to HyperSpy's ``plot`` of the colour signal.

        Returns
        -------
        matplotlib.figure.Figure
        """
        from hyperspy_lorentz.physics.colour import colour_wheel

        colour = self.get_color_signal(max_magnitude=max_magnitude, cmap=cmap)
        colour.plot(**kwargs)
        fig = colour._plot.signal_plot.figure
        ax = colour._plot.signal_plot.ax
        if wheel:
            inset = fig.add_axes([0.80, 0.80, 0.17, 0.17])
            inset.imshow(colour_wheel(128, cmap=cmap))
            inset.set_axis_off()
            inset.set_title("B direction", fontsize=7)
        if arrows:
            bx, by = self.bx, self.by
            bx_d = np.asarray(bx._get_current_data())
            by_d = np.asarray(by._get_current_data())
            ny, nx = bx_d.shape
            step = arrow_step or max(1, nx // 16)
            sx, sy = bx.axes_manager.signal_axes
            x = sx.axis[::step]
            y = sy.axis[::step]
            ax.quiver(
                x, y, bx_d[::step, ::step], by_d[::step, ::step],
                color="white", angles="xy", pivot="middle",
            )
        return fig


def _rgb_signal(rgb, like, max_magnitude, units):
    """An rgb8 Signal2D from a uint8 array (..., H, W, 3), axes copied from ``like``."""
    from hyperspy.signals import Signal2D as _S2D

    from rsciio.utils.rgb import regular_array2rgbx

    structured = regular_array2rgbx(np.ascontiguousarray(rgb))
    axes = like.axes_manager._get_axes_dicts()
    md = like.metadata.as_dictionary()
    md["General"]["title"] = "Induction colour map"
    md["Signal"]["signal_type"] = ""
    md["Signal"]["Colour"] = {"max_magnitude": float(max_magnitude), "units": units}
    return _S2D(structured, axes=axes, metadata=md)


class LazyMagneticInduction(LazySignal2D, MagneticInduction):
    """Lazy (dask-backed) version of :class:`MagneticInduction`."""

    _lazy = True

