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



# ------------------------------------------------------------ defocus sign
#: Sign conventions of defocus values that ``set_defocus`` accepts, and the
#: factor that turns a value in each into ours (positive = overfocus, the image
#: propagated downstream of the specimen; see :ref:`conventions`).
#:
#: * ``"ours"``: hyperspy_lorentz, the microscope console, Velox.
#: * ``"pylorentz"``: PyLorentz and the AD-LTEM paper's notebooks, whose
#:   transfer function is ``exp(-i chi)`` with ``chi = -pi lambda df q^2 + ...``:
#:   their image at ``+df`` is ours at ``-df`` (they label ``-df`` "under").
#: * ``"kirkland"``: Kirkland's textbook form (same ``chi``; ``df > 0`` is
#:   underfocus), e.g. multislice codes written after it.
DEFOCUS_CONVENTIONS = {"ours": 1.0, "pylorentz": -1.0, "kirkland": -1.0}
#: Metadata items recording a defocus given in another convention.
DEFOCUS_CONVENTION_ITEM = LORENTZ_NODE + ".defocus_convention"
DEFOCUS_AS_GIVEN_ITEM = LORENTZ_NODE + ".defocus_as_given_nm"


def defocus_sign(convention):
    """The factor (+1 or -1) from defocus values in ``convention`` to ours.

    Parameters
    ----------
    convention : str
        A key of ``DEFOCUS_CONVENTIONS`` (case and surrounding spaces are
        ignored; ``"PyLorentz"`` is ``"pylorentz"``).

    Returns
    -------
    convention : str
        The normalised name.
    sign : float
        ``+1.0`` for ``"ours"``, ``-1.0`` for ``"pylorentz"`` and ``"kirkland"``.

    Raises
    ------
    ValueError
        For any other value, listing the conventions and what each means.
    """
    key = convention.strip().lower().replace("-", "").replace("_", "") if isinstance(convention, str) else None
    if key in DEFOCUS_CONVENTIONS:
        return key, DEFOCUS_CONVENTIONS[key]
    raise ValueError(
        f"Unknown defocus convention {convention!r}: use 'ours' (default; positive = "
        "overfocus, as on the microscope console), 'pylorentz' (values of PyLorentz or the "
        "AD-LTEM notebooks, whose image at +df is ours at -df) or 'kirkland' (Kirkland's "
        "textbook sign, positive = underfocus)."
    )


# ------------------------------------------------------------------- numbers
def as_number(name, value, unit, *, positive=False, non_negative=False, upper=None):
    """Check one scalar input and return it as a float in ``unit``.

    Every method of the signal classes checks its numeric inputs here, so that
    a bad value gives the same kind of message everywhere: a ValueError that
    names the argument, its unit and an example.

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    value : float or str
        A number in ``unit``, or a string pint can read, with a unit of the same
        kind (``"40 nm"``, ``"1.6 mm"``; a beam energy may also be given as the
        accelerating voltage, ``"200 kV"``). A string without a unit
        (``"40"``) is a number in ``unit``.
    unit : str
        The unit of the result (and of a bare number), e.g. ``"nm"``, ``"keV"``.
    positive, non_negative : bool
        Require ``value > 0`` or ``value >= 0``.
    upper : float or None
        Largest accepted value, in ``unit``.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``value`` is not a finite number (or a quantity convertible to
        ``unit``), or is out of range.
    """
    example = f"e.g. {name}=40 (in {unit}) or {name}='40 {unit}'"
    if isinstance(value, (bool, np.bool_)) or value is None:
        raise ValueError(f"{name} must be a number in {unit}, not {value!r} ({example}).")
    if isinstance(value, str):
        number = _parse_quantity(name, value, unit, example)
    else:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number in {unit}, not {value!r} ({example}).") from None
    if not np.isfinite(number):
        raise ValueError(f"{name} must be a finite number in {unit}, not {number}.")
    if positive and number <= 0:
        raise ValueError(f"{name} must be > 0 {unit}, not {number:g}.")
    if non_negative and number < 0:
        raise ValueError(f"{name} must be >= 0 {unit}, not {number:g}.")
    if upper is not None and number > upper:
        raise ValueError(f"{name} = {number:g} {unit} is out of range (at most {upper:g} {unit}).")
    return number


def as_numbers(name, values, unit):
    """Check a sequence of numbers (or quantity strings) and return floats in ``unit``.

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    values : float, str or sequence of float or str
        Numbers in ``unit``, or strings pint can read (``"-1.6 mm"``).
    unit : str
        The unit of the result (and of bare numbers).

    Returns
    -------
    numpy.ndarray
        One-dimensional, float, in ``unit``.

    Raises
    ------
    ValueError
        If an element is not a finite number or a quantity convertible to ``unit``.
    """
    if isinstance(values, str) or np.ndim(values) == 0:
        values = [values]
    arr = np.asarray(values, dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a one-dimensional list of numbers, got shape {arr.shape}.")
    return np.array([as_number(f"{name}[{i}]", v, unit) for i, v in enumerate(arr)], dtype=float)


def _parse_quantity(name, text, unit, example):
    import pint

    from hyperspy_lorentz.units import normalise_unit, ureg

    bad = f"{name} must be a number in {unit} or a quantity such as '40 {unit}', not {text!r}"
    try:
        q = ureg.Quantity(text.strip())
    except (pint.errors.PintError, ValueError, TypeError, AttributeError, SyntaxError):
        raise ValueError(f"{bad} ({example}).") from None
    if not isinstance(q, ureg.Quantity):
        raise ValueError(f"{bad} ({example}).")
    if q.unitless:
        magnitude = q.magnitude
    else:
        try:
            if unit == "keV" and q.check("[electric_potential]"):
                # an accelerating voltage in kV is the beam energy in keV
                magnitude = q.to("kV").magnitude
            else:
                magnitude = q.to(normalise_unit(unit)).magnitude
        except pint.errors.DimensionalityError:
            raise ValueError(
                f"{name} = {text!r} is not convertible to {unit}: give a number in {unit} or a "
                f"quantity in a unit of the same kind ({example})."
            ) from None
    try:
        return float(magnitude)
    except (TypeError, ValueError):
        raise ValueError(f"{bad} ({example}).") from None


# --------------------------------------------------------------------- plots
def length_unit(max_abs_nm):
    """A readable unit for lengths up to ``max_abs_nm``: ``(label, nm per unit)``.

    Parameters
    ----------
    max_abs_nm : float
        The largest absolute length to show, nm.

    Returns
    -------
    label : str
        ``"nm"`` below 1 µm, ``"µm"`` below 1 mm, ``"mm"`` from 1 mm.
    factor : float
        Nanometres per unit (1, 1e3 or 1e6).
    """
    m = abs(float(max_abs_nm)) if np.isfinite(max_abs_nm) else 0.0
    if m < 1e3:
        return "nm", 1.0
    if m < 1e6:
        return "µm", 1e3
    return "mm", 1e6


def format_signed(value):
    """``value`` with 4 significant digits and an explicit sign (``+300``, ``-1.6``, ``0``)."""
    text = f"{value:.4g}"
    return "+" + text if value > 0 else text


_UNDEFINED = ("", "None", "<undefined>")


def position_text(axes_manager):
    """The current navigation position in words, e.g. ``"defocus -300 µm, time 2 s"``.

    The ``defocus`` axis (nm) is shown in a readable unit (see :func:`length_unit`);
    other axes by value and unit, or by index where they have neither.

    Parameters
    ----------
    axes_manager : hyperspy.axes.AxesManager
        The axes manager whose current position is described.

    Returns
    -------
    str
        Empty where there are no navigation axes.
    """
    parts = []
    for ax in axes_manager.navigation_axes:
        units = "" if str(ax.units) in _UNDEFINED else str(ax.units)
        name = f"axis {ax.index_in_axes_manager}" if str(ax.name) in _UNDEFINED else str(ax.name)
        if ax.name == DEFOCUS_AXIS and units == "nm":
            label, factor = length_unit(np.max(np.abs(ax.axis)))
            parts.append(f"defocus {format_signed(ax.value / factor)} {label}")
        elif units or not ax.is_uniform or ax.scale != 1 or ax.offset != 0:
            parts.append(f"{name} {ax.value:.4g}{' ' + units if units else ''}")
        else:
            parts.append(f"{name} {ax.index}")
    return ", ".join(parts)


def show_position_in_title(signal_plot, axes_manager, base):
    """Title the image of a HyperSpy plot with ``base`` and the navigation position.

    The title follows the navigation (HyperSpy's red index text is meant to be
    turned off with ``plot_indices=False``).

    Parameters
    ----------
    signal_plot : hyperspy.drawing.image.ImagePlot
        The signal plot (``s._plot.signal_plot``).
    axes_manager : hyperspy.axes.AxesManager
        The axes manager of the plotted signal.
    base : str
        The fixed part of the title.
    """

    def title():
        where = position_text(axes_manager)
        return f"{base}\n{where}" if where else base

    signal_plot.ax.set_title(title())

    def update():
        if signal_plot.ax is None or signal_plot.figure is None:
            return
        signal_plot.ax.set_title(title())
        signal_plot.figure.canvas.draw_idle()

    if axes_manager.navigation_dimension:
        axes_manager.events.indices_changed.connect(update, [])
        signal_plot.events.closed.connect(
            lambda: axes_manager.events.indices_changed.disconnect(update), []
        )


def format_length_axis(mpl_axis, max_abs_nm, name):
    """Show an axis whose data are nm in a readable unit (tick labels and label).

    Parameters
    ----------
    mpl_axis : matplotlib.axis.Axis
        E.g. ``ax.xaxis``.
    max_abs_nm : float
        The largest absolute value on the axis, nm; sets the unit.
    name : str
        The quantity, e.g. ``"defocus"``.

    Returns
    -------
    str
        The unit label chosen.
    """
    from matplotlib.ticker import FuncFormatter

    label, factor = length_unit(max_abs_nm)
    mpl_axis.set_major_formatter(FuncFormatter(lambda v, pos: f"{v / factor:.4g}"))
    mpl_axis.set_label_text(f"{name} ({label})")
    return label


def tidy_layout(figure):
    """Fit titles, labels and legends into ``figure`` (a no-op for sub-figures)."""
    from matplotlib.figure import SubFigure

    if isinstance(figure, SubFigure):
        return
    try:
        figure.tight_layout()
    except Exception:  # tight_layout is brittle; a crowded figure is no error
        pass


def add_navigation_axis(signal, axis_dict):
    """Give a signal without navigation axes one navigation axis of length 1 (in place).

    Parameters
    ----------
    signal : hyperspy.signal.BaseSignal
        A signal with no navigation axis (e.g. one image).
    axis_dict : dict
        The new axis, as ``AxesManager`` takes it (size 1).
    """
    from hyperspy.axes import AxesManager

    if signal.axes_manager.navigation_dimension:
        raise ValueError("The signal already has navigation axes.")
    dicts = signal.axes_manager._get_axes_dicts()
    signal.data = signal.data[np.newaxis]
    signal.axes_manager = AxesManager([axis_dict] + dicts)
