"""Tests of the differentiable LTEM forward model (hyperspy_lorentz.physics.forward).

Physics oracles are written here independently of the package: a NumPy image
simulation in Kirkland's sign convention (defocus reversed), the conservation of
intensity, the defocus/phase symmetry, the transport-of-intensity limit with a
finite-difference Laplacian, ``np.roll`` for integer shifts, and finite
differences (``torch.autograd.gradcheck``) for every gradient.
"""

import math

import numpy as np
import pytest
import torch

from hyperspy_lorentz.physics import optics
from hyperspy_lorentz.physics.forward import ForwardModel, simulate_images

HC_KEV_NM = 1.239841984
M0C2_KEV = 510.99895000


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/physics/conftest.py


# --------------------------------------------------------------------------- oracles
def lam_ref(kev):
    return HC_KEV_NM / math.sqrt(kev * (2 * M0C2_KEV + kev))


def numpy_images(phase, amp, dfs, pixel, kev=200.0, cs=0.0, theta_c=0.0, spread=0.0):
    """Independent NumPy simulation: Kirkland chi with df' = -df, quasi-coherent envelope."""
    lam = lam_ref(kev)
    h, w = phase.shape
    qy = np.fft.fftfreq(h, pixel)[:, None]
    qx = np.fft.fftfreq(w, pixel)[None, :]
    q = np.sqrt(qy**2 + qx**2)
    cs_nm, th = cs * 1e6, theta_c * 1e-3
    spec = np.fft.fft2((1.0 if amp is None else amp) * np.exp(1j * phase))
    out = []
    for df in dfs:
        dfk = -df  # Kirkland: positive = underfocus
        chi = math.pi * lam * q**2 * (0.5 * cs_nm * lam**2 * q**2 - dfk)
        grad_chi = cs_nm * lam**3 * q**3 - dfk * lam * q  # (lambda / 2 pi) d chi / d q
        u = 1 + 2 * (math.pi * th * spread) ** 2 * q**2
        env = np.exp(-((math.pi * lam * spread) ** 2 * q**4 / 2
                       + (math.pi * th / lam) ** 2 * grad_chi**2) / u)
        out.append(np.abs(np.fft.ifft2(spec * env * np.exp(-1j * chi))) ** 2)
    return np.array(out)


def gaussian(shape, sigma, centre=None):
    h, w = shape
    cy, cx = centre if centre is not None else (h / 2, w / 2)
    y, x = np.mgrid[:h, :w]
    return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))


def laplacian_fd(f, pixel):
    return (np.roll(f, 1, 0) + np.roll(f, -1, 0) + np.roll(f, 1, 1) + np.roll(f, -1, 1)
            - 4 * f) / pixel**2


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def smooth_random(rng, shape, sigma=3.0, amp=1.0):
    f = np.fft.fft2(rng.standard_normal(shape))
    qy = np.fft.fftfreq(shape[0])[:, None]
    qx = np.fft.fftfreq(shape[1])[None, :]
    f *= np.exp(-2 * (math.pi * sigma) ** 2 * (qx**2 + qy**2))
    f = np.fft.ifft2(f).real
    return amp * f / np.abs(f).max()


# --------------------------------------------------------------------------- physics
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_independent_numpy_simulation(rng, dtype):
    shape = (48, 40)
    phase = smooth_random(rng, shape, amp=1.5)
    amp = 1 + smooth_random(rng, shape, amp=0.2)
    dfs = [-4e4, -2e3, 0.0, 1.5e4]
    kw = dict(kev=200.0, cs=1.0, theta_c=0.05, spread=800.0)
    ref = numpy_images(phase, amp, dfs, 2.5, **kw)
    out = simulate_images(phase.astype(dtype), amp.astype(dtype), dfs, 2.5, beam_energy=200,
                          cs=1.0, theta_c=0.05, defocus_spread=800.0)
    assert out.dtype == dtype and out.shape == (4,) + shape
    tol = 1e-10 if dtype == np.float64 else 2e-4
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)


def test_in_focus_aberration_free_is_amplitude_squared(rng):
    phase = rng.uniform(-3, 3, (32, 32))
    amp = rng.uniform(0.2, 1.5, (32, 32))
    out = simulate_images(phase, amp, 0.0, 1.0, cs=0.0, theta_c=0.0, defocus_spread=0.0)
    np.testing.assert_allclose(out[0], amp**2, rtol=1e-12, atol=1e-12)


def test_mean_intensity_conserved_without_aperture(rng):
    phase = rng.uniform(-3, 3, (40, 32))
    amp = rng.uniform(0.2, 1.5, (40, 32))
    dfs = [-1e5, -300.0, 0.0, 5e3, 2e5]
    out = simulate_images(phase, amp, dfs, 1.0, cs=2.0, theta_c=0.0, defocus_spread=0.0,
                          astigmatism=40.0, astigmatism_angle=0.3, shifts=[1.3, -0.4])
    np.testing.assert_allclose(out.mean(axis=(1, 2)), np.full(5, (amp**2).mean()), rtol=1e-12)
    # partial coherence only removes intensity (quasi-coherent damping)
    damped = simulate_images(phase, amp, dfs, 1.0, cs=2.0, theta_c=0.1, defocus_spread=500.0)
    assert np.all(damped.mean(axis=(1, 2)) <= (amp**2).mean() + 1e-12)


def test_defocus_phase_symmetry_without_cs(rng):
    phase = smooth_random(rng, (64, 48), amp=2.0)
    dfs = np.array([-3e4, -5e3, 8e3, 6e4])
    kw = dict(cs=0.0, theta_c=0.08, defocus_spread=600.0)
    a = simulate_images(phase, None, dfs, 2.0, **kw)
    b = simulate_images(-phase, None, -dfs, 2.0, **kw)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    # and the symmetry is broken by Cs
    c = simulate_images(phase, None, dfs, 0.5, cs=5.0, theta_c=0.0, defocus_spread=0.0)
    d = simulate_images(-phase, None, -dfs, 0.5, cs=5.0, theta_c=0.0, defocus_spread=0.0)
    assert np.abs(c - d).max() > 1e-3


def test_positive_phase_bump_bright_in_overfocus():
    phase = 0.2 * gaussian((96, 96), 6.0)
    out = simulate_images(phase, None, [3e4, -3e4], 2.0, cs=1.0, theta_c=0.0,
                          defocus_spread=0.0)
    assert out[0, 48, 48] > 1.02  # overfocus: converging lens -> bright
    assert out[1, 48, 48] < 0.98  # underfocus: dark


def test_tie_limit_against_finite_difference_laplacian():
    pixel, df = 2.0, 2e3
    phase = 0.05 * gaussian((128, 128), 10.0)
    out = simulate_images(phase, None, [df, -df], pixel, cs=0.0, theta_c=0.0,
                          defocus_spread=0.0)
    lam = lam_ref(200.0)
    lhs = out[0] - out[1]
    rhs = -(lam * df / math.pi) * laplacian_fd(phase, pixel)
    err = np.linalg.norm(lhs - rhs) / np.linalg.norm(rhs)
    assert err < 0.02
    assert lhs[64, 64] > 0  # consistent with "bright in overfocus"


# --------------------------------------------------------------------------- shifts
@pytest.mark.parametrize("shift", [(3, -5), (-7, 2), (0, 11)])
def test_integer_shift_is_np_roll(rng, shift):
    phase = smooth_random(rng, (32, 40), amp=2.0)
    amp = 1 + smooth_random(rng, (32, 40), amp=0.3)
    base = simulate_images(phase, amp, [2e3, -1e4], 2.0)
    moved = simulate_images(phase, amp, [2e3, -1e4], 2.0, shifts=[shift, shift])
    np.testing.assert_allclose(moved, np.roll(base, shift, axis=(1, 2)), atol=1e-10)


def test_subpixel_shift_moves_content_toward_positive_axes():
    amp = 1 - 0.5 * gaussian((64, 64), 4.0, centre=(30.0, 34.0))
    dy, dx = 1.3, -2.7
    out = simulate_images(np.zeros((64, 64)), amp, [0.0, 0.0], 1.0, cs=0.0, theta_c=0.0,
                          defocus_spread=0.0, shifts=[[0.0, 0.0], [dy, dx]])
    y, x = np.mgrid[:64, :64]

    def centroid(img):
        w = 1 - img
        return (w * y).sum() / w.sum(), (w * x).sum() / w.sum()

    (y0, x0), (y1, x1) = centroid(out[0]), centroid(out[1])
    assert y1 - y0 == pytest.approx(dy, abs=1e-6)
    assert x1 - x0 == pytest.approx(dx, abs=1e-6)


def test_scale_multiplies_images(rng):
    phase = smooth_random(rng, (16, 16))
    a = simulate_images(phase, None, [1e3, 2e3], 1.0)
    b = simulate_images(phase, None, [1e3, 2e3], 1.0, scale=[2.0, 0.5])
    np.testing.assert_allclose(b, a * np.array([2.0, 0.5])[:, None, None], rtol=1e-12)


# --------------------------------------------------------------------------- padding
def test_padding_removes_wrap_around():
    # a phase bump touching the left border: without padding its defocus fringes
    # wrap around onto the right border
    phase = 0.5 * gaussian((96, 96), 4.0, centre=(48.0, 2.0))
    kw = dict(cs=0.0, theta_c=0.0, defocus_spread=0.0)
    plain = simulate_images(phase, None, [3e4], 2.0, **kw)
    assert np.abs(plain[0, :, -10:] - 1).max() > 0.05
    for mode in ("reflect", "edge"):
        padded = simulate_images(phase, None, [3e4], 2.0, padding=mode, pad_width=32, **kw)
        assert padded.shape == plain.shape
        assert np.abs(padded[0, :, -10:] - 1).max() < 0.005


def test_padding_reduces_phase_ramp_artefacts():
    # a uniform in-plane induction gives a non-periodic phase ramp whose exact image
    # is uniform (I = 1); the periodic FFT sees a jump at the border
    y, x = np.mgrid[:96, :96]
    phase = 2 * math.pi * (3.37 * x / 96 + 1.71 * y / 96)
    kw = dict(cs=0.0, theta_c=0.0, defocus_spread=0.0)
    plain = simulate_images(phase, None, [-3e4, 3e4], 2.0, **kw)
    inner = (slice(None), slice(16, -16), slice(16, -16))
    for mode in ("reflect", "edge"):
        padded = simulate_images(phase, None, [-3e4, 3e4], 2.0, padding=mode, pad_width=32,
                                 **kw)
        assert np.abs(padded - 1).mean() < np.abs(plain - 1).mean() / 3
        assert np.abs(padded[inner] - 1).max() < np.abs(plain[inner] - 1).max() / 5


def test_padding_geometry():
    m = ForwardModel((30, 50), 1.0, 200, padding="reflect", pad_width=(7, 9))
    assert m.padded_shape[0] >= 44 and m.padded_shape[1] >= 68
    assert m._pad[0] == 7 and m._pad[2] == 9
    m = ForwardModel((64, 64), 1.0, 200, padding="edge")
    assert m.padded_shape == (96, 96)


# --------------------------------------------------------------------------- gradients
def _model_and_params(padding=None, aperture=None, cs=1.0, spread=400.0, theta=0.3,
                      shape=(16, 12)):
    m = ForwardModel(shape, 3.0, 200, cs=cs, theta_c=0.02, defocus_spread=spread,
                     aperture=aperture, padding=padding, pad_width=3 if padding else None,
                     dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    d = dict(dtype=torch.float64)
    params = dict(
        phase=(0.5 * torch.randn(shape, generator=g, **d)).requires_grad_(),
        amplitude=(1 + 0.2 * torch.rand(shape, generator=g, **d)).requires_grad_(),
        defocus=torch.tensor([3000.0, -5000.0], **d).requires_grad_(),
        theta_c=torch.tensor(theta, **d).requires_grad_(),
        astigmatism=torch.tensor([40.0, -20.0], **d).requires_grad_(),
        astigmatism_angle=torch.tensor([0.3, 1.2], **d).requires_grad_(),
        shifts=torch.tensor([[0.3, -1.7], [2.2, 0.4]], **d).requires_grad_(),
        scale=torch.tensor([1.1, 0.8], **d).requires_grad_(),
    )
    return m, params


def _call(m):
    def f(phase, amplitude, defocus, theta_c, astigmatism, astigmatism_angle, shifts, scale):
        return m(phase, amplitude, defocus, theta_c=theta_c, astigmatism=astigmatism,
                 astigmatism_angle=astigmatism_angle, shifts=shifts, scale=scale)
    return f


@pytest.mark.parametrize("padding, aperture, fast", [(None, None, False), ("reflect", 0.9, True),
                                                     ("edge", None, True)])
def test_gradcheck_all_parameters(padding, aperture, fast):
    m, p = _model_and_params(padding, aperture)
    assert torch.autograd.gradcheck(_call(m), tuple(p.values()), eps=1e-6, atol=1e-6,
                                    rtol=1e-4, fast_mode=fast)


@pytest.mark.parametrize("cs, spread, theta", [(0.0, 400.0, 0.3), (1.0, 0.0, 0.3),
                                               (1.0, 2e4, 0.3), (1.0, 400.0, 0.0)])
def test_gradcheck_envelope_branches(cs, spread, theta):
    m, p = _model_and_params(cs=cs, spread=spread, theta=theta)
    if theta == 0:  # theta_c >= 0: keep it fixed at the boundary
        p["theta_c"] = p["theta_c"].detach()
    assert torch.autograd.gradcheck(_call(m), tuple(p.values()), eps=1e-6, atol=1e-6,
                                    rtol=1e-4, fast_mode=True)


def test_gradcheck_per_image_theta_and_partial_requires_grad():
    m, p = _model_and_params()
    th = torch.tensor([0.2, 0.5], dtype=torch.float64, requires_grad=True)

    def f(phase, df, th, shifts):
        return m(phase, p["amplitude"].detach(), df, theta_c=th, shifts=shifts)

    assert torch.autograd.gradcheck(f, (p["phase"], p["defocus"], th, p["shifts"]))

    def g(amplitude, scale):
        return m(p["phase"].detach(), amplitude, [1e3, -2e3], scale=scale)

    assert torch.autograd.gradcheck(g, (p["amplitude"], p["scale"]))


@pytest.mark.parametrize("padding", [None, "reflect"])
def test_gradcheck_shift_only_path(padding):
    # only shifts (and scale) learnt among the optical parameters: cached T with
    # separable shift ramps instead of a rebuilt transfer function
    m, p = _model_and_params(padding, aperture=0.9)
    df = p["defocus"].detach()

    def f(phase, shifts, scale):
        return m(phase, p["amplitude"].detach(), df, astigmatism=30.0, shifts=shifts,
                 scale=scale)

    assert torch.autograd.gradcheck(f, (p["phase"], p["shifts"], p["scale"]))
    assert torch.autograd.gradcheck(lambda sh: f(p["phase"].detach(), sh, None),
                                    (p["shifts"],))
    with torch.no_grad():
        ref = f(p["phase"], p["shifts"], p["scale"])
    torch.testing.assert_close(f(p["phase"], p["shifts"], p["scale"]).detach(), ref)


def test_gradients_match_plain_autograd_reference():
    """Custom backward vs. autograd through optics.transfer_function + torch.fft."""
    shape = (20, 26)
    m, p = _model_and_params(shape=shape, aperture=1.2)
    lam = optics.wavelength(200)
    qy, qx = optics.spatial_frequencies(shape, 3.0, dtype=torch.float64)
    fy = torch.fft.fftfreq(shape[0], dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(shape[1], dtype=torch.float64)[None, :]

    def reference(phase, amplitude, defocus, theta_c, astigmatism, astigmatism_angle, shifts,
                  scale):
        T = optics.transfer_function(qy, qx, lam, defocus, cs=1.0, theta_c=theta_c,
                                     defocus_spread=400.0, astigmatism=astigmatism,
                                     astigmatism_angle=astigmatism_angle, aperture=1.2)
        ramp = torch.exp(-2j * math.pi * (fy * shifts[:, 0, None, None]
                                          + fx * shifts[:, 1, None, None]))
        psi = amplitude * torch.exp(1j * phase)
        w = torch.fft.ifft2(torch.fft.fft2(psi) * T * ramp)
        return scale[:, None, None] * w.abs() ** 2

    args = tuple(p.values())
    weights = torch.randn((2,) + shape, dtype=torch.float64)
    out = _call(m)(*args)
    ref = reference(*args)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    g1 = torch.autograd.grad((out * weights).sum(), args)
    g2 = torch.autograd.grad((ref * weights).sum(), args)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_float32_gradients_close_to_float64(rng):
    phase = smooth_random(rng, (64, 64), amp=2.0)
    res = {}
    for dt in (torch.float32, torch.float64):
        m = ForwardModel((64, 64), 2.0, 200, dtype=dt)
        ph = torch.tensor(phase, dtype=dt, requires_grad=True)
        out = m(ph, None, [-2e4, 0.0, 2e4])
        assert out.dtype == dt and m.complex_dtype == {torch.float32: torch.complex64,
                                                       torch.float64: torch.complex128}[dt]
        ((out - 1) ** 2).sum().backward()
        res[dt] = ph.grad.double()
    torch.testing.assert_close(res[torch.float32], res[torch.float64], rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------- model behaviour
def test_transfer_cache_and_paths_agree(rng):
    m = ForwardModel((24, 24), 2.0, 200, aperture=2.0)
    phase = torch.tensor(smooth_random(rng, (24, 24)), dtype=torch.float32)
    a = m(phase, None, [1e3, -1e3])
    T1 = m._cache_T
    b = m(phase, None, [1e3, -1e3])
    assert m._cache_T is T1  # reused, not rebuilt
    torch.testing.assert_close(a, b)
    m(phase, None, [2e3, -1e3])
    assert m._cache_T is not T1
    # learnable-parameter path (T rebuilt per call) == cached path
    df = torch.tensor([1e3, -1e3], requires_grad=True)
    ph = phase.clone().requires_grad_()
    c = m(ph, None, df, theta_c=torch.tensor(0.01, requires_grad=True))
    torch.testing.assert_close(c.detach(), a, rtol=1e-5, atol=1e-6)
    # no-grad path == autograd path
    d = m(ph, None, [1e3, -1e3])
    torch.testing.assert_close(d.detach(), a)
    with torch.no_grad():
        torch.testing.assert_close(m(ph, None, [1e3, -1e3]), a)
    # the public transfer() is the optics transfer function
    qy, qx = optics.spatial_frequencies((24, 24), 2.0)
    ref = optics.transfer_function(qy, qx, m.wavelength, torch.tensor([1e3, -1e3]), cs=1.0,
                                   theta_c=0.01, defocus_spread=500.0, aperture=2.0)
    torch.testing.assert_close(m.transfer([1e3, -1e3]), ref, rtol=1e-5, atol=1e-6)


def test_scalar_defocus_and_numpy_inputs():
    m = ForwardModel((8, 8), 1.0, 300)
    out = m(np.zeros((8, 8)), np.ones((8, 8)), 100.0)
    assert out.shape == (1, 8, 8)
    np.testing.assert_allclose(out.numpy(), 1.0, rtol=1e-6)


# --------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_value_error():
    z = np.zeros((8, 8))
    with pytest.raises(ValueError, match="beam_energy"):
        ForwardModel((8, 8), 1.0, 0)
    with pytest.raises(ValueError, match="beam_energy"):
        ForwardModel((8, 8), 1.0, 200e3)  # given in V
    with pytest.raises(ValueError, match="pixel_size"):
        ForwardModel((8, 8), 0.0, 200)
    with pytest.raises(ValueError, match="pixel_size"):
        simulate_images(z, None, 0.0, -1.0)
    with pytest.raises(ValueError, match="theta_c"):
        ForwardModel((8, 8), 1.0, 200, theta_c=-1)
    with pytest.raises(ValueError, match="padding"):
        ForwardModel((8, 8), 1.0, 200, padding="zeros")
    with pytest.raises(ValueError, match="pad_width"):
        ForwardModel((8, 8), 1.0, 200, padding="reflect", pad_width=8)
    m = ForwardModel((8, 8), 1.0, 200)
    with pytest.raises(ValueError, match="amplitude"):
        m(z, np.ones((8, 9)), 0.0)
    with pytest.raises(ValueError, match="amplitude"):
        m(z, -np.ones((8, 8)), 0.0)
    bad = np.ones((8, 8))
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="amplitude"):
        m(z, bad, 0.0)
    bad[2, 3] = np.inf
    with pytest.raises(ValueError, match="amplitude"):
        m(z, bad, 0.0)
    with pytest.raises(ValueError, match="phase"):
        m(bad, None, 0.0)
    with pytest.raises(ValueError, match="phase"):
        m(np.zeros((8, 7)), None, 0.0)
    with pytest.raises(ValueError, match="defocus"):
        m(z, None)
    with pytest.raises(ValueError, match="defocus"):
        m(z, None, [0.0, np.nan])
    with pytest.raises(ValueError, match="shifts"):
        m(z, None, [0.0, 1.0], shifts=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="theta_c"):
        m(z, None, [0.0, 1.0], theta_c=torch.tensor([-0.1, 0.1]))
    with pytest.raises(ValueError, match="scale"):
        m(z, None, [0.0, 1.0], scale=[1.0, 2.0, 3.0])


# --------------------------------------------------------------------------- free canvas
def test_free_padding_is_the_canvas_propagated_and_cropped(rng):
    """padding="free": the images are the window of the periodic simulation of the
    whole canvas (independent NumPy oracle), shifts included."""
    canvas_phase = 0.8 * gaussian((40, 42), 6.0, (15, 30)) + 0.1 * rng.standard_normal((40, 42))
    canvas_amp = 1.0 - 0.1 * gaussian((40, 42), 4.0, (25, 12))
    dfs = [-2e4, 3e4]
    m = ForwardModel((24, 30), 2.0, 200, cs=1.0, theta_c=0.05, defocus_spread=300.0,
                     padding="free", pad_width=(7, 6), dtype=torch.float64)
    assert m.padded_shape == (40, 42) and m._pad == (7, 9, 6, 6)
    got = m(torch.as_tensor(canvas_phase), torch.as_tensor(canvas_amp), dfs).numpy()
    ref = numpy_images(canvas_phase, canvas_amp, dfs, 2.0, cs=1.0, theta_c=0.05, spread=300.0)
    np.testing.assert_allclose(got, ref[:, 7:31, 6:36], rtol=1e-9, atol=1e-12)
    # a drift of the canvas is np.roll of the canvas images, then the same window
    shifted = m(torch.as_tensor(canvas_phase), torch.as_tensor(canvas_amp), dfs,
                shifts=[[2, -3], [0, 1]]).numpy()
    np.testing.assert_allclose(shifted[0], np.roll(ref[0], (2, -3), (0, 1))[7:31, 6:36],
                               rtol=1e-9, atol=1e-12)


def test_free_padding_wants_the_canvas_shape():
    m = ForwardModel((24, 30), 2.0, 200, padding="free", pad_width=4)
    with pytest.raises(ValueError, match="canvas shape"):
        m(np.zeros((24, 30)), None, [1e4])


def test_nonfinite_wave_raises_nonfinite_error():
    from hyperspy_lorentz.physics.forward import NonFiniteError

    m = ForwardModel((8, 8), 2.0, 200)
    bad = np.zeros((8, 8))
    bad[2, 3] = np.nan
    with pytest.raises(NonFiniteError, match="phase must be finite"):
        m(bad, None, [1e4])
    with pytest.raises(NonFiniteError, match="amplitude must be finite"):
        m(np.zeros((8, 8)), np.full((8, 8), np.inf), [1e4])
    assert issubclass(NonFiniteError, ValueError)  # callers catching ValueError still do


def test_gradcheck_free_padding():
    m = ForwardModel((10, 9), 3.0, 200, cs=1.0, theta_c=0.02, defocus_spread=400.0,
                     padding="free", pad_width=(3, 2), dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    d = dict(dtype=torch.float64)
    phase = (0.5 * torch.randn(m.padded_shape, generator=g, **d)).requires_grad_()
    amp = (1 + 0.2 * torch.rand(m.padded_shape, generator=g, **d)).requires_grad_()
    df = torch.tensor([3000.0, -5000.0], **d).requires_grad_()
    shifts = torch.tensor([[0.3, -1.7], [2.2, 0.4]], **d).requires_grad_()
    assert torch.autograd.gradcheck(lambda p, a, f, s: m(p, a, f, shifts=s),
                                    (phase, amp, df, shifts), eps=1e-6, atol=1e-6, rtol=1e-4)
