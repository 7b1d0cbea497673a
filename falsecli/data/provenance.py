"""What a run was trained and tracked on, as a fingerprint two runs can be compared by.

A report that averages a run trained on other data, or tracked on other sections, into a
method compares unlike runs; the fingerprint makes that visible. It holds the content digests
of every volume (seismic and labels, whatever their source: a synthetic volume is digested as
generated), the classes, the split and holdout rules, which training sections are labelled
(``train.labelled``), and the tracked sections. Digests are of
the array bytes, streamed a few inlines at a time, so a memory-mapped F3 volume is hashed
without being loaded (about 2 s for F3's 1.1 GB).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from falsecli.data.dataset import Dataset, Section
from falsecli.data.volumes import blocks


def array_digest(array: np.ndarray) -> str:
    """sha256 of a volume's values (shape, dtype and bytes, C order), block by block."""
    h = hashlib.sha256(f"{array.dtype.str}{tuple(array.shape)}".encode())
    for _, block in blocks(array):
        h.update(np.ascontiguousarray(block).tobytes())
    return h.hexdigest()[:16]


def sections_digest(sections: Iterable[Section]) -> str:
    """sha256 of the tracked sections' names, splits and shapes, in order."""
    text = ";".join(f"{s.name}:{s.split}:{s.shape[0]}x{s.shape[1]}" for s in sections)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def data_fingerprint(ds: Dataset) -> dict[str, Any]:
    """The data a run learns from and is scored on."""
    volumes = {v.name: {"shape": list(v.seismic.shape), "seismic": array_digest(v.seismic),
                        "labels": None if v.labels is None else array_digest(v.labels)}
               for v in ds.volumes.values()}
    labelled = None if ds.labelled is None else hashlib.sha256(
        ";".join(sorted(ds.labelled)).encode()).hexdigest()[:16]
    return {"classes": list(ds.classes), "ignore_index": ds.ignore_index,
            "val_every": ds.val_every, "holdout": ds.holdout, "labelled": labelled,
            "volumes": volumes}


def run_fingerprint(ds: Dataset, tracked: list[Section], epochs: int) -> dict[str, Any]:
    """A training run's fingerprint: its data, its tracked sections and its length."""
    return {"data": data_fingerprint(ds), "tracked": sections_digest(tracked),
            "tracked_sections": len(tracked), "epochs": epochs}


def differences(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The key paths where two fingerprints differ, each as ``path a -> b`` (nested
    mappings are compared key by key, so the message names the volume or rule that
    differs)."""
    out = []
    for key in dict.fromkeys([*a, *b]):
        path = f"{prefix}{key}"
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += differences(va, vb, f"{path}.")
        elif va != vb:
            out.append(f"{path} {va} -> {vb}")
    return out
