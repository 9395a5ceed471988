"""Fixtures for the calibration-reading tests.

``vendor_dir``: the real vendor files in ``<shared>/data/vendor``, where
``<shared>`` is ``$HYPERSPY_LORENTZ_SHARED`` if set, else the ``shared`` folder
next to the repository (``Path(__file__).parents[2].parent / "shared"``). Tests
that use it are skipped when the folder is absent.

``write_velox_emd``: writes a small file with the layout of a Thermo Fisher Velox
EMD image stack (one JSON metadata record per frame), for per-frame defocus tests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

_REPO_ROOT = Path(__file__).resolve().parents[2]


def _shared_dir() -> Path:
    env = os.environ.get("HYPERSPY_LORENTZ_SHARED")
    if env:
        return Path(env).expanduser()
    return _REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def vendor_dir() -> Path:
    """Folder of real vendor files (``<shared>/data/vendor``); skip if absent."""
    d = _shared_dir() / "data" / "vendor"
    if not d.is_dir():
        pytest.skip(
            f"../shared/data/vendor not found: looked in {d}. Set the environment "
            "variable HYPERSPY_LORENTZ_SHARED to the folder that holds data/vendor."
        )
    return d


def _json_column(record: dict, length: int) -> np.ndarray:
    raw = json.dumps(record, indent=4).encode("utf-8")
    assert len(raw) < length
    col = np.zeros(length, dtype=np.uint8)
    col[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return col


def velox_record(defocus_m: float, *, pixel_m: float = 2.5e-9, kv: float = 300.0) -> dict:
    """A per-frame Velox metadata record, as Velox writes it (numbers as strings)."""
    return {
        "Core": {"MetadataDefinitionVersion": "7.9", "MetadataSchemaVersion": "v1/2013/07"},
        "Instrument": {
            "Manufacturer": "FEI Company",
            "InstrumentClass": "Titan",
            "InstrumentModel": "Titan",
        },
        "Acquisition": {
            "AcquisitionStartDatetime": {"DateTime": "1575540224"},
            "AcquisitionDatetime": {"DateTime": "1575540224"},
            "SourceType": "XFEG",
        },
        "Optics": {
            "AccelerationVoltage": f"{kv * 1e3:.0f}",
            "Defocus": repr(float(defocus_m)),
            "Focus": "0",
            "LorentzLensIntensity": "-0.69",
        },
        "Scan": {},
        "Stage": {"AlphaTilt": "0", "BetaTilt": "0", "Position": {"x": "0", "y": "0", "z": "0"}},
        "Detectors": {
            "Detector-0": {
                "DetectorName": "BM-Ceta",
                "DetectorType": "ImagingDetector",
                "ExposureTime": "0.5",
            }
        },
        "BinaryResult": {
            "AcquisitionUnit": "",
            "CompositionType": "",
            "DetectorIndex": "0",
            "Detector": "BM-Ceta",
            "Encoding": "",
            "ImageSize": {"width": "8", "height": "8"},
            "Offset": {"x": "0", "y": "0"},
            "PixelSize": {"width": repr(pixel_m), "height": repr(pixel_m)},
            "PixelUnitX": "m",
            "PixelUnitY": "m",
        },
        "Sample": {},
        "CustomProperties": {},
    }


def write_velox_emd(path, defocus_m, *, shape=(8, 8), pixel_m=2.5e-9, kv=300.0, record_len=4000):
    """Write an image stack with the Velox EMD layout, one defocus per frame.

    ``Data/Image/<id>/Data`` is ``(y, x, frames)``; ``Metadata`` is a ``uint8``
    array ``(record_len, frames)`` whose column ``i`` is frame ``i``'s NUL-padded
    JSON; ``FrameLookupTable`` maps frame -> column.
    """
    import h5py

    defocus_m = np.atleast_1d(np.asarray(defocus_m, dtype=float))
    n = defocus_m.size
    rng = np.random.default_rng(0)
    data = rng.integers(0, 1000, size=shape + (n,)).astype(np.int16)
    meta = np.stack(
        [_json_column(velox_record(d, pixel_m=pixel_m, kv=kv), record_len) for d in defocus_m],
        axis=1,
    )
    str_dt = h5py.special_dtype(vlen=bytes)
    with h5py.File(path, "w") as f:
        v = f.create_dataset("Version", (1,), dtype=str_dt)
        v[0] = json.dumps({"version": "8", "format": "Velox"}, indent=4).encode()
        f.create_group("Application")
        g = f.create_group("Data/Image/26f60320a61d4f66a73efd8cde34ffa9")
        g.create_dataset("Data", data=data, chunks=shape + (1,))
        g.create_dataset("Metadata", data=meta, chunks=(record_len, 1), maxshape=(record_len, None))
        g.create_dataset("FrameLookupTable", data=np.arange(n, dtype=np.uint32), maxshape=(None,))
    return Path(path)


@pytest.fixture
def velox_writer():
    """The :func:`write_velox_emd` helper."""
    return write_velox_emd
