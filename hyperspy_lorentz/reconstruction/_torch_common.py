"""Private helpers shared by the PyTorch reconstruction kernels.

Used by :mod:`~hyperspy_lorentz.reconstruction.ad` (focal series) and
:mod:`~hyperspy_lorentz.reconstruction.single_image` (one image): argument
checks (numbers with their units, working precision, device) and the smoothed
isotropic total variation (TV) with its analytic gradient. Not public API.
"""

from __future__ import annotations

import math

import numpy as np
import torch


# ============================================================================ checks
def _torch_dtype(dtype):
    """Torch floating dtype of a working-precision argument.

    Parameters
    ----------
    dtype : str, numpy or torch dtype
        ``"float32"``/``"single"``, ``np.float32`` or ``torch.float32`` (also as
        the string ``"torch.float32"``), or the float64 equivalents
        (``"double"``).

    Returns
    -------
    torch.dtype
        ``torch.float32`` or ``torch.float64``.

    Raises
    ------
    ValueError
        Any other precision.
    """
    name = str(dtype).replace("torch.", "")
    if dtype in (torch.float32, np.float32) or name in ("float32", "single", str(np.float32)):
        return torch.float32
    if dtype in (torch.float64, np.float64) or name in ("float64", "double", str(np.float64)):
        return torch.float64
    raise ValueError(f"dtype must be 'float32' (default) or 'float64', got {dtype!r}")


def _resolve_device(device):
    """Torch device of a ``device`` argument.

    Parameters
    ----------
    device : "auto", None, str or torch.device
        ``"auto"`` (or None) picks CUDA when torch sees a GPU, else the CPU;
        otherwise anything :class:`torch.device` accepts (``"cpu"``, ``"cuda"``,
        ``"cuda:N"``).

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        An unknown device, or CUDA requested where torch sees none.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}"
                         ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch sees no CUDA device; use "
                         f"device='cpu' or 'auto'")
    return dev


def _as_float(value, name, unit, positive=False, nonneg=False, *, fix=""):
    """One finite number, checked, as a Python float.

    Parameters
    ----------
    value : object
        The argument; anything :func:`float` accepts except a bool.
    name : str
        Argument name, for the error message.
    unit : str
        Its unit (e.g. ``"nm"``, ``"mrad"``, ``"relative"``), for the message.
    positive, nonneg : bool
        Require ``value > 0`` / ``value >= 0``.
    fix : str
        Appended to the error message: how to fix the call (e.g.
        ``"; pass ..."``).

    Returns
    -------
    float
        ``value``, in ``unit``.

    Raises
    ------
    ValueError
        A bool, not a single number, not finite, or outside the required range;
        the message names the argument, its unit and ``fix``.
    """
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a number ({unit}), got {value!r}{fix}")
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a single number ({unit}), got {value!r}{fix}") from None
    if not math.isfinite(f) or (positive and f <= 0) or (nonneg and f < 0):
        cond = "a positive" if positive else ("a non-negative" if nonneg else "a")
        raise ValueError(f"{name} must be {cond} finite number ({unit}), got {value!r}{fix}")
    return f


# ============================================================================ total variation
def _regularization(regularization):
    """The checked TV weight of a solver: ``(beta, auto)``, ``beta`` in 1/rad (0 for
    ``None``; ``None`` with ``auto=True`` for ``"auto"``, which each solver resolves
    by its own rule)."""
    if regularization is None:
        return 0.0, False
    if isinstance(regularization, str):
        if regularization != "auto":
            raise ValueError(f"regularization must be 'auto', a number >= 0 or None, got "
                             f"{regularization!r}")
        return None, True
    return _as_float(regularization, "regularization", "1/rad", nonneg=True), False


def _diff(f, periodic):
    """Finite differences ``(gy, gx)`` of a 2-D array along its two axes.

    Parameters
    ----------
    f : torch.Tensor, shape (H, W)
        E.g. a phase, rad.
    periodic : bool
        True: periodic backward differences, ``gy[i] = f[i] - f[i - 1]`` with
        ``f[-1]`` the last row (columns likewise). False: forward differences
        ``gy[i] = f[i + 1] - f[i]``, zero on the last row (column).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``(gy, gx)``, shape (H, W) each, units of ``f`` per pixel.
    """
    gy = torch.empty_like(f)
    gx = torch.empty_like(f)
    if periodic:
        gy[1:] = f[1:] - f[:-1]
        gy[:1] = f[:1] - f[-1:]
        gx[:, 1:] = f[:, 1:] - f[:, :-1]
        gx[:, :1] = f[:, :1] - f[:, -1:]
    else:
        gy[:-1] = f[1:] - f[:-1]
        gy[-1:] = 0.0
        gx[:, :-1] = f[:, 1:] - f[:, :-1]
        gx[:, -1:] = 0.0
    return gy, gx


def _diff_adjoint(uy, ux, periodic):
    """Adjoint of :func:`_diff` applied to ``(uy, ux)``.

    Parameters
    ----------
    uy, ux : torch.Tensor, shape (H, W)
    periodic : bool
        As for :func:`_diff`.

    Returns
    -------
    torch.Tensor, shape (H, W)
        ``Dy^T uy + Dx^T ux``.
    """
    out = torch.empty_like(uy)
    if periodic:
        out[:-1] = uy[:-1] - uy[1:]
        out[-1:] = uy[-1:] - uy[:1]
        out[:, :-1] += ux[:, :-1] - ux[:, 1:]
        out[:, -1:] += ux[:, -1:] - ux[:, :1]
    else:
        out.zero_()
        out[1:] += uy[:-1]
        out[:-1] -= uy[:-1]
        out[:, 1:] += ux[:, :-1]
        out[:, :-1] -= ux[:, :-1]
    return out


class _TV(torch.autograd.Function):
    """Smoothed isotropic (joint) total variation with an analytic gradient.

    ``sum sqrt(|D f|^2 + kappa^2 |D g|^2 + eps^2) - eps``; ``g`` may be None.
    See :func:`_tv`.
    """

    @staticmethod
    def forward(ctx, f, g, eps, kappa, periodic):
        gy, gx = _diff(f, periodic)
        s = gy * gy
        s.addcmul_(gx, gx).add_(eps * eps)
        if g is not None:
            hy, hx = _diff(g, periodic)
            s.addcmul_(hy, hy, value=kappa * kappa).addcmul_(hx, hx, value=kappa * kappa)
        s.sqrt_()
        value = (s.sum() - eps * s.numel()).reshape(())
        inv = s.reciprocal_()
        gy.mul_(inv)
        gx.mul_(inv)
        if g is not None:
            hy.mul_(inv).mul_(kappa * kappa)
            hx.mul_(inv).mul_(kappa * kappa)
            ctx.save_for_backward(gy, gx, hy, hx)
        else:
            ctx.save_for_backward(gy, gx)
        ctx.periodic = periodic
        ctx.has_g = g is not None
        return value

    @staticmethod
    def backward(ctx, grad):
        saved = ctx.saved_tensors
        gf = _diff_adjoint(saved[0], saved[1], ctx.periodic).mul_(grad)
        gg = None
        if ctx.has_g and ctx.needs_input_grad[1]:
            gg = _diff_adjoint(saved[2], saved[3], ctx.periodic).mul_(grad)
        return gf, gg, None, None, None


def _tv(f, eps, periodic, g=None, kappa=0.0):
    """Smoothed isotropic total variation of ``f`` (joint with ``g``), summed.

    ``sum_x (sqrt(|D f|^2 + kappa^2 |D g|^2 + eps^2) - eps)`` with ``D`` the
    differences of :func:`_diff`: quadratic (``|D f|^2 / (2 eps)``) for
    gradients much smaller than ``eps``, linear for larger ones. Not divided by
    the number of pixels. Differentiable in ``f`` and ``g`` (analytic gradient,
    :class:`_TV`).

    Parameters
    ----------
    f : torch.Tensor, shape (H, W)
        Phase, rad (gradients in rad per pixel).
    eps : float
        Smoothing, rad per pixel (> 0).
    periodic : bool
        Periodic boundaries (wrap-around differences), or none (no difference
        across the last row and column).
    g : torch.Tensor, shape (H, W), optional
        Second field of a joint TV (e.g. the log-amplitude), dimensionless.
    kappa : float
        Weight of ``g``'s gradient relative to ``f``'s, rad (ignored without
        ``g``).

    Returns
    -------
    torch.Tensor
        The TV, a 0-d tensor (rad, summed over pixels).
    """
    return _TV.apply(f, g, float(eps), float(kappa), bool(periodic))
