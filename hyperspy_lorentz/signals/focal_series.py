"""The focal-series signal class: a stack of Lorentz TEM images at known defocus."""

from __future__ import annotations

import math
import operator

import numpy as np
from hyperspy.docstrings.signal import LAZY_OUTPUT_ARG, SHOW_PROGRESSBAR_ARG
from hyperspy.signals import BaseSignal, LazySignal2D, Signal2D

from hyperspy_lorentz.signals import _common
from hyperspy_lorentz.units import to_nm

__all__ = ["LorentzFocalSeries", "LazyLorentzFocalSeries", "DEFAULT_MICROSCOPE_PARAMETERS"]

#: Defaults of the parameters that files rarely hold: the values of the AD-LTEM
#: paper (Zhou, Cherukara & Phatak 2021). Units: Cs mm, theta_c mrad, defocus
#: spread nm, astigmatism nm, astigmatism angle degrees.
DEFAULT_MICROSCOPE_PARAMETERS = {
    "cs": 1.0,
    "theta_c": 0.01,
    "defocus_spread": 500.0,
    "astigmatism": 0.0,
    "astigmatism_angle": 0.0,
}

# Public dictionary keys of get_microscope_parameters, with their units.
_KEYS = {
    "beam_energy": "beam_energy_kV",
    "pixel_size": "pixel_size_nm",
    "defocus": "defocus_nm",
    "cs": "cs_mm",
    "theta_c": "theta_c_mrad",
    "defocus_spread": "defocus_spread_nm",
    "astigmatism": "astigmatism_nm",
    "astigmatism_angle": "astigmatism_angle_deg",
}


def _check_number(name, value, *, positive=False, non_negative=False, upper=None, unit=""):
    """A scalar input as a float in ``unit``; see :func:`_common.as_number`."""
    return _common.as_number(name, value, unit, positive=positive, non_negative=non_negative, upper=upper)


#: Smallest image side, pixels, that the reconstructions accept (the AD fit's limit,
#: applied to every method so that all refuse the same images).
MIN_IMAGE_SIZE = 8
#: The defocus is flagged as implausible (a warning) where its Fresnel length
#: ``sqrt(lambda |df|)`` is below this fraction of a pixel, or above the field of view.
FRESNEL_MIN_PIXELS = 0.1


def _check_defocus_scale(p, shape):
    """Warn where the defocus cannot give Lorentz contrast at this pixel size.

    The Fresnel length ``sqrt(lambda |df|)`` (nm) is the distance over which
    the defocus moves the phase into contrast: far below a pixel the images hold
    no contrast, above the field of view all of it is blurred away. Either is
    most often a unit mistake (nm typed for um or mm, or the reverse).
    """
    import warnings

    from hyperspy_lorentz.physics.optics import wavelength

    df = np.abs(np.asarray(p["defocus_nm"], dtype=float))
    largest = float(df.max()) if df.size else 0.0
    if largest == 0:
        return
    lam = wavelength(p["beam_energy_kV"])
    pixel = float(p["pixel_size_nm"])
    fov = max(shape) * pixel
    fresnel = math.sqrt(lam * largest)
    label, factor = _common.length_unit(largest)
    stated = f"|defocus| up to {largest / factor:.4g} {label}"

    def as_if(scale):
        f = math.sqrt(lam * largest * scale)
        return f"{f / pixel:.3g} pixels"

    if fresnel < FRESNEL_MIN_PIXELS * pixel:
        warnings.warn(
            f"{stated} is implausibly small for {pixel:.4g} nm pixels: its Fresnel length "
            f"sqrt(lambda |df|) = {fresnel:.3g} nm is {fresnel / pixel:.2g} of a pixel, so the "
            "images hold almost no Lorentz contrast. Defocus values are in nm unless a unit is "
            "given: if they were meant in um or mm (Fresnel length "
            f"{as_if(1e3)} or {as_if(1e6)}), set them again with "
            "s.set_defocus(values, units='um') (or units='mm').",
            UserWarning,
            stacklevel=4,
        )
    elif fresnel > fov:
        warnings.warn(
            f"{stated} is implausibly large for this {fov:.4g} nm field of view: its Fresnel "
            f"length sqrt(lambda |df|) = {fresnel:.4g} nm exceeds the field of view, so the "
            "contrast is blurred beyond the image. Was the unit 1000 or 10^6 times too large "
            f"(m for mm, or mm for um: Fresnel length {as_if(1e-3)} or {as_if(1e-6)})? If so, "
            "set the values again with s.set_defocus(values, units=...).",
            UserWarning,
            stacklevel=4,
        )


class LorentzFocalSeries(Signal2D):
    """A Lorentz TEM through-focus series.

    A stack of 2-D images whose navigation axis named ``defocus`` (nm, positive
    for overfocus, see :ref:`conventions`) gives each image's defocus. The axis may
    be non-uniform. Other navigation axes (time, field, temperature, tilt) may exist
    beside it; reconstructions return one result per position on them.

    Calibrations are read from the file where it holds them (beam energy, pixel
    size, per-frame defocus of Velox EMD files, defocus tags or file names of DM and
    TIFF files); :meth:`set_defocus` and :meth:`set_microscope_parameters` set
    or override them, and :meth:`get_microscope_parameters` reports every value
    with its source.
    """

    _signal_type = "lorentz_focal_series"
    _signal_dimension = 2
    _lazy = False

    # ------------------------------------------------------------------ defocus
    def _defocus_axis(self, required=True):
        idx = _common.navigation_axis_index(self, _common.DEFOCUS_AXIS)
        if idx is None:
            if required:
                raise ValueError(
                    "This focal series has no navigation axis named 'defocus'. "
                    "Set it with s.set_defocus(values, units='nm') (one value per image), "
                    "or s.set_defocus() to read the values from the file."
                )
            return None
        return self.axes_manager.navigation_axes[idx]

    def set_defocus(self, values=None, units="nm", axis=None, convention="ours"):
        """Set the defocus of each image, making the ``defocus`` navigation axis.

        Parameters
        ----------
        values : array-like or None
            One defocus per image along ``axis``, in ``units``, with the sign of
            ``convention`` (ours: positive for overfocus); an element may also be
            a string with its own length unit
            (``"-1.6 mm"``). ``None`` reads them from the file the signal was
            loaded from (per-frame Velox metadata, known DM/TIFF tags, then the
            file names of a stack). A single image (no navigation axis) takes one
            value: it gets a ``defocus`` axis of length 1, for the single-image
            methods (``method="sitie"`` and single-image ``"ad"``).
        units : str
            Unit of ``values``: ``"nm"``, ``"um"``/``"µm"`` or ``"mm"`` (any length
            unit pint knows).
        axis : int, str or None
            The navigation axis that runs through focus (index in natural order or
            name). ``None``: the axis already named ``defocus``, or the only
            navigation axis.
        convention : {"ours", "pylorentz", "kirkland"}
            The sign convention of ``values``. ``"ours"`` (default): positive for
            overfocus, as on the microscope console. ``"pylorentz"``: values of
            PyLorentz or of the AD-LTEM paper's notebooks, whose simulated image
            at ``+df`` is ours at ``-df`` (PyLorentz labels its ``-df`` image
            "under"); ``"kirkland"``: Kirkland's textbook sign (positive for
            underfocus). Values in another convention are negated into ours, and
            the convention and the values as given (nm) are recorded in
            ``metadata.Acquisition_instrument.TEM.Lorentz.defocus_convention`` and
            ``.defocus_as_given_nm``; see :ref:`conventions` for when it applies
            (images *simulated* in that convention -- not micrographs, whose sign
            is the console's).

        Raises
        ------
        ValueError
            If the number of values differs from the number of images, a value is
            not a finite number, the values repeat or are not monotonic, or the
            convention is unknown. The signal is left unchanged.

        Examples
        --------
        >>> s.set_defocus([-1.6, 0, 1.6], units="mm")  # doctest: +SKIP
        >>> s.inav[0].set_defocus(["-1.6 mm"])  # a single image  # doctest: +SKIP
        >>> # PyLorentz's (im_un, im_in, im_ov) at (-200, 0, +200) um: ours (+200, 0, -200) um
        >>> s.set_defocus([-200, 0, 200], units="um", convention="pylorentz")  # doctest: +SKIP
        """
        convention, sign = _common.defocus_sign(convention)
        nav = self.axes_manager.navigation_axes
        # Find the axis first: nothing is modified until every check has passed.
        target = None
        if not nav:
            if axis is not None:
                raise ValueError(
                    "This signal is a single image (no navigation axis), so axis= does not "
                    "apply: give its defocus alone, s.set_defocus([value], units='nm')."
                )
        elif axis is None:
            idx = _common.navigation_axis_index(self, _common.DEFOCUS_AXIS)
            if idx is None:
                if len(nav) > 1:
                    raise ValueError(
                        f"This signal has {len(nav)} navigation axes "
                        f"({', '.join(str(a.name) for a in nav)}); say which runs through "
                        "focus with set_defocus(values, axis=<index or name>)."
                    )
                idx = 0
            target = nav[idx]
        elif isinstance(axis, str):
            idx = _common.navigation_axis_index(self, axis)
            if idx is None:
                raise ValueError(
                    f"No navigation axis is named {axis!r}; the navigation axes are "
                    f"{[a.name for a in nav]}."
                )
            target = nav[idx]
        else:
            try:
                idx = operator.index(axis)
            except TypeError:
                raise ValueError(
                    f"axis must be a navigation axis index or name, not {axis!r}."
                ) from None
            if not -len(nav) <= idx < len(nav):
                raise ValueError(f"axis={axis} is out of range for {len(nav)} navigation axes.")
            target = nav[idx % len(nav)]
        n_images = 1 if target is None else target.size
        if target is None:
            where, axis_ref = "this single image", None
        elif str(target.name) in _common._UNDEFINED:
            where, axis_ref = f"navigation axis {target.index_in_axes_manager}", str(target.index_in_axes_manager)
        else:
            where, axis_ref = f"the navigation axis {target.name!r}", repr(target.name)

        source = "user"
        if values is None:
            from hyperspy_lorentz.io.defocus import read_defocus

            values, source = read_defocus(self)
            if values is None:
                raise ValueError(
                    "No defocus values were found in the file's metadata or its name. "
                    "Give them explicitly: s.set_defocus([...], units='nm')."
                )
            units = "nm"
        if np.ndim(values) > 1:
            raise ValueError(f"Defocus values must be one-dimensional, got shape {np.shape(values)}.")
        values_nm = np.asarray(to_nm(_common.as_numbers("defocus", values, units), units), dtype=float)
        values_nm = np.atleast_1d(values_nm)
        if values_nm.size != n_images:
            hint = ""
            if target is None:
                hint = (" A single image takes one value; to reconstruct a focal series, "
                        "stack its images first: s = hs.stack([s1, s2, ...]).")
            raise ValueError(
                f"{values_nm.size} defocus value(s) were given for {n_images} image(s) along "
                f"{where}: give exactly one value per image.{hint}"
            )
        if values_nm.size > 1:
            steps = np.diff(values_nm)
            if np.all(steps == 0):
                raise ValueError(
                    f"All {values_nm.size} images along {where} were given the same defocus "
                    f"({values_nm[0]:g} nm): they are not a focal series. If they are frames "
                    "at one defocus (a time series), reconstruct one frame, or their average, "
                    "with a single-image method: t = s.inav[i] (or "
                    f"t = s.mean(axis={axis_ref})); t.set_defocus([{values_nm[0]:g}]); "
                    "t.reconstruct_phase(method='sitie') (or method='ad')."
                )
            if np.any(steps == 0):
                raise ValueError(
                    f"Defocus values repeat ({np.round(values_nm, 3).tolist()} nm): each image "
                    "along the defocus axis needs its own value. Drop the repeated images "
                    "(s = s.inav[[...]] with the indices to keep), or average them first."
                )
            if not (np.all(steps > 0) or np.all(steps < 0)):
                order = np.argsort(values_nm)
                raise ValueError(
                    "Defocus values must be strictly increasing or decreasing along the "
                    "axis. Reorder the images first: s = s.inav[order] with "
                    f"order = {order.tolist()} (np.argsort of the values), then set the "
                    "sorted values."
                )
        given_nm = values_nm
        values_nm = sign * values_nm + 0.0  # + 0.0: no -0.0 for an in-focus image
        defocus_axis = {
            "_type": "DataAxis",
            "name": _common.DEFOCUS_AXIS,
            "units": "nm",
            "navigate": True,
            "axis": values_nm,
        }
        if target is None:
            _common.add_navigation_axis(self, defocus_axis)
        else:
            _common.replace_axis(self, target.index_in_array, defocus_axis)
        self._set_source("defocus", source)
        if convention == "ours":
            for item in (_common.DEFOCUS_CONVENTION_ITEM, _common.DEFOCUS_AS_GIVEN_ITEM):
                if self.metadata.has_item(item):  # a record of an earlier call
                    node, _, name = item.rpartition(".")
                    delattr(self.metadata.get_item(node), name)
        else:
            self.metadata.set_item(_common.DEFOCUS_CONVENTION_ITEM, convention)
            self.metadata.set_item(_common.DEFOCUS_AS_GIVEN_ITEM, np.array(given_nm, dtype=float))

    # -------------------------------------------------------------------- plot
    def plot(self, *args, **kwargs):
        """Plot the series: the image at the current defocus and a navigator.

        HyperSpy's ``plot``, with the defocus shown in a readable unit (nm, µm
        or mm, from the largest value): in the image title, which follows the
        navigation, and on the navigator's defocus axis. The defocus axis
        itself stays in nm.

        Parameters
        ----------
        *args, **kwargs
            Those of HyperSpy's ``Signal2D.plot`` (``navigator``, ``cmap``,
            ``scalebar`` ...). ``plot_indices`` defaults to ``False``: the
            title names the position instead of HyperSpy's index tuple.
        """
        kwargs.setdefault("plot_indices", False)
        super().plot(*args, **kwargs)
        explorer = getattr(self, "_plot", None)
        if explorer is None or explorer.signal_plot is None:
            return
        plot = explorer.signal_plot
        base = self.metadata.get_item("General.title") or "Focal series"
        _common.show_position_in_title(plot, self.axes_manager, base)
        ax = self._defocus_axis(required=False)
        navigator = explorer.navigator_plot
        if ax is not None and navigator is not None and getattr(navigator, "ax", None) is not None:
            largest = float(np.max(np.abs(ax.axis))) if ax.size else 0.0
            if getattr(navigator, "axis", None) is ax:  # a line plot against defocus
                _common.format_length_axis(navigator.ax.xaxis, largest, "defocus")
            else:  # an image navigator: defocus is one of its two axes
                for mpl_axis, nav_axis in ((navigator.ax.xaxis, getattr(navigator, "xaxis", None)),
                                           (navigator.ax.yaxis, getattr(navigator, "yaxis", None))):
                    if nav_axis is ax:
                        _common.format_length_axis(mpl_axis, largest, "defocus")
            _common.tidy_layout(navigator.figure)
            navigator.figure.canvas.draw_idle()
        plot.figure.canvas.draw_idle()

    # ------------------------------------------------------- microscope params
    def _set_source(self, key, source):
        self.metadata.set_item(f"{_common.LORENTZ_NODE}.sources.{key}", source)

    def _get_source(self, key, fallback):
        return self.metadata.get_item(f"{_common.LORENTZ_NODE}.sources.{key}", fallback)

    def set_microscope_parameters(
        self,
        beam_energy=None,
        cs=None,
        theta_c=None,
        defocus_spread=None,
        pixel_size=None,
        astigmatism=None,
        astigmatism_angle=None,
    ):
        """Set the microscope parameters that files rarely hold.

        Values are written to ``metadata.Acquisition_instrument.TEM`` (beam
        energy) and ``metadata.Acquisition_instrument.TEM.Lorentz`` (the rest);
        see :ref:`metadata`. Parameters left ``None`` are not changed.

        Parameters
        ----------
        beam_energy : float, str or None
            Beam energy, keV (the accelerating voltage in kV).
        cs : float, str or None
            Spherical aberration coefficient, mm (default 1 mm).
        theta_c : float, str or None
            Beam divergence semi-angle, mrad (default 0.01 mrad).
        defocus_spread : float, str or None
            Defocus spread from chromatic aberration, nm (default 500 nm).
        pixel_size : float, str or None
            Pixel size at the specimen, nm; calibrates both signal axes.
        astigmatism : float, str or None
            Two-fold astigmatism magnitude, nm (default 0).
        astigmatism_angle : float, str or None
            Azimuth of the two-fold astigmatism, degrees from +x towards +y.

        Each value is a number in the unit given, or a string with a unit that
        pint converts to it (``pixel_size="0.25 nm"``, ``cs="1.2 mm"``,
        ``beam_energy="300 kV"``).

        Raises
        ------
        ValueError
            If a value is not a number (or such a string) or is out of range;
            nothing is changed then.
        """
        # Validate everything before touching the metadata.
        new = {}
        if beam_energy is not None:
            new["beam_energy"] = _check_number("beam_energy", beam_energy, positive=True, upper=10000, unit="keV")
        if cs is not None:
            new["cs"] = _check_number("cs", cs, unit="mm")
        if theta_c is not None:
            new["theta_c"] = _check_number("theta_c", theta_c, non_negative=True, upper=100, unit="mrad")
        if defocus_spread is not None:
            new["defocus_spread"] = _check_number("defocus_spread", defocus_spread, non_negative=True, unit="nm")
        if pixel_size is not None:
            new["pixel_size"] = _check_number("pixel_size", pixel_size, positive=True, unit="nm")
        if astigmatism is not None:
            new["astigmatism"] = _check_number("astigmatism", astigmatism, non_negative=True, unit="nm")
        if astigmatism_angle is not None:
            new["astigmatism_angle"] = _check_number("astigmatism_angle", astigmatism_angle, unit="deg")

        for key, value in new.items():
            if key == "beam_energy":
                self.metadata.set_item(_common.BEAM_ENERGY_ITEM, value)
            elif key == "pixel_size":
                _common.set_signal_axes_nm(self, value)
            else:
                self.metadata.set_item(f"{_common.LORENTZ_NODE}.{key}", value)
            self._set_source(key, "user")

    def get_microscope_parameters(self):
        """Return every parameter a reconstruction uses, with where it came from.

        Returns
        -------
        dict
            ``beam_energy_kV``, ``pixel_size_nm``, ``defocus_nm`` (array, one per
            image), ``cs_mm``, ``theta_c_mrad``, ``defocus_spread_nm``,
            ``astigmatism_nm``, ``astigmatism_angle_deg``, ``sources``: for each of
            these keys, where the value came from (``"file"``, ``"file name"``,
            ``"user"``, ``"default"``), or ``None`` where no value is known; and
            ``problems``: for each key whose calibration is present but unusable
            (non-square pixels, a signal axis without a length unit ...), what is
            wrong and how to fix it. Such a value is ``None``; a reconstruction
            raises the problem as a ValueError.
        """
        from hyperspy_lorentz.io.calibration import beam_energy_from_metadata, pixel_size_nm

        out, sources = {}, {}
        energy, src = beam_energy_from_metadata(self)
        out["beam_energy_kV"] = energy
        sources["beam_energy_kV"] = self._get_source("beam_energy", src) if energy is not None else None

        problems = {}
        try:
            size, src = pixel_size_nm(self)
        except ValueError as exc:  # e.g. non-square pixels: report, do not raise
            size, src = None, None
            problems["pixel_size_nm"] = str(exc)
        out["pixel_size_nm"] = size
        sources["pixel_size_nm"] = self._get_source("pixel_size", src) if size is not None else None

        ax = self._defocus_axis(required=False)
        if ax is not None:
            out["defocus_nm"] = np.asarray(ax.axis, dtype=float).copy()
            sources["defocus_nm"] = self._get_source("defocus", "user")
        else:
            from hyperspy_lorentz.io.defocus import read_defocus

            values, src = (None, None)
            if self.axes_manager.navigation_dimension:
                values, src = read_defocus(self)
            out["defocus_nm"] = None if values is None else np.asarray(values, dtype=float)
            sources["defocus_nm"] = src

        for key in ("cs", "theta_c", "defocus_spread", "astigmatism", "astigmatism_angle"):
            public = _KEYS[key]
            value = self.metadata.get_item(f"{_common.LORENTZ_NODE}.{key}")
            if value is None:
                out[public] = DEFAULT_MICROSCOPE_PARAMETERS[key]
                sources[public] = "default"
            else:
                out[public] = float(value)
                sources[public] = self._get_source(key, "file")
        out["sources"] = sources
        out["problems"] = problems
        return out

    # ----------------------------------------------------------------- checks
    def _require_parameters(self, defocus=None):
        """Parameters for a reconstruction, raising with the fix where one is missing.

        ``defocus`` (nm, or a string with a length unit) stands in for the
        defocus axis of a single image.
        """
        p = self.get_microscope_parameters()
        if defocus is not None:
            if self._defocus_axis(required=False) is not None:
                raise ValueError(
                    "This series has a defocus axis; drop the defocus argument, or change "
                    "the axis with s.set_defocus(...)."
                )
            nav = self.axes_manager.navigation_axes
            if nav:
                sizes = " x ".join(str(a.size) for a in nav)
                raise ValueError(
                    f"defocus= is for a single image, but this signal holds {sizes} images "
                    "(and no 'defocus' axis). Reconstruct one of them: "
                    "s.inav[i].reconstruct_phase(method='sitie', defocus=...); or, if they "
                    "form a focal series, set the defocus of each image with "
                    "s.set_defocus(values, units='nm')."
                )
            values = _common.as_numbers("defocus", defocus, "nm")
            if values.size != 1:
                raise ValueError(
                    f"defocus= takes the one defocus of this single image (nm), not {values.size} values."
                )
            p["defocus_nm"] = values
            p["sources"]["defocus_nm"] = "user"
        if p["beam_energy_kV"] is None:
            raise ValueError(
                "The beam energy is unknown: set it with "
                "s.set_microscope_parameters(beam_energy=200) (keV)."
            )
        if "pixel_size_nm" in p["problems"]:
            raise ValueError(p["problems"]["pixel_size_nm"])
        if p["pixel_size_nm"] is None:
            raise ValueError(
                "The pixel size is not calibrated: set it with "
                "s.set_microscope_parameters(pixel_size=...) (nm), or calibrate the "
                "signal axes (scale and units)."
            )
        if p["defocus_nm"] is None:
            if self.axes_manager.navigation_dimension:
                raise ValueError(
                    "The defocus of the images is unknown: set it with "
                    "s.set_defocus(values, units='nm') (one value per image)."
                )
            raise ValueError(
                "The defocus of this single image is unknown: set it with "
                "s.set_defocus([value], units='nm'), or pass it to "
                "reconstruct_phase(method='sitie', defocus=value) (nm)."
            )
        return p

    def _check_images(self):
        """Reject data that no method can reconstruct (the values: eager data only)."""
        for ax in self.axes_manager.signal_axes:
            if not ax.is_uniform:
                raise ValueError(
                    f"The signal axis {ax.name!r} is non-uniform; reconstructions need "
                    "square pixels on a regular grid. Interpolate onto a uniform grid first "
                    "(e.g. s.interpolate_on_axis)."
                )
        ny, nx = self.axes_manager.signal_shape[::-1]
        n_images = int(np.prod(self.axes_manager.navigation_shape)) if self.axes_manager.navigation_shape else 1
        if n_images == 0 or ny * nx == 0:
            raise ValueError(
                f"The focal series holds no data (navigation shape "
                f"{self.axes_manager.navigation_shape}, images of {ny} x {nx} pixels): "
                "check the slicing (s.inav[...], s.isig[...]) that made it."
            )
        if min(ny, nx) < MIN_IMAGE_SIZE:
            raise ValueError(
                f"The images are {ny} x {nx} pixels; every method needs at least "
                f"{MIN_IMAGE_SIZE} x {MIN_IMAGE_SIZE}. Check that the image dimensions are "
                "the signal axes (print(s.axes_manager); e.g. s = s.transpose(signal_axes=(1, 2))), "
                "and crop or bin less (s.isig[...], s.rebin(...))."
            )
        if not self._lazy:
            _common.check_finite(self.data, "The focal series")
            if np.any(self.data < 0):
                raise ValueError(
                    "The focal series holds negative intensities. Subtract a smaller "
                    "dark level, or clip on a copy: s2 = s.deepcopy(); s2.data.clip(0, None, out=s2.data)."
                )
            blank = ~np.any(self.data, axis=(-2, -1))  # array order of the navigation axes
            if np.all(blank):
                raise ValueError("Every image of the focal series is zero: there is nothing to reconstruct.")
            if np.any(blank):
                where = [tuple(int(i) for i in idx[::-1]) for idx in np.argwhere(np.atleast_1d(blank))]
                shown = ", ".join(str(w[0]) if len(w) == 1 else str(w) for w in where[:5])
                more = f" and {len(where) - 5} more" if len(where) > 5 else ""
                if blank.ndim == 1:
                    keep = [i for i in range(blank.size) if not blank[i]]
                    fix = (f"Drop it: s = hs.stack([s.inav[i] for i in {keep}]), then set the "
                           "defocus of the images kept with s.set_defocus([...]).")
                else:
                    fix = "Drop or replace it (select good images with s.inav[...])."
                raise ValueError(
                    f"{len(where)} image(s) of the focal series are entirely zero (navigation "
                    f"index {shown}{more}): a blank frame has no electrons to fit. {fix}"
                )

    # --------------------------------------------------------- reconstruction
    def _series_inputs(self, single_image=False, defocus=None):
        """Check the series and collect what every reconstruction needs."""
        self._check_images()
        p = self._require_parameters(defocus)
        n_distinct = np.unique(np.round(p["defocus_nm"], 6)).size
        if not single_image and n_distinct < 2:
            raise ValueError(
                f"This series has {n_distinct} distinct defocus value(s); a focal-series "
                "reconstruction needs at least two. For one image use "
                "reconstruct_phase(method='sitie') or reconstruct_phase(method='ad') "
                "(the single-image AD)."
            )
        _check_defocus_scale(p, self.axes_manager.signal_shape[::-1])
        self._check_contrast(p)
        return p

    def _check_contrast(self, p):
        """Warn where no defocused image holds contrast above its noise.

        Every reconstruction passes here (through :meth:`_series_inputs`), so
        that AD, TIE, SITIE, single-image AD and the flip/unflip paths all warn
        alike; the measurement
        (:func:`hyperspy_lorentz.reconstruction.contrast.defocus_contrast`) is
        kept for the result's ``metadata.Signal.Reconstruction.defocus_contrast``.
        Lazy signals are not checked: it would read every image twice.
        """
        import warnings

        from hyperspy_lorentz.physics.optics import wavelength
        from hyperspy_lorentz.reconstruction.contrast import contrast_warning, defocus_contrast
        from hyperspy_lorentz.signals._series import _user_stacklevel, series_array

        self.__dict__.pop("_contrast_record", None)
        if self._lazy:
            return
        defocus = np.atleast_1d(np.asarray(p["defocus_nm"], dtype=float))
        if self._defocus_axis(required=False) is not None:
            data = series_array(self)
        elif self.axes_manager.navigation_dimension == 0:
            data = np.asarray(self.data)[None]  # a single image given defocus=
        else:
            return  # no defocus axis: the reconstruction itself says what to do
        shape = data.shape[-2:]
        outer = data.shape[:-3]
        series = np.reshape(data, (-1,) + data.shape[-3:])
        records = [defocus_contrast(one, defocus) for one in series]
        flat = [not r["has_contrast"] for r in records]
        if len(records) == 1:
            self._contrast_record = records[0]
        else:
            self._contrast_record = {
                "series": len(records),
                "series_without_contrast": int(sum(flat)),
                "largest_significance": np.reshape(
                    [max(r["significance"]) for r in records], outer),
                "threshold": records[0]["threshold"],
            }
        if not any(flat):
            return
        first = flat.index(True)
        message = contrast_warning(records[first], p["pixel_size_nm"],
                                   wavelength(p["beam_energy_kV"]), shape)
        if len(records) > 1:
            where = tuple(int(i) for i in np.unravel_index(first, outer))[::-1]
            message = (f"{sum(flat)} of the {len(records)} focal series of this signal hold "
                       f"no contrast above noise; the first, at navigation index "
                       f"{where[0] if len(where) == 1 else where}: {message}")
        warnings.warn(message, UserWarning, stacklevel=_user_stacklevel())

    def _wrap_result(self, data, cls_name, title, info, parameters, lazy_infos=None):
        """Make an ElectronPhase / complex signal from per-series results."""
        from hyperspy_lorentz.signals import _series

        ax = self._defocus_axis(required=False)
        axes = self.axes_manager._get_axes_dicts()
        if ax is not None:
            del axes[ax.index_in_array]
        metadata = self.metadata.as_dictionary()
        metadata.setdefault("General", {})["title"] = title
        signal_md = metadata.setdefault("Signal", {})
        signal_md.pop("Noise_properties", None)
        if cls_name == "ElectronPhase":
            from hyperspy_lorentz.signals.electron_phase import ElectronPhase, LazyElectronPhase

            cls = LazyElectronPhase if _is_dask(data) else ElectronPhase
            signal_md["signal_type"] = "electron_phase"
            signal_md["quantity"] = "Phase (rad)"
        else:
            from hyperspy.signals import ComplexSignal2D
            cls = ComplexSignal2D
            signal_md["signal_type"] = ""
            signal_md["quantity"] = "Exit wave"
        recon = {k: v for k, v in parameters.items() if _is_plain(v)}
        if info is not None:
            recon.update({k: v for k, v in _series.merge_infos(info).items() if _is_plain(v)})
        contrast = self.__dict__.pop("_contrast_record", None)
        if contrast is not None:
            recon["defocus_contrast"] = contrast
        signal_md["Reconstruction"] = recon
        out = cls(data, axes=axes, metadata=metadata, original_metadata=self.original_metadata.as_dictionary())
        if _is_dask(data) and cls_name != "ElectronPhase":
            out = out.as_lazy()
            out.data = data
        if lazy_infos is not None:
            out._lazy_reconstruction_info = lazy_infos
        return out

    def _reconstruct(self, kernel, result_dtype, cls_name, title, parameters, show_progressbar, lazy_output):
        from hyperspy_lorentz.signals import _series

        shape = tuple(self.axes_manager.signal_shape[::-1])
        results, infos = _series.apply_kernel(
            self, kernel, result_shape=shape, result_dtype=result_dtype,
            show_progressbar=show_progressbar, lazy_output=lazy_output, parameters=parameters,
        )
        if _is_dask(results):
            return self._wrap_result(results, cls_name, title, None, parameters, lazy_infos=infos)
        return self._wrap_result(results, cls_name, title, infos, parameters)


    # ------------------------------------------------------ public reconstruction
    def reconstruct_phase(self, method="ad", *, flipped=None, show_progressbar=None, lazy_output=None, **kwargs):
        """Retrieve the electron phase of every focal series in the signal.

        Parameters
        ----------
        method : {"ad", "tie", "sitie"}
            ``"ad"``: automatic-differentiation fit of the microscope model to the
            series (Zhou, Cherukara & Phatak 2021; keywords of
            :func:`hyperspy_lorentz.reconstruction.ad.reconstruct_ad`; on a
            single-image series it solves for the magnetic phase only, see
            :func:`hyperspy_lorentz.reconstruction.single_image.reconstruct_single_image`).
            ``"tie"``: transport of intensity equation (keywords of
            :func:`hyperspy_lorentz.reconstruction.tie.tie_phase`: ``qc``,
            ``derivative``, ``symmetric``, ``infocus``, ``noise_level``).
            ``"sitie"``: single-image TIE of one defocused image (keywords
            ``qc``, ``symmetric``; ``defocus`` in nm where the signal has no
            defocus axis).
        flipped : LorentzFocalSeries or None
            A second series of the specimen turned upside down. The flipped
            images are mirrored and registered onto these ones, both series are
            reconstructed, and the magnetic phase (half the difference) and the
            electrostatic phase (half the sum) are returned. Keywords
            ``flip_axis`` (``"x"`` or ``"y"``, the in-plane axis the specimen was
            turned about; default ``"x"``) and ``rotation`` (bool) control the
            registration.
        %s
        %s
        **kwargs
            Passed to the method's kernel.

        Returns
        -------
        ElectronPhase or tuple of ElectronPhase
            The phase (rad) with the navigation axes other than ``defocus``,
            calibrated like the images, and ``metadata.Signal.Reconstruction``
            recording the method, every parameter used and what was refined. With
            ``flipped``: ``(magnetic, electrostatic)``.
        """
        method = str(method).lower()
        if method not in ("ad", "tie", "sitie"):
            raise ValueError(f"Unknown method {method!r}: use 'ad', 'tie' or 'sitie'.")
        self._check_keywords(method, kwargs, flipped=flipped is not None)
        if flipped is not None:
            from hyperspy_lorentz.signals._flip import reconstruct_flip_pair

            return reconstruct_flip_pair(
                self, flipped, method=method, show_progressbar=show_progressbar, **kwargs
            )
        if method == "tie":
            return self._reconstruct_tie(show_progressbar, lazy_output, **kwargs)
        if method == "sitie":
            return self._reconstruct_sitie(show_progressbar, lazy_output, **kwargs)
        return self._reconstruct_ad(False, show_progressbar, lazy_output, **kwargs)

    reconstruct_phase.__doc__ %= (SHOW_PROGRESSBAR_ARG, LAZY_OUTPUT_ARG)

    def reconstruct_exit_wave(self, *, show_progressbar=None, lazy_output=None, **kwargs):
        """Retrieve the specimen exit wave (amplitude and phase) by AD.

        Same fit as ``reconstruct_phase(method="ad")``; the amplitude is refined
        unless ``refine`` is given without ``"amplitude"``.

        Parameters
        ----------
        %s
        %s
        **kwargs
            Keywords of :func:`hyperspy_lorentz.reconstruction.ad.reconstruct_ad`.

        Returns
        -------
        hyperspy.signals.ComplexSignal2D
            ``A exp(i phi)``, calibrated, with ``metadata.Signal.Reconstruction``.
        """
        self._check_keywords("ad", kwargs, exit_wave=True)
        kwargs.setdefault("refine", ("amplitude",))
        return self._reconstruct_ad(True, show_progressbar, lazy_output, **kwargs)

    reconstruct_exit_wave.__doc__ %= (SHOW_PROGRESSBAR_ARG, LAZY_OUTPUT_ARG)

    def _check_keywords(self, method, kwargs, *, flipped=False, exit_wave=False):
        """Refuse keywords the method's kernel does not take, listing those it does."""
        unknown = [k for k in kwargs if not k.startswith("_")]
        ax = self._defocus_axis(required=False)
        if method == "ad" and not exit_wave:
            if ax is not None:
                kinds = ["single"] if ax.size == 1 else ["multi"]
            else:
                kinds = ["multi"] if self.axes_manager.navigation_dimension else ["single"]
        else:
            kinds = {"ad": ["multi"], "tie": ["tie"], "sitie": ["sitie"]}[method]
        accepted = set()
        for kind in kinds:
            accepted |= _method_keywords(kind)
        if flipped:
            accepted |= _FLIP_KEYWORDS
        unknown = [k for k in unknown if k not in accepted]
        if not unknown:
            return
        name = unknown[0]
        if name in _SIGNAL_PARAMETERS:
            raise ValueError(
                f"{name} is not a keyword of reconstruct_phase: the reconstruction reads it "
                f"from the signal. {_SIGNAL_PARAMETERS[name]}"
            )
        label = {"multi": "AD (reconstruct_ad)", "single": "single-image AD (reconstruct_single_image)",
                 "tie": "TIE (tie_phase)", "sitie": "SITIE (sitie_phase)"}[kinds[0]]
        if exit_wave:
            label = "reconstruct_exit_wave (reconstruct_ad)"
        others = [lbl for kind, lbl in (("multi", "multi-image AD"), ("single", "single-image AD"),
                                         ("tie", "method='tie'"), ("sitie", "method='sitie'"))
                  if kind not in kinds and name in _method_keywords(kind)]
        elsewhere = f" ({name!r} is a keyword of {' and '.join(others)})" if others else ""
        raise ValueError(
            f"Unknown keyword{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for "
            f"{label}{elsewhere}. It accepts: {', '.join(sorted(accepted))}."
        )

    def _reconstruct_tie(self, show_progressbar, lazy_output, **kwargs):
        from hyperspy_lorentz.physics.optics import wavelength
        from hyperspy_lorentz.reconstruction.tie import tie_phase

        p = self._series_inputs()
        defocus = p["defocus_nm"]
        if not (np.any(defocus < 0) and np.any(defocus > 0)):
            raise ValueError(
                "The TIE needs images on both sides of focus (negative and positive "
                f"defocus); this series has {np.round(defocus).tolist()} nm. Use "
                "reconstruct_phase(method='ad') (which takes one-sided series) or "
                "method='sitie' for a single image."
            )
        _check_qc(kwargs)
        lam = wavelength(p["beam_energy_kV"])
        pixel = p["pixel_size_nm"]

        def kernel(images):
            return tie_phase(images, defocus, pixel, lam, **kwargs)

        params = {"method": "tie", "beam_energy": p["beam_energy_kV"], "pixel_size": pixel,
                  "defocus": defocus, "wavelength": lam}
        params.update({k: v for k, v in kwargs.items() if _is_plain(v)})
        return self._reconstruct(kernel, float, "ElectronPhase", "Phase (TIE)", params,
                                 show_progressbar, lazy_output)

    def _reconstruct_sitie(self, show_progressbar, lazy_output, defocus=None, **kwargs):
        from hyperspy_lorentz.physics.optics import wavelength
        from hyperspy_lorentz.reconstruction.tie import sitie_phase

        p = self._series_inputs(single_image=True, defocus=defocus)
        _check_qc(kwargs)
        values = p["defocus_nm"]
        if values.size != 1:
            raise ValueError(
                f"SITIE uses one defocused image, but this series has {values.size}. "
                "Select one with s.inav[i:i+1] (keeping the defocus axis), or use "
                "method='tie' or 'ad' for the whole series."
            )
        df = float(values[0])
        if df == 0:
            raise ValueError("SITIE needs a defocused image; this image is at zero defocus.")
        lam = wavelength(p["beam_energy_kV"])
        pixel = p["pixel_size_nm"]

        def kernel(images):
            image = images[0] if images.ndim == 3 else images
            return sitie_phase(image, df, pixel, lam, **kwargs)

        params = {"method": "sitie", "beam_energy": p["beam_energy_kV"], "pixel_size": pixel,
                  "defocus": df, "wavelength": lam}
        params.update({k: v for k, v in kwargs.items() if _is_plain(v)})
        if self._defocus_axis(required=False) is None:
            return self._reconstruct_single(kernel, params, "Phase (SITIE)")
        return self._reconstruct(kernel, float, "ElectronPhase", "Phase (SITIE)", params,
                                 show_progressbar, lazy_output)

    def _reconstruct_single(self, kernel, params, title):
        """A plain image (no navigation axis) given its defocus as an argument."""
        if self.axes_manager.navigation_dimension:
            raise ValueError(
                "This signal has navigation axes but none named 'defocus'; set it with "
                "s.set_defocus(values, axis=...)."
            )
        data = self.data.compute() if self._lazy else np.asarray(self.data)
        phase, info = kernel(np.asarray(data)[None])
        return self._wrap_result(phase, "ElectronPhase", title, _as_info(info), params)

    def _reconstruct_ad(self, exit_wave, show_progressbar, lazy_output, **kwargs):
        from hyperspy_lorentz.signals._ad import run_ad

        return run_ad(self, exit_wave=exit_wave, show_progressbar=show_progressbar,
                      lazy_output=lazy_output, **kwargs)


class LazyLorentzFocalSeries(LazySignal2D, LorentzFocalSeries):
    """Lazy (dask-backed) version of :class:`LorentzFocalSeries`."""

    _lazy = True


# Keywords each kernel receives from the signal, not from the user.
_SUPPLIED = {
    "multi": {"images", "defocus", "pixel_size", "beam_energy", "cs", "theta_c", "defocus_spread",
              "astigmatism", "astigmatism_angle", "progress"},
    "single": {"image", "defocus", "pixel_size", "beam_energy", "cs", "theta_c", "defocus_spread",
               "progress"},
    "tie": {"images", "defocus", "pixel_size", "wavelength"},
    "sitie": {"image", "defocus", "pixel_size", "wavelength"},
}
# Keywords of reconstruct_phase(flipped=...) (see signals._flip.reconstruct_flip_pair).
_FLIP_KEYWORDS = {"flip_axis", "rotation", "upsample", "interpolation"}
# Parameters that come from the signal, and where to set them.
_SIGNAL_PARAMETERS = {
    "pixel_size": "Set it with s.set_microscope_parameters(pixel_size=...) (nm).",
    "beam_energy": "Set it with s.set_microscope_parameters(beam_energy=...) (keV).",
    "cs": "Set it with s.set_microscope_parameters(cs=...) (mm).",
    "theta_c": "Set it with s.set_microscope_parameters(theta_c=...) (mrad).",
    "defocus_spread": "Set it with s.set_microscope_parameters(defocus_spread=...) (nm).",
    "astigmatism": "Set it with s.set_microscope_parameters(astigmatism=...) (nm).",
    "astigmatism_angle": "Set it with s.set_microscope_parameters(astigmatism_angle=...) (degrees).",
    "wavelength": "It follows from the beam energy: s.set_microscope_parameters(beam_energy=...) (keV).",
    "defocus": ("Set the defocus of each image with s.set_defocus(values, units='nm'); "
                "defocus= is only for method='sitie' on a single image without a defocus axis."),
    "images": "The images are the signal's data.",
    "image": "The image is the signal's data.",
}


def _method_keywords(kind):
    """Keywords a user may pass for one kind of kernel (from the kernel's signature)."""
    import inspect

    if kind == "multi":
        from hyperspy_lorentz.reconstruction.ad import reconstruct_ad as kernel
    elif kind == "single":
        from hyperspy_lorentz.reconstruction.single_image import reconstruct_single_image as kernel
    elif kind == "tie":
        from hyperspy_lorentz.reconstruction.tie import tie_phase as kernel
    else:
        from hyperspy_lorentz.reconstruction.tie import sitie_phase as kernel
    names = {
        name for name, par in inspect.signature(kernel).parameters.items()
        if par.kind in (par.POSITIONAL_OR_KEYWORD, par.KEYWORD_ONLY) and not name.startswith("_")
    }
    names -= _SUPPLIED[kind]
    if kind == "sitie":
        names.add("defocus")  # the defocus of a single image without a defocus axis
    return names


def _check_qc(kwargs):
    """``qc`` (1/nm) as a positive float, or absent/None for the default (in place)."""
    if kwargs.get("qc") is not None:
        kwargs["qc"] = _common.as_number("qc", kwargs["qc"], "1/nm", positive=True)


class _NotAFocalSeries(BaseSignal):
    """Registered for shapes of data that cannot be a focal series; refuses them.

    ``s.set_signal_type("lorentz_focal_series")`` on a complex or a
    one-dimensional signal (or ``hs.load(..., signal_type=...)`` of one) would
    otherwise leave its class unchanged, and fail later with an AttributeError.
    These classes, registered in ``hyperspy_extension.yaml`` for those data,
    raise a ValueError that says what to do instead, and put the signal back
    to its generic class first.

    A result *derived* from a focal series that is complex or 1-D (``s.fft()``,
    a line profile ``s.isig[:, 5]``, ``s.sum(-1)``, ``s.T``) inherits the
    signal type too; it is not refused but quietly becomes the generic
    signal (``ComplexSignal2D``, ``Signal1D``) with no signal type, as it was
    before these classes were registered.
    """

    _signal_type = "lorentz_focal_series"

    def __init__(self, *args, **kwargs):
        have_data = "_data" in self.__dict__ or "data" in self.__dict__
        if have_data and not _called_from_set_signal_type():
            # a derived result (fft, line profile, ...): the generic class, untyped
            from hyperspy.io import assign_signal_subclass

            self.metadata.set_item("Signal.signal_type", "")
            self.__class__ = assign_signal_subclass(
                dtype=self.data.dtype, signal_dimension=self.axes_manager.signal_dimension,
                signal_type="", lazy=self._lazy,
            )
            self.__init__(*args, **kwargs)
            return
        if have_data:
            dtype = np.asarray(self.data[(0,) * self.data.ndim] if self.data.ndim else self.data).dtype
            dims = self.axes_manager.signal_dimension
        else:
            data = args[0] if args else kwargs.get("data")
            dtype = getattr(data, "dtype", np.asarray(data).dtype)
            dims = self._signal_dimension
        message = _not_a_focal_series_message(dtype, dims)
        if have_data:  # called from set_signal_type: restore the signal's generic class
            from hyperspy.io import assign_signal_subclass

            self.metadata.set_item("Signal.signal_type", "")
            self.__class__ = assign_signal_subclass(
                dtype=self.data.dtype, signal_dimension=dims, signal_type="", lazy=self._lazy
            )
        raise ValueError(message)


def _called_from_set_signal_type():
    """True when ``BaseSignal.set_signal_type`` is among the calling frames."""
    import sys

    code = BaseSignal.set_signal_type.__code__
    frame = sys._getframe(1)
    for _ in range(8):
        if frame is None:
            return False
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def _not_a_focal_series_message(dtype, signal_dimension):
    if np.issubdtype(dtype, np.complexfloating):
        return (
            "A Lorentz focal series holds real image intensities, but this signal is "
            "complex (an exit wave or a hologram?). Make the intensities first, e.g. "
            "i = s.amplitude ** 2; i.set_signal_type('lorentz_focal_series'). A file that "
            "carries this signal type (e.g. an FFT of a focal series saved by an older "
            "version) loads with hs.load(filename, signal_type='')."
        )
    return (
        "A Lorentz focal series is a stack of 2-D images, but this signal has "
        f"{signal_dimension} signal dimension(s). Make the two image dimensions the signal "
        "axes first, e.g. s = s.as_signal2D((0, 1)) (or s.transpose(signal_axes=2)), then "
        "s.set_signal_type('lorentz_focal_series'). A file that carries this signal type "
        "loads with hs.load(filename, signal_type='')."
    )


class LorentzFocalSeriesComplex(_NotAFocalSeries):
    """Refuses complex data as a focal series (see :class:`_NotAFocalSeries`)."""

    _signal_dimension = 2
    _lazy = False


class LazyLorentzFocalSeriesComplex(LorentzFocalSeriesComplex):
    """Lazy twin of :class:`LorentzFocalSeriesComplex`."""

    _lazy = True


class LorentzFocalSeries1D(_NotAFocalSeries):
    """Refuses one-dimensional signals as a focal series (see :class:`_NotAFocalSeries`)."""

    _signal_dimension = 1
    _lazy = False


class LazyLorentzFocalSeries1D(LorentzFocalSeries1D):
    """Lazy twin of :class:`LorentzFocalSeries1D`."""

    _lazy = True


class LorentzFocalSeriesComplex1D(_NotAFocalSeries):
    """Refuses complex one-dimensional signals as a focal series (see :class:`_NotAFocalSeries`)."""

    _signal_dimension = 1
    _lazy = False


class LazyLorentzFocalSeriesComplex1D(LorentzFocalSeriesComplex1D):
    """Lazy twin of :class:`LorentzFocalSeriesComplex1D`."""

    _lazy = True


def _is_dask(data):
    import dask.array as da

    return isinstance(data, da.Array)


def _is_plain(value):
    """True for values that metadata (and HDF5) can store: numbers, strings, arrays."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return isinstance(value, np.ndarray) and value.dtype != object


def _as_info(info):
    out = np.empty((), dtype=object)
    out[()] = info
    return out
