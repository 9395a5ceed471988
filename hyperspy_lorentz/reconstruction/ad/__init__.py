"""Automatic-differentiation (AD) phase retrieval from a Lorentz TEM focal series.

Intermediate step of the split into a subpackage: the module moved unchanged to
:mod:`hyperspy_lorentz.reconstruction.ad.solver`, re-exported here.
"""

from hyperspy_lorentz.reconstruction.ad.solver import *  # noqa: F401,F403
from hyperspy_lorentz.reconstruction.ad.solver import (  # noqa: F401
    __all__,
    _available_memory,
    _Optimiser,
    _padded_shape,
    _Problem,
    _resolve_device,
)
