"""SEG-Y reading and writing (falsecli.data.segy) and its errors through the real CLI."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import segyio

import make_data
import make_segy
from falsecli.core.errors import FalseCliError
from falsecli.data import segy


def files_args(seismic: Path, labels: Path, *extra: str) -> list[str]:
    return ["--set", "data.source=files", "--set", f"data.seismic={seismic}",
            "--set", f"data.labels={labels}", *extra]


def test_reads_the_f3_crop_like_segyio(f3_crop):
    vol = segy.read(f3_crop)
    assert vol.shape == (23, 18, 75) and vol.dtype == np.float32
    np.testing.assert_array_equal(vol, segyio.tools.cube(str(f3_crop)).astype(np.float32))


@pytest.mark.parametrize("case", sorted(make_segy.GOOD))
def test_reads_sorted_files_like_segyio(tmp_path, case):
    """IEEE, IBM-float and int16 samples; steps 1 and odd steps from a non-zero origin."""
    path = make_segy.GOOD[case](tmp_path / f"{case}.sgy")
    vol = segy.read(path)
    assert vol.dtype == np.float32
    np.testing.assert_array_equal(vol, make_segy.volume())
    np.testing.assert_array_equal(vol, segyio.tools.cube(str(path)))


@pytest.mark.parametrize("order, seed", [("inline", None), ("crossline", None), ("inline", 3)])
def test_any_trace_order_and_line_step(tmp_path, order, seed):
    vol = make_data.seismic((5, 4, 6))
    path = make_segy.cube(tmp_path / "v.sgy", vol, il0=1000, xl0=7, il_step=2, xl_step=5,
                          order=order, seed=seed)
    np.testing.assert_array_equal(segy.read(path), vol)


def test_custom_header_bytes(tmp_path):
    vol = make_data.seismic((3, 5, 4))
    path = make_segy.cube(tmp_path / "v.sgy", vol, iline=9, xline=21)
    np.testing.assert_array_equal(segy.read(path, iline=9, xline=21), vol)
    with pytest.raises(FalseCliError, match="byte 189 is 0 in every trace"):
        segy.read(path)


def test_labels_are_rounded_to_uint8(tmp_path):
    labels = make_data.banded_labels((4, 3, 12))
    noisy = labels + np.random.default_rng(1).uniform(-0.3, 0.3, labels.shape)
    path = make_segy.cube(tmp_path / "lab.sgy", noisy)
    out = segy.read_labels(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, labels)
    far = make_segy.cube(tmp_path / "seis.sgy", labels * 100.0 + 0.5)
    with pytest.raises(FalseCliError, match="not label ids 0..255"):
        segy.read_labels(far)


def test_write_is_standard_segy(tmp_path):
    vol = make_data.seismic((4, 6, 9))
    path = tmp_path / "out.sgy"
    segy.write(path, vol, iline=9, xline=21)
    with segyio.open(str(path)) as f:   # the standard bytes, segyio's own geometry
        assert list(f.ilines) == list(range(segy.FIRST_INLINE, segy.FIRST_INLINE + 4))
        assert list(f.xlines) == list(range(segy.FIRST_XLINE, segy.FIRST_XLINE + 6))
        assert f.bin[segyio.BinField.Format] == 5 and f.bin[segyio.BinField.Interval] == 4000
        assert list(f.samples) == [4.0 * k for k in range(9)]
        np.testing.assert_array_equal(segyio.tools.cube(f), vol)
        h = f.header[7]                  # inline index 1, crossline index 1
        assert h[9] == segy.FIRST_INLINE + 1 and h[21] == segy.FIRST_XLINE + 1
        assert h[segyio.TraceField.CDP_X] == segy.ORIGIN_X + segy.BIN_M
        assert h[segyio.TraceField.CDP_Y] == segy.ORIGIN_Y + segy.BIN_M
        assert h[segyio.TraceField.TRACE_SAMPLE_INTERVAL] == 4000
    np.testing.assert_array_equal(segy.read(path, iline=9, xline=21), vol)
    assert not list(tmp_path.glob(".*.tmp*"))   # atomic: no temporary left behind


def test_segy_seismic_through_cli(cli, tmp_path):
    seis = make_segy.regular(tmp_path / "v.sgy")
    labels = make_data.npy_pair(tmp_path, "v")[1]
    result = cli("inspect", "--json", *files_args(seis, labels))
    assert result.exit_code == 0, result.stderr
    assert '"shape": [\n        6,\n        7,\n        10\n      ]' in result.stdout


#: the error of each bad file of tests/make_segy.py, and of a path that does not exist
BAD_SEGY = {
    "empty": "empty file",
    "truncated": "truncated",
    "short_header": "shorter than the 3600-byte",
    "not_segy": "not a SEG-Y file",
    "unstructured": r"not a regular inline/crossline grid — 39 traces for 6 inlines x 7 "
                    r"crosslines \(3 missing\)",
    "duplicate_trace": "duplicate traces",
    "prestack": "prestack — 3 traces with offsets 100, 200, 300",
    "missing": "missing",
    "header_only": "holds the file header but no traces",
    "fixed_point": "sample format code 4 .* is not one segyio reads",
    "uneven_traces": "not a whole number of traces of 10 samples .* its traces differ in "
                     "length",
}


def test_every_bad_file_is_checked():
    assert sorted(BAD_SEGY) == sorted([*make_segy.BAD, "missing"])


@pytest.mark.parametrize("case", sorted(BAD_SEGY))
def test_bad_segy_is_one_line_naming_the_file(cli, tmp_path, case):
    message = BAD_SEGY[case]
    path = tmp_path / f"{case}.sgy"
    if case != "missing":
        make_segy.BAD[case](path)
    labels = make_data.npy_pair(tmp_path, "lab")[1]
    result = cli("inspect", *files_args(path, labels))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(path) in lines[0]
    assert re.search(message, lines[0]), lines[0]


@pytest.mark.parametrize("sets, message", [
    (["data.segy.iline=233"], "byte 233 is 0 in every trace, so it holds no iline numbers"),
    (["data.segy.iline=190"], "data.segy.iline=190 is not the first byte of a trace-header"),
    (["data.segy.xline=189"], "both byte 189"),
    (["data.segy.iline=181"], "not a regular inline/crossline grid"),   # CDP X: one per trace
])
def test_header_bytes_that_hold_no_inline_numbers(cli, tmp_path, sets, message):
    seis = make_segy.traces(
        tmp_path / "v.sgy", make_data.seismic((1, 6, 5))[0], [1, 1, 1, 2, 2, 2],
        [1, 2, 3, 1, 2, 3])
    with segyio.open(str(seis), "r+", ignore_geometry=True) as f:   # distinct CDP X per trace
        for t in range(f.tracecount):
            f.header[t] = {segyio.TraceField.CDP_X: 1000 + t}
    labels = make_data.npy_pair(tmp_path, "lab", shape=(2, 3, 5))[1]
    ok = cli("inspect", *files_args(seis, labels))
    assert ok.exit_code == 0, ok.stderr
    result = cli("inspect", *files_args(seis, labels, *(a for s in sets for a in ("--set", s))))
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
