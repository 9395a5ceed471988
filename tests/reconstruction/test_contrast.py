"""defocus_contrast / contrast_warning: the statistic against known synthetic cases."""

import json
import math
import re

import numpy as np
import pytest

from hyperspy_lorentz.physics.optics import wavelength
from hyperspy_lorentz.reconstruction.contrast import contrast_warning, defocus_contrast

LAM = wavelength(200.0)


def _ripple(shape, a, period_px=16, axis=1):
    """1 + a sin(2 pi x / period): normalised variance exactly a^2 / 2 over whole periods."""
    x = np.arange(shape[axis]) * 2 * np.pi / period_px
    wave = 1 + a * np.sin(x)
    return wave[None, :] * np.ones((shape[0], 1)) if axis == 1 else wave[:, None] * np.ones((1, shape[1]))


# ---------------------------------------------------------------- pure noise
@pytest.mark.parametrize("dose", [0.5, 3.0, 30.0, 1e3, 1e5])
def test_pure_poisson_noise_has_no_contrast_within_its_standard_error(dose):
    rng = np.random.default_rng(int(dose * 10))
    images = rng.poisson(dose, size=(3, 128, 128)).astype(float)
    rec = defocus_contrast(images, [-1e5, 0.0, 1e5])
    for c, e, s2 in zip(rec["contrast"], rec["standard_error"], rec["noise"]):
        assert abs(c) < 4 * e
        assert s2 == pytest.approx(1 / dose, rel=0.1)  # Poisson's 1 / dose (standard error 2 %)
    for k in (0, 2):
        assert abs(rec["difference_contrast"][k]) < 4 * rec["difference_standard_error"][k]
    assert not rec["has_contrast"]


@pytest.mark.parametrize("dose", [0.5, 50.0])
def test_standard_error_is_calibrated_on_replicas(dose):
    """z = contrast / standard error over 300 noise replicas: mean 0, std 1."""
    rng = np.random.default_rng(7)
    z, zd = [], []
    for _ in range(300):
        images = rng.poisson(dose, size=(2, 48, 40)).astype(float)
        rec = defocus_contrast(images, [0.0, 1e5])
        z.append(rec["contrast"][0] / rec["standard_error"][0])
        zd.append(rec["significance"][1])
    for values in (np.array(z), np.array(zd)):
        assert abs(values.mean()) < 0.2
        assert 0.85 < values.std() < 1.15


def test_gaussian_noise_in_any_unit():
    rng = np.random.default_rng(3)
    images = 5e3 + 40.0 * rng.standard_normal((2, 96, 96))  # not counts: noise set by the detector
    rec = defocus_contrast(images, [-2e5, 2e5])
    assert rec["measured_on"] == "images" and rec["in_focus_index"] == -1
    for c, e, s2 in zip(rec["contrast"], rec["standard_error"], rec["noise"]):
        assert abs(c) < 4 * e
        assert s2 == pytest.approx((40.0 / 5e3) ** 2, rel=0.1)
    assert not rec["has_contrast"]


# --------------------------------------------------------- known modulations
@pytest.mark.parametrize("a", [0.02, 0.1, 0.3])
@pytest.mark.parametrize("axis", [0, 1])
def test_sinusoidal_modulation_of_amplitude_a_has_contrast_a2_over_2(a, axis):
    shape = (128, 128)
    clean = 1e3 * _ripple(shape, a, axis=axis)
    rec = defocus_contrast(clean, 1e5)
    n = shape[0] * shape[1]  # var with ddof=1: a^2 / 2 * n / (n - 1)
    assert rec["contrast"][0] == pytest.approx(a * a / 2 * n / (n - 1), rel=1e-9)  # noise-free
    assert rec["noise"][0] == pytest.approx(0.0, abs=1e-20)
    rng = np.random.default_rng(11)
    rec = defocus_contrast(rng.poisson(clean).astype(float), 1e5)
    c, e = rec["contrast"][0], rec["standard_error"][0]
    assert c == pytest.approx(a * a / 2, abs=4 * e)
    assert e < 0.15 * a * a / 2
    assert rec["has_contrast"]


def test_weak_modulation_detected_only_above_noise():
    """a = 0.01 under Poisson noise at 100 e/px: a^2/2 = 5e-5 against a standard error
    ~1e-4 is not significant; at 1e4 e/px it is."""
    shape = (128, 128)
    rng = np.random.default_rng(5)
    for dose, expected in ((100.0, False), (1e4, True)):
        rec = defocus_contrast(rng.poisson(dose * _ripple(shape, 0.01)).astype(float), 2e5)
        assert rec["has_contrast"] is expected


def test_in_focus_amplitude_contrast_is_not_defocus_contrast():
    """The same amplitude texture in every image (defocus too small to change it):
    each image has contrast, the defocus made none."""
    shape = (128, 128)
    rng = np.random.default_rng(2)
    texture = 400.0 * _ripple(shape, 0.2, period_px=32)
    images = rng.poisson(np.stack([texture] * 3)).astype(float)
    rec = defocus_contrast(images, [-500.0, 0.0, 500.0])
    assert all(c > 50 * e for c, e in zip(rec["contrast"], rec["standard_error"]))
    assert rec["measured_on"] == "difference from the in-focus image"
    assert rec["significance"][1] == 0.0
    assert max(abs(s) for s in rec["significance"]) < 4
    assert not rec["has_contrast"]
    # defocus that changes the images: the difference has contrast
    images[2] = rng.poisson(400.0 * _ripple(shape, 0.2, period_px=32) * _ripple(shape, 0.05, axis=0))
    assert defocus_contrast(images, [-500.0, 0.0, 500.0])["has_contrast"]


def test_a_single_image_and_only_in_focus_images():
    rng = np.random.default_rng(4)
    rec = defocus_contrast(rng.poisson(300 * _ripple((64, 64), 0.1)).astype(float), -3e5)
    assert rec["has_contrast"] and rec["in_focus_index"] == -1
    rec = defocus_contrast(rng.poisson(300.0, size=(64, 64)).astype(float), 0.0)
    assert not rec["has_contrast"] and rec["in_focus_index"] == 0


def test_noise_free_images_give_finite_significance():
    rec = defocus_contrast(np.stack([1e3 * _ripple((32, 32), 0.1)] * 2 + [np.full((32, 32), 5.0)]),
                           [-1e5, 1e5, 0.0])
    assert json.dumps(rec, allow_nan=False)
    assert rec["has_contrast"] and all(math.isfinite(v) for v in rec["significance"])
    assert rec["significance"][2] == 0.0


def test_record_is_json_friendly():
    rng = np.random.default_rng(0)
    rec = defocus_contrast(rng.poisson(50.0, size=(3, 32, 32)), np.array([-1e5, 0, 1e5]))
    back = json.loads(json.dumps(rec, allow_nan=False))
    assert back == rec
    assert isinstance(rec["has_contrast"], bool)
    assert set(rec) >= {"defocus_nm", "mean_intensity", "noise", "contrast", "standard_error",
                        "significance", "threshold", "has_contrast"}


@pytest.mark.parametrize(
    "images, defocus, kwargs, match",
    [
        (np.ones((2, 2)), 0.0, {}, "3 x 3"),
        (np.ones((2, 3, 8, 8)), 0.0, {}, "one image"),
        (np.ones((2, 8, 8)), [1.0], {}, "1 defocus value"),
        (np.zeros((8, 8)), 1.0, {}, "positive mean"),
        (np.full((8, 8), np.nan), 1.0, {}, "non-finite"),
        (np.ones((8, 8)), np.inf, {}, "finite"),
        (np.ones((8, 8)), 1.0, {"threshold": 0}, "threshold"),
        (np.ones((8, 8), complex), 1.0, {}, "real intensities"),
    ],
)
def test_bad_input(images, defocus, kwargs, match):
    with pytest.raises(ValueError, match=match):
        defocus_contrast(images, defocus, **kwargs)


# -------------------------------------------------------------- the message
def _noise_record(defocus, dose=200.0, shape=(128, 128), seed=0):
    rng = np.random.default_rng(seed)
    return defocus_contrast(rng.poisson(dose, size=(len(defocus),) + shape).astype(float), defocus)


def test_message_names_a_defocus_in_the_wrong_unit():
    """The README's old example: +-500 nm at 2 nm pixels, 200 e/px."""
    rec = _noise_record([-500.0, 0.0, 500.0])
    message = contrast_warning(rec, 2.0, LAM, (128, 128))
    assert "Fresnel length sqrt(lambda |df|) is 1.1 nm, less than one 2 nm pixel" in message
    assert "at |defocus| = 500 nm" in message
    assert "wrong unit (um?" in message and "0.05-2 mm" in message
    dose = float(re.search(r"as Poisson noise at ([0-9.]+) electrons per pixel", message).group(1))
    assert dose == pytest.approx(200, rel=0.1)
    assert "units='um'" in message


def test_message_names_a_defocus_far_too_large():
    rec = _noise_record([-5e9, 5e9], shape=(64, 64))
    message = contrast_warning(rec, 2.0, LAM, (64, 64))
    assert "larger than the 128 nm field of view" in message


def test_message_names_the_noise_where_the_defocus_is_plausible():
    rec = _noise_record([-2e5, 0.0, 2e5], dose=5.0)
    message = contrast_warning(rec, 2.0, LAM, (128, 128))
    assert "Likely cause: the noise" in message
    assert f"Fresnel length sqrt(lambda |df|) is {math.sqrt(LAM * 2e5):.3g} nm" in message
    assert "rebin" in message and "electrons per pixel" in message


def test_no_message_where_there_is_contrast():
    rng = np.random.default_rng(1)
    rec = defocus_contrast(rng.poisson(300 * _ripple((64, 64), 0.1)).astype(float), 2e5)
    assert contrast_warning(rec, 2.0, LAM, (64, 64)) is None
