"""Signal-level driver of the AD reconstruction: parameters in, signals out.

The optimisation itself is :func:`hyperspy_lorentz.reconstruction.ad.reconstruct_ad`
(multi-image) or :func:`hyperspy_lorentz.reconstruction.single_image.reconstruct_single_image`
(one image); this module reads the calibrations, builds the per-series kernel,
shows the progress, and turns the result into metadata.
"""

from __future__ import annotations

import numpy as np

# ADResult fields copied into metadata.Signal.Reconstruction for each series.
_INFO_FIELDS = (
    "defocus",
    "shifts",
    "theta_c",
    "astigmatism",
    "astigmatism_angle",
    "scale",
    "defocus_spread",
    "loss_history",
    "iterations",
    "converged",
    "interrupted",
    "time_s",
    "refined",
    "not_identifiable",
    "device",
)


def _dose_from_metadata(signal):
    """Electrons per count from HyperSpy's noise model, if the signal has one."""
    gain = signal.metadata.get_item("Signal.Noise_properties.Variance_linear_model.gain_factor")
    return None if gain is None else float(gain)


def run_ad(signal, *, exit_wave=False, show_progressbar=None, lazy_output=None, **kwargs):
    """Run the AD reconstruction over every focal series of ``signal``.

    See :meth:`LorentzFocalSeries.reconstruct_phase` for the arguments.
    """
    from hyperspy_lorentz.signals._series import _disable

    single = signal._defocus_axis(required=False) is not None and signal._defocus_axis().size == 1
    p = signal._series_inputs(single_image=single)
    defocus = np.asarray(p["defocus_nm"], dtype=float)
    single = single or np.unique(defocus).size == 1 and defocus.size == 1

    common = dict(
        pixel_size=p["pixel_size_nm"],
        beam_energy=p["beam_energy_kV"],
        cs=p["cs_mm"],
        theta_c=p["theta_c_mrad"],
        defocus_spread=p["defocus_spread_nm"],
    )
    likelihood = kwargs.get("likelihood", "poisson" if single else "gaussian")
    gain = None
    if likelihood == "poisson" and kwargs.get("dose") is None:
        gain = _dose_from_metadata(signal)

    if single:
        from hyperspy_lorentz.reconstruction.single_image import reconstruct_single_image as solver

        if exit_wave:
            raise ValueError(
                "A single image does not determine the exit wave's amplitude; use "
                "reconstruct_phase(method='ad') for its magnetic phase, or record a focal series."
            )
        kwargs.setdefault("likelihood", likelihood)
    else:
        from hyperspy_lorentz.reconstruction.ad import reconstruct_ad as solver

        common.update(
            astigmatism=p["astigmatism_nm"],
            astigmatism_angle=p["astigmatism_angle_deg"],
        )
        kwargs.setdefault("likelihood", likelihood)

    lazy = signal._lazy if lazy_output is None else bool(lazy_output)
    n_series = int(np.prod(signal.axes_manager.navigation_shape)) // max(defocus.size, 1)
    # One series eager: a progress bar of iterations with the loss. Several series:
    # the outer bar over series (in _series), none inside. Lazy: none (dask's own).
    inner_bar = not lazy and n_series == 1 and not _disable(show_progressbar)

    def kernel(images):
        images = np.asarray(images, dtype=float)
        if gain is not None:
            images = images / gain  # counts -> electrons
        bar = None
        call = dict(kwargs)
        if inner_bar:
            from hyperspy.external.progressbar import progressbar

            # no total: the race of starts and the bias-correction replicates add
            # iterations to the fit's (``iterations_all_fits`` in the metadata),
            # and the fit usually converges before its cap
            bar = progressbar(total=None, desc="AD iterations (all fits)", leave=True)

            def progress(iteration, loss):
                bar.update(1)
                if iteration % 10 == 0:
                    bar.set_postfix(loss=f"{loss:.4g}")

            call["progress"] = progress
        try:
            if single:
                result = solver(images[0], float(defocus[0]), **common, **call)
            else:
                result = solver(images, defocus, **common, **call)
        finally:
            if bar is not None:
                bar.close()
        info = {k: _plain(getattr(result, k)) for k in _INFO_FIELDS if hasattr(result, k)}
        info.update(_bootstrap_info(result))
        for key, name in (("init", "init_used"), ("reduced_chi2", "reduced_chi2"),
                          ("shift_reference", "shift_reference"),
                          ("iterations_all_fits", "iterations_all_fits")):
            value = getattr(result, "parameters", {}).get(key)
            if value is not None:
                info[name] = value
        if exit_wave:
            return result.amplitude * np.exp(1j * result.phase), info
        return result.phase, info

    params = {"method": "ad"}
    params.update({k: v for k, v in common.items()})
    params["defocus_nominal"] = defocus
    params.update({k: _plain(v) for k, v in kwargs.items() if k != "progress"})
    if gain is not None:
        params["gain_factor"] = gain
    if exit_wave:
        return signal._reconstruct(kernel, complex, "ComplexSignal2D", "Exit wave (AD)", params,
                                   show_progressbar, lazy_output)
    title = "Magnetic phase (single-image AD)" if single else "Phase (AD)"
    return signal._reconstruct(kernel, float, "ElectronPhase", title, params, show_progressbar, lazy_output)


def _bootstrap_info(result):
    """Flat, numeric metadata of the bias correction: ``<name>_standard_error``,
    ``<name>_uncorrected`` (the joint MAP value) and the replicate count."""
    record = getattr(result, "parameters", {}).get("bias_correction")
    if not record:
        return {}
    out = {"bias_correction_replicates": int(record["replicates"])}
    for name, value in getattr(result, "standard_errors", {}).items():
        out[f"{name}_standard_error"] = _plain(value)
    for name, value in record["uncorrected"].items():
        value = np.asarray(value, dtype=float)
        if name == "astigmatism":  # the fitted vector (A cos 2a, A sin 2a), nm
            out["astigmatism_uncorrected"] = float(np.hypot(value[0], value[1]))
            out["astigmatism_angle_uncorrected"] = float(
                np.degrees(0.5 * np.arctan2(value[1], value[0])))
        else:
            out[f"{name}_uncorrected"] = value
    return out


def _plain(value):
    """Metadata-friendly copy: tuples -> lists of str/num, arrays stay arrays."""
    if isinstance(value, tuple):
        return [(_plain(v)) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
