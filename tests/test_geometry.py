"""Survey geometry: line numbers, samples and CDP coordinates read from SEG-Y headers, checked
against segyio's own reading and hand-computed values; the byte-pair hint; index geometry."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import segyio

import make_segy
from falsecli.core.errors import FalseCliError
from falsecli.data import geometry, segy, volumes
from falsecli.data.geometry import Geometry

F3_CROP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "f3-crop.sgy"
BYTES = {"iline": 189, "xline": 193, "cdp_x": 181, "cdp_y": 185, "coord_scalar": None,
         "domain": "time"}


def test_the_coordinate_scalar_rule_by_hand() -> None:
    values = np.array([6201972, 6201972, 6201972, 6201972])
    assert geometry.scale(values, np.array([-10, 10, 0, 1])).tolist() == [
        620197.2, 62019720.0, 6201972.0, 6201972.0]
    assert geometry.scale(np.array([123]), -1000).tolist() == [0.123]


def test_a_shuffled_survey_reads_like_segyio(tmp_path: Path) -> None:
    path = make_segy.surveyed(tmp_path / "s.sgy")
    vol = volumes.read_array(path, BYTES, lazy=True)
    g = volumes.survey_geometry(path, vol, BYTES)
    n_il, n_xl, n_z = make_segy.volume().shape
    assert g.ilines.tolist() == [1001 + 2 * i for i in range(n_il)]
    assert g.xlines.tolist() == [2001 + 3 * j for j in range(n_xl)]
    assert (g.sample_start, g.sample_interval, g.unit) == (8.0, 4.0, "ms")
    with segyio.open(path, ignore_geometry=True) as f:  # segyio: per trace, by hand
        assert np.allclose(g.samples, f.samples)
        x, y = f.attributes(181)[:], f.attributes(185)[:]
        il, xl = f.attributes(189)[:], f.attributes(193)[:]
    for t in range(0, len(il), 7):
        i, j = g.ilines.tolist().index(il[t]), g.xlines.tolist().index(xl[t])
        assert g.cdp_x[i, j] == pytest.approx(x[t] / 100) and g.cdp_y[i, j] == pytest.approx(
            y[t] / 100)
    assert g.cdp_x[0, 0] == 600000.25 and g.cdp_y[1, 0] == 6000000.5 + 25.0
    assert g.describe()["inline"] == {"first": 1001, "last": 1001 + 2 * (n_il - 1),
                                      "count": n_il, "step": 2}


def test_a_fixed_scalar_replaces_the_header_and_depth_reads_metres(tmp_path: Path) -> None:
    path = make_segy.surveyed(tmp_path / "s.sgy")
    vol = volumes.read_array(path, BYTES, lazy=True)
    g = volumes.survey_geometry(path, vol, {**BYTES, "coord_scalar": 10, "domain": "depth"})
    assert g.cdp_x[0, 0] == 600000250.0 and (g.unit, g.vertical) == ("m", "depth")


def test_wrong_bytes_name_the_pair_that_forms_a_grid(tmp_path: Path) -> None:
    path = make_segy.surveyed(tmp_path / "petrel.sgy", iline=5, xline=21)
    with pytest.raises(FalseCliError) as err:
        volumes.read_array(path, BYTES)
    text = str(err.value)
    assert "byte 189 is 0" in text and "data.segy.iline=5 xline=21 (Petrel)" in text
    assert "\n" not in text
    g = volumes.survey_geometry(path, volumes.read_array(path, {**BYTES, "iline": 5,
                                                                "xline": 21}, lazy=True),
                                {**BYTES, "iline": 5, "xline": 21})
    assert g.ilines[0] == 1001 and g.xlines[1] == 2004


def test_no_common_pair_says_so(tmp_path: Path) -> None:
    path = make_segy.unstructured(tmp_path / "u.sgy")
    with pytest.raises(FalseCliError, match="no common byte pair"):
        volumes.read_array(path, BYTES)


def test_index_geometry_and_section_numbers() -> None:
    g = Geometry.index((3, 4, 5))
    assert g.samples.tolist() == [0, 1, 2, 3, 4] and g.unit == "sample" and g.cdp_x is None
    survey = Geometry(np.array([111, 112]), np.array([875, 877, 879]), 4.0, 4.0, 3, "ms")
    assert survey.numbers("inline", 1) == {"inline": 112, "crossline": ""}
    assert survey.numbers("crossline", 2) == {"inline": "", "crossline": 879}
    frame = survey.frame("inline", 0)
    assert (frame.title, frame.x_label, frame.y_label) == ("inline 111", "crossline",
                                                          "time (ms)")
    assert (frame.x(2), frame.x(3), frame.y(2)) == ("879", "", "12")
    geoms = {"train": survey}
    assert geometry.section_numbers(geoms, "val", "inline", 0)["inline"] == 111
    assert geometry.section_numbers(geoms, "test1", "inline", 0) == {"inline": "",
                                                                     "crossline": ""}
    back = geometry.recorded({geometry.MANIFEST_KEY: geometry.record(geoms)})
    assert back["train"].xlines.tolist() == [875, 877, 879] and back["train"].sample_start == 4
    old = geometry.recorded({"fingerprint": {"data": {"volumes": {"train": {"shape": [2, 3,
                                                                                        4]}}}}})
    assert old["train"].ilines.tolist() == [0, 1] and old["train"].unit == "sample"


@pytest.mark.skipif(not F3_CROP.is_file(), reason=f"the real F3 crop is absent ({F3_CROP})")
def test_the_f3_crop_geometry() -> None:
    vol = volumes.read_array(F3_CROP, BYTES, lazy=True)
    g = volumes.survey_geometry(F3_CROP, vol, BYTES)
    assert g.ilines.tolist() == list(range(111, 134))
    assert g.xlines.tolist() == list(range(875, 893))
    assert (g.sample_start, g.sample_interval, g.n_samples) == (4.0, 4.0, 75)
    with segyio.open(F3_CROP) as f:  # segyio's inline-sorted geometry, by hand
        assert f.ilines.tolist() == g.ilines.tolist() and np.allclose(f.samples, g.samples)
        scalar = f.header[0][segyio.TraceField.SourceGroupScalar]
        assert scalar == -10
        x = f.attributes(181)[:].reshape(23, 18) / 10
        y = f.attributes(185)[:].reshape(23, 18) / 10
    assert np.array_equal(g.cdp_x, x) and np.array_equal(g.cdp_y, y)
    assert isinstance(segy.survey(F3_CROP), segy.Survey)


def test_zarr_missing_is_one_line(monkeypatch) -> None:
    from falsecli.data.zarrstore import require_zarr

    monkeypatch.setitem(sys.modules, "zarr", None)  # import zarr raises ImportError
    with pytest.raises(FalseCliError, match=r"pip install 'falsecli\[zarr\]'"):
        require_zarr()


def test_a_label_issue_region_in_survey_numbers() -> None:
    """label_issues.csv: the section's own line and the span of lines it covers, by hand."""
    from falsecli.method.history import TrackedSection
    from falsecli.stages.datamaps import section_position

    g = Geometry(1001 + 2 * np.arange(4), 2001 + 3 * np.arange(8), 4.0, 4.0, 10, "ms")
    inline = TrackedSection("inline_0002", "val", "inline", 2, (10, 8), 0)
    crossline = TrackedSection("crossline_0005", "val", "crossline", 5, (10, 4), 0)
    assert section_position(inline, (3, 5), g) == ("1005", "2010-2016")
    assert section_position(crossline, (1, 1), g) == ("1003", "2016")
    assert section_position(inline, (3, 5)) == ("2", "3-5")  # no geometry: indices


def test_a_cdp_byte_inside_a_field_names_the_standard_one(tmp_path: Path) -> None:
    path = make_segy.surveyed(tmp_path / "s.sgy")
    vol = volumes.read_array(path, BYTES, lazy=True)
    with pytest.raises(FalseCliError, match=r"data.segy.cdp_y=186 .* \(SEG-Y rev 1: 185\)"):
        volumes.survey_geometry(path, vol, {**BYTES, "cdp_y": 186})
