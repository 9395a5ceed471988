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

Both share the boundary conditions and the regularisation below. Every rule
is decided from the data; the constants it uses are module attributes.

Boundary conditions
-------------------
A micrograph is a window onto a specimen. The TIE fixes the phase inside it
only up to a harmonic function (:math:`\nabla^2 h = 0`), set by what lies
beyond the frame: the boundary condition is a guess about the outside. Each
image axis gets one of

``"free"``
    the window sits in the middle of an FFT canvas about twice its size; the
    right-hand side is zero outside (no specimen there) and the in-focus
    intensity is its mirror image, tapered to its mean. This is the
    free-space solution: exact for a specimen with vacuum around it, and for a
    window it misses only the potential of the unseen specimen, which the
    default ``qc`` accounts for (below). It fails where structure is cut by the
    frame so that a net line charge sits on an edge (a phase step lying along
    the edge): its potential grows logarithmically and only a large ``qc``
    hides it.
``"periodic"``
    the window itself is one period (plain FFTs): exact for images that wrap
    around, as simulations with periodic propagation make them; wrong for a
    real window, where the opposite edge is unrelated.
``"mirror"``
    the window and its mirror image (Neumann conditions: no phase gradient
    normal to the edge), the former default (``symmetric=True``). Wrong
    wherever flux crosses the edge: the stray field of an island, a domain
    cut by the frame.

``boundary="auto"`` (the default; ``symmetric=None``) chooses per axis:

1. *Edge activity.* The signal power of the right-hand side in a border strip
   (:data:`QC_BOUNDARY_STRIP` of the shorter side wide) less the noise power,
   relative to the frame's. Below :data:`BOUNDARY_ACTIVITY`, or not
   significant (:data:`BOUNDARY_Z` standard errors of the noise), the edges
   are quiet: ``"free"`` on both axes (an isolated specimen in vacuum).
2. Otherwise an axis is ``"periodic"`` when the data show that its two edges
   belong together, by either of two tests, else ``"free"``:

   * *continuity* -- in the images, the squared difference across the
     wrap-around (first row against last) placed between that of neighbouring
     rows at the edges (0) and that of unrelated rows (1, the sum of the two
     rows' variances), plus two standard errors, below
     :data:`BOUNDARY_CONTINUITY`, with the unrelated-minus-neighbour contrast
     significant at :data:`BOUNDARY_Z`;
   * *split layer* -- a phase step lying on the wrap-around puts the two
     halves of one line source on opposite edges: the line charges (sums of
     the right-hand side over a Fresnel length, :math:`\sqrt{\lambda
     |\Delta f|}`, from each edge) are anticorrelated, correlation below
     :data:`BOUNDARY_SPLIT_RHO` (both above the noise).

   Only the split layer proves the two edges to be one: a window can look
   continuous across the wrap-around by chance (a lattice symmetric about the
   centre of the frame does), so an axis found periodic by continuity alone
   is solved periodic but its boundary error is still estimated (below).

   It fails (i) at very low dose, where the edge signal is below the noise: a
   periodic simulation is then solved as a window (islands on their periodic
   canvas at 10 e-/pixel: 0.52 on average instead of 0.61 with periodic
   boundaries); (ii) for periodic simulations of smooth textures, found
   periodic by continuity but still regularised for a boundary error they do
   not have: 0.984-0.986 instead of 0.991-0.994 for a skyrmion lattice.

``symmetric=True`` / ``False`` keep their former meaning (mirror / periodic on
both axes); ``boundary`` takes ``"auto"``, one of :data:`BOUNDARIES` or a
``(y, x)`` pair of them. ``info["boundary"]`` reports the pair used and
``info["boundary_tests"]`` the test values.

Regularisation
--------------
The inverse Laplacian :math:`\nabla^{-2}` of the right-hand side is applied in
Fourier space (on the canvas) with the Tikhonov-type filter

.. math::

    \nabla^{-2} \;\to\; -\frac{1}{4\pi^2}\,\frac{q^2}{(q^2 + q_c^2)^2},

which equals :math:`-1/(4\pi^2 q^2)` for :math:`q \gg q_c` and goes smoothly to
zero as :math:`q \to 0`: the solution is the unregularised one times
:math:`g(q) = q^4/(q^2+q_c^2)^2`. For a non-uniform in-focus intensity the
second inverse Laplacian (of :math:`\nabla\cdot(\nabla\psi/I_0)`) is exact, so
``qc`` means the same for :func:`tie_phase` and :func:`sitie_phase`. (Before,
both inverse Laplacians of :func:`tie_phase` were filtered: an old explicit
``qc`` corresponds to about 1.5 times that value now.)

Default ``qc`` (``qc=None``)
~~~~~~~~~~~~~~~~~~~~~~~~~~~~
``qc`` is chosen to maximise the expected correlation of the solution with the
true phase -- the accuracy measure itself -- from three spectra of the phase,
in ring bins of at least :data:`QC_MIN_COUNT` coefficients of the window's
orthonormal DCT (of its FFT when both axes were proved periodic by the
split-layer test):

1. :math:`Z(q)`, of the unregularised solution (single inverse Laplacian of
   the right-hand side, with the chosen boundary);
2. :math:`N(q) = \sigma_f^2 / (16\pi^4 (q^2 + q_0^2)^2)`, of the noise:
   :math:`\sigma_f^2 = (2\pi/\lambda)^2 \sum_i w_i^2 \sigma_i^2` for a
   derivative :math:`D = \sum_i w_i I_i` of images with relative noise
   :math:`\sigma_i` (``noise_level`` when given, else :func:`estimate_noise` of
   each image), divided by the mean in-focus intensity. The solution of white
   noise saturates below the lowest frequency its boundary lets through:
   :math:`q_0 = f / (2L)` (:math:`L` the longer side, nm) with the factors
   :data:`NOISE_Q0_FACTOR`, measured by running the solver on white noise;
3. :math:`D(q)`, of the boundary error, on every axis not proved periodic
   (explicit ``"periodic"``/``"mirror"`` boundaries are guesses too): border
   strips (:data:`QC_SURROGATE_STRIP` of the shorter side), mirrored outwards
   and tapered to zero over their width, stand in for the specimen beyond the
   edges, and :math:`D` is the spectrum of their potential in the window. When
   the edges are busy (edge activity, above), the net flux through them is
   lost too -- the images are normalised to unit mean, so the right-hand side
   has zero mean, while the true one has the flux through the edges over the
   area: the potential of a uniform source, a dome, is missing. Its size is
   judged from the mean of the right-hand side in the border strips, and
   :data:`QC_FLUX_FRACTION` of the power of that dome is added to :math:`D`
   (an unrotated skyrmion-lattice window, whose edges cut every cell alike,
   has a dome three times the lattice's phase). A mirror or periodic boundary
   on such an axis adds the spectrum of its difference from the free
   solution. :math:`D` is ~0 for quiet edges; for windows it matches the true
   error to about a factor of two (lattices, stripes, islands, the paper's
   object), so the rule averages its expected correlation over the scalings
   :data:`QC_BOUNDARY_SCALES` of :math:`D`.

The signal power per bin is :math:`S = Z - N - D` where the data determine it
(a confidence interval of :data:`QC_SIGNIFICANCE` standard errors, from the
effective number of noise coefficients in the bin); where they do not (few,
noisy coefficients at the lowest frequencies), a power law
:math:`A (q/q_1)^{-\alpha}`, :math:`|\alpha| \le 4`, fitted to the lowest
:data:`QC_FIT_BINS` bins by the Whittle likelihood, limited to that interval;
the lowest bin may not rise faster than :math:`q^{-4}` above the next three
unless it exceeds :math:`N + D` by three standard errors. Then ``qc`` is the
value, among :data:`QC_GRID` log-spaced ones between
:data:`QC_FLOOR_FRACTION` of :math:`1/(2 N p)` and :data:`QC_CEIL_FRACTION` of
the Nyquist frequency, that maximises

.. math::

    \frac{\sum_q g\,S}{\sqrt{\sum_q S \;\sum_q g^2 Z}}

(averaged over the scalings of :math:`D`). When no signal is detected (its
estimated power below :data:`QC_DETECTION` of :math:`Z`), ``qc`` is
:math:`1/(2 N p)`: whatever phase there is lies at the lowest frequencies.

Noise-free data of an isolated specimen thus keep an almost exact inverse
Laplacian; a window onto a lattice or domains gets a ``qc`` below the
structure's own frequencies that removes the unknowable long-range part; with
noise, ``qc`` rises where the noise overtakes the signal.

When it fails: (i) the stand-in for the unseen specimen is one guess; where it
overestimates the boundary error at the lowest frequencies ``qc`` comes out
too large (a window onto a field of random phase bumps: 0.68-0.71 against
0.84-0.88 at the best ``qc``), where it underestimates it too small (a window only two
or three periods of a texture wide: stripe domains in a 128 px window, 0.95
against 0.99); (ii) at very low dose (about 10 e-/pixel) the lowest bins rest
on a few noisy coefficients and ``qc`` can be off by a factor of about 3
either way (accuracy then varies by +-0.15 from one noise realisation to the
next); (iii) the correlation model assumes errors uncorrelated with the
phase, which the error of a wrong boundary is not (periodic simulations
misjudged as windows, case (i) of the boundary rule, get too large a ``qc``);
(iv) :func:`estimate_noise` assumes white noise; strongly correlated (binned,
filtered) noise is underestimated -- pass ``noise_level``. Fresnel fringes
inflate it little (below 0.3 % on noise-free series of the paper's object,
where it makes no difference to ``qc``).

Pass an explicit ``qc`` to override the rule; ``info["qc"]`` reports the value
used.

Measured
~~~~~~~~
``benchmarks/bench_tie.py`` prints the accuracy (normalised cross-correlation
with the truth) on windows cut from larger simulations, isolated specimens and
periodic simulations of a skyrmion lattice, stripe domains, islands in vacuum
and the AD-LTEM paper's object, from noise-free to 10 e-/pixel. Against the
former defaults (mirror boundaries, ``qc`` floor for busy edges), 256 x 256 px,
noise-free / 1000 e-/pixel: skyrmion-lattice window 0.65 / 0.64 -> 0.99 /
0.99 (unrotated and symmetric about the frame's centre: 0.52 / 0.51 -> 0.95 /
0.95); stripes window 0.89 / 0.89 -> 0.99 / 0.99; islands crossing the frame
0.82 / 0.82 -> 0.86 / 0.85; islands framed by vacuum 0.97 / 0.93 -> 1.00 /
0.98; islands whose canvas is the frame 0.64 / 0.64 -> 1.00 / 0.99; the
paper's object, window 0.56 / 0.56 -> 0.85 / 0.84, whole 0.93 / 0.89 -> 0.94 /
0.92. A plain periodic TIE (``qc = 1/(N p)``) does better on periodic
simulations of smooth textures (by up to 0.008), on the paper's object at
100 e-/pixel (0.007) and at 10 e-/pixel where a periodic simulation is no
longer recognised (islands on their canvas: 0.61 against 0.52).

A uniform phase ramp (uniform in-plane induction across the whole frame)
produces no TIE contrast and is never recovered, whatever the boundary.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as _fft
from scipy import ndimage as _ndimage

__all__ = ["tie_phase", "sitie_phase", "estimate_noise", "derivative_weights"]

#: Boundary conditions of the Poisson solver, per image axis (module docstring).
BOUNDARIES = ("free", "periodic", "mirror")
#: ``qc`` floor, as a fraction of the lowest frequency ``1 / (2 N p)`` of the window.
QC_FLOOR_FRACTION = 0.01
#: ``qc`` ceiling, as a fraction of the Nyquist frequency.
QC_CEIL_FRACTION = 0.1
#: Minimum number of Fourier coefficients per ring bin of the default rule.
QC_MIN_COUNT = 12
#: Half-width, in standard errors, of the confidence interval of a bin's
#: measured signal power (default rule).
QC_SIGNIFICANCE = 2.0
#: Number of lowest ring bins to which the power law of the default rule is fitted.
QC_FIT_BINS = 8
#: The signal counts as detected when its estimated power is at least this
#: fraction of the solution's (default rule; else ``qc = 1 / (2 N p)``).
QC_DETECTION = 0.01
#: Number of ``qc`` values, log-spaced between floor and ceiling, the default rule tries.
QC_GRID = 80
#: Ring bins whose filter gain is averaged over their coefficients (above: the
#: gain at the bin's mean frequency).
QC_EXACT_BINS = 64
#: Width of the border strip whose signal tells busy edges from quiet ones
#: (automatic boundary), as a fraction of the shorter image side.
QC_BOUNDARY_STRIP = 0.125
#: Width of the border strips whose mirror images stand in for the specimen
#: beyond an edge (default ``qc``), as a fraction of the shorter image side.
QC_SURROGATE_STRIP = 0.125
#: The boundary error estimated by the stand-in specimen is uncertain by about
#: a factor of two; the default rule averages its expected correlation over
#: these scalings of it.
QC_BOUNDARY_SCALES = (0.5, 0.71, 1.0, 1.41, 2.0)
#: The net flux through busy edges is judged from the mean of the right-hand
#: side in the border strips, which overestimates it (by 1.4-3 in amplitude on
#: lattice and island windows); this fraction of the power of the potential of
#: a uniform source of that mean enters the boundary error.
QC_FLUX_FRACTION = 0.5
#: Noise power of the solution per DCT coefficient of the window: white noise
#: of the right-hand side gives ``1 / (q^2 + q0^2)^2`` with
#: ``q0 = factor / (2 L)`` (``L`` the longest side, nm) -- the solution
#: saturates below the lowest frequency the boundary allows. Factors measured
#: by running the solver on white noise: free boundaries (any axis free) 1.2,
#: periodic 1.7, mirror 0 (the DCT modes are its eigenmodes).
NOISE_Q0_FACTOR = {"free": 1.2, "periodic": 1.7, "mirror": 0.0}
#: Edges count as active when their signal power (noise subtracted) is at least
#: this fraction of the frame's; quiet edges always get a free boundary.
BOUNDARY_ACTIVITY = 0.01
#: Significance, in standard errors, demanded of the edge activity and of the
#: continuity test.
BOUNDARY_Z = 3.0
#: The images are continuous across the wrap-around (periodic) when the
#: continuity statistic plus two standard errors is below this (0: like
#: neighbouring rows, 1: like unrelated ones).
BOUNDARY_CONTINUITY = 0.25
#: Opposite edges carry the two halves of one line source (periodic) when the
#: correlation of their line charges is below this.
BOUNDARY_SPLIT_RHO = -0.5
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


def _freqs(shape, pixel_size):
    py, px = pixel_size
    qy = _fft.fftfreq(shape[0], d=py)[:, None]
    qx = _fft.fftfreq(shape[1], d=px)[None, :]
    return qy, qx


def _inv_laplacian_kernel(q2, qc):
    """Fourier kernel of the regularised inverse Laplacian (nm^2); ``qc=0``
    gives the exact one (zero at ``q = 0``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        k = -q2 / (4.0 * np.pi**2 * (q2 + qc**2) ** 2)
    k.flat[0] = 0.0
    return k


# --------------------------------------------------------------------------
# boundary conditions
# --------------------------------------------------------------------------
def _check_boundary(boundary, symmetric):
    """The boundary rule: "auto", or a ``(y, x)`` pair of "free", "periodic",
    "mirror"."""
    if boundary is None:
        if symmetric is None:
            return "auto"
        return ("mirror", "mirror") if symmetric else ("periodic", "periodic")
    if isinstance(boundary, str):
        if boundary == "auto":
            return "auto"
        boundary = (boundary, boundary)
    try:
        by, bx = boundary
    except (TypeError, ValueError):
        by = bx = None
    if by not in BOUNDARIES or bx not in BOUNDARIES:
        raise ValueError(
            f"boundary must be 'auto', one of {BOUNDARIES} or a (y, x) pair of "
            f"them, got {boundary!r}"
        )
    return (str(by), str(bx))


def _ramp(b):
    """Half-cosine rise from ~0 to ~1 over ``b`` samples."""
    return 0.5 - 0.5 * np.cos(np.pi * (np.arange(b) + 0.5) / max(b, 1))


class _Canvas:
    """Where the (H, W) window sits in the FFT canvas, per axis:
    ``"periodic"`` (the window itself), ``"mirror"`` (window + its mirror image,
    2N) or ``"free"`` (the window in the middle of a canvas of about 2N)."""

    def __init__(self, shape, modes):
        self.shape_in = tuple(int(n) for n in shape)
        self.modes = tuple(modes)
        self.before, self.size = [], []
        for n, m in zip(self.shape_in, self.modes):
            if m == "periodic":
                self.before.append(0)
                self.size.append(n)
            elif m == "mirror":
                self.before.append(0)
                self.size.append(2 * n)
            else:
                b = n // 2 + 1
                self.before.append(b)
                self.size.append(_fft.next_fast_len(n + 2 * b, real=True))

    @property
    def window(self):
        return tuple(slice(b, b + n) for b, n in zip(self.before, self.shape_in))

    def embed(self, a, fill=0.0, extend=False):
        """``a`` on the canvas: mirrored along mirror axes; along free axes
        ``fill`` outside the window, or, with ``extend``, the mirror image of
        ``a`` blending into ``fill`` with a half-cosine taper."""
        out = np.asarray(a, dtype=float)
        for ax, (n, m, b, size) in enumerate(zip(self.shape_in, self.modes,
                                                 self.before, self.size)):
            if m == "periodic":
                continue
            if m == "mirror":
                out = np.concatenate([out, np.flip(out, axis=ax)], axis=ax)
                continue
            after = size - n - b
            width = [(0, 0), (0, 0)]
            width[ax] = (b, after)
            if extend:
                ext = np.pad(out - fill, width, mode="symmetric")
                t = np.concatenate([_ramp(b), np.ones(n), _ramp(after)[::-1]])
                shape = [1, 1]
                shape[ax] = size
                out = ext * t.reshape(shape) + fill
            else:
                out = np.pad(out, width, mode="constant", constant_values=fill)
        return out


def _poisson(canvas, source, intensity, pixel_size, qc):
    """Solve ``div(I grad phi) = source`` on ``canvas`` (``source`` in rad/nm^2,
    window-sized; ``intensity`` None means 1). The regularised inverse
    Laplacian (cut-off ``qc``) is applied once: to the source, then, for
    non-uniform ``I``, the exact one to ``div(grad(psi) / I)``. Returns the phase
    on the window, mean subtracted."""
    src = canvas.embed(source)
    qy, qx = _freqs(src.shape, pixel_size)
    q2 = qy**2 + qx**2
    psi_hat = _fft.fft2(src, workers=-1) * _inv_laplacian_kernel(q2, qc)
    if intensity is None:
        phase = _fft.ifft2(psi_hat, workers=-1).real
    else:
        i0 = canvas.embed(intensity, fill=float(np.mean(intensity)), extend=True)
        gy = _fft.ifft2(2j * np.pi * qy * psi_hat, workers=-1).real / i0
        gx = _fft.ifft2(2j * np.pi * qx * psi_hat, workers=-1).real / i0
        div_hat = 2j * np.pi * (
            qy * _fft.fft2(gy, workers=-1) + qx * _fft.fft2(gx, workers=-1)
        )
        phase = _fft.ifft2(div_hat * _inv_laplacian_kernel(q2, 0.0), workers=-1).real
    phase = phase[canvas.window]
    return phase - phase.mean()


def _fresnel_px(wavelength, defocus, pixel_size):
    """Fresnel length ``sqrt(lambda |df|)`` of the largest defocus, in pixels
    (at least 2)."""
    d = float(np.max(np.abs(np.atleast_1d(defocus))))
    return max(2, int(round(np.sqrt(wavelength * d) / min(pixel_size))))


def _edge_activity(source, noise_sigma):
    """Whether structure reaches the frame edges: the signal power (noise
    subtracted) of the right-hand side in a border strip, relative to the
    frame's, at least :data:`BOUNDARY_ACTIVITY` and significant. Returns
    ``(active, fraction)``."""
    h, w = source.shape
    n2 = float(noise_sigma) ** 2 if np.isfinite(noise_sigma) else 0.0
    src = source - source.mean()
    b = max(1, int(round(QC_BOUNDARY_STRIP * min(h, w))))
    border = np.ones((h, w), dtype=bool)
    if 2 * b < min(h, w):
        border[b:-b, b:-b] = False
    edge = float(np.mean(src[border] ** 2)) - n2
    frame = float(np.mean(src**2)) - n2
    # the mean square of white noise over n pixels has a standard error N sqrt(2/n)
    active = bool(edge > BOUNDARY_Z * n2 * np.sqrt(2.0 / border.sum())
                  and frame > 0 and edge >= BOUNDARY_ACTIVITY * frame)
    return active, (edge / frame if frame > 0 else 0.0)


def _auto_boundary(images, source, noise_sigma, strip_px):
    """Boundary of each axis decided from the data (module docstring,
    "Boundary conditions"): ``("periodic" | "free", ...)`` and the test values.

    ``images``: the images (relative intensity) that carry the signal;
    ``source``: the right-hand side, with white noise ``noise_sigma`` per pixel;
    ``strip_px``: width of the edge strips of the split-layer test."""
    h, w = source.shape
    n2 = float(noise_sigma) ** 2
    src = source - source.mean()
    active, fraction = _edge_activity(source, noise_sigma)
    info = {"edge_activity": fraction}
    if not active or min(h, w) < 8:
        return ("free", "free"), info
    modes = []
    k = int(min(strip_px, max(1, min(h, w) // 8)))
    for ax, name in ((0, "y"), (1, "x")):
        # (i) continuity: the images across the wrap-around, against neighbouring
        # rows (periodic) and unrelated rows (a window)
        wrap = near = unrel = 0.0
        for img in images:
            a = img if ax == 0 else img.T
            a = a - a.mean()
            wrap = wrap + (a[0] - a[-1]) ** 2
            near = near + 0.5 * ((a[0] - a[1]) ** 2 + (a[-1] - a[-2]) ** 2)
            unrel = unrel + a[0] ** 2 + a[-1] ** 2
        d = unrel - near
        contrast = float(np.mean(d))
        z = float(contrast / (d.std() / np.sqrt(d.size) + 1e-300))
        s = float(np.mean(wrap - near) / (contrast + 1e-300))
        se = float(np.std(wrap - near) / np.sqrt(d.size) / (abs(contrast) + 1e-300))
        continuous = z > BOUNDARY_Z and s + 2.0 * se < BOUNDARY_CONTINUITY
        # (ii) split layer: line charges of opposite edges anticorrelated
        a = src if ax == 0 else src.T
        qa = a[:k].sum(axis=0)
        qb = a[-k:].sum(axis=0)
        qa = qa - qa.mean()
        qb = qb - qb.mean()
        nv = k * n2
        va = float(np.mean(qa**2)) - nv
        vb = float(np.mean(qb**2)) - nv
        rho = float(np.mean(qa * qb) / np.sqrt(va * vb)) if (va > nv and vb > nv) else 0.0
        split = rho < BOUNDARY_SPLIT_RHO
        modes.append("periodic" if (continuous or split) else "free")
        info[f"split_{name}"] = bool(split)
        info[f"continuity_{name}"] = s
        info[f"continuity_se_{name}"] = se
        info[f"continuity_z_{name}"] = z
        info[f"split_rho_{name}"] = rho
    return tuple(modes), info


# --------------------------------------------------------------------------
# default qc
# --------------------------------------------------------------------------
def _spectral_bins(shape, pixel_size, periodic=False):
    """Frequencies of the coefficients of an (H, W) field -- of its
    orthonormal DCT-II, or of its FFT with ``periodic`` -- sorted (q = 0
    dropped), their ring bins of >= QC_MIN_COUNT coefficients, and the lowest
    frequency ``1 / (2 N p)`` of the window (N p the longer side)."""
    h, w = shape
    py, px = pixel_size
    if periodic:
        qy = _fft.fftfreq(h, d=py)[:, None]
        qx = _fft.fftfreq(w, d=px)[None, :]
    else:
        qy = np.arange(h)[:, None] / (2.0 * h * py)
        qx = np.arange(w)[None, :] / (2.0 * w * px)
    q = np.sqrt(qy**2 + qx**2).ravel()
    order = np.argsort(q, kind="stable")[1:]
    q = q[order]
    dq = min(1.0 / (2.0 * h * py), 1.0 / (2.0 * w * px))
    ring = np.floor(q / ((2.0 if periodic else 1.0) * dq) + 1e-9).astype(np.int64)
    _, first, counts = np.unique(ring, return_index=True, return_counts=True)
    bins = np.empty(q.size, dtype=np.int64)
    b = cnt = 0
    for f, c in zip(first, counts):
        bins[f:f + c] = b
        cnt += c
        if cnt >= QC_MIN_COUNT:
            b += 1
            cnt = 0
    if cnt and b:  # a short last bin joins the previous one
        bins[bins == b] = b - 1
    return order, q, bins, dq


def _signal_power(zb, eb, nbin, counts, neff, qb):
    """Signal power of the phase per ring bin (module docstring, step 3).

    ``zb``: measured power, ``eb``: expected error power (noise ``nbin`` plus
    boundary), ``counts``: coefficients per bin, ``neff``: effective number of
    independent noise coefficients, ``qb``: mean frequency."""
    meas = zb - eb
    se = nbin * np.sqrt(2.0 / np.maximum(neff, 1.0))
    lo = np.maximum(meas - QC_SIGNIFICANCE * se, 0.0)
    hi = np.maximum(meas + QC_SIGNIFICANCE * se, 0.0)
    # power law A (q / q_0)^-alpha fitted to the lowest bins (Whittle likelihood)
    m = min(QC_FIT_BINS, zb.size)
    x = qb[:m] / qb[0]
    amps = np.concatenate([[0.0], np.geomspace(1e-4, 1e2, 61) * (np.median(zb[:m]) + 1e-300)])
    best, fit = np.inf, (0.0, 0.0)
    for alpha in np.linspace(-4.0, 4.0, 33):
        model = amps[:, None] * x[None, :] ** (-alpha) + eb[None, :m]
        with np.errstate(divide="ignore", invalid="ignore"):
            like = np.sum(counts[:m] * (np.log(model) + zb[None, :m] / model), axis=1)
        like = np.where(np.isfinite(like), like, np.inf)
        i = int(np.argmin(like))
        if like[i] < best:
            best, fit = like[i], (amps[i], alpha)
    out = np.clip(fit[0] * (qb / qb[0]) ** (-fit[1]), lo, hi)
    # the lowest bin, the least sampled, rises no faster than q^-4 above the
    # next ones unless the data demand it (an excess of three standard errors)
    if out.size > 1:
        cap = np.max(out[1:4]) * (qb[1] / qb[0]) ** 4
        out[0] = max(meas[0] - 3.0 * se[0], min(out[0], cap))
    return out


def _default_qc(canvas, source, pixel_size, noise_sigma, strip, uncertain):
    """Default ``qc`` (1/nm): the cut-off that maximises the expected
    correlation of the solution with the true phase (module docstring,
    "Default qc").

    ``source``: the right-hand side (window); ``noise_sigma``: its white-noise
    standard deviation per pixel; ``strip``: width (px) of the border strips
    whose mirror images stand in for the specimen beyond the edges of the
    ``uncertain`` axes (a ``(y, x)`` pair of bools: all but those found
    periodic)."""
    h, w = source.shape
    py, px = pixel_size
    periodic = canvas.modes == ("periodic", "periodic") and not any(uncertain)
    order, q, bins, dq = _spectral_bins((h, w), pixel_size, periodic)
    qc_min = QC_FLOOR_FRACTION * dq
    qc_max = max(QC_CEIL_FRACTION * min(0.5 / py, 0.5 / px), qc_min)
    n_pow = float(noise_sigma) ** 2 if np.isfinite(noise_sigma) else 0.0

    def spectrum(a):
        a = a - a.mean()
        if periodic:
            p = np.abs(_fft.fft2(a, workers=-1)) ** 2 / a.size
        else:
            p = _fft.dctn(a, type=2, norm="ortho", workers=-1) ** 2
        return p.ravel()[order]

    # 1. the unregularised solution
    z = spectrum(_poisson(canvas, source, None, pixel_size, 0.0))
    # 2. boundary error: the border strips mirrored outwards (tapered) stand in
    # for the unknown specimen beyond the edges; their potential in the window
    err = np.zeros_like(z)
    if any(uncertain):
        width = [(strip, strip) if u else (0, 0) for u in uncertain]
        ext = np.pad(source, width, mode="symmetric")
        for ax, u in enumerate(uncertain):
            if u:
                t = np.concatenate([_ramp(strip), np.ones(source.shape[ax]), _ramp(strip)[::-1]])
                ext = ext * t.reshape([-1, 1] if ax == 0 else [1, -1])
        inner = tuple(slice(a, a + n) for (a, _), n in zip(width, source.shape))
        ext[inner] = 0.0
        free_modes = ["free" if u else m for m, u in zip(canvas.modes, uncertain)]
        outer = _Canvas(ext.shape, free_modes)
        err = spectrum(_poisson(outer, ext, None, pixel_size, 0.0)[inner])
        # the net flux through busy edges, lost with the mean of the right-hand
        # side (images normalised to unit mean), leaves the potential of a
        # uniform source; its size is judged from the mean of the border strips
        if _edge_activity(source, noise_sigma)[0]:
            band = np.zeros((h, w), dtype=bool)
            if uncertain[0]:
                band[:strip] = band[-strip:] = True
            if uncertain[1]:
                band[:, :strip] = band[:, -strip:] = True
            dome = _poisson(_Canvas((h, w), free_modes), np.ones((h, w)), None, pixel_size, 0.0)
            err = err + QC_FLUX_FRACTION * spectrum(float(np.mean(source[band])) * dome)
        # a mirror or periodic boundary on an uncertain axis adds its own error,
        # its difference from the free solution
        if tuple(free_modes) != canvas.modes:
            err = err + spectrum(_poisson(canvas, source, None, pixel_size, 0.0)
                                 - _poisson(_Canvas((h, w), free_modes), source, None,
                                            pixel_size, 0.0))
    # 3. noise: white noise through the inverse Laplacian, saturating below the
    # lowest frequency the boundary lets through (q0, by simulation)
    kind = ("free" if "free" in canvas.modes
            else "periodic" if "periodic" in canvas.modes else "mirror")
    q0 = 0.0 if periodic else NOISE_Q0_FACTOR[kind] / (2.0 * max(h * py, w * px))
    noise = n_pow / (16.0 * np.pi**4 * (q**2 + q0**2) ** 2)
    counts = np.bincount(bins)
    zb = np.bincount(bins, z) / counts
    nbin = np.bincount(bins, noise) / counts
    db = np.bincount(bins, err) / counts
    qb = np.bincount(bins, q) / counts
    neff = np.bincount(bins, noise) ** 2 / np.maximum(np.bincount(bins, noise**2), 1e-300)
    # 4. the qc of largest expected correlation sum(g S) / sqrt(sum(S) sum(g^2 Z)),
    # averaged over the uncertainty of the boundary error's size
    grid = np.geomspace(qc_min, qc_max, QC_GRID)
    exact = bins < QC_EXACT_BINS
    n_exact = np.bincount(bins[exact], minlength=counts.size)
    sel = n_exact > 0
    gains = []
    for qc in grid:
        g = (qb**2 / (qb**2 + qc**2)) ** 2
        g2 = g**2
        ge = (q[exact] ** 2 / (q[exact] ** 2 + qc**2)) ** 2
        g[sel] = np.bincount(bins[exact], ge, minlength=counts.size)[sel] / n_exact[sel]
        g2[sel] = np.bincount(bins[exact], ge**2, minlength=counts.size)[sel] / n_exact[sel]
        gains.append((g, g2))
    scales = QC_BOUNDARY_SCALES if np.any(db > 0) else (1.0,)
    total = np.zeros(grid.size)
    for scale in scales:
        sb = _signal_power(zb, scale * db + nbin, nbin, counts, neff, qb)
        if np.sum(counts * sb) <= QC_DETECTION * np.sum(counts * zb):
            continue
        norm = np.sqrt(np.sum(counts * sb))
        total += [np.sum(counts * g * sb) / np.sqrt(np.sum(counts * g2 * zb) + 1e-300) / norm
                  for g, g2 in gains]
    if not np.any(total > 0):
        # no signal above the errors: the phase, if any, is at the lowest
        # frequencies, which a cut-off at the lowest frequency of the window keeps
        return float(dq)
    return float(grid[int(np.argmax(total))])


def _solve(source, intensity, images, pixel_size, wavelength, defocus, qc,
           noise_sigma, boundary):
    """Boundary, ``qc`` and phase for ``div(I grad phi) = source``."""
    h, w = source.shape
    tests = None
    if boundary == "auto":
        modes, tests = _auto_boundary(images, source, noise_sigma,
                                      _fresnel_px(wavelength, defocus, pixel_size))
    else:
        modes = boundary
    canvas = _Canvas((h, w), modes)
    if qc is None:
        strip = max(1, int(round(QC_SURROGATE_STRIP * min(h, w))))
        # only the two halves of a line source split by the wrap-around prove a
        # boundary periodic (a window may look continuous across it by chance,
        # e.g. a lattice symmetric about the centre of the frame)
        uncertain = [not (tests is not None and tests.get(f"split_{n}", False))
                     for n in ("y", "x")]
        qc = _default_qc(canvas, source, pixel_size, noise_sigma, strip, uncertain)
    phase = _poisson(canvas, source, intensity, pixel_size, qc)
    return phase, float(qc), modes, tests


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
    symmetric=None,
    infocus=None,
    noise_level=None,
    fit_degree=None,
    normalize=True,
    boundary=None,
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
        2 pi), > 0, of the inverse Laplacian of the right-hand side. ``None``
        (default) chooses the value that maximises the expected correlation
        with the true phase, from the spectra of the solution, of the noise
        and of the boundary error (module docstring): noise-free data of an
        isolated specimen keep an almost exact inverse Laplacian, a window
        onto structure that crosses the frame loses the part of its longest
        range that the data cannot fix.
    derivative : {"pair", "fit"}
        How ``dI/d(df)`` at ``df = 0`` is estimated; see
        :func:`derivative_weights`. ``"pair"`` (default) uses the image nearest
        focus on each side (plus the in-focus image when present);
        ``"fit"`` fits a polynomial through all images.
    symmetric : bool, optional
        ``True``: mirror boundaries (every field mirror-padded to (2H, 2W),
        Neumann conditions), the former default; ``False``: periodic
        boundaries; ``None`` (default): ``boundary`` decides.
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
    boundary : str or (str, str), optional
        Boundary condition of the Poisson solver: ``"auto"`` (the default
        when ``symmetric`` is None too) decides per axis from the data --
        ``"periodic"`` where the images continue across the wrap-around (a
        simulation with periodic propagation), else ``"free"`` (the window in
        a canvas with nothing beyond it); or ``"free"``, ``"periodic"``,
        ``"mirror"``, or a ``(y, x)`` pair of them. See the module docstring.

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
        ``symmetric`` (True for mirror boundaries), ``boundary`` (the
        ``(y, x)`` pair used), ``boundary_auto`` (bool), ``boundary_tests``
        (the values of the automatic rule, or None), ``normalize``,
        ``wavelength`` (nm), ``pixel_size`` (nm, (dy, dx)).

    Raises
    ------
    ValueError
        For images not of shape (N, H, W), a defocus array of the wrong length,
        no image on one side of focus, ``qc <= 0``, a non-positive pixel size or
        wavelength, an ``infocus`` image of the wrong shape, or an unknown
        ``boundary``.
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
    bnd = _check_boundary(boundary, symmetric)
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
    phase, qc_used, modes, tests = _solve(
        source, i0, imgs[w_d != 0], psize, lam, df[w_d != 0], qc,
        k * sigma_d / i0_mean, bnd,
    )
    info = {
        "qc": qc_used,
        "qc_default": qc is None,
        "boundary": modes,
        "boundary_auto": bnd == "auto",
        "boundary_tests": tests,
        "derivative": derivative,
        "fit_degree": deg,
        "indices": used.tolist(),
        "defocus_used": df[used].tolist(),
        "derivative_weights": w_d[used].tolist(),
        "infocus": i0_src,
        "noise_level": sig[used].tolist() if est else nl,
        "noise_estimated": est,
        "symmetric": modes == ("mirror", "mirror"),
        "normalize": bool(normalize),
        "wavelength": lam,
        "pixel_size": psize,
    }
    return phase, info


def sitie_phase(image, defocus, pixel_size, wavelength, qc=None, symmetric=None,
                noise_level=None, boundary=None):
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
        Tikhonov cut-off frequency in 1/nm, > 0; ``None`` chooses it as for
        :func:`tie_phase` (module docstring).
    symmetric : bool, optional
        ``True``: mirror boundaries, ``False``: periodic, ``None`` (default):
        ``boundary`` decides.
    noise_level : float, optional
        Image noise standard deviation as a fraction of the mean intensity;
        ``None`` estimates it with :func:`estimate_noise`.
    boundary : str or (str, str), optional
        ``"auto"`` (default), ``"free"``, ``"periodic"``, ``"mirror"`` or a
        ``(y, x)`` pair, as for :func:`tie_phase`.

    Returns
    -------
    phase : ndarray, shape (H, W)
        Phase in rad, mean subtracted.
    info : dict
        ``qc`` (1/nm), ``qc_default``, ``boundary``, ``boundary_auto``,
        ``boundary_tests``, ``defocus`` (nm), ``noise_level``,
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
    bnd = _check_boundary(boundary, symmetric)
    if not np.all(np.isfinite(img)):
        raise ValueError("image contains NaN or inf values; clean or crop it first")
    mean = img.mean()
    if mean <= 0:
        raise ValueError("the image must have a positive mean intensity")
    rel = img / mean
    didz = (rel - 1.0) / d
    sig = estimate_noise(rel) if nl is None else nl
    k = 2.0 * np.pi / lam
    phase, qc_used, modes, tests = _solve(
        -k * didz, None, rel[None], psize, lam, [d], qc, k * sig / abs(d), bnd
    )
    info = {
        "qc": qc_used,
        "qc_default": qc is None,
        "boundary": modes,
        "boundary_auto": bnd == "auto",
        "boundary_tests": tests,
        "defocus": d,
        "noise_level": float(sig),
        "noise_estimated": nl is None,
        "symmetric": modes == ("mirror", "mirror"),
        "wavelength": lam,
        "pixel_size": psize,
    }
    return phase, info
