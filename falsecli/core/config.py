"""Layered configuration: packaged defaults < YAML file < ``--set key=value`` < explicit flags.

The defaults file names the keys: a key that is not in it does not exist; the rules table
(:data:`falsecli.core.rules.RULES`) says what each key accepts. Every value is checked while
the config is resolved, and errors name the key, the value and what it must be (or the
closest valid key), because a typo in a 60-epoch run should fail before the first epoch, not
in its fourth stage.
"""

from __future__ import annotations

import copy
import operator
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from falsecli.core import layout
from falsecli.core.errors import FalseCliError, did_you_mean
from falsecli.core.files import write_text
from falsecli.core.rules import RULES, Rule

Config = dict[str, Any]
#: the resolved config of a stage, beside its manifest: rerun it with ``-c <stage>/config.yaml``
CONFIG_YAML = "config.yaml"


def choices(key: str) -> tuple[Any, ...]:
    """The values ``key``, or each item of the list ``key``, may take (the CLI's enums)."""
    rule = RULES[key]
    return (rule.items or rule).choices


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
    hint = did_you_mean(path, valid)
    if not hint:  # a right leaf name under the wrong section: compare last components
        tail = path.rsplit(".", 1)[-1]
        hint = did_you_mean(tail, [k for k in valid if k.rsplit(".", 1)[-1] == tail][:1])
    return FalseCliError(f"unknown config key '{path}'{hint} (see example.yaml for every key)")


#: exponent notation without a dot or an exponent sign, which YAML 1.1 (PyYAML) reads as a
#: string: ``lr: 1e-4`` must still be a number
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")

_TYPE_NAMES = {bool: "true/false", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "a mapping"}


def _has_kind(value: Any, kinds: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds) or (isinstance(value, int) and float in kinds)


#: the bounds of a Rule, in its field order; NaN satisfies none of them
_BOUNDS = {">=": operator.ge, ">": operator.gt, "<=": operator.le}


def _bounds(rule: Rule) -> list[tuple[str, float]]:
    return [(op, bound) for op, bound in zip(_BOUNDS, (rule.ge, rule.gt, rule.le))
            if bound is not None]


def _items_text(length: tuple[int, int | None]) -> str:
    least, most = length
    if least == most:
        return f"{least} item{'s' * (least != 1)}"
    if most is None:
        return f"at least {least} item{'s' * (least != 1)}"
    return f"{least} to {most} items"


def check(path: str, value: Any, rule: Rule | None = None, *, workdir: Path | None = None
          ) -> Any:
    """``value`` if the rule of ``path`` accepts it (ints made floats where floats are due,
    run names without a trailing slash); otherwise a one-line error naming the key, the value
    and what it must be (a run name: the closest run in ``workdir``)."""
    rule = RULES[path] if rule is None else rule
    why = f" ({rule.why})" if rule.why else ""

    def error(must: str) -> FalseCliError:
        return FalseCliError(f"config key '{path}' is {value!r}; it must be {must}{why}")

    kinds = rule.kinds
    kind_text = " or ".join(_TYPE_NAMES[k] for k in kinds)
    if float in kinds and isinstance(value, str) and _EXPONENT.fullmatch(value):
        value = float(value)
    if value is None:
        if rule.nullable:
            return None
        raise FalseCliError(f"config key '{path}' cannot be null; it must be {kind_text}{why}")
    if not _has_kind(value, kinds):
        raise error(kind_text)
    if rule.choices and value not in rule.choices:
        raise error("one of " + " | ".join(str(c) for c in rule.choices))
    if rule.form and not re.fullmatch(rule.form[0], value):
        raise error(rule.form[1])
    if rule.run:
        return layout.parse_run(value, f"config key '{path}'", workdir).name
    bounds = _bounds(rule)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not all(_BOUNDS[op](value, bound) for op, bound in bounds):
            raise error(" and ".join(f"{op} {bound}" for op, bound in bounds))
        return float(value) if kinds == (float,) else value
    if isinstance(value, list):
        least, most = rule.length
        if len(value) < least or (most is not None and len(value) > most):
            raise error(f"a list of {_items_text(rule.length)}")
        items = value if rule.items is None else [
            check(f"{path}[{i}]", item, rule.items) for i, item in enumerate(value)]
        if rule.distinct and len(set(items)) < len(items):
            raise error("a list of distinct items")
        return items
    if isinstance(value, dict) and rule.fields:
        keys = [key for key, _ in rule.fields]
        if set(value) != set(keys):
            raise error(f"a mapping with exactly the keys {', '.join(keys)}")
        return {key: check(f"{path}.{key}", value[key], sub) for key, sub in rule.fields}
    return value


def merge(base: Config, override: Mapping[str, Any], prefix: str = "", *,
          workdir: Path | None = None) -> Config:
    """Deep-merge ``override`` into a copy of ``base``, validating every key and value (run
    names against the runs of ``workdir``)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        path = f"{prefix}{key}"
        if key not in base:
            raise _unknown_key(path, _leaf_keys(base, prefix))
        default = base[key]
        if isinstance(default, dict) and path not in RULES:  # a section, not a mapping value
            if not isinstance(value, dict):
                raise FalseCliError(f"config key '{path}' must be a mapping of sub-keys")
            out[key] = merge(default, value, path + ".", workdir=workdir)
        else:
            out[key] = check(path, value, workdir=workdir)
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


def _yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """``FILE:LINE:COL: problem`` (1-based, as editors count), on one line."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    return f"{where}: {problem}" + (f" ({context})" if context else "") + " — not valid YAML"


def load_file(path: Path) -> dict[str, Any]:
    """Read a YAML config file (safe_load only), refusing anything but a mapping."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise FalseCliError(f"config file {path}: cannot read it ({reason})") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FalseCliError(_yaml_error(path, exc)) from None
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
    workdir: Path | None = None,
) -> Config:
    """Build the resolved config. ``flags`` maps dotted keys to explicit CLI values (None =
    unset); a mistyped run name is compared with the runs of ``workdir``."""
    cfg = load_defaults() if base is None else base
    if config_file is not None:
        tree = load_file(config_file)  # its errors name the file already
        try:
            cfg = merge(cfg, tree, workdir=workdir)
        except FalseCliError as exc:
            raise FalseCliError(f"{config_file}: {exc}") from None
    for item in sets:
        key, value = parse_set(item)
        cfg = merge(cfg, nest(key, value), workdir=workdir)
    for key, value in (flags or {}).items():
        if value is not None:
            cfg = merge(cfg, nest(key, value), workdir=workdir)
    return cfg


#: the sections that make a workdir's results what they are: its data and its network
FIXED = ("data", "model")


def refuse_other_results(old: Config, new: Config, where: str) -> None:
    """Refuse ``new`` when its data or model differ from ``old``'s, the settings of
    ``where``: results made from other data or another network must not mix in one place."""
    for section in FIXED:
        for key in _leaf_keys(old[section], f"{section}."):
            before, after = get(old, key), get(new, key)
            if before != after and not isinstance(before, dict):
                raise FalseCliError(
                    f"'{key}' is {before!r} in {where}, not {after!r} — use a new workdir "
                    "(-w DIR) or retrain this one with 'falsecli train --force'")


#: train keys that change where, how fast or how long a run goes, or what it keeps, not what it
#: learns: a run may resume with other values of these
RESUMABLE = ("epochs", "device", "amp", "compile", "eval_batch_size", "keep_every",
             "checkpoint_every")


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
    raise FalseCliError(f"unknown class {value!r}{did_you_mean(str(value), classes)} "
                        f"(the classes are {valid})")


def write_config(path: Path, cfg: Mapping[str, Any]) -> None:
    """A resolved config as YAML that ``-c`` reads back as the very same config."""
    write_text(path, yaml.safe_dump(dict(cfg), sort_keys=False, default_flow_style=None))


def remembered_config(workdir: Path) -> Path:
    """``<workdir>/config.yaml``: the settings of the workdir, written when its first stage
    completes (and by every training of ``train/``); later commands there start from them."""
    return Path(workdir) / CONFIG_YAML


def remember_config(workdir: Path, cfg: Mapping[str, Any], *, replace: bool = False) -> None:
    """Write the workdir's settings unless it has them already (or ``replace``)."""
    path = remembered_config(workdir)
    if replace or not path.is_file():
        write_config(path, cfg)
