"""A synthetic F3-like seismic volume with facies labels, made in seconds with numpy.

The F3 facies benchmark cannot be shipped, so the default data is a small geological model
with the same six units in the same order and F3's class shares (each unit's level is solved
so that its share of the faulted volume is F3's, at any size). What makes it
useful for explaining a segmentation network is what makes F3 hard: the units differ in
seismic *character* (clinoforms, transparent shales, hummocky layering, bright chalk,
chaotic scruff, massive salt), while scruff and Zechstein are only a few samples thick —
below the tuning thickness of the wavelet — so a network learns them last and forgets them
most. Structure (dip, folds, a salt dome, normal faults) comes from the seed; the units'
character is fixed, so the test volume (another seed) is the same basin elsewhere.

Everything is evaluated as a function of position: labels and impedance both read the
*restored* depth ``z - throw`` of a voxel, so a fault displaces both in exactly the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from falsecli.core.config import Config
from falsecli.core.errors import FalseCliError

#: F3's units, top to bottom, with their average thickness share of the volume
FRACTIONS = (0.285, 0.119, 0.484, 0.065, 0.032, 0.015)
#: sampling interval (ms) and Ricker peak frequency (Hz), as F3
DT_MS = 4.0
PEAK_HZ = 30.0
#: scruff and chalk are never thinner than this (samples): [a, a + 2.1) holds >= 2 samples
MIN_THICKNESS = 2.1
#: the largest part of a volume's Zechstein that its salt dome may hold
DOME_SHARE = 0.6
#: sub-seeds: the training volume and the test volume are different draws of one basin
TRAIN_STREAM, TEST_STREAM = 0, 1

Pair = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Unit:
    """The seismic character of one unit: what lets a network tell the units apart.

    ``level`` is the unit's mean log-impedance (contrasts between levels make the unit tops
    reflect), ``amp`` the log-impedance contrast of its internal layers, ``layer`` their mean
    thickness in samples, ``style`` their geometry.
    """

    level: float
    amp: float
    layer: float
    style: str  # clinoform | parallel | hummocky | chaotic | massive


#: the basin's units in label order; fixed, so every seed shows the same facies
UNITS = (
    Unit(level=0.00, amp=0.10, layer=3.0, style="clinoform"),   # upper North Sea
    Unit(level=0.22, amp=0.025, layer=2.0, style="parallel"),   # middle North Sea
    Unit(level=0.30, amp=0.07, layer=3.5, style="hummocky"),    # lower North Sea
    Unit(level=0.85, amp=0.12, layer=4.0, style="parallel"),    # Rijnland / chalk
    Unit(level=0.55, amp=0.12, layer=1.5, style="chaotic"),     # scruff
    Unit(level=1.30, amp=0.01, layer=6.0, style="massive"),     # Zechstein salt
)


@dataclass
class Synthetic:
    """One generated volume. ``shift`` is each voxel's fault throw in samples (0 = footwall)."""

    seismic: np.ndarray     # float32 (IL, XL, Z), max |amplitude| 1
    labels: np.ndarray      # uint8 (IL, XL, Z), unit ids 0..5
    impedance: np.ndarray   # float32 (IL, XL, Z), log-impedance before convolution
    shift: np.ndarray       # int16 (IL, XL, Z)


# ---------------------------------------------------------------- building blocks


def ricker(peak_hz: float = PEAK_HZ, dt_ms: float = DT_MS) -> np.ndarray:
    """Zero-phase Ricker wavelet sampled at ``dt_ms`` over +-1.5 periods."""
    half = int(np.ceil(1.5 / peak_hz / (dt_ms / 1000.0)))
    t = np.arange(-half, half + 1) * (dt_ms / 1000.0)
    a = (np.pi * peak_hz * t) ** 2
    return ((1.0 - 2.0 * a) * np.exp(-a)).astype(np.float32)


def convolve_depth(volume: np.ndarray, wavelet: np.ndarray) -> np.ndarray:
    """Convolve every trace (last axis) with a centred wavelet, no wrap-around (FFT)."""
    nz, nw = volume.shape[-1], len(wavelet)
    n = 1 << int(np.ceil(np.log2(nz + nw)))
    spec = np.fft.rfft(volume, n, axis=-1) * np.fft.rfft(wavelet, n)
    return np.fft.irfft(spec, n, axis=-1)[..., nw // 2: nw // 2 + nz].astype(np.float32)


def smooth_field(rng: np.random.Generator, x: np.ndarray, y: np.ndarray,
                 k: tuple[float, float], modes: int = 6) -> np.ndarray:
    """A smooth zero-mean random map, unit variance in expectation, wavenumbers in ``k``
    (cycles per survey width). Normalised by theory, not by the grid, so a small volume is
    a crop-like version of a large one."""
    out = np.zeros(np.broadcast_shapes(x.shape, y.shape), dtype=np.float64)
    for _ in range(modes):
        kk, ang, phase = rng.uniform(*k), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        out += np.cos(2 * np.pi * kk * (x * np.cos(ang) + y * np.sin(ang)) + phase)
    return out * np.sqrt(2.0 / modes)


def _floor(t: np.ndarray, minimum: float = MIN_THICKNESS) -> np.ndarray:
    return np.maximum(t, minimum)


def _solve(share: Callable[[float], float], target: float, lo: float, hi: float,
           steps: int = 16) -> float:
    """The parameter in [lo, hi] at which the non-decreasing ``share`` reaches ``target``
    (bisection; ``lo`` or ``hi`` when the target is out of reach, e.g. a floor binds)."""
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if share(mid) < target else (lo, mid)
    return 0.5 * (lo + hi)


# ---------------------------------------------------------------- the model


@dataclass
class _Basin:
    """The structural model of one seed: unit tops as maps and the faults' throws."""

    tops: np.ndarray          # (6, IL, XL) top of each unit, in samples (tops[0] = 0)
    bases: np.ndarray         # (6, IL, XL) base of each unit (bases[5] = far below)
    shift: np.ndarray         # (IL, XL, Z) int16 fault throw of each voxel
    x: np.ndarray             # (IL, 1) inline coordinate, survey widths
    y: np.ndarray             # (1, XL) crossline coordinate


def _streams(seed: int, stream: int) -> dict[str, np.random.Generator]:
    """Independent random streams per model component, so that switching faults off (or a
    unit being absent) leaves every other draw unchanged."""
    names = ["horizons", "faults", "noise", *(f"unit{k}" for k in range(len(UNITS)))]
    return {name: np.random.default_rng([int(seed), stream, i]) for i, name in enumerate(names)}


def _draw_basin(shape: tuple[int, int, int], rngs: dict[str, np.random.Generator],
                faults: bool) -> _Basin:
    """Unit tops whose shapes are random and whose levels are solved, bottom unit first, so
    that each unit's share of the *faulted* volume is F3's (``FRACTIONS``).

    Solving rather than prescribing thicknesses keeps the shares at F3's whatever the
    volume's size, dome and faults: a fault's hanging wall moves the deepest samples out of
    the volume and adds upper North Sea on top, and the salt dome's volume is part of the
    Zechstein budget (salt that rose into the dome is missing from the layer around it). The
    top of the salt dips out of the volume's base where the budget runs out, so Zechstein is
    absent in places, as where F3's survey ends above it; scruff and chalk keep a floor of
    ``MIN_THICKNESS`` wherever they are in the volume.
    """
    nx, ny, nz = shape
    rng = rngs["horizons"]
    width = max(nx, ny, 2) - 1
    x = (np.arange(nx, dtype=np.float64) / width)[:, None]
    y = (np.arange(ny, dtype=np.float64) / width)[None, :]
    xc, yc = x - x.mean(), y - y.mean()

    def dip(amplitude: float) -> np.ndarray:
        ang = rng.uniform(0, 2 * np.pi)
        return amplitude * nz * (xc * np.cos(ang) + yc * np.sin(ang))

    def vary(rel: float) -> np.ndarray:
        return np.exp(rel * smooth_field(rng, x, y, (0.5, 1.5)))

    # the salt dome: a plug with a rounded top and steep flanks, inside the survey, holding
    # at most DOME_SHARE of the volume's salt (so a narrow test volume gets a lower dome)
    cx = x.max() * rng.uniform(0.3, 0.7)
    cy = y.max() * rng.uniform(0.3, 0.7)
    radius = rng.uniform(0.07, 0.10)
    dome = 1.0 / (1.0 + (((x - cx) ** 2 + (y - cy) ** 2) / radius ** 2) ** 3)
    lift = min(0.2 * nz, DOME_SHARE * FRACTIONS[5] * nz / float(dome.mean())) * dome
    # deep units hang from the top of the salt, which sits near the bottom of the volume
    deep = dip(0.05) + 0.015 * nz * smooth_field(rng, x, y, (0.8, 2.0)) - lift
    scruff, chalk, middle = vary(0.25), vary(0.2), vary(0.2)
    # shallow units: their own dip (the unconformity), folds, a drape over the dome
    shallow = dip(0.08) + 0.025 * nz * smooth_field(rng, x, y, (0.7, 1.8)) - 0.35 * lift
    shift = _fault_shift(shape, rngs["faults"], x, y)
    zr = np.arange(nz, dtype=np.float64)[None, None, :] - shift     # restored depth
    tops, bases = _solve_tops(zr, deep, shallow, scruff, chalk, middle)
    # solved on the faulted volume either way, so faults=False is the same basin unfaulted
    return _Basin(tops, bases, shift if faults else np.zeros_like(shift), x, y)


def _solve_tops(zr: np.ndarray, deep: np.ndarray, shallow: np.ndarray, scruff: np.ndarray,
                chalk: np.ndarray, middle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The unit tops and bases (unit, inline, crossline) whose levels give each unit its F3
    share of the volume of restored depths ``zr``, bottom unit first: the salt's top follows
    ``deep``, scruff and chalk are stacked on it with the relative thicknesses ``scruff`` and
    ``chalk``, the middle unit's top follows ``shallow`` with the thickness ``middle``."""
    nx, ny, nz = zr.shape

    def share(top: np.ndarray, base: np.ndarray) -> float:
        return float(np.mean((zr >= top[:, :, None]) & (zr < base[:, :, None])))

    below = np.full((nx, ny), 1.5 * nz)
    t_salt = _solve(lambda c: share(nz - c + deep, below), FRACTIONS[5], -0.5 * nz, 0.5 * nz)
    top_salt = nz - t_salt + deep
    t = _solve(lambda c: share(top_salt - _floor(c * scruff), top_salt), FRACTIONS[4],
               0.0, 0.3 * nz)
    top_scruff = top_salt - _floor(t * scruff)
    t = _solve(lambda c: share(top_scruff - _floor(c * chalk), top_scruff), FRACTIONS[3],
               0.0, 0.3 * nz)
    top_chalk = top_scruff - _floor(t * chalk)
    # the middle unit's top follows the shallow structure, its base the middle's thickness,
    # both kept above the chalk; upper and middle are solved in turn (they meet at the dome)
    floor_lower = top_chalk - 0.12 * nz

    def tops_shallow(u: float, m: float) -> tuple[np.ndarray, np.ndarray]:
        thick = _floor(m * middle)
        top_middle = np.minimum(np.maximum(u + shallow, 0.1 * nz), floor_lower - thick)
        return top_middle, top_middle + thick

    zero = np.zeros((nx, ny))
    u, m = FRACTIONS[0] * nz, FRACTIONS[1] * nz
    for _ in range(2):
        u = _solve(lambda c: share(zero - nz, tops_shallow(c, m)[0]), FRACTIONS[0], 0.0, nz)
        m = _solve(lambda c: share(*tops_shallow(u, c)), FRACTIONS[1], 0.0, 0.5 * nz)
    top_middle, top_lower = tops_shallow(u, m)
    tops = np.stack([zero, top_middle, top_lower, top_chalk, top_scruff, top_salt])
    bases = np.concatenate([tops[1:], below[None]])
    return tops, bases


def _fault_shift(shape: tuple[int, int, int], rng: np.random.Generator, x: np.ndarray,
                 y: np.ndarray) -> np.ndarray:
    """Vertical throw (samples) of every voxel from one or two planar normal faults.

    A fault dips towards its normal; voxels above the plane (the hanging wall) moved down by
    the throw, which tapers elliptically along strike. Integer throws keep labels and
    impedance on the sample grid, so the displacement is exact and testable.
    """
    nz = shape[2]
    z = np.arange(nz, dtype=np.float64)[None, None, :]
    shift = np.zeros(shape, dtype=np.int16)
    max_throw = max(2, round(0.05 * nz))
    for _ in range(int(rng.integers(1, 3))):
        strike = rng.uniform(0, np.pi)
        nrm = np.array([np.cos(strike), np.sin(strike)])
        px, py = x.max() * rng.uniform(0.25, 0.75), y.max() * rng.uniform(0.25, 0.75)
        dist = (x - px) * nrm[0] + (y - py) * nrm[1]        # across strike
        along = -(x - px) * nrm[1] + (y - py) * nrm[0]      # along strike
        half_length = rng.uniform(0.5, 1.5)
        taper = np.sqrt(np.clip(1.0 - (along / half_length) ** 2, 0.0, 1.0))
        throw = np.rint(max_throw * rng.uniform(0.7, 1.0) * taper).astype(np.int16)
        reach = rng.uniform(0.12, 0.2)                      # horizontal run over the depth
        hanging = dist[:, :, None] > reach * (z / nz - 0.5)
        shift += np.where(hanging, throw[:, :, None], 0).astype(np.int16)
    return shift


class _Character:
    """One unit's random draws: layer sequence, lateral gain and geometry parameters.

    Drawn up front from the unit's own stream and covering every stratigraphic position the
    volume can reach, so the same voxel gets the same impedance whatever else changes.
    """

    def __init__(self, unit: Unit, rng: np.random.Generator, x: np.ndarray, y: np.ndarray,
                 nz: int) -> None:
        self.unit = unit
        reach = 40.0 * nz                               # |stratigraphic position| bound
        count = int(2 * reach / unit.layer * 1.5) + 8
        self.bounds = -reach + np.cumsum(rng.gamma(3.0, unit.layer / 3.0, count))
        self.values = rng.standard_normal(count + 1) * unit.amp
        self.gain = 1.0 + 0.3 * smooth_field(rng, x, y, (0.5, 2.0))
        if unit.style == "clinoform":  # sigmoidal foresets prograding along the crosslines
            ang = np.pi / 2 + rng.uniform(-0.5, 0.5) + np.pi * rng.integers(0, 2)
            self.warp = x * np.cos(ang) + y * np.sin(ang)
        elif unit.style == "hummocky":  # wavy mounds 18-40 traces across, whatever the size
            width = max(x.shape[0], y.shape[1], 2) - 1
            self.warp = 2.5 * smooth_field(rng, x, y, (width / 40, width / 18), modes=10)
        elif unit.style == "chaotic":  # short reflector segments jumping between patches
            patch = max(2, x.shape[0] // 30)
            jumps = rng.uniform(0, 3 * unit.layer, (x.shape[0] // patch + 1,
                                                    y.shape[1] // patch + 1))
            self.warp = jumps[np.arange(x.shape[0]) // patch][:, np.arange(y.shape[1]) // patch]
        else:
            self.warp = np.zeros((x.shape[0], y.shape[1]))

    def impedance(self, u: np.ndarray, thick: float, ix: np.ndarray, iy: np.ndarray
                  ) -> np.ndarray:
        """Log-impedance anomaly at relative position ``u`` (0 top, 1 base) of the unit."""
        if self.unit.style == "clinoform":
            # the clinoform surface through a voxel: u = shape(p - front), with a topset,
            # a steep foreset and a bottomset; layers follow the front
            d = np.linspace(-3.0, 3.0, 601)
            shape = 0.5 - 0.45 * np.tanh(d / 0.12) - 0.8 * d   # decreasing in d
            s = (self.warp[ix, iy] - np.interp(u, shape[::-1], d[::-1])) * 2.5 * thick
        else:
            s = u * thick + self.warp[ix, iy]
        return self.values[np.searchsorted(self.bounds, s)] * self.gain[ix, iy]


def _impedance(basin: _Basin, rngs: dict[str, np.random.Generator],
               shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and log-impedance of every voxel, both at its restored depth z - throw."""
    nz = shape[2]
    zr = np.arange(nz, dtype=np.float64)[None, None, :] - basin.shift
    labels = np.zeros(shape, dtype=np.uint8)
    for k in range(1, len(UNITS)):
        labels += zr >= basin.tops[k][:, :, None]
    imp = np.empty(shape, dtype=np.float32)
    ix, iy = (np.broadcast_to(a, shape) for a in np.indices(shape, sparse=True)[:2])
    zr = np.broadcast_to(zr, shape)
    for k, unit in enumerate(UNITS):
        character = _Character(unit, rngs[f"unit{k}"], basin.x, basin.y, nz)
        sel = labels == k
        kx, ky, kz = ix[sel], iy[sel], zr[sel]
        top, base = basin.tops[k][kx, ky], basin.bases[k][kx, ky]
        thick = max(float(np.mean(basin.bases[k] - basin.tops[k])), 1.0)
        u = (kz - top) / np.maximum(base - top, 1e-3)
        imp[sel] = unit.level + 0.25 * kz / nz + character.impedance(u, thick, kx, ky)
    return labels, imp


def generate(shape: tuple[int, int, int] | list[int], seed: int, noise: float = 0.15,
             *, stream: int = TRAIN_STREAM, faults: bool = True) -> Synthetic:
    """Generate one volume (inline x crossline x depth), deterministic in (shape, seed, stream).

    ``faults=False`` gives the same basin unfaulted (for tests of the displacement).
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 2:
        raise FalseCliError(f"data.synthetic shape {list(shape)}: expected [inlines, crosslines,"
                            " depth], each >= 2, e.g. [101, 161, 128]")
    rngs = _streams(seed, stream)
    basin = _draw_basin(shape, rngs, faults)
    labels, imp = _impedance(basin, rngs, shape)
    reflectivity = np.zeros(shape, dtype=np.float32)
    reflectivity[..., :-1] = 0.5 * np.diff(imp, axis=-1)
    signal = convolve_depth(reflectivity, ricker())
    # band-limited noise: the wavelet's band along depth, a little lateral coherence
    white = rngs["noise"].standard_normal(shape).astype(np.float32)
    white = (white + np.roll(white, 1, 0) + np.roll(white, 1, 1)) / np.sqrt(3.0)
    colored = convolve_depth(white, ricker(PEAK_HZ * 1.2))
    rms = float(np.sqrt(np.mean(signal.astype(np.float64) ** 2))) or 1.0
    colored *= noise * rms / (float(np.sqrt(np.mean(colored.astype(np.float64) ** 2))) or 1.0)
    seismic = signal + colored
    seismic /= float(np.abs(seismic).max()) or 1.0
    return Synthetic(seismic, labels, imp, basin.shift)


def volumes(d: dict[str, Any]) -> tuple[Pair, Pair]:
    """(seismic, labels) of the training volume and of test1, from ``cfg['data']``."""
    syn = d["synthetic"]
    train = generate(syn["shape"], syn["seed"], syn["noise"], stream=TRAIN_STREAM)
    test = generate(syn["test_shape"], syn["seed"], syn["noise"], stream=TEST_STREAM)
    return (train.seismic, train.labels), (test.seismic, test.labels)


# ---------------------------------------------------------------- synth command


def write_f3_layout(cfg: Config, out: Path, fmt: str, force: bool = False) -> dict[str, Any]:
    """``falsecli synth``: write the synthetic volumes as the F3 facies benchmark lays them
    out, so that ``data.source: f3, data.root: out`` reads them back."""
    from falsecli.core.files import save_npy
    from falsecli.data import segy

    if fmt not in ("npy", "segy"):
        raise FalseCliError(f"--format {fmt}: expected npy or segy")
    out = Path(out)
    ext = ".npy" if fmt == "npy" else ".sgy"
    paths = {"train": (out / "train" / f"train_seismic{ext}", out / "train" / "train_labels.npy"),
             "test1": (out / "test_once" / f"test1_seismic{ext}",
                       out / "test_once" / "test1_labels.npy")}
    # the other format's seismic would shadow (npy) or outlive (sgy) the new one
    other = ".sgy" if fmt == "npy" else ".npy"
    stale = [seis.with_suffix(other) for seis, _ in paths.values()]
    for path in [p for pair in paths.values() for p in pair] + stale:
        if path.exists() and not force:
            raise FalseCliError(f"{path} exists — use --force to overwrite it, or choose "
                                "another --out")
    d = cfg["data"]
    train, test = volumes(d)
    outputs = []
    for (seis_path, lab_path), (seismic, labels) in zip(paths.values(), (train, test)):
        if fmt == "npy":
            save_npy(seis_path, seismic.astype(np.float64))  # F3 ships float64
        else:
            segy.write(seis_path, seismic, iline=d["segy"]["iline"], xline=d["segy"]["xline"])
        save_npy(lab_path, labels)
        outputs += [str(seis_path.resolve()), str(lab_path.resolve())]
    for path in stale:
        path.unlink(missing_ok=True)
    shares = np.bincount(train[1].ravel(), minlength=len(UNITS)) / train[1].size
    return {"stage": "synth", "outputs": outputs, "format": fmt,
            "shape": list(train[0].shape), "test_shape": list(test[0].shape),
            "seed": d["synthetic"]["seed"], "noise": d["synthetic"]["noise"],
            "class_shares": {name: round(float(v), 4)
                             for name, v in zip(d["classes"], shares)}}
