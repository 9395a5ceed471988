"""The focal-series signal class: a stack of Lorentz TEM images at known defocus."""

from __future__ import annotations

import math

import numpy as np
from hyperspy.docstrings.signal import LAZY_OUTPUT_ARG, SHOW_PROGRESSBAR_ARG
from hyperspy.signals import LazySignal2D, Signal2D

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
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number{f' in {unit}' if unit else ''}, not {value!r}.")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, not {value}.")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0 {unit}, not {value}.")
    if non_negative and value < 0:
        raise ValueError(f"{name} must be >= 0 {unit}, not {value}.")
    if upper is not None and value > upper:
        raise ValueError(f"{name} = {value} {unit} is out of range (at most {upper} {unit}).")
    return value


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

    def set_defocus(self, values=None, units="nm", axis=None):
        """Set the defocus of each image, making the ``defocus`` navigation axis.

        Parameters
        ----------
        values : array-like or None
            One defocus per image along ``axis``, positive for overfocus. ``None``
            reads them from the file the signal was loaded from (per-frame Velox
            metadata, known DM/TIFF tags, then the file names of a stack).
        units : str
            Unit of ``values``: ``"nm"``, ``"um"``/``"µm"`` or ``"mm"`` (any length
            unit pint knows).
        axis : int, str or None
            The navigation axis that runs through focus (index in natural order or
            name). ``None``: the axis already named ``defocus``, or the only
            navigation axis.

        Raises
        ------
        ValueError
            If the number of values differs from the number of images, a value is
            not finite, the values are not monotonic, or the signal is a single
            image. The signal is left unchanged.

        Examples
        --------
        >>> s.set_defocus([-1.6, 0, 1.6], units="mm")  # doctest: +SKIP
        """
        nav = self.axes_manager.navigation_axes
        if not nav:
            raise ValueError(
                "This signal is a single image: it has no navigation axis to hold "
                "defocus values. Stack images with hs.stack([s1, s2, ...]) first, or "
                "pass the defocus to reconstruct_phase(method='sitie', defocus=...)."
            )
        # Find the axis first: nothing is modified until every check has passed.
        if axis is None:
            idx = _common.navigation_axis_index(self, _common.DEFOCUS_AXIS)
            if idx is None:
                if len(nav) > 1:
                    raise ValueError(
                        f"This signal has {len(nav)} navigation axes "
                        f"({', '.join(str(a.name) for a in nav)}); say which runs through "
                        "focus with set_defocus(values, axis=<index or name>)."
                    )
                idx = 0
        elif isinstance(axis, str):
            idx = _common.navigation_axis_index(self, axis)
            if idx is None:
                raise ValueError(
                    f"No navigation axis is named {axis!r}; the navigation axes are "
                    f"{[a.name for a in nav]}."
                )
        else:
            idx = int(axis)
            if not -len(nav) <= idx < len(nav):
                raise ValueError(f"axis={axis} is out of range for {len(nav)} navigation axes.")
            idx %= len(nav)
        target = nav[idx]

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
        values_nm = np.atleast_1d(np.asarray(to_nm(np.asarray(values, dtype=float), units)))
        if values_nm.ndim != 1:
            raise ValueError(f"Defocus values must be one-dimensional, got shape {values_nm.shape}.")
        if values_nm.size != target.size:
            raise ValueError(
                f"{values_nm.size} defocus value(s) were given for {target.size} images along "
                f"the navigation axis {target.name!r}: give exactly one value per image."
            )
        if not np.all(np.isfinite(values_nm)):
            raise ValueError("Defocus values must be finite numbers.")
        if values_nm.size > 1:
            steps = np.diff(values_nm)
            if np.any(steps == 0):
                raise ValueError(
                    f"Defocus values repeat ({np.round(values_nm, 3).tolist()} nm): each image "
                    "along the defocus axis needs its own value. If the images were taken at "
                    "one defocus (e.g. a time series), name that axis otherwise and give the "
                    "defocus to the single-image methods instead."
                )
            if not (np.all(steps > 0) or np.all(steps < 0)):
                order = np.argsort(values_nm)
                raise ValueError(
                    "Defocus values must be strictly increasing or decreasing along the "
                    "axis. Reorder the images first: s = s.inav[order] with "
                    f"order = {order.tolist()} (np.argsort of the values), then set the "
                    "sorted values."
                )
        _common.replace_axis(
            self,
            target.index_in_array,
            {
                "_type": "DataAxis",
                "name": _common.DEFOCUS_AXIS,
                "units": "nm",
                "navigate": True,
                "axis": values_nm,
            },
        )
        self._set_source("defocus", source)

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
        beam_energy : float or None
            Accelerating voltage, keV (kV).
        cs : float or None
            Spherical aberration coefficient, mm (default 1 mm).
        theta_c : float or None
            Beam divergence semi-angle, mrad (default 0.01 mrad).
        defocus_spread : float or None
            Defocus spread from chromatic aberration, nm (default 500 nm).
        pixel_size : float or None
            Pixel size at the specimen, nm; calibrates both signal axes.
        astigmatism : float or None
            Two-fold astigmatism magnitude, nm (default 0).
        astigmatism_angle : float or None
            Azimuth of the two-fold astigmatism, degrees from +x towards +y.

        Raises
        ------
        ValueError
            If a value is out of range; nothing is changed then.
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
            new["astigmatism_angle"] = _check_number("astigmatism_angle", astigmatism_angle, unit="degrees")

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
            ``astigmatism_nm``, ``astigmatism_angle_deg``, and ``sources``: for each of
            these keys, where the value came from (``"file"``, ``"file name"``,
            ``"user"``, ``"default"``), or ``None`` where no value is known.
        """
        from hyperspy_lorentz.io.calibration import beam_energy_from_metadata, pixel_size_nm

        out, sources = {}, {}
        energy, src = beam_energy_from_metadata(self)
        out["beam_energy_kV"] = energy
        sources["beam_energy_kV"] = self._get_source("beam_energy", src) if energy is not None else None

        size, src = pixel_size_nm(self)
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
        return out

    # ----------------------------------------------------------------- checks
    def _require_parameters(self, defocus=None):
        """Parameters for a reconstruction, raising with the fix where one is missing.

        ``defocus`` (nm) stands in for the defocus axis of a single image.
        """
        p = self.get_microscope_parameters()
        if defocus is not None:
            if self._defocus_axis(required=False) is not None:
                raise ValueError(
                    "This series has a defocus axis; drop the defocus argument, or change "
                    "the axis with s.set_defocus(...)."
                )
            p["defocus_nm"] = np.atleast_1d(np.asarray(defocus, dtype=float))
            p["sources"]["defocus_nm"] = "user"
        if p["beam_energy_kV"] is None:
            raise ValueError(
                "The beam energy is unknown: set it with "
                "s.set_microscope_parameters(beam_energy=200) (keV)."
            )
        if p["pixel_size_nm"] is None:
            raise ValueError(
                "The pixel size is not calibrated: set it with "
                "s.set_microscope_parameters(pixel_size=...) (nm), or calibrate the "
                "signal axes (scale and units)."
            )
        if p["defocus_nm"] is None:
            raise ValueError(
                "The defocus of the images is unknown: set it with "
                "s.set_defocus(values, units='nm') (one value per image)."
            )
        return p

    def _check_images(self):
        """Reject data that would give a garbage reconstruction (eager data only)."""
        for ax in self.axes_manager.signal_axes:
            if not ax.is_uniform:
                raise ValueError(
                    f"The signal axis {ax.name!r} is non-uniform; reconstructions need "
                    "square pixels on a regular grid. Interpolate onto a uniform grid first "
                    "(e.g. s.interpolate_on_axis)."
                )
        if not self._lazy:
            _common.check_finite(self.data, "The focal series")
            if not np.any(self.data):
                raise ValueError("Every image of the focal series is zero: there is nothing to reconstruct.")
            if np.any(self.data < 0):
                raise ValueError(
                    "The focal series holds negative intensities. Subtract a smaller "
                    "dark level, or clip on a copy: s2 = s.deepcopy(); s2.data.clip(0, None, out=s2.data)."
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
                "reconstruct_phase(method='sitie') or reconstruct_phase(method='ad') on a "
                "single-image series (s.inav[i:i+1])."
            )
        return p

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
        kwargs.setdefault("refine", ("amplitude",))
        return self._reconstruct_ad(True, show_progressbar, lazy_output, **kwargs)

    reconstruct_exit_wave.__doc__ %= (SHOW_PROGRESSBAR_ARG, LAZY_OUTPUT_ARG)

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
        qc = kwargs.get("qc")
        if qc is not None and not (np.isfinite(qc) and qc > 0):
            raise ValueError(f"qc must be a positive frequency in 1/nm (or None for the default), not {qc}.")
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
