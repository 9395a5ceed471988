"""hyperspy_lorentz: Lorentz TEM phase retrieval as a HyperSpy extension.

Signal classes (registered with HyperSpy through ``hyperspy_extension.yaml``):

* :class:`~hyperspy_lorentz.signals.focal_series.LorentzFocalSeries`
  (``signal_type="lorentz_focal_series"``): a through-focus series;
* :class:`~hyperspy_lorentz.signals.electron_phase.ElectronPhase`
  (``signal_type="electron_phase"``): a retrieved phase map, rad;
* :class:`~hyperspy_lorentz.signals.magnetic_induction.MagneticInduction`
  (``signal_type="magnetic_induction"``): in-plane induction maps.

Kernels that know nothing of HyperSpy live in :mod:`hyperspy_lorentz.physics`
(optics, forward model, magnetic phase) and
:mod:`hyperspy_lorentz.reconstruction` (AD, TIE, SITIE, flip/unflip).
"""

__version__ = "0.1.0"

_LAZY = {
    "LorentzFocalSeries": "hyperspy_lorentz.signals.focal_series",
    "LazyLorentzFocalSeries": "hyperspy_lorentz.signals.focal_series",
    "ElectronPhase": "hyperspy_lorentz.signals.electron_phase",
    "LazyElectronPhase": "hyperspy_lorentz.signals.electron_phase",
    "MagneticInduction": "hyperspy_lorentz.signals.magnetic_induction",
    "LazyMagneticInduction": "hyperspy_lorentz.signals.magnetic_induction",
    "simulate_focal_series": "hyperspy_lorentz.simulation",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    # Import on first use: HyperSpy imports this package while it registers
    # extensions, and torch should not be imported at that moment.
    if name == "data": return __import__("hyperspy_lorentz.data", fromlist=["data"])  # example data
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hyperspy_lorentz' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
