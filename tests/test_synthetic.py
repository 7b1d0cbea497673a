"""The synthetic F3-like generator: determinism, F3's units, thin classes, faults."""

from __future__ import annotations

import numpy as np
import pytest

from falsecli.data import synthetic
from falsecli.data.synthetic import FRACTIONS, generate

TINY, TINY_TEST = (16, 24, 32), (8, 24, 32)


def test_deterministic_and_seeded():
    a, b = generate(TINY, 3), generate(TINY, 3)
    for name in ("seismic", "labels", "impedance", "shift"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.labels, generate(TINY, 4).labels)
    test = generate(TINY, 3, stream=synthetic.TEST_STREAM)
    assert not np.array_equal(a.labels, test.labels)         # test1 is another draw
    assert a.seismic.dtype == np.float32 and a.labels.dtype == np.uint8
    assert np.abs(a.seismic).max() == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("shape", [TINY, TINY_TEST])
def test_every_class_present_and_thin_units_two_samples_thick(shape, seed):
    for stream in (synthetic.TRAIN_STREAM, synthetic.TEST_STREAM):
        vol = generate(shape, seed, stream=stream)
        assert np.all(np.bincount(vol.labels.ravel(), minlength=6)[:6] > 0)
        assert vol.labels.max() == 5
        # units in F3's order in every trace: labels never decrease with depth
        assert np.all(np.diff(vol.labels.astype(np.int8), axis=-1) >= 0)
        # before faulting, every trace has the four upper units; the top of the salt dips
        # out of the volume's base in places, but wherever scruff lies whole in the volume
        # (salt below it) it is >= 2 samples thick
        flat = generate(shape, seed, stream=stream, faults=False).labels
        thickness = np.stack([(flat == k).sum(-1) for k in range(6)])
        assert np.all(thickness[:4] >= 1)
        salt = thickness[5] > 0
        assert salt.any() and not salt.all()
        assert thickness[4][salt].min() >= 2


def _shares(labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels.ravel(), minlength=6) / labels.size


@pytest.mark.parametrize("shape, test_shape, seeds", [
    ((101, 161, 128), (41, 161, 128), (0,)),             # the default volumes
    ((64, 64, 96), (24, 64, 96), (0, 1)),                # a study-sized volume
    ((48, 48, 80), (16, 48, 80), range(5)),              # the demo's volumes
])
def test_every_class_within_25_percent_of_f3_share(shape, test_shape, seeds):
    for seed in seeds:
        for size, stream in ((shape, synthetic.TRAIN_STREAM), (test_shape, synthetic.TEST_STREAM)):
            shares = _shares(generate(size, seed, stream=stream).labels)
            np.testing.assert_allclose(shares, FRACTIONS, rtol=0.25,
                                       err_msg=f"shape {size}, seed {seed}")


def test_faults_displace_labels_and_impedance_together():
    for seed in range(4):
        faulted = generate(TINY, seed)
        flat = generate(TINY, seed, faults=False)
        shift = faulted.shift.astype(int)
        assert shift.max() > 0 and shift.min() == 0          # hanging wall and footwall
        assert np.all(np.diff(shift, axis=-1) <= 0)         # the plane: hanging wall on top
        assert (faulted.labels != flat.labels).any()
        z = np.arange(TINY[2])[None, None, :] - shift       # restored depth
        inside = z >= 0
        src = np.where(inside, z, 0)
        for name in ("labels", "impedance"):
            moved = np.take_along_axis(getattr(flat, name), src, axis=-1)
            np.testing.assert_array_equal(getattr(faulted, name)[inside], moved[inside])
        # and the throw is the same for every unit boundary it crosses: each horizon of the
        # hanging wall is the unfaulted horizon moved down by exactly the throw
        tops_f = (faulted.labels[..., None] < np.arange(1, 6)).sum(axis=2)
        tops_u = (flat.labels[..., None] < np.arange(1, 6)).sum(axis=2)
        deep = shift[..., -1]                               # throw at the bottom of the trace
        whole = (shift[..., 0] == deep) & (tops_f < TINY[2]).all(-1)
        assert (whole & (deep > 0)).any()
        np.testing.assert_array_equal((tops_f - tops_u)[whole],
                                      np.repeat(deep[whole][:, None], 5, axis=1))


def test_seismic_is_band_limited_reflectivity():
    vol = generate((8, 8, 256), 0, noise=0.0)
    spectrum = np.abs(np.fft.rfft(vol.seismic, axis=-1)).mean(axis=(0, 1))
    freqs = np.fft.rfftfreq(256, d=synthetic.DT_MS / 1000.0)
    assert 20 <= freqs[np.argmax(spectrum)] <= 40           # the ~30 Hz Ricker
    assert spectrum[0] < 0.1 * spectrum.max()               # no DC: reflectivity, not impedance
    assert spectrum[freqs > 90].max() < 0.1 * spectrum.max()
    noisy = generate((8, 8, 256), 0, noise=0.5)
    assert not np.allclose(noisy.seismic, vol.seismic)
    np.testing.assert_array_equal(noisy.labels, vol.labels)


def test_ricker_and_convolution():
    w = synthetic.ricker(30.0, 4.0)
    assert w[len(w) // 2] == pytest.approx(1.0) and np.argmax(w) == len(w) // 2
    np.testing.assert_allclose(w, w[::-1])
    spike = np.zeros((1, 1, 40), np.float32)
    spike[0, 0, 20] = 1.0
    out = synthetic.convolve_depth(spike, w)[0, 0]
    np.testing.assert_allclose(out[20 - len(w) // 2: 21 + len(w) // 2], w, atol=1e-6)
    np.testing.assert_allclose(out, np.convolve(spike[0, 0], w, mode="same"), atol=1e-6)


def test_bad_shape_is_an_error():
    from falsecli.core.errors import FalseCliError

    with pytest.raises(FalseCliError, match=r"data.synthetic shape \[16, 24\]"):
        generate((16, 24), 0)
