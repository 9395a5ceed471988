"""The two directions of the defocus values that the data may not fix.

A weak phase object's images depend, to first order in the defocus, on the
product ``df * laplacian(phi)`` only (the transport-of-intensity equation):
scaling every defocus by ``1 + t`` and the phase by ``1 / (1 + t)`` leaves them
unchanged, so the *common scale* of a series' defocus values is fixed only by
the higher-order terms of the transfer (the Fresnel fringes, the coherence
envelope) -- well at high dose and large defocus, not at all at low dose.

A *common offset* ``c`` of every defocus is a refocusing of the exit wave: the
wave propagated by ``-c`` gives exactly the same images,
``T(df + c) P(-c) psi = T(df) psi`` with ``T(df) = exp(-i pi lambda df q^2)``.
When the amplitude is refined pixel by pixel (so that the propagated wave is as
good a candidate as the first), no data can tell the two apart: only the prior
(the sharper exit wave) decides, and the offset is *not identifiable*.

:func:`compensate` gives the exit wave that keeps the images (to first order for
the scale, exactly for the offset) when the defocus moves along these modes;
:func:`mode_design` the two directions, so that a change of the defocus values
can be split into them by least squares. The bootstrap
(:mod:`~hyperspy_lorentz.reconstruction.ad.bootstrap`) uses them to test
whether a fit recovers a miscalibration, and to hold an unidentifiable mode at
its nominal value.

Kernels on tensors and arrays; nothing here knows about HyperSpy.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["mode_design", "mode_coefficients", "compensate"]


def mode_design(defocus):
    """The two modes of ``defocus`` (nm) as the columns of an (N, 2) matrix:
    the scale (``defocus`` itself) and the offset (``max|defocus|`` for every
    image), so that coefficients are fractions of the largest defocus."""
    df = np.asarray(defocus, float)
    return np.stack([df, np.full(df.shape, float(np.max(np.abs(df))))], axis=1)


def mode_coefficients(defocus, change):
    """``(t_scale, t_offset)``: the least-squares split of ``change`` (nm, per
    image) into the modes of ``defocus``."""
    return np.linalg.lstsq(mode_design(defocus), np.asarray(change, float), rcond=None)[0]


@torch.no_grad()
def compensate(state, defocus, t, wavelength, pixel_size, amplitude_refined):
    """The state moved by ``t = (t_scale, t_offset)`` along the modes of ``defocus``,
    with an exit wave that gives (nearly) the same images.

    Parameters
    ----------
    state : dict
        ``phase`` (tensor, rad, on the canvas), ``amplitude`` (tensor or None) and
        the other entries of a fit's state (kept).
    defocus : array_like
        The defocus values (nm) the modes are taken at; the returned state has
        ``defocus * (1 + t_scale) + t_offset * max|defocus|``.
    t : (float, float)
        The move, as fractions (scale) and fractions of the largest defocus.
    wavelength : float
        Electron wavelength, nm.
    pixel_size : (float, float)
        nm.
    amplitude_refined : bool
        Whether the amplitude is fitted: the refocused wave's modulus replaces
        it (else the phase alone is refocused, to first order).
    """
    ts, to = float(t[0]), float(t[1])
    df = np.asarray(defocus, float)
    reach = float(np.max(np.abs(df)))
    new = dict(state)
    new["defocus"] = df * (1.0 + ts) + to * reach
    phase = state["phase"] / (1.0 + ts)
    c = to * reach
    if c != 0.0:
        amp = state["amplitude"]
        psi = torch.polar(torch.ones_like(phase) if amp is None else amp, phase)
        h, w = phase.shape
        kw = dict(dtype=phase.dtype, device=phase.device)
        fy = torch.fft.fftfreq(h, d=pixel_size[0], **kw)
        fx = torch.fft.fftfreq(w, d=pixel_size[1], **kw)
        q2 = fy[:, None] ** 2 + fx[None, :] ** 2
        # T(df + c) P(-c) psi = T(df) psi, T(df) = exp(-i pi lambda df q^2)
        moved = torch.fft.ifft2(torch.fft.fft2(psi) * torch.polar(
            torch.ones_like(q2), math.pi * wavelength * c * q2))
        phase = phase + torch.angle(moved * torch.conj(psi))
        if amplitude_refined:
            new["amplitude"] = torch.clamp(torch.abs(moved), min=1e-3)
    new["phase"] = phase
    return new
