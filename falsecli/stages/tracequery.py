"""What both methods of ``falsecli trace`` share: the query (a tracked section and a region of
it), the training sections that may be scored, and the names of the files both write into
``trace/<section>/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from falsecli.core.config import Config, class_id
from falsecli.core.errors import FalseCliError
from falsecli.data.volumes import read_npy

QUERY_JSON = "query.json"
PROPONENTS_PNG = "proponents.png"
OPPONENTS_PNG = "opponents.png"
EPOCHS_PNG = "epochs.png"


def section_name(opts: dict[str, Any]) -> str:
    """``trace.section``, which must be given."""
    if not opts["section"]:
        raise FalseCliError("trace: which tracked section? give --section, e.g. "
                            "--section inline_0005")
    return opts["section"]


def query_region(cfg: Config, run_cfg: Config, labels: np.ndarray) -> tuple[np.ndarray, str]:
    """The region (bool, the section's shape) of ``cfg``'s ``trace.class`` (a class of the
    run's data, ``run_cfg``) or ``trace.mask``, else every pixel; and a few words naming it."""
    opts = cfg["trace"]
    if opts["class"] is not None and opts["mask"] is not None:
        raise FalseCliError("trace: give --class or --mask, not both")
    if opts["class"] is not None:
        cid = class_id(run_cfg, opts["class"])
        return labels == cid, f"class {run_cfg['data']['classes'][cid]}"
    if opts["mask"] is None:
        return np.ones(labels.shape, bool), "every labelled pixel"
    path = Path(opts["mask"])
    mask = np.asarray(read_npy(path, "--mask"))
    if not (mask.dtype == bool or np.issubdtype(mask.dtype, np.integer)
            or np.issubdtype(mask.dtype, np.floating)):
        raise FalseCliError(f"--mask {path}: dtype {mask.dtype}, not a mask; save a bool "
                            "array, e.g. np.save(path, events >= 2)")
    if mask.shape != labels.shape:
        raise FalseCliError(f"--mask {path}: shape {list(mask.shape)}, but section "
                            f"{opts['section']} is {list(labels.shape)} (depth, width)")
    if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
        raise FalseCliError(f"--mask {path}: values other than 0/1 ({mask.dtype}); save a bool "
                            "array, e.g. np.save(path, events >= 2)")
    return mask.astype(bool), f"mask {path.name}"


def trained_on(ds: Any) -> list[Any]:
    """The training sections whose labels the run trained on (not the pool of an
    active-learning run, nor unlabelled ones), in the split's order."""
    from falsecli.method.training import pool_sections

    trained = {s.name for secs in pool_sections(ds).values() for s in secs}
    return [s for s in ds.sections("train") if s.name in trained]


def tracked_section(ds: Any, run_cfg: Config, run: str, name: str) -> Any:
    """The tracked section ``name`` of the run's data, or one line naming a few valid ones."""
    tracked = {s.name: s for s in ds.tracked(run_cfg["train"]["track"])}
    if name not in tracked:
        some = ", ".join(list(tracked)[:4])
        raise FalseCliError(f"trace: {name} is not a tracked section of {run} (e.g. {some})")
    return tracked[name]
