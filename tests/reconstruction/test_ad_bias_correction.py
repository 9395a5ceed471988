"""Parametric-bootstrap bias correction of the refined optical parameters (ad.py).

The oracle is the known defocus of simulated series: the joint MAP estimate of
the defocus with a refined amplitude is biased at 10 % noise (a Neyman-Scott
problem, see the module docstring of ad.py); the bootstrap must bring it closer
to the truth.
"""

import warnings

import numpy as np
import pytest

from hyperspy_lorentz.physics.forward import simulate_images
from hyperspy_lorentz.reconstruction import ad as ad_mod
from hyperspy_lorentz.reconstruction.ad import reconstruct_ad

PIX = 5.0  # nm
KEV = 200.0
MM = 1e6  # nm
DF = np.array([-1.6, 1.6]) * MM


def islands(n=128):
    """Soft-edged discs with phase ramps (rad) and a 5 % darker amplitude inside."""
    y, x = np.mgrid[:n, :n].astype(float)
    phase, amp = np.zeros((n, n)), np.ones((n, n))
    s = n / 128.0
    for cy, cx, r, ang in ((40, 45, 18, 0.3), (85, 80, 22, 2.0), (40, 100, 10, 4.0)):
        cy, cx, r = cy * s, cx * s, r * s
        inside = 0.5 * (1.0 + np.tanh((r - np.hypot(y - cy, x - cx)) / 1.0))
        phase += inside * (1.5 + 0.08 * ((x - cx) * np.cos(ang) + (y - cy) * np.sin(ang)))
        amp -= 0.05 * inside
    return phase, amp


@pytest.fixture(scope="module")
def clean():
    phase, amp = islands()
    return simulate_images(phase, amp, DF, PIX, KEV)


def _noisy(clean, seed, s=0.10):
    return np.random.default_rng(seed).normal(clean, s * clean)


def _fit(images, **kw):
    kw.setdefault("refine", ("amplitude", "defocus"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return reconstruct_ad(images, DF * np.array([1.03, 0.97]), pixel_size=PIX,
                              beam_energy=KEV, seed=0, **kw)


@pytest.mark.parametrize("seed", [1, 2])
def test_bias_correction_brings_defocus_closer_to_truth(clean, seed):
    res = _fit(_noisy(clean, seed))
    rec = res.parameters["bias_correction"]
    assert rec["replicates"] == ad_mod.BOOTSTRAP_REPLICATES
    before = np.asarray(rec["uncorrected"]["defocus"]) / DF - 1.0
    after = res.defocus / DF - 1.0
    # the premise: the joint MAP is measurably biased here (toward a smaller |df|)
    assert before[1] < -0.01
    assert np.mean(np.abs(after)) < 0.7 * np.mean(np.abs(before))
    assert np.max(np.abs(after)) < 0.01


def test_bias_correction_record_is_consistent_and_can_be_switched_off(clean):
    images = _noisy(clean, 1)
    off = _fit(images, bias_correction=0)
    on = _fit(images, bias_correction=3)
    assert off.parameters["bias_correction"] is None
    assert off.standard_errors == {}
    rec = on.parameters["bias_correction"]
    assert rec["replicates"] == 3 and len(rec["iterations"]) == 3
    # the main fit is the same; the correction is the recorded bias subtracted
    # where it stands out of its own noise
    np.testing.assert_allclose(rec["uncorrected"]["defocus"], off.defocus, rtol=1e-9)
    applied = np.asarray(rec["applied"]["defocus"])
    assert applied.any()
    np.testing.assert_allclose(
        on.defocus, off.defocus - applied * np.asarray(rec["bias"]["defocus"]), rtol=1e-9)
    np.testing.assert_array_equal(on.phase, off.phase)
    se = on.standard_errors["defocus"]
    assert se.shape == (2,) and np.all(np.isfinite(se)) and np.all(se > 0)
    assert rec["standard_errors"]["defocus"] == pytest.approx(se.tolist())


def test_no_bootstrap_without_optical_parameters(clean):
    res = _fit(_noisy(clean, 1), refine=("amplitude",), max_iterations=30)
    assert res.parameters["bias_correction"] is None
    assert res.standard_errors == {}


def test_one_replicate_corrects_but_gives_no_standard_error(clean):
    res = _fit(_noisy(clean, 1), bias_correction=1)
    rec = res.parameters["bias_correction"]
    assert rec["replicates"] == 1
    assert res.standard_errors == {}
    assert all(rec["applied"]["defocus"])  # no noise estimate: always applied


def test_insignificant_bias_estimate_is_not_applied(clean):
    """A clean series: the bias estimate is within its own noise for some
    parameters; those keep their fitted value."""
    res = _fit(_noisy(clean, 1, s=0.01), refine=("amplitude", "defocus", "shifts"))
    rec = res.parameters["bias_correction"]
    for name in ("defocus", "shifts"):
        applied = np.asarray(rec["applied"][name])
        unc = np.asarray(rec["uncorrected"][name])
        got = res.defocus if name == "defocus" else res.shifts
        np.testing.assert_array_equal(got[~applied], unc[~applied])
    # the test of significance uses the replicates' own spread (the reported
    # standard errors are widened for the few replicates)
    se_mean = np.asarray(rec["spread"]["shifts"]) / np.sqrt(rec["replicates"])
    bias = np.abs(np.asarray(rec["bias"]["shifts"]))
    np.testing.assert_array_equal(np.asarray(rec["applied"]["shifts"]),
                                  bias > ad_mod.BOOTSTRAP_SIGNIFICANCE * se_mean)


def test_poisson_likelihood_bootstraps_counts(clean):
    dose = 200.0  # electrons per pixel
    rng = np.random.default_rng(3)
    counts = rng.poisson(clean / clean.mean(axis=(1, 2), keepdims=True) * dose).astype(float)
    res = _fit(counts, likelihood="poisson", dose=dose)
    rec = res.parameters["bias_correction"]
    assert rec["replicates"] == ad_mod.BOOTSTRAP_REPLICATES
    before = np.asarray(rec["uncorrected"]["defocus"]) / DF - 1.0
    after = res.defocus / DF - 1.0
    assert np.mean(np.abs(after)) <= np.mean(np.abs(before))
    # the truth within 3 reported standard errors, and those errors a few per cent.
    # (Not 2: with 3 replicates the standard error itself scatters like a chi with
    # 2 degrees of freedom, and one realisation misses 2 SE on one of the two
    # values about 9 % of the time even when the coverage over many is right --
    # a change of rounding in the optimiser made this seed miss by 2.4 SE;
    # 3 SE fails about 4 % of the time. The coverage itself is measured over
    # many realisations by benchmarks/bench_refine.py.)
    se = res.standard_errors["defocus"] / np.abs(DF)
    assert np.all(np.abs(after) <= 3.0 * se) and np.all(se < 0.03)


def test_shifts_and_log_scaled_parameters_are_corrected_in_their_own_space(clean):
    """Scale is positive: corrected multiplicatively (stays positive); shifts keep the
    mean over the shift reference at zero."""
    res = _fit(_noisy(clean, 2), refine=("amplitude", "shifts", "scale"), max_iterations=80)
    rec = res.parameters["bias_correction"]
    assert set(rec["bias"]) == {"shifts", "scale"}
    ref = res.parameters["shift_reference"]
    np.testing.assert_allclose(res.shifts[ref].mean(axis=0), 0.0, atol=1e-6)
    unc, bias = np.asarray(rec["uncorrected"]["scale"]), np.asarray(rec["bias"]["scale"])
    applied = np.asarray(rec["applied"]["scale"])
    # log-space correction: s_c = s / exp(b_log) with s exp(b_log) = s + bias
    np.testing.assert_allclose(res.scale, np.where(applied, unc**2 / (unc + bias), unc),
                               rtol=1e-9)
    assert np.all(res.scale > 0)


@pytest.mark.parametrize("value", ["yes", -1, True, 1.5])
def test_bad_bias_correction_option(clean, value):
    with pytest.raises(ValueError, match="bias_correction"):
        _fit(clean, bias_correction=value)


@pytest.mark.parametrize("dose", [10.0, 1000.0])
def test_defocus_that_does_not_beat_the_nominal_values_is_held(dose):
    """Likelihood-ratio test of the refined defocus against the nominal values (4 %
    high). At 10 e-/px the weak lattice's refined defocus fitted the images *worse*
    than the nominal values (it wandered up to 35 % from the truth with error bars
    of 1-2 %): now reported not identifiable and held at the nominal values, the
    exit wave fitted there. At 1000 e-/px the data support the move and it is kept."""
    from hyperspy_lorentz import data

    df = np.array([-6e5, -3e5, 0.0, 3e5, 6e5])
    s = data.skyrmion_lattice(shape=(128, 128), dose=dose, seed=0, defocus=df, drift=2.0)
    p = s.get_microscope_parameters()
    nominal = 1.04 * df
    kw = dict(pixel_size=p["pixel_size_nm"], beam_energy=p["beam_energy_kV"], cs=p["cs_mm"],
              theta_c=p["theta_c_mrad"], defocus_spread=p["defocus_spread_nm"],
              likelihood="poisson", refine=("defocus", "shifts"), refine_amplitude=False,
              seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = reconstruct_ad(np.asarray(s.data, float), nominal, **kw)
    test = res.parameters["defocus_test"]
    assert test["threshold"] == pytest.approx(11.07, abs=0.01)  # chi^2_5 at 95 %
    if dose == 10.0:
        assert not test["identifiable"] and test["chi2_gain"] < test["threshold"]
        assert "defocus" in res.not_identifiable
        np.testing.assert_array_equal(res.defocus, nominal)
        # the misfit reported is that of the fit returned, at the nominal values
        assert res.parameters["reduced_chi2"] == pytest.approx(test["reduced_chi2_nominal"])
        assert any("likelihood-ratio" in str(w.message) for w in caught)
    else:
        assert test["identifiable"] and test["chi2_gain"] > test["threshold"]
        assert "defocus" not in res.not_identifiable
        # the scale error of the nominal values is mostly recovered
        scale = res.defocus @ df / (df @ df)
        assert abs(scale - 1.0) < 0.01


def test_defocus_offset_is_tested_on_its_own_with_the_amplitude_refined():
    """With the amplitude refined, a common defocus offset is a refocusing of the
    exit wave (modes.compensate), which the images do not see but through the
    spatial-coherence envelope: the refined offset is the prior's choice. With
    that envelope negligible (theta_c 1e-4 mrad), the oracle is refocusing
    invariance: the refocused wave at the nominal offset explains the images
    exactly as well as the refined one (chi^2 gain 0). The one-degree-of-freedom
    test then reports the offset not identifiable and holds it at the nominal
    value (here 10 um off the truth: the data cannot tell, and the nominal value
    is kept, as for every parameter the data do not determine). With the
    amplitude held, refocusing changes the images, and no such test is made."""
    from hyperspy_lorentz import data
    from hyperspy_lorentz.reconstruction.ad.modes import mode_coefficients

    df = np.array([-6e5, -3e5, 0.0, 3e5, 6e5])
    s = data.skyrmion_lattice(shape=(128, 128), dose=100.0, seed=1, defocus=df, theta_c=1e-4)
    p = s.get_microscope_parameters()
    nominal = 1.04 * df + 1e4
    kw = dict(pixel_size=p["pixel_size_nm"], beam_energy=p["beam_energy_kV"], cs=p["cs_mm"],
              theta_c=p["theta_c_mrad"], defocus_spread=p["defocus_spread_nm"],
              likelihood="poisson", refine=("defocus",), seed=0, bias_correction=0)
    images = np.asarray(s.data, float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = reconstruct_ad(images, nominal, refine_amplitude=True, **kw)
        held = reconstruct_ad(images, nominal, refine_amplitude=False, **kw)
    assert res.parameters["defocus_test"]["identifiable"]  # the scale moved: kept
    off = res.parameters["defocus_offset_test"]
    assert off["degrees_of_freedom"] == 1
    assert off["threshold"] == pytest.approx(3.84, abs=0.01)  # chi^2_1 at 95 %
    assert abs(off["chi2_gain_start"]) < 1.0  # refocusing invariance
    assert not off["identifiable"] and "defocus offset" in res.not_identifiable
    # held at the nominal offset (the scale and the single images stay refined;
    # the offset is split off in the modes of the fitted values, so "held" is to
    # within 1e-4 of the largest defocus, 60 nm, against the 10 um it could move)
    t = mode_coefficients(nominal, res.defocus - nominal)
    assert abs(t[1]) < 1e-4 and abs(t[0]) > 1e-3
    assert abs(np.mean(res.defocus - df) - 1e4) < 500.0
    assert res.parameters["reduced_chi2"] == pytest.approx(off["reduced_chi2_nominal"])
    assert held.parameters["defocus_offset_test"] is None
