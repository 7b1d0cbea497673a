"""Config layering, validation and 'did you mean' errors."""

from pathlib import Path

import pytest
import yaml

from falsecli.core import config, manifest
from falsecli.core.errors import FalseCliError
from falsecli.core.swap import stage_run

ROOT = Path(__file__).resolve().parents[1]


def test_example_yaml_is_the_packaged_defaults() -> None:
    # example.yaml documents every key: it is the defaults file, byte for byte
    packaged = (ROOT / "falsecli" / "defaults.yaml").read_text()
    assert (ROOT / "example.yaml").read_text() == packaged


def test_every_key_has_a_comment() -> None:
    for line in (ROOT / "example.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":"):
            assert "#" in line, f"undocumented key: {line}"


def test_layers_in_order(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"train": {"epochs": 7, "lr": 0.5}}))
    cfg = config.resolve(f, ["train.epochs=9", "data.synthetic.shape=[16, 24, 32]"],
                         {"train.epochs": 11, "train.batch_size": None})
    assert cfg["train"]["epochs"] == 11  # flag beats --set beats file
    assert cfg["train"]["lr"] == 0.5  # file beats defaults
    assert cfg["data"]["synthetic"]["shape"] == [16, 24, 32]
    assert cfg["train"]["batch_size"] == config.load_defaults()["train"]["batch_size"]


def test_int_is_accepted_for_float_and_null_for_nullable() -> None:
    cfg = config.resolve(sets=["train.lr=1", "heatmap.epochs=null", "heatmap.epochs=5"])
    assert cfg["train"]["lr"] == 1.0 and isinstance(cfg["train"]["lr"], float)
    assert cfg["heatmap"]["epochs"] == 5


@pytest.mark.parametrize(
    "item, fragment",
    [
        ("train.epoch=3", "did you mean 'train.epochs'"),
        ("trian.epochs=3", "did you mean 'train'"),
        ("data.synthetic.shap=[1,2,3]", "did you mean 'data.synthetic.shape'"),
        ("train.epochs=ten", "'train.epochs' is 'ten'; it must be an integer"),
        ("train.epochs=true", "must be an integer"),
        ("train.amp=1", "must be true/false"),
        ("data.synthetic.shape=[16,x,32]", "'data.synthetic.shape[1]'"),
        ("train.aug=mixup", "one of none | flip | rotate"),
        ("train.epochs", "must look like key.path=value"),
        ("train.epochs=null", "cannot be null"),
        ("data.test=[{name: t}]", "exactly the keys name, seismic, labels"),
    ],
)
def test_bad_values_name_the_key(item: str, fragment: str) -> None:
    with pytest.raises(FalseCliError, match=None) as info:
        config.resolve(sets=[item])
    assert fragment in str(info.value)


def test_bad_key_in_file_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epoks: 3\n")
    with pytest.raises(FalseCliError) as info:
        config.resolve(f)
    assert str(f) in str(info.value) and "train.epochs" in str(info.value)


def test_file_must_be_a_mapping(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("- 1\n- 2\n")
    with pytest.raises(FalseCliError, match="top level must be a mapping"):
        config.resolve(f)


def test_class_id() -> None:
    cfg = config.load_defaults()
    assert config.class_id(cfg, "scruff") == 4
    assert config.class_id(cfg, "5") == 5
    assert config.class_id(cfg, 0) == 0
    with pytest.raises(FalseCliError, match="4=scruff"):
        config.class_id(cfg, "salt")


def test_each_stage_writes_its_config_yaml_before_the_manifest(tmp_path: Path,
                                                               monkeypatch) -> None:
    """config.yaml beside manifest.json reads back, through -c, as the very same config."""
    cfg = config.resolve(sets=["train.lr=1e-4", "heatmap.epochs=5", "rank.class=4",
                               "data.classes=['yes','null','007',a,b,c]",
                               "data.test=[{name: t1, seismic: s.sgy, labels: null}]"])
    written = manifest.write_json

    def manifest_last(path: Path, obj: object) -> None:
        assert path.name != manifest.MANIFEST or (path.parent / config.CONFIG_YAML).is_file()
        written(path, obj)

    monkeypatch.setattr(manifest, "write_json", manifest_last)
    with stage_run(tmp_path, "rank", cfg) as run:
        assert config.CONFIG_YAML in run.outputs  # listed by summaries built before finish
    path = run.path / config.CONFIG_YAML
    assert config.CONFIG_YAML in manifest.Stage(tmp_path, "rank").manifest()["outputs"]
    assert config.load_file(path) == cfg
    assert config.resolve(path) == cfg
