"""Make the figures of the user guide with hyperspy_lorentz itself.

Run from the repository root (a few seconds on a CPU)::

    python docs/make_figures.py

It writes PNG files into ``docs/_static/``, which are committed: the Sphinx build
does not run this script. Re-run it when the physics or the colour maps change.

* ``transfer_function.png``: phase-contrast transfer ``sin(chi) E`` and the
  partial-coherence envelope ``E`` against spatial frequency for a few defocus
  values (:mod:`hyperspy_lorentz.physics.optics`);
* ``focal_series.png``: the magnetic phase of a Bloch skyrmion lattice and its
  simulated through-focus series
  (:mod:`hyperspy_lorentz.physics.textures`,
  :func:`hyperspy_lorentz.physics.magnetisation.magnetic_phase`,
  :func:`hyperspy_lorentz.simulate_focal_series`);
* ``induction_colour.png``: a magnetic vortex, its phase, its induction as a
  colour map, and the colour wheel (:mod:`hyperspy_lorentz.physics.colour`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

OUT = Path(__file__).resolve().parent / "_static"

#: Microscope of every figure: the defaults of the package (the AD-LTEM paper's values).
BEAM_ENERGY = 200.0  # keV
CS = 1.0  # mm
THETA_C = 0.01  # mrad
DEFOCUS_SPREAD = 500.0  # nm

plt.rcParams.update(
    {
        "font.size": 8,
        "axes.titlesize": 8,
        "axes.labelsize": 8,
        "xtick.labelsize": 7,
        "ytick.labelsize": 7,
        "legend.fontsize": 7,
        "savefig.dpi": 100,
    }
)


def _save(fig, name):
    path = OUT / name
    # A palette PNG keeps the files small; the figures have few colours except
    # the colour maps, which Pillow's adaptive palette still renders well.
    fig.savefig(path, dpi=100, pil_kwargs={"optimize": True})
    plt.close(fig)
    size = path.stat().st_size
    print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path} ({size / 1024:.0f} KiB)")
    return path


# ----------------------------------------------------------------------- (a)
def transfer_function_figure():
    """Phase-contrast transfer and coherence envelope against q."""
    import torch

    from hyperspy_lorentz.physics import optics

    lam = optics.wavelength(BEAM_ENERGY)
    q = torch.logspace(-3, 0, 6000, dtype=torch.float64)  # 1/nm
    qy = torch.zeros_like(q)
    defocus_values = (10e3, 100e3, 1e6)  # nm: 10 um, 100 um, 1 mm
    labels = ("10 µm", "100 µm", "1 mm")
    colours = ("tab:blue", "tab:orange", "tab:green")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8.0, 3.0), constrained_layout=True)
    for df, label, colour in zip(defocus_values, labels, colours):
        chi = optics.aberration_function(qy, q, lam, df, cs=CS)
        env = optics.coherence_envelope(qy, q, lam, df, CS, THETA_C, DEFOCUS_SPREAD)
        ax1.plot(q, torch.sin(chi) * env, color=colour, lw=0.6, label=f"Δf = {label}")
        ax1.plot(q, env, color=colour, lw=1.0, ls="--")
        ax2.plot(q, env, color=colour, lw=1.2, label=f"Δf = {label}")
    env0 = optics.coherence_envelope(qy, q, lam, 0.0, CS, THETA_C, DEFOCUS_SPREAD)
    ax2.plot(q, env0, color="0.4", lw=1.2, ls=":", label="Δf = 0 (temporal only)")

    ax1.set_xscale("log")
    ax1.set_xlim(1e-3, 1)
    ax1.set_ylim(-1.05, 1.05)
    ax1.axhline(0, color="0.7", lw=0.5)
    ax1.set_xlabel("spatial frequency q (1/nm)")
    ax1.set_ylabel("sin χ(q) · E(q)")
    ax1.set_title("Phase-contrast transfer (dashed: envelope E)")
    ax1.legend(loc="lower left", frameon=False)

    ax2.set_xscale("log")
    ax2.set_xlim(1e-3, 1)
    ax2.set_ylim(0, 1.05)
    ax2.set_xlabel("spatial frequency q (1/nm)")
    ax2.set_ylabel("E(q)")
    ax2.set_title(
        f"Coherence envelope ({BEAM_ENERGY:g} kV, Cs {CS:g} mm,\n"
        f"θc {THETA_C:g} mrad, defocus spread {DEFOCUS_SPREAD:g} nm)"
    )
    ax2.legend(loc="lower left", frameon=False)
    return _save(fig, "transfer_function.png")


# ----------------------------------------------------------------------- (b)
def focal_series_figure():
    """Phase of a Bloch skyrmion lattice and its simulated focal series."""
    import hyperspy_lorentz as hl
    from hyperspy_lorentz.physics import magnetisation, textures

    # A field of view of 4 x 2 rectangular cells (a x sqrt(3) a) of the lattice,
    # so that the continuous film is periodic and the FFTs see no edges;
    # padding="periodic" propagates it as such (the default, "edge", would
    # treat the frame as a window and add fringes at its borders).
    period_px, pixel = 56, 3.0  # pixels, nm
    shape = (round(2 * np.sqrt(3) * period_px), 4 * period_px)  # (194, 224)
    ms, thickness = 3.8e5, 40.0  # A/m, nm
    texture = textures.skyrmion_lattice(shape, period=period_px * pixel, pixel_size=pixel)
    phase = magnetisation.magnetic_phase(
        texture.mx, texture.my, ms=ms, thickness=thickness, pixel_size=pixel, padding=1
    )
    defocus = (-300e3, 0.0, 300e3)  # nm
    s = hl.simulate_focal_series(
        phase,
        defocus=defocus,
        scale=pixel,
        beam_energy=BEAM_ENERGY,
        cs=CS,
        theta_c=THETA_C,
        defocus_spread=DEFOCUS_SPREAD,
        padding="periodic",
    )
    images = s.data
    extent = [0, shape[1] * pixel / 1000, shape[0] * pixel / 1000, 0]  # µm

    fig, axes = plt.subplots(1, 4, figsize=(8.0, 2.0), constrained_layout=True)
    im = axes[0].imshow(phase, cmap="viridis", extent=extent)
    fig.colorbar(im, ax=axes[0], shrink=0.85, label="rad")
    axes[0].set_title("magnetic phase")
    vmin, vmax = np.percentile(images, [0.5, 99.5])
    for ax, img, df in zip(axes[1:], images, s.axes_manager["defocus"].axis):
        ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, extent=extent)
        ax.set_title(f"Δf = {df / 1000:+.0f} µm" if df else "Δf = 0 (in focus)")
    for ax in axes:
        ax.set_xlabel("x (µm)")
    axes[0].set_ylabel("y (µm)")
    for ax in axes[1:]:
        ax.set_yticklabels([])
    return _save(fig, "focal_series.png")


# ----------------------------------------------------------------------- (c)
def induction_colour_figure():
    """A vortex: phase, induction colour map with arrows, and the colour wheel."""
    from hyperspy_lorentz.physics import colour, induction, magnetisation, textures

    size, pixel = 128, 2.0
    ms, thickness = 8.0e5, 20.0  # permalloy-like disc
    v = textures.vortex((size, size), radius=100.0, chirality=1, polarity=1, pixel_size=pixel)
    phase = magnetisation.magnetic_phase(
        v.mx, v.my, ms=ms * v.mask, thickness=thickness, pixel_size=pixel, mz=v.mz
    )
    bx, by = induction.induction_from_phase(phase, pixel)  # T nm
    rgb = colour.induction_to_rgb(bx, by)
    wheel = colour.colour_wheel(128)
    extent = [0, size * pixel, size * pixel, 0]

    fig, axes = plt.subplots(
        1, 3, figsize=(8.0, 2.6), constrained_layout=True, gridspec_kw={"width_ratios": [1.15, 1, 0.75]}
    )
    im = axes[0].imshow(phase, cmap="viridis", extent=extent)
    fig.colorbar(im, ax=axes[0], shrink=0.85, label="rad")
    axes[0].set_title("phase of a vortex (chirality +1)")
    axes[1].imshow(rgb, extent=extent)
    step = 12
    rows, cols = np.mgrid[step // 2:size:step, step // 2:size:step]
    bxs, bys = bx[rows, cols], by[rows, cols]
    inside = np.hypot(bxs, bys) > 0.05 * np.hypot(bx, by).max()
    axes[1].quiver(
        cols[inside] * pixel, rows[inside] * pixel, bxs[inside], bys[inside],
        color="white", angles="xy", pivot="middle", scale_units="xy",
        scale=float(np.hypot(bx, by).max()) / (step * pixel * 0.8), width=0.006,
    )
    axes[1].set_title(f"induction B t (max {np.hypot(bx, by).max():.1f} T nm)")
    for ax in axes[:2]:
        ax.set_xlabel("x (nm)")
    axes[0].set_ylabel("y (nm)")
    axes[1].set_yticklabels([])
    axes[2].imshow(wheel)
    axes[2].set_axis_off()
    # Label the wheel with the image directions: x right, y down (as the images).
    c = 63.5
    for text, (dy, dx) in (("+x", (0, 1)), ("+y", (1, 0)), ("−x", (0, -1)), ("−y", (-1, 0))):
        axes[2].annotate(text, (c + 72 * dx, c + 72 * dy), ha="center", va="center", fontsize=8,
                         annotation_clip=False)
    axes[2].set_title("colour wheel", pad=12)
    axes[2].text(0.5, -0.16, "direction → hue, |B| → brightness", transform=axes[2].transAxes,
                 ha="center", va="top")
    return _save(fig, "induction_colour.png")


def main(argv=None):
    OUT.mkdir(exist_ok=True)
    paths = [transfer_function_figure(), focal_series_figure(), induction_colour_figure()]
    too_big = [p for p in paths if p.stat().st_size > 200 * 1024]
    if too_big:
        print("figures over 200 KiB: " + ", ".join(p.name for p in too_big), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parent.parent)
    sys.exit(main())
