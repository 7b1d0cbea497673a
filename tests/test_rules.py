"""The config rules table: one rule per key, ranges and choices checked while resolving."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest

from falsecli.cli.options import Key
from falsecli.core import config, rules
from falsecli.core.errors import FalseCliError

DEFAULTS = config.load_defaults()


def leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted leaf key -> default value (sections are not leaves)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= leaves(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


LEAVES = leaves(DEFAULTS)
EXAMPLE = (Path(__file__).resolve().parents[1] / "example.yaml").read_text()


def refused(key: str, value: Any) -> str:
    """The one-line error of setting ``key`` to ``value`` (fails the test if it is accepted)."""
    with pytest.raises(FalseCliError) as info:
        config.merge(DEFAULTS, config.nest(key, value))
    text = str(info.value)
    assert "\n" not in text
    return text


def accepted(key: str, value: Any) -> Any:
    return config.get(config.merge(DEFAULTS, config.nest(key, value)), key)


def test_every_key_has_exactly_one_rule() -> None:
    assert sorted(config.RULES) == sorted(LEAVES)


@pytest.mark.parametrize("key", sorted(LEAVES))
def test_every_default_obeys_its_rule(key: str) -> None:
    assert config.check(key, LEAVES[key]) == LEAVES[key]


def _bounded() -> list[tuple[str, str, float]]:
    """(key, op, bound) for every bound of every scalar rule."""
    return [(key, op, bound) for key, rule in config.RULES.items()
            for op, bound in (("ge", rule.ge), ("gt", rule.gt), ("le", rule.le))
            if bound is not None]


@pytest.mark.parametrize("key, op, bound", _bounded())
def test_bounds_reject_outside_and_accept_the_boundary(key: str, op: str, bound: float) -> None:
    rule = config.RULES[key]
    step = 1 if int in rule.kinds else 0.5
    inside, outside = {"ge": (bound, bound - step), "gt": (bound + step, bound),
                       "le": (bound, bound + step)}[op]
    assert accepted(key, inside) == inside
    sign = {"ge": ">=", "gt": ">", "le": "<="}[op]
    error = refused(key, outside)
    assert f"config key '{key}' is {outside!r}; it must be " in error
    assert f"{sign} {bound}" in error


# the checks that stages made at run time before the rules table, and the brief's new ones
@pytest.mark.parametrize("key, value, must", [
    ("transfer.iterations", 0, ">= 1"),
    ("transfer.eval_sections", 0, ">= 1"),
    ("transfer.lr", 0, "> 0"),
    ("transfer.crop", [128], "a list of 2 items"),
    ("transfer.crop", [0, 128], ">= 1"),
    ("transfer.l1_weight", -1.0, ">= 0"),
    ("train.batch_size", 1, ">= 2 (ASPP"),
    ("train.epochs", 0, ">= 1"),
    ("train.eval_batch_size", 0, ">= 1"),
    ("train.limit_batches", -1, ">= 0"),
    ("train.lr", 0.0, "> 0"),
    ("train.lr", float("nan"), "> 0"),
    ("train.weight_decay", -0.1, ">= 0"),
    ("train.rotate_degrees", -1, ">= 0"),
    ("train.track", [], "a list of at least 1 item"),
    ("train.device", "gpu", "one of auto | cpu | cuda | cuda:N"),
    ("report.sections", 0, ">= 1"),
    ("report.region_events", 0, ">= 1"),
    ("data.val_every", 1, ">= 2"),
    ("data.ignore_index", 256, ">= 0 and <= 255"),
    ("data.classes", [], "a list of 1 to 255 items"),
    ("data.classes", ["a", "b", "a"], "a list of distinct items"),
    ("data.synthetic.shape", [16, 24], "a list of 3 items"),
    ("data.synthetic.shape", [16, 0, 32], ">= 1"),
    ("data.synthetic.noise", -0.1, ">= 0"),
    ("model.output_stride", 12, "one of 8 | 16"),
    ("heatmap.epochs", 0, ">= 1"),
    ("heatmap.run", "retrain/mixup/seed0", "train or retrain/<aug>/seed<k>"),
    ("rank.min_pixels", -1, ">= 0"),
    ("rank.class", 1.5, "a string or an integer"),
    ("retrain.epochs", 0, ">= 1"),
    ("retrain.seeds", [0, -1], ">= 0"),
    ("retrain.seeds", [1, 1], "a list of distinct items"),
    ("data.test", [{"name": "t1", "seismic": "a.npy"}], "exactly the keys name, seismic, labels"),
    ("data.test", [{"name": "val", "seismic": "a.npy", "labels": None}], "other than train or val"),
    ("data.test", [{"name": "t1", "seismic": 3, "labels": None}], "a string"),
])
def test_out_of_range_values_are_refused(key: str, value: Any, must: str) -> None:
    error = refused(key, value)
    assert f"config key '{key}" in error and must in error and "it must be" in error


def test_list_items_obey_their_choices() -> None:
    error = refused("retrain.augs", ["flip", "bogus"])
    assert error == ("config key 'retrain.augs[1]' is 'bogus'; it must be one of "
                     "none | flip | rotate | transfer | transfer-identity")
    assert accepted("retrain.augs", ["transfer", "none"]) == ["transfer", "none"]
    assert accepted("retrain.augs", ["transfer-identity"]) == ["transfer-identity"]
    assert accepted("heatmap.run", "retrain/transfer-identity/seed3") == (
        "retrain/transfer-identity/seed3")
    assert accepted("retrain.augs", []) == []


def test_set_is_checked_on_resolve() -> None:
    with pytest.raises(FalseCliError, match=r"'retrain\.augs\[0\]' is 'bogus'"):
        config.resolve(sets=["retrain.augs=[bogus]"])


@pytest.mark.parametrize("key, value", [
    ("heatmap.epochs", None), ("retrain.epochs", None), ("data.root", None),
    ("train.device", "cuda:1"), ("heatmap.run", "retrain/transfer/seed3"),
    ("rank.class", 4), ("rank.class", "zechstein"), ("train.lr", 1),
    ("data.test", [{"name": "t1", "seismic": "t1.sgy", "labels": None}]),
])
def test_valid_values_are_accepted(key: str, value: Any) -> None:
    assert accepted(key, value) == value


@pytest.mark.parametrize("key", ["train.aug", "retrain.augs", "heatmap.never_learned",
                                 "rank.by", "model.output_stride", "train.epochs"])
def test_a_key_flag_is_the_rule_and_the_defaults_line(key: str) -> None:
    """A flag that sets a key takes its choices from the rule, its default and help from
    defaults.yaml: a new key needs no other place to be described."""
    option = typing.get_args(Key(key).parameter().annotation)[1]
    rule = config.RULES[key]
    choices = "|".join(str(c) for c in (rule.items or rule).choices)
    assert option.metavar == (f"{choices or 'N'},..." if rule.items else choices or "N")
    section, leaf = key.split(".")
    lines = EXAMPLE.splitlines()
    line = next(line for line in lines[lines.index(f"{section}:"):]
                if line.startswith(f"  {leaf}:"))
    assert line.split("# ", 1)[1] in option.help
    assert f"[default: {json.dumps(LEAVES[key])} ({key})]" in option.help.replace("\\[", "[")
    assert config.choices("retrain.augs") == rules.AUGS


def test_exponent_notation_is_a_number() -> None:
    """PyYAML reads ``1e-4`` (no dot) as a string; a float key still takes it as a number."""
    cfg = config.resolve(sets=["train.lr=1e-4", "transfer.lr=2E+3"])
    assert cfg["train"]["lr"] == 1e-4 and cfg["transfer"]["lr"] == 2000.0
    assert "is -0.0001; it must be > 0" in refused("train.lr", "-1e-4")
    assert "it must be a number" in refused("train.lr", "1e")
