r"""Transport-of-intensity (TIE) phase retrieval kernels.

Pure NumPy/SciPy kernels; they know nothing of HyperSpy. Units and signs follow
:ref:`conventions`: lengths in nm, spatial frequency ``q`` in 1/nm (no factor
2 pi), phase in rad, defocus **positive for overfocus**. In this convention the
transport of intensity equation reads

.. math::

    -\frac{2\pi}{\lambda}\,\frac{\partial I}{\partial(\Delta f)}
    = \nabla\cdot\left(I\,\nabla\phi\right),

so a phase maximum (a converging lens) turns bright in overfocus.

Two solvers are provided:

* :func:`tie_phase` -- the full TIE from a through-focus series, solved with the
  two-Laplacian method of Teague (J. Opt. Soc. Am. 73, 1434 (1983)) and
  Paganin & Nugent (Phys. Rev. Lett. 80, 2586 (1998));
* :func:`sitie_phase` -- single-image TIE (SITIE, Chess et al.,
  Ultramicroscopy 177, 78 (2017)) for specimens of uniform amplitude.

Regularisation
--------------
The inverse Laplacian :math:`\nabla^{-2}` is applied in Fourier space with the
Tikhonov-type filter

.. math::

    \nabla^{-2} \;\to\; -\frac{1}{4\pi^2}\,\frac{q^2}{(q^2 + q_c^2)^2},

which equals :math:`-1/(4\pi^2 q^2)` for :math:`q \gg q_c` and goes smoothly to
zero as :math:`q \to 0`, suppressing the low-frequency noise that the bare
inverse Laplacian amplifies as :math:`1/q^2`.

Default ``qc`` (``qc=None``)
~~~~~~~~~~~~~~~~~~~~~~~~~~~~
The default follows a Wiener-filter argument. Let :math:`f` be the right-hand
side of the Poisson equation, proportional to the estimated intensity
derivative :math:`D = \partial I/\partial(\Delta f)` of images normalised to
unit mean, and :math:`N = \sigma_f^2` its white-noise power per orthonormal
Fourier coefficient, where :math:`\sigma_f^2 = (2\pi/\lambda)^2 \sum_i w_i^2
\sigma_i^2` for a derivative :math:`D = \sum_i w_i I_i` of images with relative
noise :math:`\sigma_i` (``noise_level`` when given, else estimated from each
image with the robust Laplacian-median estimator :func:`estimate_noise`).

1. The power spectrum :math:`P(q)` of :math:`f` (orthonormal DCT-II, i.e. the
   spectrum of the mirror-padded field, when ``symmetric=True``; the FFT
   otherwise) is averaged in rings of width :math:`\Delta q`, merged into bins
   of at least 12 coefficients, giving the signal power :math:`S = P - N`.
2. Scanning from low to high ``q``, the first bin with :math:`S \ge N`
   (signal-to-noise power >= 1) is found; below it the signal is assumed to
   follow the :math:`S \propto q^4` law of a localised object, so the
   crossover frequency is :math:`q_x = (\langle q^4 \rangle N / S)^{1/4}`
   (at least the previous bin's ``q``). If no bin reaches ``S >= N`` the bin of
   largest ``S`` is used the same way.
3. :math:`q_c = q_x / 2`. The Wiener gain at low ``q`` is :math:`S/(S+N)`,
   which the Tikhonov gain :math:`q^4/(q^2+q_c^2)^2` matches at :math:`q_x`
   for :math:`q_c \approx 0.64\,q_x`; the factor 1/2 was found to be close to
   the optimum (maximum correlation with the true phase) on simulated series
   over two decades of noise.
4. The result is clipped to :math:`[q_{\mathrm{floor}},\; 0.1\,q_{\mathrm{Nyquist}}]`
   with the floor :math:`q_{\mathrm{floor}} = \max(0.01\,\Delta q,\;
   r / (2 N p))` (:math:`\Delta q` the frequency step of the, possibly
   mirror-padded, field: :math:`1/(2 N p)` for ``N`` pixels of size ``p``
   along the longer side with ``symmetric=True``, :math:`1/(N p)` without),
   so ``qc`` is always > 0.

The boundary term :math:`r \in [0, 1]` (times :data:`QC_BOUNDARY_FRACTION`,
1) is the signal power of :math:`f` in a border strip of the frame
(:data:`QC_BOUNDARY_STRIP` of the shorter side wide), less the noise power
:math:`N`, relative to the signal power of the whole frame; an excess within
three standard errors of the noise counts as zero. A localised object, with
nothing but noise near the frame edges, has :math:`r \approx 0`: noise-free
data of it get a ``qc`` of order :math:`0.01\,\Delta q`, at which the filter
differs from the exact inverse Laplacian by less than 0.02 % at every nonzero
frequency. Structure that reaches the edges of the field of view (domains,
lattices, anything cropped by the frame) gives :math:`r \approx 1`: no
boundary condition (mirror or periodic) describes the phase gradients that
cross the frame, and the error this leaves in the solution is concentrated at
the lowest frequencies of the field, where the inverse Laplacian amplifies it
as :math:`1/q^2`. The noise does not measure this error, so for such data the
floor keeps ``qc`` at least :math:`1/(2 N p)`, half the lowest frequency of
the image. On the AD-LTEM paper's object (512 x 512 px,
``benchmarks/bench_tie.py``, :math:`r = 1`) the noise-free accuracy rose from
0.74-0.86 to 0.88-0.94 with the floor; ``qc`` between :math:`1/(2 N p)` and
:math:`2/(2 N p)` was the best for noise-free series of that object, also when
simulated without a periodic boundary or cropped to 256 x 256 px. With 10 % and
20 % noise the rule's ``qc`` is mostly above the floor (where it was not, the
accuracy rose by up to 0.02). The strip is a proxy: structure that reaches the
edges without a phase gradient across them (a band running from one edge to
the opposite one) gets the floor too, which costs it some of its longest-range
phase.

Pass an explicit ``qc`` to override the rule; ``info["qc"]`` reports the value
used.

Boundary conditions
-------------------
FFT solvers impose periodic boundaries; with ``symmetric=True`` the fields are
mirror-padded to (2H, 2W), which imposes Neumann conditions (no phase gradient
normal to the frame). Either way a phase whose gradient does not vanish at the
edge of the field of view (a uniform in-plane induction across the whole frame)
cannot be fully recovered: a uniform phase ramp produces no TIE contrast.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as _fft
from scipy import ndimage as _ndimage

__all__ = ["tie_phase", "sitie_phase", "estimate_noise", "derivative_weights"]

#: ``qc`` floor, as a fraction of the frequency step of the (padded) field.
QC_FLOOR_FRACTION = 0.01
#: ``qc`` ceiling, as a fraction of the Nyquist frequency.
QC_CEIL_FRACTION = 0.1
#: Minimum number of Fourier coefficients per ring bin of the default rule.
QC_MIN_COUNT = 12
#: Signal-to-noise power ratio that marks the first significant ring bin.
QC_SNR = 1.0
#: ``qc`` as a fraction of the crossover frequency ``q_x`` (empirical, see the
#: module docstring).
QC_CROSSOVER_FACTOR = 0.5
#: Boundary floor of the default ``qc``, as a fraction of ``1 / (2 N p)`` (the
#: lowest frequency of the mirror-padded field), reached when the signal fills
#: the frame up to its edges (see the module docstring).
QC_BOUNDARY_FRACTION = 1.0
#: Width of the border strip that tells a localised object from one that fills
#: the frame, as a fraction of the shorter image side.
QC_BOUNDARY_STRIP = 0.125
#: In-focus intensity floor, as a fraction of its mean (avoids division by ~0).
I0_FLOOR_FRACTION = 0.01


# --------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------
def _check_pixel_size(pixel_size):
    p = np.asarray(pixel_size, dtype=float)
    if p.ndim == 0:
        p = np.array([p, p])
    if p.shape != (2,) or not np.all(np.isfinite(p)) or np.any(p <= 0):
        raise ValueError(
            f"pixel_size must be a positive, finite number in nm (or a (dy, dx) "
            f"pair of them), got {pixel_size!r}; pass the calibrated pixel size, "
            f"e.g. pixel_size=5.0"
        )
    return float(p[0]), float(p[1])


def _check_wavelength(wavelength):
    try:
        lam = float(wavelength)
    except (TypeError, ValueError):
        lam = np.nan
    if not np.isfinite(lam) or lam <= 0:
        raise ValueError(
            f"wavelength must be a positive number in nm, got {wavelength!r}; use "
            f"hyperspy_lorentz.physics.optics.wavelength(beam_energy_keV), e.g. "
            f"0.0025079 nm at 200 kV"
        )
    return lam


def _check_qc(qc):
    if qc is None:
        return None
    try:
        qcf = float(qc)
    except (TypeError, ValueError):
        qcf = np.nan
    if not np.isfinite(qcf) or qcf <= 0:
        raise ValueError(
            f"qc must be a positive spatial frequency in 1/nm, got {qc!r}; pass "
            f"qc=None to choose it from the noise level, or e.g. qc=1e-3"
        )
    return qcf


def _check_noise_level(noise_level):
    if noise_level is None:
        return None
    nl = float(noise_level)
    if not np.isfinite(nl) or nl < 0:
        raise ValueError(
            f"noise_level must be >= 0 (noise standard deviation as a fraction of "
            f"the mean intensity), got {noise_level!r}; pass noise_level=None to "
            f"estimate it from the images"
        )
    return nl


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def estimate_noise(image):
    """Robust estimate of the white-noise standard deviation of an image.

    The image is convolved with the 3x3 kernel ``[[1, -2, 1], [-2, 4, -2],
    [1, -2, 1]]`` (Immerkaer, Comput. Vis. Image Underst. 64, 300 (1996)),
    which cancels smooth structure; white noise of standard deviation
    ``sigma`` gives a response of standard deviation ``6 sigma``. The median
    absolute response (divided by 0.6745) makes the estimate robust against
    edges and other sparse structure.

    Parameters
    ----------
    image : array_like, shape (H, W)
        Image, any intensity unit.

    Returns
    -------
    sigma : float
        Noise standard deviation, in the unit of ``image``.
    """
    img = np.asarray(image, dtype=float)
    if img.ndim != 2 or min(img.shape) < 3:
        raise ValueError(
            f"estimate_noise needs a 2D image of at least 3x3 pixels, got shape "
            f"{img.shape}"
        )
    k = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
    r = _ndimage.convolve(img, k, mode="reflect")[1:-1, 1:-1]
    return float(np.median(np.abs(r)) / 0.6745 / 6.0)


def derivative_weights(defocus, derivative="pair", fit_degree=None):
    """Linear weights giving ``dI/d(df)`` and ``I(df=0)`` from a focal series.

    Parameters
    ----------
    defocus : array_like, shape (N,)
        Defocus of each image in nm (positive = overfocus), any order.
    derivative : {"pair", "fit"}
        ``"pair"``: the image nearest focus on each side, ``a < 0 < b``, gives
        the secant ``(I(b) - I(a)) / (b - a)``, which is the central difference
        ``(I(+d) - I(-d)) / 2d`` for a symmetric pair. If an in-focus image
        (``df = 0``) is also present, the three-point (second-order) formula for
        unequal spacing is used instead, which again reduces to the central
        difference for ``b = -a``. ``"fit"``: least-squares polynomial of degree
        ``fit_degree`` through all images, differentiated at ``df = 0``.
    fit_degree : int, optional
        Polynomial degree for ``derivative="fit"``. Default
        ``min(2, n_distinct - 1)`` with ``n_distinct`` the number of distinct
        defocus values. A quadratic absorbs the even (``df**2``) term of
        ``I(df)`` exactly, so the slope at focus is unbiased to second order even
        for an asymmetric series, while all images average the noise: for a
        symmetric series ``(-2d, -d, 0, d, 2d)`` the noise of ``dI/d(df)`` is
        ``sqrt(5)`` times lower than from the pair ``+-d``. For strongly
        non-linear series (large defocus) ``fit_degree=3`` (exact for the odd
        part of a symmetric five-image series, fourth-order accurate like the
        five-point stencil) reduces the bias at the cost of more noise.

    Returns
    -------
    w_deriv : ndarray, shape (N,)
        Weights in 1/nm: ``dI/d(df) = sum_i w_deriv[i] * I_i``.
    w_zero : ndarray, shape (N,)
        Dimensionless weights of the in-focus estimate
        ``I(0) = sum_i w_zero[i] * I_i`` (the image at ``df = 0`` when present;
        the linear interpolation of the pair, or the fitted constant term).
    used : ndarray of int
        Indices of the images with nonzero weight.
    degree : int or None
        Polynomial degree used (``None`` for ``"pair"``).
    """
    df = np.asarray(defocus, dtype=float).ravel()
    n = df.size
    scale = float(np.max(np.abs(df))) if n else 0.0
    tol = 1e-6 * scale + 1e-12
    zero = np.abs(df) <= tol
    neg = np.flatnonzero(df < -tol)
    pos = np.flatnonzero(df > tol)
    if neg.size == 0 or pos.size == 0:
        raise ValueError(
            f"TIE needs at least one underfocus (df < 0) and one overfocus "
            f"(df > 0) image, got defocus {df.tolist()} nm; add an image on the "
            f"missing side of focus (defocus is positive for overfocus), or flip "
            f"the sign of the defocus values if they follow the opposite "
            f"convention"
        )
    w_d = np.zeros(n)
    w_0 = np.zeros(n)
    if derivative == "pair":
        ia = neg[np.argmax(df[neg])]  # nearest underfocus image
        ib = pos[np.argmin(df[pos])]  # nearest overfocus image
        a, b = df[ia], df[ib]
        izero = np.flatnonzero(zero)
        if izero.size:
            # three-point Lagrange derivative at 0 for nodes a < 0 < b
            w_d[ia] = -b / (a * (a - b))
            w_d[ib] = -a / (b * (b - a))
            w_d[izero] = -(a + b) / (a * b) / izero.size
            w_0[izero] = 1.0 / izero.size
        else:
            w_d[ia] = -1.0 / (b - a)
            w_d[ib] = 1.0 / (b - a)
            # linear interpolation to df = 0 (the mean for a symmetric pair)
            w_0[ia] = b / (b - a)
            w_0[ib] = -a / (b - a)
        return w_d, w_0, np.flatnonzero((w_d != 0) | (w_0 != 0)), None
    if derivative == "fit":
        srt = np.sort(df)
        n_distinct = 1 + int(np.sum(np.diff(srt) > tol))
        if fit_degree is None:
            deg = int(min(2, n_distinct - 1))
        else:
            deg = int(fit_degree)
            if deg < 1 or deg > n_distinct - 1:
                raise ValueError(
                    f"fit_degree must be between 1 and the number of distinct "
                    f"defocus values minus one ({n_distinct - 1}), got "
                    f"{fit_degree!r}; pass fit_degree=None for the default"
                )
        x = df / scale
        vander = np.vander(x, deg + 1, increasing=True)
        pinv = np.linalg.pinv(vander)
        w_0 = pinv[0].copy()
        w_d = pinv[1] / scale
        if np.any(zero):
            w_0 = np.where(zero, 1.0 / zero.sum(), 0.0)
        return w_d, w_0, np.arange(n), deg
    raise ValueError(
        f"derivative must be 'pair' or 'fit', got {derivative!r}"
    )


def _mirror_pad(a):
    """Even (mirror-symmetric) extension of ``a`` (H, W) to (2H, 2W)."""
    top = np.concatenate([a, a[:, ::-1]], axis=1)
    return np.concatenate([top, top[::-1, :]], axis=0)


def _freqs(shape, pixel_size):
    py, px = pixel_size
    qy = _fft.fftfreq(shape[0], d=py)[:, None]
    qx = _fft.fftfreq(shape[1], d=px)[None, :]
    return qy, qx


def _inv_laplacian_kernel(q2, qc):
    """Fourier kernel of the regularised inverse Laplacian (nm^2)."""
    k = -q2 / (4.0 * np.pi**2 * (q2 + qc**2) ** 2)
    k.flat[0] = 0.0
    return k


def _boundary_fraction(source, n_pow):
    """Signal power of ``source`` in a border strip of the frame, relative to
    the frame's (0 for a localised object, ~1 for structure filling the frame);
    ``n_pow`` is the white-noise power per pixel. See the module docstring."""
    h, w = source.shape
    b = int(round(QC_BOUNDARY_STRIP * min(h, w)))
    if b < 1 or 2 * b >= min(h, w):
        return 0.0
    src = source - source.mean()
    border = np.ones((h, w), dtype=bool)
    border[b:-b, b:-b] = False
    n_border = int(border.sum())
    excess = float(np.mean(src[border] ** 2)) - n_pow
    # the mean square of white noise over n pixels has a standard error N sqrt(2/n)
    if not excess > 3.0 * n_pow * np.sqrt(2.0 / n_border):
        return 0.0
    signal = float(np.mean(src**2)) - n_pow
    return excess / max(signal, excess)


def _default_qc(source, noise_sigma, pixel_size, symmetric):
    """Default ``qc`` (1/nm) from the noise level; see the module docstring.

    ``source`` is the unpadded right-hand side of the Poisson equation and
    ``noise_sigma`` the standard deviation of its white noise per pixel, in the
    same unit.
    """
    py, px = pixel_size
    h, w = source.shape
    if symmetric:
        # the orthonormal DCT-II is the spectrum of the mirror-padded field
        power = _fft.dctn(source, type=2, norm="ortho", workers=-1) ** 2
        qy = np.arange(h)[:, None] / (2.0 * h * py)
        qx = np.arange(w)[None, :] / (2.0 * w * px)
        dq = min(1.0 / (2.0 * h * py), 1.0 / (2.0 * w * px))
    else:
        power = np.abs(_fft.fft2(source, workers=-1)) ** 2 / source.size
        qy = _fft.fftfreq(h, d=py)[:, None]
        qx = _fft.fftfreq(w, d=px)[None, :]
        dq = min(1.0 / (h * py), 1.0 / (w * px))
    q_nyq = min(0.5 / py, 0.5 / px)
    n_pow = float(noise_sigma) ** 2  # white-noise power per coefficient
    if not n_pow >= 0:
        n_pow = 0.0
    # boundary floor: a fraction of the lowest frequency of the mirror-padded
    # field, 1 / (2 N p), whether or not the field is padded
    q_low = min(1.0 / (2.0 * h * py), 1.0 / (2.0 * w * px))
    boundary = QC_BOUNDARY_FRACTION * _boundary_fraction(source, n_pow) * q_low
    qc_min = max(QC_FLOOR_FRACTION * dq, boundary)
    qc_max = max(QC_CEIL_FRACTION * q_nyq, qc_min)
    if not n_pow > 0:
        return qc_min
    q = np.sqrt(qy**2 + qx**2).ravel()
    order = np.argsort(q, kind="stable")[1:]  # drop q = 0
    q = q[order]
    power = power.ravel()[order]
    # group whole rings of width dq into bins of >= QC_MIN_COUNT coefficients
    ring = np.floor(q / dq + 1e-9).astype(np.int64)
    _, first, counts = np.unique(ring, return_index=True, return_counts=True)
    bins = np.empty(q.size, dtype=np.int64)
    b = cnt = 0
    for f, c in zip(first, counts):
        bins[f:f + c] = b
        cnt += c
        if cnt >= QC_MIN_COUNT:
            b += 1
            cnt = 0
    nb = np.bincount(bins)
    signal = np.bincount(bins, power) / nb - n_pow
    q4 = np.bincount(bins, q**4) / nb
    hit = np.flatnonzero(signal >= QC_SNR * n_pow)
    if hit.size:
        b = int(hit[0])
    else:
        b = int(np.argmax(signal))
        if signal[b] <= 0:
            return qc_max
    # crossover S(q_x) = N, extrapolating S ~ q^4 below bin b
    q_cross = (q4[b] * n_pow / signal[b]) ** 0.25
    if b > 0:
        q_cross = max(q_cross, q4[b - 1] ** 0.25)
    return float(np.clip(QC_CROSSOVER_FACTOR * q_cross, qc_min, qc_max))


def _solve(source, intensity, pixel_size, qc, noise_sigma_source, symmetric):
    """Solve ``div(I grad phi) = source`` (``source`` in rad/nm^2).

    ``intensity=None`` means uniform unit intensity (single inverse Laplacian).
    Returns the phase cropped to the input shape and the ``qc`` used.
    """
    h, w = source.shape
    if qc is None:
        qc = _default_qc(source, noise_sigma_source, pixel_size, symmetric)
    src = _mirror_pad(source) if symmetric else source
    qy, qx = _freqs(src.shape, pixel_size)
    q2 = qy**2 + qx**2
    kern = _inv_laplacian_kernel(q2, qc)
    s_hat = _fft.fft2(src, workers=-1)
    if intensity is None:
        phase = _fft.ifft2(s_hat * kern, workers=-1).real
    else:
        i0 = _mirror_pad(intensity) if symmetric else intensity
        # psi = lap^-1 source;  g = grad(psi) / I0;  phi = lap^-1 div(g)
        psi_hat = s_hat * kern
        gy = _fft.ifft2(2j * np.pi * qy * psi_hat, workers=-1).real / i0
        gx = _fft.ifft2(2j * np.pi * qx * psi_hat, workers=-1).real / i0
        div_hat = 2j * np.pi * (
            qy * _fft.fft2(gy, workers=-1) + qx * _fft.fft2(gx, workers=-1)
        )
        phase = _fft.ifft2(div_hat * kern, workers=-1).real
    phase = phase[:h, :w]
    return phase - phase.mean(), float(qc)


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------
def tie_phase(
    images,
    defocus,
    pixel_size,
    wavelength,
    qc=None,
    derivative="pair",
    symmetric=True,
    infocus=None,
    noise_level=None,
    fit_degree=None,
    normalize=True,
):
    """Retrieve the phase from a through-focus series with the TIE.

    Solves :math:`\\nabla\\cdot(I_0\\nabla\\phi) = -(2\\pi/\\lambda)\\,
    \\partial I/\\partial(\\Delta f)` with the two-Laplacian method
    (Teague 1983; Paganin & Nugent 1998): assuming
    :math:`I_0\\nabla\\phi = \\nabla\\psi`,

    .. math::

        \\psi = \\nabla^{-2}\\left[-\\tfrac{2\\pi}{\\lambda}\\,\\partial_{\\Delta f} I\\right],
        \\qquad
        \\phi = \\nabla^{-2}\\,\\nabla\\cdot\\left[\\frac{\\nabla\\psi}{I_0}\\right],

    i.e. an inverse Laplacian, division (of the gradient) by :math:`I_0`, and a
    second inverse Laplacian. For uniform :math:`I_0` this reduces to
    :math:`\\phi = \\nabla^{-2}[-(2\\pi/\\lambda)\\,\\partial_{\\Delta f} I]/I_0`.
    Both inverse Laplacians use the Tikhonov filter
    :math:`q^2/(q^2+q_c^2)^2` described in the module docstring, computed with
    FFTs (so gradients are spectral).

    Parameters
    ----------
    images : array_like, shape (N, H, W)
        Focal series intensities (any unit, e.g. counts), N >= 2.
    defocus : array_like, shape (N,)
        Defocus of each image in nm, positive for overfocus; any order, may be
        non-uniformly spaced. At least one value must be < 0 and one > 0.
    pixel_size : float or (float, float)
        Pixel size in nm (or a ``(dy, dx)`` pair).
    wavelength : float
        Relativistic electron wavelength in nm (0.0025079 nm at 200 kV).
    qc : float, optional
        Tikhonov cut-off frequency in 1/nm (spatial frequency, no factor
        2 pi), > 0. ``None`` (default) chooses it from the noise level with the
        Wiener rule of the module docstring, with a floor for structure that
        reaches the edges of the frame: up to ``1 / (2 N p)`` 1/nm for ``N``
        pixels of size ``p`` nm along the longer side (noise-free data of a
        localised object keep a ``qc`` near ``0.01 / (2 N p)``, i.e. an almost
        exact inverse Laplacian).
    derivative : {"pair", "fit"}
        How ``dI/d(df)`` at ``df = 0`` is estimated; see
        :func:`derivative_weights`. ``"pair"`` (default) uses the image nearest
        focus on each side (plus the in-focus image when present);
        ``"fit"`` fits a polynomial through all images.
    symmetric : bool
        If True (default) every field is mirror-padded to (2H, 2W) before the
        FFTs, which imposes Neumann boundary conditions and removes the
        artefacts of the periodic FFT boundary.
    infocus : int or array_like of shape (H, W), optional
        In-focus intensity :math:`I_0`: an index into ``images`` or an image.
        Default: the image at ``df = 0`` if present (mean of several), else the
        estimate of :func:`derivative_weights` (the mean of a symmetric pair).
    noise_level : float, optional
        Standard deviation of the noise of one image as a fraction of its mean
        intensity (e.g. 0.01 for 1 %); used only to choose ``qc``. ``None``
        (default) estimates it from each image with :func:`estimate_noise`.
    fit_degree : int, optional
        Polynomial degree for ``derivative="fit"``; default
        ``min(2, n_distinct_defocus - 1)`` (see :func:`derivative_weights`).
    normalize : bool
        If True (default) each image is divided by its mean, which removes
        exposure/dose differences (propagation conserves the total intensity).
        If False the images must share the same dose.

    Returns
    -------
    phase : ndarray, shape (H, W)
        Retrieved phase in rad, mean subtracted.
    info : dict
        Parameters actually used: ``qc`` (1/nm), ``qc_default`` (bool),
        ``derivative``, ``fit_degree``, ``indices`` (images used),
        ``defocus_used`` (nm), ``derivative_weights`` (1/nm),
        ``infocus`` (how :math:`I_0` was obtained), ``noise_level`` (relative
        noise per image, given or estimated), ``noise_estimated`` (bool),
        ``symmetric``, ``normalize``, ``wavelength`` (nm),
        ``pixel_size`` (nm, (dy, dx)).

    Raises
    ------
    ValueError
        For images not of shape (N, H, W), a defocus array of the wrong length,
        no image on one side of focus, ``qc <= 0``, a non-positive pixel size or
        wavelength, or an ``infocus`` image of the wrong shape.
    """
    imgs = np.asarray(images, dtype=float)
    if imgs.ndim != 3 or imgs.shape[0] < 2:
        raise ValueError(
            f"images must be a focal series of shape (N, H, W) with N >= 2, got "
            f"shape {imgs.shape}; use sitie_phase for a single image"
        )
    n, h, w = imgs.shape
    df = np.asarray(defocus, dtype=float).ravel()
    if df.size != n:
        raise ValueError(
            f"defocus must have one value (nm) per image: got {df.size} values "
            f"for {n} images; pass defocus with shape ({n},)"
        )
    if not np.all(np.isfinite(df)):
        raise ValueError(f"defocus values must be finite, got {df.tolist()}")
    psize = _check_pixel_size(pixel_size)
    lam = _check_wavelength(wavelength)
    qc = _check_qc(qc)
    nl = _check_noise_level(noise_level)
    if derivative not in ("pair", "fit"):
        raise ValueError(f"derivative must be 'pair' or 'fit', got {derivative!r}")
    if not np.all(np.isfinite(imgs)):
        raise ValueError("images contain NaN or inf values; clean or crop them first")

    w_d, w_0, used, deg = derivative_weights(df, derivative, fit_degree)

    if normalize:
        means = imgs.mean(axis=(1, 2))
        if np.any(means <= 0):
            raise ValueError(
                "every image must have a positive mean intensity to be "
                "normalised; check the images or pass normalize=False"
            )
        imgs = imgs / means[:, None, None]

    didz = np.tensordot(w_d, imgs, axes=1)  # 1/nm

    # in-focus intensity
    if infocus is None:
        i0 = np.tensordot(w_0, imgs, axes=1)
        if np.any(np.abs(df) <= 1e-6 * np.max(np.abs(df)) + 1e-12):
            i0_src = "image at df=0"
        elif derivative == "pair":
            i0_src = "pair interpolation (estimate)"
        else:
            i0_src = "polynomial fit constant term (estimate)"
    elif np.ndim(infocus) == 0:
        idx = int(infocus)
        if not -n <= idx < n:
            raise ValueError(
                f"infocus index {infocus} is out of range for {n} images; pass "
                f"an index in [0, {n - 1}] or an (H, W) image"
            )
        i0 = imgs[idx]
        i0_src = f"image {idx % n}"
    else:
        i0 = np.asarray(infocus, dtype=float)
        if i0.shape != (h, w):
            raise ValueError(
                f"infocus image has shape {i0.shape} but the images are {(h, w)}; "
                f"pass an image of the same shape or an index into images"
            )
        if normalize:
            i0 = i0 / i0.mean()
        i0_src = "supplied"
    i0 = np.asarray(i0, dtype=float)
    i0_mean = float(i0.mean())
    if i0_mean <= 0:
        raise ValueError("the in-focus intensity has a non-positive mean")
    i0 = np.maximum(i0, I0_FLOOR_FRACTION * i0_mean)

    # noise of the derivative estimate (relative units, 1/nm)
    if nl is None:
        sig = np.array(
            [estimate_noise(imgs[i]) / max(imgs[i].mean(), 1e-300)
             if (w_d[i] or w_0[i]) else 0.0 for i in range(n)]
        )
        est = True
    else:
        sig = np.full(n, nl)
        est = False
    sigma_d = float(np.sqrt(np.sum((w_d * sig) ** 2)))

    k = 2.0 * np.pi / lam
    source = -k * didz  # rad / nm^2
    phase, qc_used = _solve(
        source, i0, psize, qc, k * sigma_d / i0_mean, symmetric
    )
    info = {
        "qc": qc_used,
        "qc_default": qc is None,
        "derivative": derivative,
        "fit_degree": deg,
        "indices": used.tolist(),
        "defocus_used": df[used].tolist(),
        "derivative_weights": w_d[used].tolist(),
        "infocus": i0_src,
        "noise_level": sig[used].tolist() if est else nl,
        "noise_estimated": est,
        "symmetric": bool(symmetric),
        "normalize": bool(normalize),
        "wavelength": lam,
        "pixel_size": psize,
    }
    return phase, info


def sitie_phase(image, defocus, pixel_size, wavelength, qc=None, symmetric=True,
                noise_level=None):
    """Single-image TIE (SITIE) phase retrieval for uniform amplitude.

    Following Chess et al., Ultramicroscopy 177, 78 (2017): for a specimen of
    uniform amplitude the in-focus image is uniform, ``I0 = <I>``, so

    .. math::

        \\frac{\\partial I}{\\partial(\\Delta f)} \\approx
        \\frac{I/\\langle I\\rangle - 1}{\\Delta f},\\qquad
        \\phi = \\nabla^{-2}\\left[-\\frac{2\\pi}{\\lambda}
        \\frac{\\partial I}{\\partial(\\Delta f)}\\right],

    with a single (regularised) inverse Laplacian. Valid when the specimen's
    amplitude is uniform and ``|df|`` is small enough for the linear TIE
    regime; non-uniform amplitude (edges, holes, thickness) appears as spurious
    phase.

    Parameters
    ----------
    image : array_like, shape (H, W)
        Defocused image intensity (any unit).
    defocus : float
        Defocus of the image in nm, positive for overfocus, nonzero.
    pixel_size : float or (float, float)
        Pixel size in nm (or a ``(dy, dx)`` pair).
    wavelength : float
        Relativistic electron wavelength in nm.
    qc : float, optional
        Tikhonov cut-off frequency in 1/nm, > 0; ``None`` chooses it from the
        noise level, with the boundary floor of :func:`tie_phase` (module
        docstring).
    symmetric : bool
        Mirror-pad to (2H, 2W) before the FFTs (default True).
    noise_level : float, optional
        Image noise standard deviation as a fraction of the mean intensity;
        ``None`` estimates it with :func:`estimate_noise`.

    Returns
    -------
    phase : ndarray, shape (H, W)
        Phase in rad, mean subtracted.
    info : dict
        ``qc`` (1/nm), ``qc_default``, ``defocus`` (nm), ``noise_level``,
        ``noise_estimated``, ``symmetric``, ``wavelength`` (nm),
        ``pixel_size`` (nm).
    """
    img = np.asarray(image, dtype=float)
    if img.ndim != 2:
        raise ValueError(
            f"image must be a single 2D image (H, W), got shape {img.shape}; use "
            f"tie_phase for a focal series"
        )
    try:
        d = float(defocus)
    except (TypeError, ValueError):
        raise ValueError(
            f"defocus must be a single number in nm, got {defocus!r}"
        ) from None
    if not np.isfinite(d) or d == 0:
        raise ValueError(
            f"SITIE needs a defocused image: defocus must be a nonzero, finite "
            f"value in nm (positive = overfocus), got {defocus!r}"
        )
    psize = _check_pixel_size(pixel_size)
    lam = _check_wavelength(wavelength)
    qc = _check_qc(qc)
    nl = _check_noise_level(noise_level)
    if not np.all(np.isfinite(img)):
        raise ValueError("image contains NaN or inf values; clean or crop it first")
    mean = img.mean()
    if mean <= 0:
        raise ValueError("the image must have a positive mean intensity")
    rel = img / mean
    didz = (rel - 1.0) / d
    sig = estimate_noise(rel) if nl is None else nl
    k = 2.0 * np.pi / lam
    phase, qc_used = _solve(-k * didz, None, psize, qc, k * sig / abs(d), symmetric)
    info = {
        "qc": qc_used,
        "qc_default": qc is None,
        "defocus": d,
        "noise_level": float(sig),
        "noise_estimated": nl is None,
        "symmetric": bool(symmetric),
        "wavelength": lam,
        "pixel_size": psize,
    }
    return phase, info
