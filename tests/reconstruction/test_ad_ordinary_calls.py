"""Ordinary calls of :func:`reconstruct_ad` never end in an exception (issue #12, item 5).

A grid of everyday settings -- dose (10, 100, 1000 e-/pixel, noise-free) x
likelihood ("gaussian", "poisson" with and without ``dose=``) x ``refine`` x
``init`` -- on a 96 x 96 Bloch skyrmion lattice
(:func:`hyperspy_lorentz.data.skyrmion_lattice`, a window onto a film, five
images at -300/-150/0/+150/+300 um). The full product has 180 calls; the grid
here, thinned deterministically, has 60: every (dose, likelihood, refine)
triple once, with the start cycled through them so that every start meets
every level of the other factors (:func:`_grid`). Most calls are short
(``max_iterations`` 50, ``bias_correction=0``); a dozen ``init="auto"`` calls
get enough iterations for the race of starts to run, and nine keep the default
bootstrap bias correction (standard errors). ``refine=()`` is called with
``refine_amplitude=False`` (the phase alone), as the default call refines the
amplitude as ``("amplitude",)`` does.

Plus the default call at 256 x 256 (100 e-/pixel; 5 images, and a 3-image
subset -300/0/+300 um), with the default Gaussian likelihood and with
``likelihood="poisson", dose=100``, which once raised "ValueError: amplitude
must be finite" inside an L-BFGS trial step (marked slow).

No call may raise; everything returned (phase, amplitude, defocus, shifts,
``theta_c``, scales, standard errors, canvas) must be finite. Warnings are
allowed (and recorded, so that they do not clutter the output).
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import pytest

from hyperspy_lorentz import data
from hyperspy_lorentz.reconstruction.ad import INIT_RACE_ITERATIONS, reconstruct_ad

DOSES = (10.0, 100.0, 1000.0, None)  # e-/pixel; None: noise-free
LIKELIHOODS = (("gaussian", False), ("poisson", False), ("poisson", True))  # (name, pass dose=)
REFINES = ((), ("amplitude",), ("amplitude", "defocus"), ("amplitude", "defocus", "shifts"),
           ("amplitude", "theta_c"))
INITS = ("auto", "flat", "tie")

#: Iterations of the short calls.
SHORT_ITERATIONS = 50
#: Iterations of the racing ``init="auto"`` calls: the race of starts needs 4 x its length.
RACE_ITERATIONS = 4 * INIT_RACE_ITERATIONS


def _grid():
    """The 60 calls: the whole product dose x likelihood x refine, the start
    cycled through it (``init`` index ``(i + j + k) % 3`` for dose ``i``,
    likelihood ``j``, refine ``k``), so that every start meets every dose,
    likelihood and refine (checked in :func:`test_grid_covers_the_product`).

    The first ``"auto"`` call of each (dose, likelihood) gets enough iterations
    for the race of starts to run (with fewer, ``"auto"`` is the flat start);
    the calls with ``k >= 2`` and ``(i + 2 j + k) % 4 == 0`` (9, every dose and
    likelihood, optical parameters refined) keep the default bootstrap bias
    correction, the others have ``bias_correction=0``.
    """
    calls = []
    for i, dose in enumerate(DOSES):
        for j, (lik, with_dose) in enumerate(LIKELIHOODS):
            for k, refine in enumerate(REFINES):
                init = INITS[(i + j + k) % 3]
                calls.append(dict(dose=dose, likelihood=lik, pass_dose=with_dose, refine=refine,
                                  init=init, race=init == "auto" and k == (-(i + j)) % 3,
                                  bootstrap=k >= 2 and (i + 2 * j + k) % 4 == 0))
    return calls


def _id(c):
    dose = "nf" if c["dose"] is None else f"d{c['dose']:g}"
    lik = c["likelihood"] + ("+dose" if c["pass_dose"] else "")
    ref = "+".join(c["refine"]) or "phase"
    return (f"{dose}-{lik}-{ref}-{c['init']}" + ("-race" if c["race"] else "")
            + ("-boot" if c["bootstrap"] else ""))


GRID = _grid()

#: Calls known to raise or to return NaN (id -> reason); xfail(strict=True).
KNOWN_FAILURES: dict[str, str] = {}


@functools.lru_cache(maxsize=None)
def _series(shape, dose, seed=0):
    s = data.skyrmion_lattice(shape=shape, dose=dose, seed=seed)
    images = np.asarray(s.data, dtype=float)
    defocus = np.asarray(s.axes_manager["defocus"].axis, dtype=float)
    pixel = float(s.axes_manager[-1].scale)
    energy = float(s.metadata.Acquisition_instrument.TEM.beam_energy)
    return images, defocus, pixel, energy


def _call(images, defocus, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = reconstruct_ad(images, defocus, **kwargs)
    return res, [str(w.message) for w in caught]


def _assert_finite(res, n, shape):
    assert res.phase.shape == shape and res.amplitude.shape == shape
    assert res.defocus.shape == (n,) and res.shifts.shape == (n, 2) and res.scale.shape == (n,)
    for name in ("phase", "amplitude", "defocus", "shifts", "scale"):
        arr = getattr(res, name)
        assert np.all(np.isfinite(arr)), f"{name} has non-finite values: {arr}"
    for name in ("theta_c", "astigmatism", "astigmatism_angle", "defocus_spread"):
        assert math.isfinite(getattr(res, name)), f"{name} = {getattr(res, name)}"
    for name, arr in (("canvas_phase", res.canvas_phase), ("canvas_amplitude", res.canvas_amplitude)):
        if arr is not None:
            assert np.all(np.isfinite(arr)), f"{name} has non-finite values"
    # NaN only where the result says why: the shift of an image without contrast
    blind = [int(p.rsplit(" ", 1)[1]) for p in res.not_identifiable
             if p.startswith("shifts of image")]
    for name, se in res.standard_errors.items():
        se = np.array(se, dtype=float)
        if name == "shifts":
            se = np.delete(se, blind, axis=0)
        assert np.all(np.isfinite(se)), f"standard error of {name}: {se}"
    assert np.all(res.amplitude >= 0)
    assert any(math.isfinite(v) for v in res.loss_history)


def test_grid_covers_the_product():
    rows = [(c["dose"], (c["likelihood"], c["pass_dose"]), c["refine"], c["init"]) for c in GRID]
    assert len({r[:3] for r in rows}) == len(DOSES) * len(LIKELIHOODS) * len(REFINES) == len(rows)
    levels = (DOSES, LIKELIHOODS, REFINES)
    for a in range(3):
        assert len({(r[a], r[3]) for r in rows}) == len(levels[a]) * len(INITS)
    for a in range(2):  # every dose and likelihood sees a race and a bootstrap
        for key in ("race", "bootstrap"):
            assert len({r[a] for r, c in zip(rows, GRID) if c[key]}) == len(levels[a])
    assert len({_id(c) for c in GRID}) == len(GRID)


@pytest.mark.parametrize(
    "call",
    [pytest.param(c, id=_id(c), marks=([pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[_id(c)])]
                                         if _id(c) in KNOWN_FAILURES else []))
     for c in GRID])
def test_ordinary_call_96(call):
    images, defocus, pixel, energy = _series((96, 96), call["dose"])
    kwargs = dict(pixel_size=pixel, beam_energy=energy, refine=call["refine"], init=call["init"],
                  likelihood=call["likelihood"], seed=0)
    if call["refine"] == ():
        kwargs["refine_amplitude"] = False  # the phase alone (refine=() refines the amplitude)
    if call["pass_dose"]:
        # the nominal dose (noise-free data: counts of this mean, without noise)
        kwargs["dose"] = 100.0 if call["dose"] is None else call["dose"]
    kwargs["max_iterations"] = RACE_ITERATIONS if call["race"] else SHORT_ITERATIONS
    if not call["bootstrap"]:
        kwargs["bias_correction"] = 0
    res, caught = _call(images, defocus, **kwargs)
    _assert_finite(res, len(defocus), images.shape[1:])
    if call["race"]:
        assert res.parameters["init_race"], "the race of starts did not run"
    fitted_optical = [r for r in res.refined if r not in ("amplitude", "defocus_spread")]
    stopped = any("NaN/inf" in m or "interrupted" in m for m in caught)
    if call["bootstrap"] and fitted_optical and not stopped:
        assert res.standard_errors, "the default bootstrap gave no standard errors"


# ------------------------------------------------------------------ 256 x 256 defaults
CALLS_256 = [
    pytest.param(5, {}, id="5images-gaussian"),
    pytest.param(3, {}, id="3images-gaussian"),
    pytest.param(5, dict(likelihood="poisson", dose=100.0), id="5images-poisson-dose100"),
    pytest.param(3, dict(likelihood="poisson", dose=100.0), id="3images-poisson-dose100"),
]


@pytest.mark.slow
@pytest.mark.parametrize("n_images, extra", CALLS_256)
def test_default_call_256(n_images, extra):
    images, defocus, pixel, energy = _series((256, 256), 100.0)
    sel = [0, 2, 4] if n_images == 3 else list(range(5))  # -300/0/+300 um
    res, _ = _call(images[sel], defocus[sel], pixel_size=pixel, beam_energy=energy, **extra)
    _assert_finite(res, len(sel), (256, 256))
