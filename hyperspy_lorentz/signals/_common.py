"""Helpers shared by the signal classes: axes, metadata nodes, checks.

Nothing here computes physics; it reads and writes HyperSpy objects.
"""

from __future__ import annotations

import numpy as np

#: Metadata node holding the microscope parameters that files rarely carry.
LORENTZ_NODE = "Acquisition_instrument.TEM.Lorentz"
#: Metadata node of the accelerating voltage (HyperSpy's standard location).
BEAM_ENERGY_ITEM = "Acquisition_instrument.TEM.beam_energy"
#: Metadata node where reconstructions record what they did.
RECONSTRUCTION_NODE = "Signal.Reconstruction"
#: Name of the navigation axis of a focal series that holds the defocus.
DEFOCUS_AXIS = "defocus"


def signal_axes_nm(signal):
    """Return ``(pixel_size_nm, (ny, nx))`` of a 2-D signal, raising on bad axes."""
    from hyperspy_lorentz.io.calibration import pixel_size_nm

    size, _ = pixel_size_nm(signal)
    ny, nx = signal.axes_manager.signal_shape[::-1]
    return size, (ny, nx)


def set_signal_axes_nm(signal, pixel_size_nm, names=("y", "x")):
    """Calibrate the two signal axes of ``signal`` in nm (in place)."""
    ax_x, ax_y = signal.axes_manager.signal_axes
    for ax, name in zip((ax_y, ax_x), names):
        ax.name = name
        ax.units = "nm"
        ax.scale = float(pixel_size_nm)
        if ax.offset is None:
            ax.offset = 0.0


def copy_signal_axes(source, target):
    """Copy the signal-axis calibrations of ``source`` onto ``target`` (in place)."""
    for src, dst in zip(source.axes_manager.signal_axes, target.axes_manager.signal_axes):
        dst.name = src.name
        dst.units = src.units
        if src.is_uniform:
            dst.scale = src.scale
            dst.offset = src.offset


def navigation_axis_index(signal, name):
    """Index (in natural navigation order) of the navigation axis called ``name``."""
    for i, ax in enumerate(signal.axes_manager.navigation_axes):
        if ax.name == name:
            return i
    return None


def replace_axis(signal, index_in_array, new_axis_dict):
    """Replace one axis of ``signal`` (identified by its array index) in place.

    HyperSpy's ``AxesManager.set_axis`` does not rebuild the navigation and signal
    bookkeeping, so the axes manager is rebuilt from dictionaries instead.
    """
    from hyperspy.axes import AxesManager

    dicts = signal.axes_manager._get_axes_dicts()
    dicts[index_in_array] = new_axis_dict
    signal.axes_manager = AxesManager(dicts)


def format_shape(shape):
    return " x ".join(str(int(n)) for n in shape)


def check_finite(data, what="The signal"):
    """Raise ValueError if an in-memory array holds NaN or inf."""
    data = np.asarray(data)
    if not np.isfinite(data).all():
        n_bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise ValueError(
            f"{what} holds {n_bad} non-finite pixel(s) (NaN or inf). Replace them first, "
            "e.g. s.data = np.nan_to_num(s.data, nan=np.nanmean(s.data)) on a copy "
            "(s = s.deepcopy()), or crop them away with s.isig[...]."
        )

