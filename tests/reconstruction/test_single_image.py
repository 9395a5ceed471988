"""Tests of single-image AD (hyperspy_lorentz.reconstruction.single_image).

Independent oracles: the images are simulated with a small NumPy Fresnel
propagator (not the package's forward model), on a field three times larger
than the image and cropped, so the image contains the electrons deflected
across its edges; the accuracy is a normalised cross-correlation written here.
The specimen is a Bloch skyrmion lattice (period 90 nm) in a 20 nm film with
``Ms = 4e5 A/m``: a weak phase object (about 0.36 rad peak to peak), imaged at
0.5 mm overfocus with 4 nm pixels, 128 x 128 pixels.

Margins measured on seeds 0-7 at 500 e-/px (128 px, the defaults):
AD 0.976-0.983; AD minus SITIE (defaults, mirror boundaries) 0.15-0.66; AD
minus SITIE with periodic boundaries 0.043-0.22; noise-free AD 0.992-0.999.
"""

import json
import math
import warnings

import numpy as np
import pytest
import torch

from hyperspy_lorentz.physics.magnetisation import magnetic_phase
from hyperspy_lorentz.physics.textures import skyrmion_lattice
from hyperspy_lorentz.reconstruction import single_image
from hyperspy_lorentz.reconstruction.single_image import reconstruct_single_image
from hyperspy_lorentz.reconstruction.tie import sitie_phase

WAVELENGTH = 0.0025079  # nm, 200 kV
PIXEL = 4.0  # nm
DEFOCUS = 5e5  # nm, 0.5 mm overfocus
# the oracle propagator is a pure Fresnel one: no Cs, no partial coherence
OPTICS = dict(pixel_size=PIXEL, beam_energy=200.0, cs=0.0, theta_c=0.0, defocus_spread=0.0)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: faster and steadier on a small, shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def fresnel(phase, defocus):
    qy = np.fft.fftfreq(phase.shape[0], d=PIXEL)[:, None]
    qx = np.fft.fftfreq(phase.shape[1], d=PIXEL)[None, :]
    kernel = np.exp(-1j * np.pi * WAVELENGTH * defocus * (qx**2 + qy**2))
    return np.abs(np.fft.ifft2(np.fft.fft2(np.exp(1j * phase)) * kernel)) ** 2


def scene(n=128, seed=0, thickness=20.0, defocus=DEFOCUS):
    """True phase and noise-free image (n x n) cropped from a 3n x 3n field."""
    rng = np.random.default_rng(seed)
    tex = skyrmion_lattice((3 * n, 3 * n), 90.0, pixel_size=PIXEL,
                           rotation=rng.uniform(0, 60), center=tuple(rng.uniform(0, 90, 2)))
    phase = magnetic_phase(tex.mx, tex.my, 4e5, thickness, PIXEL, padding=1, mz=tex.mz)
    image = fresnel(phase, defocus)
    return phase[n:2 * n, n:2 * n], image[n:2 * n, n:2 * n]


def ncc(a, b, border=8):
    a = a[border:-border, border:-border]
    b = b[border:-border, border:-border]
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / math.sqrt((a * a).sum() * (b * b).sum()))


def noisy(image, dose, seed):
    return np.random.default_rng(100 + seed).poisson(image * dose).astype(float)


@pytest.fixture(scope="module")
def small():
    """64 x 64 noisy image for the fast tests."""
    truth, image = scene(n=64, seed=3)
    return truth, noisy(image, 500, 3)


# ------------------------------------------------------------------ accuracy
@pytest.mark.parametrize("seed", [1, 2])
def test_matches_sitie_at_500_electrons_per_pixel(seed):
    truth, image = scene(seed=seed)
    counts = noisy(image, 500, seed)
    res = reconstruct_single_image(counts, DEFOCUS, **OPTICS, seed=0)
    acc_ad = ncc(res.phase, truth)
    sitie, _ = sitie_phase(counts, DEFOCUS, PIXEL, WAVELENGTH)
    sitie_periodic, _ = sitie_phase(counts, DEFOCUS, PIXEL, WAVELENGTH, symmetric=False)
    assert acc_ad >= 0.96
    # AD 0.976 / 0.983 (seeds 1 / 2). SITIE with the old boundary floor of its qc
    # gave 0.88 / 0.90; with the boundary decided from the data (tie.py) it gives
    # 0.986 / 0.992 on this scene, so AD no longer beats the default SITIE here:
    # it must stay within 0.02 of it
    assert acc_ad >= ncc(sitie, truth) - 0.02
    assert acc_ad >= ncc(sitie_periodic, truth) - 0.02
    assert res.converged and not res.interrupted


def test_noise_free_accuracy():
    truth, image = scene(seed=0)
    res = reconstruct_single_image(image * 1000.0, DEFOCUS, **OPTICS)
    assert ncc(res.phase, truth) >= 0.98


def test_underfocus_and_gaussian_likelihood():
    """Sign convention (df < 0 = underfocus) and the Gaussian likelihood, any unit."""
    truth, image = scene(seed=4, defocus=-DEFOCUS)
    counts = noisy(image, 500, 4)
    res = reconstruct_single_image(counts * 0.37, -DEFOCUS, **OPTICS, likelihood="gaussian")
    assert ncc(res.phase, truth) >= 0.96
    assert res.parameters["noise_sigma"] > 0


# ------------------------------------------------------------------ result and behaviour
def test_result_fields(small):
    _, counts = small
    calls = []
    res = reconstruct_single_image(counts, DEFOCUS, **OPTICS, max_iterations=15,
                                   progress=lambda i, loss: calls.append((i, loss)))
    h, w = counts.shape
    assert res.phase.shape == (h, w) and res.phase.dtype == np.float64
    assert abs(res.phase.mean()) < 1e-12
    np.testing.assert_array_equal(res.amplitude, np.ones((h, w)))
    np.testing.assert_array_equal(res.defocus, [DEFOCUS])
    np.testing.assert_array_equal(res.shifts, np.zeros((1, 2)))
    np.testing.assert_array_equal(res.scale, [1.0])
    assert res.theta_c == 0.0
    assert res.refined == () and res.not_identifiable == ()
    assert res.iterations == 15 and len(res.loss_history) == 16
    assert [c[0] for c in calls] == list(range(1, 16))
    assert [c[1] for c in calls] == res.loss_history[1:]
    assert res.device == "cpu" and res.time_s > 0
    params = json.loads(json.dumps(res.parameters))
    assert params["likelihood"] == "poisson"
    assert params["dose"] == pytest.approx(counts.mean())
    assert params["regularization"] > 0 and params["regularization_input"] == "auto"


def test_dose_rescales_arbitrary_units(small):
    _, counts = small
    a = reconstruct_single_image(counts, DEFOCUS, **OPTICS, dose=counts.mean(),
                                 max_iterations=10)
    b = reconstruct_single_image(counts * 7.0, DEFOCUS, **OPTICS, dose=counts.mean(),
                                 max_iterations=10)
    np.testing.assert_allclose(a.phase, b.phase, atol=1e-5)


def test_deterministic(small):
    _, counts = small
    a = reconstruct_single_image(counts, DEFOCUS, **OPTICS, max_iterations=20, seed=7)
    b = reconstruct_single_image(counts, DEFOCUS, **OPTICS, max_iterations=20, seed=7)
    np.testing.assert_array_equal(a.phase, b.phase)
    assert a.loss_history == b.loss_history


def test_loss_decreases_and_best_iterate_returned(small):
    _, counts = small
    res = reconstruct_single_image(counts, DEFOCUS, **OPTICS, max_iterations=40, tolerance=0)
    assert res.iterations == 40 and not res.converged
    assert min(res.loss_history) < res.loss_history[0]


def test_keyboard_interrupt_returns_best_so_far(small):
    _, counts = small

    def stop(iteration, loss):
        if iteration == 5:
            raise KeyboardInterrupt

    with pytest.warns(UserWarning, match="interrupted after 5 iterations"):
        res = reconstruct_single_image(counts, DEFOCUS, **OPTICS, progress=stop)
    assert res.interrupted and not res.converged
    assert res.iterations == 5 and len(res.loss_history) == 6
    assert np.all(np.isfinite(res.phase))


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_nan_loss_stops_and_keeps_best(small, monkeypatch, optimizer):
    _, counts = small
    original = single_image._Objective.loss_of_phase
    calls = {"n": 0}

    def flaky(self, phi, defocus):
        calls["n"] += 1
        loss = original(self, phi, defocus)
        return loss * float("nan") if calls["n"] > 4 else loss

    monkeypatch.setattr(single_image._Objective, "loss_of_phase", flaky)
    with pytest.warns(RuntimeWarning, match="NaN"):
        res = reconstruct_single_image(counts, DEFOCUS, **OPTICS, max_iterations=50,
                                       optimizer=optimizer)
    if optimizer == "adam":  # one evaluation per iteration
        assert res.iterations == 4 and len(res.loss_history) == 4
    else:  # line searches: fewer accepted steps than evaluations; the start recorded
        assert 0 < res.iterations < 4 and len(res.loss_history) == res.iterations + 1
    assert np.all(np.isfinite(res.phase)) and not res.converged


def test_unknown_optimizer_is_refused(small):
    _, counts = small
    with pytest.raises(ValueError, match="optimizer must be 'lbfgs' or 'adam'"):
        reconstruct_single_image(counts, DEFOCUS, **OPTICS, optimizer="sgd")


def test_islands_crossing_the_frame():
    """Islands in vacuum cut by the frame, 1000 e-/px, the image of most contrast:
    the strong edges at the frame stalled Adam (0.636 after its 1000 iterations);
    L-BFGS, the focal-series fits' optimiser, reaches 0.98. Adam is kept as
    ``optimizer="adam"``."""
    from hyperspy_lorentz import data
    from hyperspy_lorentz.reconstruction.metrics import phase_accuracy

    s = data.island_array(shape=(128, 128), field="window", dose=1000, seed=0)
    p = s.get_microscope_parameters()
    images = np.asarray(s.data, float)
    contrast = images.var(axis=(1, 2)) / images.mean(axis=(1, 2)) ** 2
    k = int(np.argmax(contrast - 1.0 / images.mean(axis=(1, 2))))
    res = reconstruct_single_image(
        images[k], float(s.axes_manager["defocus"].axis[k]), pixel_size=p["pixel_size_nm"],
        beam_energy=p["beam_energy_kV"], cs=p["cs_mm"], theta_c=p["theta_c_mrad"],
        defocus_spread=p["defocus_spread_nm"], seed=0)
    assert res.parameters["optimizer"] == "lbfgs"
    assert phase_accuracy(res.phase, s.metadata.Simulation.phase) > 0.95


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("change, match", [
    (lambda im: np.where(np.arange(im.size).reshape(im.shape) == 5, np.nan, im),
     "non-finite.*interpolate dead pixels"),
    (lambda im: np.where(np.arange(im.size).reshape(im.shape) == 5, np.inf, im), "non-finite"),
    (lambda im: np.zeros_like(im), "all zeros"),
    (lambda im: im - im.mean(), "non-negative counts.*likelihood='gaussian'"),
    (lambda im: np.stack([im, im]), "one 2-D image.*reconstruct_ad"),
])
def test_bad_image(small, change, match):
    _, counts = small
    with pytest.raises(ValueError, match=match):
        reconstruct_single_image(change(counts), DEFOCUS, **OPTICS)


@pytest.mark.parametrize("kwargs, match", [
    (dict(defocus=0.0), "defocus is 0.*nonzero"),
    (dict(defocus=float("nan")), "defocus must be"),
    (dict(pixel_size=0.0), "pixel_size.*calibrated pixel size in nm"),
    (dict(pixel_size=-4.0), "pixel_size.*calibrated pixel size in nm"),
    (dict(likelihood="gaussian", dose=100.0), "dose is only used"),
    (dict(dose=-1.0), "dose must be a positive"),
    (dict(prior="dip"), "prior must be 'tv'"),
    (dict(likelihood="l1"), "likelihood must be"),
    (dict(init="tie"), "init must be"),
    (dict(regularization="strong"), "regularization must be"),
    (dict(max_iterations=-1), "max_iterations"),
    (dict(dtype="float16"), "dtype"),
])
def test_bad_parameters(small, kwargs, match):
    _, counts = small
    args = dict(OPTICS, defocus=DEFOCUS)
    args.update(kwargs)
    defocus = args.pop("defocus")
    with pytest.raises(ValueError, match=match):
        reconstruct_single_image(counts, defocus, **args)


def test_gaussian_accepts_negative_pixels(small):
    _, counts = small
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = reconstruct_single_image(counts - 0.1 * counts.mean(), DEFOCUS, **OPTICS,
                                       likelihood="gaussian", max_iterations=5)
    assert np.all(np.isfinite(res.phase))


# ------------------------------------------------------------------ islands in vacuum
def test_islands_in_vacuum_at_1000_electrons_per_pixel():
    """Spin-ice-like permalloy islands in vacuum (hyperspy_lorentz.data, 128 px,
    1000 e-/px, +0.25 mm image): strong electrostatic phase steps (2.7 rad) on
    a flat vacuum. A ridge scaled with the dose (the old rule, prior variance
    1/(8e-3 dose)) pinned the island plateaus: 0.745 (seed 1: 0.748); the
    dose-independent prior variance, the learning-rate restarts and 1000
    iterations give 0.985 (seed 1: 0.987; 0.967 at 500 iterations). The truth is
    the total phase (a pure phase object: one image retrieves the total
    phase)."""
    from hyperspy_lorentz import data
    from hyperspy_lorentz.reconstruction.metrics import phase_accuracy

    s = data.island_array(shape=(128, 128), field="isolated", seed=0, dose=1000.0)
    p = s.get_microscope_parameters()
    k = 3  # +250 um
    df = float(s.axes_manager["defocus"].axis[k])
    res = reconstruct_single_image(
        np.asarray(s.data[k], float), df, pixel_size=p["pixel_size_nm"],
        beam_energy=p["beam_energy_kV"], cs=p["cs_mm"], theta_c=p["theta_c_mrad"],
        defocus_spread=p["defocus_spread_nm"], seed=0)
    assert df == 250e3
    assert phase_accuracy(res.phase, s.metadata.Simulation.phase) >= 0.95


def test_poisson_term_is_the_deviance_at_high_counts():
    """The half Poisson deviance per pixel, in float32, against its float64
    definition at 1e5 counts (summed as the NLL and its saturated part apart,
    float32 lost the difference: about 0.1 per pixel)."""
    from types import SimpleNamespace

    from hyperspy_lorentz.reconstruction.single_image import _Objective

    rng = np.random.default_rng(2)
    img = 1.0 + 0.3 * rng.random((64, 64))
    img /= img.mean()
    dose = 1e5
    counts = rng.poisson(img * dose).astype(float)
    lam = img * dose
    expected = float((lam - counts - counts * np.log(lam / np.maximum(counts, 1.0))).sum()
                     / counts.size)
    data = torch.tensor(counts, dtype=torch.float32)
    fake = SimpleNamespace(dose=dose, data=data, m=float(counts.size))
    got = float(_Objective._poisson(fake, torch.tensor(img, dtype=torch.float32)))
    assert got == pytest.approx(expected, rel=2e-3)
    assert 0.3 < expected < 0.7


def test_noise_free_islands_with_the_shared_noise_floor():
    """A noise-free image (Gaussian likelihood): the estimated noise is floored at the
    focal-series fits' 1 % (the model's own error). With the earlier 0.1 % the fit
    was too stiff to converge in its 1000 iterations (0.34 here)."""
    from hyperspy_lorentz import data
    from hyperspy_lorentz.reconstruction.ad.data import NOISE_FLOOR
    from hyperspy_lorentz.reconstruction.metrics import phase_accuracy

    s = data.island_array(shape=(128, 128), field="isolated", dose=None)
    p = s.get_microscope_parameters()
    images = np.asarray(s.data, float)
    k = int(np.argmax(images.var(axis=(1, 2)) / images.mean(axis=(1, 2)) ** 2))
    res = reconstruct_single_image(
        images[k], float(s.axes_manager["defocus"].axis[k]), likelihood="gaussian",
        pixel_size=p["pixel_size_nm"], beam_energy=p["beam_energy_kV"], cs=p["cs_mm"],
        theta_c=p["theta_c_mrad"], defocus_spread=p["defocus_spread_nm"], seed=0)
    assert res.parameters["noise_sigma"] == NOISE_FLOOR
    assert phase_accuracy(res.phase, s.metadata.Simulation.phase) > 0.9
