"""Layered configuration: packaged defaults < YAML file < ``--set key=value`` < explicit flags.

The defaults file is the schema: a key that is not in it does not exist, and a value must have
the type of its default (with the few exceptions listed below). Errors name the key and the
closest valid one, because a typo in a 60-epoch run should fail before the first epoch.
"""

from __future__ import annotations

import copy
import difflib
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from falsecli.core.errors import FalseCliError

Config = dict[str, Any]

#: keys whose value must be one of these
CHOICES: dict[str, tuple[Any, ...]] = {
    "data.source": ("synthetic", "f3", "files"),
    "model.output_stride": (8, 16),
    "train.aug": ("none", "flip", "rotate"),
    "heatmap.never_learned": ("zero", "max"),
    "rank.by": ("forgetting", "switch"),
}
#: keys whose default is null, with the type they take when set
NULLABLE: dict[str, type] = {
    "data.root": str,
    "data.seismic": str,
    "data.labels": str,
    "heatmap.epochs": int,
    "retrain.epochs": int,
}
#: keys that accept a class name or a class id
CLASS_KEYS = ("rank.class", "transfer.class")
#: the fields of one entry of data.test
TEST_ENTRY_KEYS = ("name", "seismic", "labels")


def load_defaults() -> Config:
    """The packaged defaults (a fresh copy: callers may mutate it)."""
    text = resources.files("falsecli").joinpath("defaults.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _leaf_keys(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        keys.append(path)
        if isinstance(value, dict):
            keys.extend(_leaf_keys(value, path + "."))
    return keys


def _unknown_key(path: str, valid: Iterable[str]) -> FalseCliError:
    valid = list(valid)
    close = difflib.get_close_matches(path, valid, n=1, cutoff=0.5)
    if not close:  # a right leaf name under the wrong section: compare last components
        tail = path.rsplit(".", 1)[-1]
        close = [k for k in valid if k.rsplit(".", 1)[-1] == tail][:1]
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return FalseCliError(f"unknown config key '{path}'{hint} (see example.yaml for every key)")


def _type_name(value: Any) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _check_value(path: str, default: Any, value: Any) -> Any:
    """Return ``value`` converted to the type of ``default``, or raise naming the key."""
    if path in CHOICES:
        if value not in CHOICES[path]:
            allowed = " | ".join(str(c) for c in CHOICES[path])
            raise FalseCliError(f"config key '{path}' is {value!r}; it must be one of {allowed}")
        return value
    if path in CLASS_KEYS:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise FalseCliError(f"config key '{path}' must be a class name or id, not {value!r}")
        return value
    if path == "data.test":
        return _check_test_entries(value)
    if value is None:
        if path in NULLABLE:
            return None
        raise FalseCliError(f"config key '{path}' cannot be null; it must be {_type_name(default)}")
    expected = NULLABLE.get(path, type(default))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, bool) or not isinstance(value, expected):
        raise FalseCliError(
            f"config key '{path}' is {value!r}; it must be {_type_name(expected())}"
        )
    if isinstance(value, list) and default:
        return [_check_value(f"{path}[{i}]", default[0], item) for i, item in enumerate(value)]
    return value


def _check_test_entries(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise FalseCliError("config key 'data.test' must be a list of {name, seismic, labels}")
    for i, entry in enumerate(value):
        if not isinstance(entry, dict) or set(entry) != set(TEST_ENTRY_KEYS):
            raise FalseCliError(
                f"config key 'data.test[{i}]' must have exactly the keys name, seismic, labels"
            )
    return value


def merge(base: Config, override: Mapping[str, Any], prefix: str = "") -> Config:
    """Deep-merge ``override`` into a copy of ``base``, validating every key and value."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        path = f"{prefix}{key}"
        if key not in base:
            raise _unknown_key(path, _leaf_keys(base, prefix))
        default = base[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise FalseCliError(f"config key '{path}' must be a mapping of sub-keys")
            out[key] = merge(default, value, path + ".")
        else:
            out[key] = _check_value(path, default, value)
    return out


def nest(path: str, value: Any) -> dict[str, Any]:
    """``nest("train.lr", 1e-3)`` -> ``{"train": {"lr": 1e-3}}``."""
    tree: Any = value
    for part in reversed(path.split(".")):
        tree = {part: tree}
    return tree


def parse_set(item: str) -> tuple[str, Any]:
    """Parse one ``--set key.path=value``; the value is YAML (so ``[16,24,32]`` is a list)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise FalseCliError(f"--set '{item}' must look like key.path=value, e.g. train.epochs=5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise FalseCliError(f"--set '{item}': the value is not valid YAML ({exc.problem})") from exc
    return key.strip(), value


def load_file(path: Path) -> dict[str, Any]:
    """Read a YAML config file (safe_load only), refusing anything but a mapping."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise FalseCliError(f"config file {path}: cannot read it ({exc.strerror})") from exc
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FalseCliError(f"config file {path}: not valid YAML ({exc})") from exc
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise FalseCliError(f"config file {path}: the top level must be a mapping of sections")
    return tree


def resolve(
    config_file: Path | None = None,
    sets: Iterable[str] = (),
    flags: Mapping[str, Any] | None = None,
    base: Config | None = None,
) -> Config:
    """Build the resolved config. ``flags`` maps dotted keys to explicit CLI values (None = unset)."""
    cfg = load_defaults() if base is None else base
    if config_file is not None:
        try:
            cfg = merge(cfg, load_file(config_file))
        except FalseCliError as exc:
            raise FalseCliError(f"{config_file}: {exc}") from None
    for item in sets:
        key, value = parse_set(item)
        cfg = merge(cfg, nest(key, value))
    for key, value in (flags or {}).items():
        if value is not None:
            cfg = merge(cfg, nest(key, value))
    return cfg


#: train keys that change where, how fast or how long a run goes, not what it learns: a run
#: may resume with other values of these
RESUMABLE = ("epochs", "device", "amp", "compile", "eval_batch_size")


def run_signature(cfg: Config) -> dict[str, Any]:
    """What determines a training run apart from its length: data, model, training recipe."""
    train = {k: v for k, v in cfg["train"].items() if k not in RESUMABLE}
    return {"data": cfg["data"], "model": cfg["model"], "train": train}


def get(cfg: Config, path: str) -> Any:
    """``get(cfg, "train.epochs")``."""
    node: Any = cfg
    for part in path.split("."):
        node = node[part]
    return node


def class_id(cfg: Config, value: str | int) -> int:
    """Resolve a class name or id against ``data.classes``; unknown ones list the valid names."""
    classes: list[str] = cfg["data"]["classes"]
    if isinstance(value, int) and 0 <= value < len(classes):
        return value
    if isinstance(value, str):
        if value in classes:
            return classes.index(value)
        if value.isdigit() and int(value) < len(classes):
            return int(value)
    valid = ", ".join(f"{i}={name}" for i, name in enumerate(classes))
    raise FalseCliError(f"unknown class {value!r}; the classes are {valid}")
