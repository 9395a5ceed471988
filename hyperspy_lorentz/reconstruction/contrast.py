"""Is there any Lorentz contrast above the noise? (pure NumPy)

A focal series whose images hold nothing but noise -- a defocus typed in the
wrong unit, a dose far too low, a field without magnetic texture -- gives a
phase from every method (AD, TIE, SITIE), and that phase is noise shaped by the
method's regularisation. :func:`defocus_contrast` measures, for each image, the
contrast that stands above the image's own noise, and :func:`contrast_warning`
turns a series where no defocused image has any into a message that names the
likely cause with numbers.

The statistic
-------------
With ``u = I / mean(I)`` an image normalised by its mean, its *contrast* is
the excess normalised variance

    c = var(u) - s2 ,

where ``s2`` is the normalised variance of the white noise, estimated from the
image itself as ``mean(r^2) / 36`` with ``r`` the response of the 3 x 3
kernel ``[[1, -2, 1], [-2, 4, -2], [1, -2, 1]]`` (Immerkaer 1996; the kernel
of :func:`hyperspy_lorentz.reconstruction.tie.estimate_noise`, with the mean
square in place of the median, which is unbiased for white noise of any
distribution, Poisson counts at low dose included). ``c`` is 0 on average for
pure noise, and ``a^2 / 2`` for an image modulated as ``1 + a sin(2 pi x / L)``.

The noise alone gives ``c`` a standard error ``s2 sqrt(2 tr Q^2)`` (``Q`` the
quadratic form of ``c``: about ``s2 sqrt(5.56 / n)`` for ``n`` pixels), to which
a real contrast adds ``2 sqrt(s2 c / n)``. Where the series has an in-focus
image (defocus 0), the contrast of each defocused image is also measured on its
difference from the in-focus one, ``u_k - u_0``: that is the contrast the
*defocus* made, free of the amplitude contrast of the specimen (thickness,
grains, holes) that is there in focus as well. A defocused image *has
contrast* where this statistic (the difference where there is an in-focus
image, the image itself otherwise) exceeds ``threshold`` standard errors.

The noise is assumed white. Correlated noise (a detector's point-spread
function, images interpolated by an alignment) is partly missed by the
high-pass estimate, so that it counts as contrast: the check then errs towards
silence, never towards a false alarm on a series that has contrast.

This module knows nothing about HyperSpy.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["defocus_contrast", "contrast_warning", "DEFAULT_THRESHOLD"]

#: Standard errors by which an image's contrast must exceed zero to count.
DEFAULT_THRESHOLD = 5.0
#: Range of ``|defocus|`` used in Lorentz TEM, nm, quoted by the warning.
LTEM_DEFOCUS_RANGE_NM = (5e4, 2e6)
#: Texture period, nm, at which the warning quotes the expected contrast.
REFERENCE_PERIOD_NM = 100.0

# Second difference [1, -2, 1]: the 3 x 3 kernel is its outer product.
_K_SUM_SQ = 36.0  # sum of the squared weights of the 3 x 3 kernel
# Autocorrelation of [1, -2, 1] is [1, -4, 6, -4, 1]: sum of squares 70, of
# which lags +-1 carry 2 * 16 and lags +-2 carry 2 * 1.


def _second_difference(a):
    """Response of the 3 x 3 kernel on the valid ``(H-2, W-2)`` region."""
    d = a[..., :, :-2] - 2.0 * a[..., :, 1:-1] + a[..., :, 2:]
    return d[..., :-2, :] - 2.0 * d[..., 1:-1, :] + d[..., 2:, :]


def _null_factor(shape):
    """``2 tr(Q^2)`` of the statistic for an image of ``shape`` (white noise).

    ``Q = A / (n - 1) - K^T K / (36 m)``, ``A`` the centring matrix, ``K`` the
    valid convolution (``m = (H-2)(W-2)`` rows). ``K 1 = 0`` gives
    ``tr(A K^T K) = 36 m``, and ``tr((K K^T)^2)`` separates into the two axes.
    """
    h, w = shape
    n = h * w
    hm, wm = h - 2, w - 2
    m = hm * wm
    kk = (70.0 * hm - 36.0) * (70.0 * wm - 36.0)
    tr_q2 = 1.0 / (n - 1) - 2.0 / (n - 1) + kk / (_K_SUM_SQ * m) ** 2
    return 2.0 * tr_q2


def _excess(u, factor):
    """``(contrast, noise variance, standard error)`` of one normalised image."""
    n = u.size
    total = float(np.var(u, ddof=1))
    r = _second_difference(u)
    noise = float(np.mean(r * r)) / _K_SUM_SQ
    c = total - noise
    se = math.sqrt(factor * noise * noise + 4.0 * noise * max(c, 0.0) / n)
    # floor at the rounding of the sums (noise-free data): significance stays finite
    se = max(se, 1e-12 * abs(c))
    return c, noise, se


def defocus_contrast(images, defocus, *, threshold=DEFAULT_THRESHOLD):
    """Contrast of each image of a focal series above its noise.

    Parameters
    ----------
    images : array_like, shape (N, H, W) or (H, W)
        Image intensities (counts or any linear unit; each image is normalised
        by its mean, which must be positive). Images at least 3 x 3 pixels.
    defocus : float or array_like of N floats
        Defocus of each image, nm (positive for overfocus; only whether it is 0
        matters here).
    threshold : float
        Standard errors by which a defocused image's contrast must exceed zero
        to count as contrast (default 5).

    Returns
    -------
    dict
        A JSON-friendly record (numbers, lists, strings, booleans):

        ``defocus_nm`` : list of float
            The defocus of each image.
        ``mean_intensity`` : list of float
            Mean of each image (in the unit of ``images``).
        ``noise`` : list of float
            Normalised variance of the white noise of each image,
            ``(std / mean)^2`` per pixel; ``1 / noise`` is the dose of Poisson
            noise of the same size, electrons per pixel.
        ``contrast``, ``standard_error`` : list of float
            Excess normalised variance of each image, ``var(I / mean) - noise``,
            and its standard error.
        ``in_focus_index`` : int
            Index of the image at defocus 0, or -1 if there is none.
        ``difference_contrast``, ``difference_standard_error`` : list of float
            With an in-focus image only: the same of ``I_k / mean_k - I_0 /
            mean_0``, the contrast the defocus made (0 for the in-focus image
            itself).
        ``significance`` : list of float
            The contrast that decides, in standard errors: the difference
            contrast where there is an in-focus image (0 for that image), the
            image contrast otherwise.
        ``measured_on`` : str
            ``"difference from the in-focus image"`` or ``"images"``.
        ``threshold`` : float
            The ``threshold`` used.
        ``has_contrast`` : bool
            Whether any defocused image (any image, if none is defocused) has a
            significance above ``threshold``.

    Raises
    ------
    ValueError
        For images that are not real numbers, not 2-D or 3-D, smaller than
        3 x 3, not finite, or of mean <= 0, and for a number of defocus values
        other than N.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> noise = rng.poisson(200.0, size=(3, 128, 128)).astype(float)
    >>> rec = defocus_contrast(noise, [-500.0, 0.0, 500.0])
    >>> rec["has_contrast"]
    False
    >>> x = np.arange(128) * 2 * np.pi / 16
    >>> ripple = 200.0 * (1 + 0.1 * np.sin(x)) * np.ones((128, 1))
    >>> rec = defocus_contrast(rng.poisson(ripple).astype(float), 1e5)
    >>> round(rec["contrast"][0], 3), rec["has_contrast"]   # a^2 / 2 = 0.005
    (0.005, True)
    """
    data = np.asarray(images)
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)
            or data.dtype == bool):
        raise ValueError(f"images must be real intensities, got dtype {data.dtype}")
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise ValueError(
            f"images must be one image (H, W) or a series (N, H, W), got shape {data.shape}"
        )
    n_img, h, w = data.shape
    if min(h, w) < 3 or n_img == 0:
        raise ValueError(f"images must hold at least one image of 3 x 3 pixels, got shape {data.shape}")
    df = np.atleast_1d(np.asarray(defocus, dtype=float)).ravel()
    if df.size != n_img:
        raise ValueError(f"{df.size} defocus value(s) for {n_img} image(s): give one per image")
    if not np.all(np.isfinite(df)):
        raise ValueError("defocus values must be finite (nm)")
    threshold = float(threshold)
    if not math.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"threshold must be a positive number of standard errors, got {threshold!r}")

    factor = _null_factor((h, w))
    means, noise, contrast, se = [], [], [], []
    zero = np.flatnonzero(df == 0)
    ref = int(zero[0]) if zero.size else -1
    u_ref = None
    for k in range(n_img):  # one image at a time in float64: no copy of the series
        u, m = _normalised(data, k)
        c, s2, e = _excess(u, factor)
        means.append(m)
        noise.append(s2)
        contrast.append(c)
        se.append(e)
        if k == ref:
            u_ref = u

    record = {
        "defocus_nm": df.tolist(),
        "mean_intensity": means,
        "noise": noise,
        "contrast": contrast,
        "standard_error": se,
        "in_focus_index": ref,
    }
    if ref >= 0 and n_img > 1:
        d_c, d_se = [], []
        for k in range(n_img):
            if k == ref:
                d_c.append(0.0)
                d_se.append(0.0)
                continue
            c, _, e = _excess(_normalised(data, k)[0] - u_ref, factor)
            d_c.append(c)
            d_se.append(e)
        record["difference_contrast"] = d_c
        record["difference_standard_error"] = d_se
        significance = [0.0 if k == ref else _ratio(d_c[k], d_se[k]) for k in range(n_img)]
        record["measured_on"] = "difference from the in-focus image"
    else:
        significance = [_ratio(contrast[k], se[k]) for k in range(n_img)]
        record["measured_on"] = "images"
    record["significance"] = significance
    record["threshold"] = threshold
    judged = [k for k in range(n_img) if df[k] != 0] or list(range(n_img))
    record["has_contrast"] = bool(any(significance[k] > threshold for k in judged))
    return record


def _normalised(data, k):
    """Image ``k`` divided by its mean (float64, checked), and the mean."""
    img = np.asarray(data[k], dtype=float)
    if not np.all(np.isfinite(img)):
        raise ValueError(f"image {k} holds non-finite values")
    m = float(np.mean(img))
    if not m > 0:
        raise ValueError(f"image {k} has mean {m:g}; intensities must have a positive mean")
    return img / m, m


def _ratio(c, se):
    return float(c / se) if se > 0 else 0.0  # se == 0: a constant image


def contrast_warning(record, pixel_size, wavelength, shape=None):
    """The warning for a series without contrast above noise, or ``None``.

    Parameters
    ----------
    record : dict
        A record of :func:`defocus_contrast`.
    pixel_size : float
        Pixel size, nm.
    wavelength : float
        Electron wavelength, nm.
    shape : (int, int), optional
        Image shape, pixels, for the field of view (the likely cause "defocus
        too large" needs it).

    Returns
    -------
    str or None
        ``None`` where some defocused image has contrast
        (``record["has_contrast"]``). Otherwise the message: the measured
        contrast against the noise, then the likely cause from the Fresnel
        length ``F = sqrt(lambda |df|)`` of the largest defocus -- below one
        pixel: the defocus is in the wrong unit or far too small; beyond the
        field of view: far too large; else the noise hides the contrast (dose,
        binning, defocus, or no magnetic texture in the field) -- and the
        contrast ``2 pi phi (F / L)^2`` that a texture of period ``L = 100 nm``
        and phase modulation ``phi = 1 rad`` would give, against the noise.
    """
    if record["has_contrast"]:
        return None
    pixel = float(pixel_size)
    lam = float(wavelength)
    df = np.asarray(record["defocus_nm"], dtype=float)
    sig = np.asarray(record["significance"], dtype=float)
    noise = np.asarray(record["noise"], dtype=float)
    judged = np.flatnonzero(df != 0)
    if judged.size == 0:
        judged = np.arange(df.size)
    best = int(judged[np.argmax(sig[judged])])
    diff = record.get("difference_contrast")
    if diff is not None:
        c, e = record["difference_contrast"][best], record["difference_standard_error"][best]
        what = "contrast made by the defocus (difference from the in-focus image)"
    else:
        c, e = record["contrast"][best], record["standard_error"][best]
        what = "contrast"
    rel = math.sqrt(max(float(np.median(noise[judged])), 0.0))
    dose = 1.0 / rel**2 if rel > 0 else math.inf
    largest = float(np.max(np.abs(df))) if df.size else 0.0
    fresnel = math.sqrt(lam * largest)
    at = _length(largest)
    lines = [
        f"No defocused image of this focal series shows contrast above its noise: the "
        f"largest {what} is {c:.2g} +- {e:.2g} (normalised variance, {_signed(df[best])}), "
        f"while the noise is {_percent(rel)} of the mean per pixel (std/mean; as Poisson "
        f"noise at {dose:.3g} electrons per pixel). A reconstruction of these images (AD, TIE or "
        "SITIE) returns a phase made of noise."
    ]
    texture = (
        f"A texture of period L and phase modulation phi gives a contrast of about "
        f"2 pi phi (F / L)^2: {_percent(2 * math.pi * (fresnel / REFERENCE_PERIOD_NM) ** 2)} "
        f"for L = {REFERENCE_PERIOD_NM:g} nm and phi = 1 rad, against a noise of "
        f"{_percent(rel)} per pixel."
    )
    lo, hi = LTEM_DEFOCUS_RANGE_NM
    usual = (f"LTEM uses |defocus| of about {lo / 1e6:g}-{hi / 1e6:g} mm (Fresnel length "
             f"{math.sqrt(lam * lo):.2g}-{math.sqrt(lam * hi):.2g} nm)")
    fov = None if shape is None else max(shape) * pixel
    if largest == 0:
        lines.append("Every image is at zero defocus: a phase object shows no contrast in focus.")
    elif fresnel < pixel:
        as_um = math.sqrt(lam * largest * 1e3)
        lines.append(
            f"Likely cause: at |defocus| = {at} the Fresnel length sqrt(lambda |df|) is "
            f"{fresnel:.2g} nm, less than one {pixel:.3g} nm pixel, so the defocus cannot move "
            f"the phase into contrast: the defocus is probably in the wrong unit (um? as um the "
            f"Fresnel length would be {as_um:.3g} nm) or far too small; {usual}. "
            "Set the values with their unit: s.set_defocus(values, units='um') (or 'mm'). "
            + texture
        )
    elif fov is not None and fresnel > fov:
        lines.append(
            f"Likely cause: at |defocus| = {at} the Fresnel length sqrt(lambda |df|) is "
            f"{fresnel:.3g} nm, larger than the {fov:.3g} nm field of view: the contrast is "
            f"blurred beyond the image. The defocus is probably in the wrong unit or far too "
            f"large; {usual}."
        )
    else:
        lines.append(
            f"Likely cause: the noise. At |defocus| = {at} the Fresnel length sqrt(lambda |df|) "
            f"is {fresnel:.3g} nm ({fresnel / pixel:.3g} pixels of {pixel:.3g} nm), which can "
            f"show a texture, but its contrast is below the noise. {texture} Raise the signal "
            "to noise: a larger defocus, more electrons per pixel (a longer exposure, frames "
            "averaged), or binned pixels (s.rebin(scale=(1, 2, 2))); or check that the field "
            "holds an in-plane magnetic texture (a Neel texture shows none at zero tilt)."
        )
    return " ".join(lines)


def _length(nm):
    nm = abs(float(nm))
    if nm < 1e3:
        return f"{nm:.4g} nm"
    if nm < 1e6:
        return f"{nm / 1e3:.4g} um"
    return f"{nm / 1e6:.4g} mm"


def _signed(nm):
    sign = "+" if nm > 0 else ("-" if nm < 0 else "")
    return f"image at {sign}{_length(nm)}"


def _percent(x):
    return f"{100 * x:.2g} %"
