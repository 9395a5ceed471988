"""hyperspy_lorentz.data: calibrated example series with their ground truth."""

import numpy as np
import pytest

import hyperspy_lorentz as hl
from hyperspy_lorentz import data
from hyperspy_lorentz.physics.magnetisation import electrostatic_phase
from hyperspy_lorentz.physics.optics import wavelength
from hyperspy_lorentz.signals.focal_series import LorentzFocalSeries

N = 128
GENERATORS = [data.skyrmion_lattice, data.island_array, data.domain_walls, data.stripe_domains,
              data.vortex_discs]


def _defaults(f):
    return f.__kwdefaults__


@pytest.mark.parametrize("f", GENERATORS, ids=lambda f: f.__name__)
def test_calibrated_with_truth(f):
    s = f(shape=(N, N))
    assert isinstance(s, LorentzFocalSeries)
    kw = _defaults(f)
    p = s.get_microscope_parameters()
    np.testing.assert_allclose(p["defocus_nm"], sorted(kw["defocus"]))
    assert p["pixel_size_nm"] == 2.5 and p["beam_energy_kV"] == 200.0
    for ax in s.axes_manager.signal_axes:
        assert ax.units == "nm" and ax.scale == 2.5 and ax.size == N
    assert s.axes_manager["defocus"].units == "nm"
    sim = s.metadata.Simulation
    for key in ("phase", "amplitude", "magnetic_phase", "electrostatic_phase", "thickness"):
        assert sim.get_item(key).shape == (N, N), key
    np.testing.assert_allclose(sim.phase, sim.magnetic_phase + sim.electrostatic_phase, atol=1e-12)
    np.testing.assert_allclose(sim.defocus, sorted(kw["defocus"]))
    assert sim.shifts.shape == (len(kw["defocus"]), 2) and not sim.shifts.any()
    assert sim.dose == kw["dose"] and sim.seed == 0
    assert sim.Specimen.field == kw["field"] and sim.Specimen.kind == f.__name__
    assert np.all(s.data == np.round(s.data))  # electron counts
    assert s.data.mean() == pytest.approx(kw["dose"] * np.mean(sim.amplitude**2), rel=0.05)


@pytest.mark.parametrize("f", GENERATORS, ids=lambda f: f.__name__)
def test_contrast_above_shot_noise(f):
    """The images show the specimen, not only Poisson noise (the defaults)."""
    dose = _defaults(f)["dose"]
    s = f(shape=(N, N))
    clean = f(shape=(N, N), dose=None)
    k = int(np.argmax(np.abs(s.metadata.Simulation.defocus)))
    counts = s.data[k].astype(float)
    # relative contrast of the specimen: the variance beyond the Poisson variance (= mean)
    measured = np.sqrt(counts.var() - counts.mean()) / counts.mean()
    truth = clean.data[k].std() / clean.data[k].mean()
    assert measured == pytest.approx(truth, rel=0.15)
    assert truth > 1.5 / np.sqrt(dose)


@pytest.mark.parametrize("f", GENERATORS, ids=lambda f: f.__name__)
def test_reproducible_with_the_seed(f):
    a = f(shape=(N, N), seed=3)
    b = f(shape=(N, N), seed=3)
    c = f(shape=(N, N), seed=4)
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data, c.data)
    # the specimen does not change with the noise seed
    np.testing.assert_array_equal(a.metadata.Simulation.phase, c.metadata.Simulation.phase)


def test_noise_free():
    s = data.vortex_discs(shape=(N, N), dose=None)
    assert s.metadata.Simulation.dose is None
    assert not np.all(s.data == np.round(s.data))
    # in focus, the image is |A|^2 (blurred a little by Cs and the focal spread)
    in_focus = s.data[list(s.metadata.Simulation.defocus).index(0.0)]
    assert in_focus.mean() == pytest.approx(np.mean(s.metadata.Simulation.amplitude ** 2), rel=0.005)
    assert np.abs(in_focus - s.metadata.Simulation.amplitude ** 2).mean() < 0.01


def _corr(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


TRANSPORT_CASES = [
    (data.skyrmion_lattice, "window"), (data.skyrmion_lattice, "isolated"), (data.skyrmion_lattice, "periodic"),
    (data.island_array, "isolated"), (data.island_array, "window"),
    (data.domain_walls, "window"), (data.domain_walls, "periodic"),
    (data.stripe_domains, "window"), (data.stripe_domains, "periodic"),
    (data.vortex_discs, "isolated"), (data.vortex_discs, "window"),
]


@pytest.mark.parametrize("f, field", TRANSPORT_CASES, ids=lambda v: getattr(v, "__name__", v))
def test_truth_is_what_the_images_show(f, field):
    """The transport of intensity, ``dI/dz = -(lambda / 2 pi) div(I0 grad phi)``, holds
    between the images and the true phase and amplitude (small defocus, no
    aberrations; finite differences, away from the frame edges). No reconstruction
    is involved, so windows are checked as well as isolated and periodic fields."""
    df = 5e3
    s = f(shape=(N, N), field=field, dose=None, defocus=(-df, 0.0, df), cs=0.0, theta_c=0.0, defocus_spread=0.0)
    sim = s.metadata.Simulation
    images = s.data.astype(float)
    didz = (images[2] - images[0]) / (2 * df)
    gy, gx = np.gradient(sim.phase, 2.5)
    i0 = sim.amplitude**2
    predicted = -wavelength(200.0) / (2 * np.pi) * (np.gradient(i0 * gy, 2.5, axis=0)
                                                    + np.gradient(i0 * gx, 2.5, axis=1))
    inner = (slice(8, -8), slice(8, -8))
    # the islands' 2.7 rad edges are sharpest: finite differences are least exact there
    assert _corr(didz[inner], predicted[inner]) > (0.96 if f is data.island_array else 0.99)
    assert np.std(didz[inner]) == pytest.approx(np.std(predicted[inner]), rel=0.4)


def test_lattice_drift_moves_the_defocused_images():
    """``drift``: each defocused image is the undrifted one moved by the recorded
    shift (Fourier shift theorem, away from the frame edges); the in-focus image
    stays."""
    from scipy import ndimage

    kw = dict(shape=(N, N), dose=None, defocus=(-3e5, 0.0, 3e5))
    still = data.skyrmion_lattice(**kw)
    moved = data.skyrmion_lattice(drift=1.5, seed=4, **kw)
    shifts = np.asarray(moved.metadata.Simulation.shifts, float)
    assert np.all(shifts[1] == 0) and np.all(np.abs(shifts) <= 1.5) and np.any(shifts != 0)
    inner = (slice(12, -12), slice(12, -12))
    for i in range(3):
        expected = ndimage.shift(still.data[i].astype(float), shifts[i], order=3, mode="nearest")
        err = np.abs(expected - moved.data[i])[inner].max()
        assert err < 0.02 * np.ptp(still.data[i]), (i, err)
    with pytest.raises(ValueError, match="drift must be"):
        data.skyrmion_lattice(drift=-1.0, **kw)


def test_window_is_a_window():
    """A window holds specimen beyond the frame; its images are not those of the
    cropped phase simulated alone (they differ at the edges, agree in the middle)."""
    w = data.skyrmion_lattice(shape=(N, N), field="window", dose=None)
    iso = data.skyrmion_lattice(shape=(N, N), field="isolated", dose=None)
    assert not np.allclose(w.metadata.Simulation.phase, iso.metadata.Simulation.phase)
    assert w.metadata.Simulation.padding == "periodic"  # a window onto a periodic simulation cell
    assert tuple(w.metadata.Simulation.Specimen.simulated_shape) > (N, N)
    alone = hl.simulate_focal_series(w.metadata.Simulation.phase, defocus=w.metadata.Simulation.defocus,
                                     scale=2.5, padding="periodic")
    diff = np.abs(alone.data - w.data)
    assert diff[:, :, :4].max() > 0.1
    assert diff[:, 48:80, 48:80].max() < 0.02


@pytest.mark.parametrize("f", [data.island_array, data.vortex_discs], ids=lambda f: f.__name__)
def test_isolated_has_vacuum_around_window_does_not(f):
    iso = f(shape=(N, N), field="isolated", dose=None)
    win = f(shape=(N, N), field="window", dose=None)
    ring = np.ones((N, N), bool)
    ring[8:-8, 8:-8] = False
    assert iso.metadata.Simulation.thickness[ring].max() < 1e-3
    assert win.metadata.Simulation.thickness[ring].max() == pytest.approx(_defaults(f)["thickness"], rel=0.01)
    assert iso.metadata.Simulation.Specimen.field == "isolated"


def test_vortex_discs_physics():
    s = data.vortex_discs(shape=(N, N), dose=None)
    sim = s.metadata.Simulation
    t, v0 = 22.0, 25.0
    # electrostatic phase sigma V0 t (about 4 rad) and amplitude exp(-t / 2 lambda) inside
    assert sim.electrostatic_phase.max() == pytest.approx(electrostatic_phase(t, v0, 200.0), rel=1e-3)
    assert sim.electrostatic_phase.max() == pytest.approx(4.0, abs=0.1)
    assert sim.amplitude.min() == pytest.approx(np.exp(-t / 200.0), rel=1e-3)
    assert sim.amplitude.max() == pytest.approx(1.0)
    # a vortex cone: magnetic phase range about (e/hbar) mu0 Ms t R = 3.4 rad per disc
    assert np.ptp(sim.magnetic_phase) == pytest.approx(3.4, rel=0.1)


def test_island_array_physics():
    s = data.island_array(shape=(256, 256), dose=None, defocus=(0.0, 100e3))
    sim = s.metadata.Simulation
    assert sim.electrostatic_phase.max() == pytest.approx(electrostatic_phase(15.0, 25.0, 200.0), rel=1e-3)
    assert sim.Specimen.islands_simulated == 12  # 2 x 2 plaquettes of square ice
    assert sim.Specimen.ms_A_per_m == 8e5
    np.testing.assert_allclose(sim.amplitude, 1.0)  # a pure phase object by default


def test_periodic_field_is_periodic():
    s = data.stripe_domains(shape=(N, N), field="periodic", dose=None)
    ph = s.metadata.Simulation.phase
    # one period of a repeated specimen: the phase joins smoothly across opposite edges
    jump = max(np.abs(ph[0] - ph[-1]).max(), np.abs(ph[:, 0] - ph[:, -1]).max())
    step = max(np.abs(np.diff(ph, axis=0)).max(), np.abs(np.diff(ph, axis=1)).max())
    assert jump <= 1.01 * step
    assert s.metadata.Simulation.padding == "periodic"


def test_flip_pair_follows_the_flip_conventions():
    from hyperspy_lorentz.reconstruction.flip import register_flipped

    u, f = data.flip_pair(shape=(N, N), drift=(3.0, -2.0))
    su, sf = u.metadata.Simulation, f.metadata.Simulation
    # turned over about x: rows reversed, the magnetic phase reversed, the electrostatic kept
    np.testing.assert_allclose(np.flip(sf.magnetic_phase, 0), -su.magnetic_phase, atol=1e-12)
    np.testing.assert_allclose(np.flip(sf.electrostatic_phase, 0), su.electrostatic_phase, atol=1e-12)
    np.testing.assert_allclose(sf.shifts, [[3.0, -2.0]] * len(sf.defocus))
    assert sf.Specimen.flip_axis == "x" and sf.Specimen.flipped
    assert u.metadata.Simulation.seed != f.metadata.Simulation.seed  # independent noise
    # the recording is the mirror image moved by the drift: registration finds it
    _, info = register_flipped(u.data, f.data, defocus=su.defocus, flipped_defocus=sf.defocus)
    np.testing.assert_allclose(info["drift"], (3.0, -2.0), atol=0.3)
    # noise-free and without drift, the flipped images are the images of the mirrored exit wave
    u0, f0 = data.flip_pair(shape=(N, N), drift=(0, 0), dose=None)
    mirrored = hl.simulate_focal_series(np.flip(u0.metadata.Simulation.electrostatic_phase
                                                - u0.metadata.Simulation.magnetic_phase, 0),
                                        np.flip(u0.metadata.Simulation.amplitude, 0),
                                        defocus=u0.metadata.Simulation.defocus, scale=2.5)
    inner = (slice(None), slice(16, -16), slice(16, -16))
    np.testing.assert_allclose(f0.data[inner], mirrored.data[inner], atol=0.02)


def test_flip_pair_about_y():
    u, f = data.flip_pair(shape=(64, 64), radius=40, spacing=100, flip_axis="y", drift=(0, 0), dose=None)
    np.testing.assert_allclose(np.flip(f.metadata.Simulation.phase, 1),
                               u.metadata.Simulation.electrostatic_phase - u.metadata.Simulation.magnetic_phase,
                               atol=1e-12)


def test_lazy_access_from_the_package():
    assert hl.data is data


@pytest.mark.parametrize(
    "kwargs, match",
    [({"field": "infinite"}, "field"), ({"dose": -1}, "dose"), ({"shape": (8, 8)}, "shape"),
     ({"pixel_size": 0}, "pixel_size")],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.skyrmion_lattice(**{"shape": (64, 64), **kwargs})


def test_specimen_too_large_for_the_frame():
    with pytest.raises(ValueError, match="No disc of radius 100 nm fits"):
        data.vortex_discs(shape=(64, 64))
    with pytest.raises(ValueError, match="No island"):
        data.island_array(shape=(32, 32))


def test_bad_flip_input():
    with pytest.raises(ValueError, match="flip_axis"):
        data.flip_pair(shape=(64, 64), flip_axis="z")
    with pytest.raises(ValueError, match="drift"):
        data.flip_pair(shape=(64, 64), drift=3)
