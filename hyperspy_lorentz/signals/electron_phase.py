"""The electron phase signal class: a retrieved (or simulated) phase map in rad."""

from __future__ import annotations

import numpy as np
from hyperspy.signals import LazySignal2D, Signal2D
from hyperspy.docstrings.signal import SHOW_PROGRESSBAR_ARG

from hyperspy_lorentz.signals import _common

__all__ = ["ElectronPhase", "LazyElectronPhase"]


class ElectronPhase(Signal2D):
    """Phase of the electron exit wave, rad.

    Returned by
    :meth:`~hyperspy_lorentz.signals.focal_series.LorentzFocalSeries.reconstruct_phase`;
    may carry extra
    navigation axes (one phase map per focal series). The reconstruction that made
    it is recorded in ``metadata.Signal.Reconstruction``.
    """

    _signal_type = "electron_phase"
    _signal_dimension = 2
    _lazy = False

    def _pixel_size_nm(self):
        size, _ = _common.signal_axes_nm(self)
        if size is None:
            raise ValueError(
                "The pixel size of the phase map is not calibrated. Set the signal axes, "
                "e.g. for ax in s.axes_manager.signal_axes: ax.scale = 5.0; ax.units = 'nm'."
            )
        return size

    def induction(self, thickness=None, show_progressbar=None):
        """In-plane magnetic induction from the phase gradient.

        ``(B_x t, B_y t) = (hbar / e) (-d phi / dy, +d phi / dx)`` (see
        :ref:`conventions`), with central differences.

        Parameters
        ----------
        thickness : float, str or None
            Specimen thickness, nm (or a string with a length unit, ``"40 nm"``).
            ``None`` returns the integrated induction ``B t`` in T nm; a
            thickness returns the mean induction ``B`` in T.
        %s

        Returns
        -------
        MagneticInduction
            Navigation axis ``component`` (``x``, ``y``) in front of any other
            navigation axes of the phase.
        """
        from hyperspy_lorentz.physics.induction import induction_from_phase
        from hyperspy_lorentz.signals.magnetic_induction import make_induction_signal

        if thickness is not None:
            thickness = _common.as_number("thickness", thickness, "nm", positive=True)
        pixel = self._pixel_size_nm()

        def _b(phase):
            bx, by = induction_from_phase(np.asarray(phase, dtype=float), pixel, thickness=thickness)
            return np.stack([bx, by])

        stacked = self.map(
            _b,
            inplace=False,
            output_signal_size=(2,) + tuple(self.axes_manager.signal_shape[::-1]),
            output_dtype=float,
            show_progressbar=show_progressbar,
        )
        units = "T nm" if thickness is None else "T"
        return make_induction_signal(stacked, self, units=units, thickness=thickness)

    induction.__doc__ %= (SHOW_PROGRESSBAR_ARG,)

    def unwrap(self, show_progressbar=None):
        """Return a copy with 2-pi phase wraps removed (scikit-image ``unwrap_phase``).

        Parameters
        ----------
        %s

        Returns
        -------
        ElectronPhase
        """
        from skimage.restoration import unwrap_phase

        out = self.map(lambda p: unwrap_phase(np.asarray(p, dtype=float)), inplace=False,
                       show_progressbar=show_progressbar)
        out.metadata.General.title = f"{self.metadata.General.title} (unwrapped)".strip()
        return out

    unwrap.__doc__ %= (SHOW_PROGRESSBAR_ARG,)


class LazyElectronPhase(LazySignal2D, ElectronPhase):
    """Lazy (dask-backed) version of :class:`ElectronPhase`.

    A lazy reconstruction also holds the per-series information (refined
    parameters, loss histories) as a lazy object array; :meth:`compute` computes
    it together with the phase, in one pass over the data, and writes it to
    ``metadata.Signal.Reconstruction``.
    """

    _lazy = True

    def compute(self, close_file=False, show_progressbar=None, **kwargs):
        """Load the phase into memory; a pending reconstruction also fills its metadata.

        A lazy reconstruction computes the phase and the per-series information
        in one pass over the data and writes the information (refined
        parameters, loss histories) to ``metadata.Signal.Reconstruction``; any
        other lazy phase is computed as HyperSpy's ``compute`` does.

        Parameters
        ----------
        close_file : bool
            Close the file the data are read from, once computed.
        show_progressbar : bool or None
            Show a progress bar (``None``: HyperSpy's preference).
        **kwargs
            Passed to ``dask.compute`` (e.g. ``scheduler="threads"``).
        """
        infos = getattr(self, "_lazy_reconstruction_info", None)
        if infos is None:
            return super().compute(close_file=close_file, show_progressbar=show_progressbar, **kwargs)
        import dask
        import dask.array as da

        from hyperspy_lorentz.signals._series import merge_infos
        from hyperspy_lorentz.signals.focal_series import _is_plain

        data, infos = dask.compute(self.data, infos, **kwargs)
        node = self.metadata.get_item("Signal.Reconstruction")
        for key, value in merge_infos(infos).items():
            if _is_plain(value):
                node.set_item(key, value)
        self._lazy_reconstruction_info = None
        self.data = da.from_array(data, chunks=self.data.chunks)
        super().compute(close_file=close_file, show_progressbar=False)


    def save(self, filename=None, overwrite=None, extension=None, file_format=None, **kwds):
        """Save the signal; a pending lazy reconstruction to ``.zspy`` keeps its record.

        Writing a lazy reconstruction to ``.zspy`` streams the phase series by
        series *and* stores the per-series information (refined parameters, loss
        histories) that the same tasks compute (see
        ``hyperspy_lorentz.signals._series.save_lazy_result``). Any other case
        is HyperSpy's ``save``, whose parameters these are.

        Parameters
        ----------
        filename : str, pathlib.Path or None
            The file to write; ``None``: HyperSpy's default name.
        overwrite, extension, file_format, **kwds
            As in HyperSpy's ``save``.
        """
        infos = getattr(self, "_lazy_reconstruction_info", None)
        target = str(filename) if filename is not None else ""
        # save_lazy_result itself calls save(write_dataset=False) for the file's frame.
        if infos is not None and "write_dataset" not in kwds and (target.endswith(".zspy") or extension == "zspy" or file_format == "ZSPY"):
            from hyperspy_lorentz.signals._series import save_lazy_result

            if extension == "zspy" and not target.endswith(".zspy"):
                target += ".zspy"
            return save_lazy_result(self, target, overwrite=overwrite, **kwds)
        return super().save(filename, overwrite=overwrite, extension=extension, file_format=file_format, **kwds)
