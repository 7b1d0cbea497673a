"""A deliberately plain reference for SPEC §6, written without looking at falsecli.method.forgetting.

Per-pixel Python loops over the unpacked history: slow, obviously right, used by the tests
to check the vectorised bit-plane implementation and the heatmap/rank stages. Also writes
tracking folders in the SPEC §3 format, as the training stage does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def section_entries(shapes: list[tuple[str, str, int, tuple[int, int]]], split: str = "val"
                    ) -> list[dict]:
    """sections.json entries for (name, axis, index, (depth, width)), stored back to back."""
    entries, offset = [], 0
    for name, axis, index, shape in shapes:
        entries.append({"name": name, "split": split, "axis": axis, "index": index,
                        "shape": list(shape), "offset": offset})
        offset += shape[0] * shape[1]
    return entries


def write_tracking(folder: Path, sections: list[dict], labels: np.ndarray, correct: np.ndarray,
                   switch: np.ndarray, classes: list[str], ignore_index: int = 255,
                   pred_last: np.ndarray | None = None) -> None:
    """Write a tracking folder from unpacked 0/1 histories ``correct`` and ``switch`` (E, P)."""
    folder.mkdir(parents=True, exist_ok=True)
    E, P = correct.shape
    meta = {"classes": classes, "ignore_index": ignore_index, "n_pixels": P, "epochs": E,
            "sections": sections}
    (folder / "sections.json").write_text(json.dumps(meta))
    np.save(folder / "labels.npy", np.asarray(labels, dtype=np.uint8))
    np.save(folder / "correct.npy", np.packbits(np.asarray(correct, dtype=bool), axis=1))
    np.save(folder / "switch.npy", np.packbits(np.asarray(switch, dtype=bool), axis=1))
    last = np.asarray(labels, np.uint8) if pred_last is None else pred_last
    np.save(folder / "pred_last.npy", np.asarray(last, dtype=np.uint8))


def write_from_predictions(folder: Path, sections: list[dict], labels: np.ndarray,
                           preds: np.ndarray, classes: list[str], ignore_index: int = 255
                           ) -> None:
    """Tracking folder of per-epoch predictions ``preds`` (E, P), as training records it."""
    correct = preds == labels[None, :]
    switch = np.zeros_like(correct)
    switch[1:] = preds[1:] != preds[:-1]
    write_tracking(folder, sections, labels, correct, switch, classes, ignore_index, preds[-1])


def read(folder: Path) -> tuple[dict, list[int], list[list[int]], list[list[int]]]:
    """sections.json, labels, and the unpacked correct / switch histories as nested lists."""
    meta = json.loads((folder / "sections.json").read_text())
    P = meta["n_pixels"]
    labels = [int(v) for v in np.load(folder / "labels.npy")]
    correct = [[int(b) for b in row[:P]]
               for row in np.unpackbits(np.load(folder / "correct.npy"), axis=1)]
    switch = [[int(b) for b in row[:P]]
              for row in np.unpackbits(np.load(folder / "switch.npy"), axis=1)]
    return meta, labels, correct, switch


def pixel_events(folder: Path, epochs: int | None = None, never_learned: str = "zero"
                 ) -> tuple[list[int], list[int], list[bool]]:
    """Per pixel: forgetting count L, switch count, never-learned flag, over T epochs."""
    meta, labels, correct, switch = read(folder)
    T = meta["epochs"] if epochs is None else epochs
    forgetting, switches, never = [], [], []
    for i in range(meta["n_pixels"]):
        acc = [correct[t][i] for t in range(T)]
        count = 0
        for t in range(T - 1):
            if acc[t] == 1 and acc[t + 1] == 0:
                count += 1
        is_never = labels[i] != meta["ignore_index"] and sum(acc) == 0
        if labels[i] == meta["ignore_index"]:
            count = 0
        elif is_never and never_learned == "max":
            count = T
        forgetting.append(count)
        switches.append(sum(switch[t][i] for t in range(1, T)))
        never.append(is_never)
    return forgetting, switches, never


def section_maps(folder: Path, epochs: int | None = None, never_learned: str = "zero"
                 ) -> dict[str, dict[str, np.ndarray]]:
    """{"forgetting"|"switch"|"never_learned": {section: [depth, width] array}}."""
    meta = json.loads((folder / "sections.json").read_text())
    values = dict(zip(("forgetting", "switch", "never_learned"),
                      pixel_events(folder, epochs, never_learned)))
    out: dict[str, dict[str, np.ndarray]] = {key: {} for key in values}
    for s in meta["sections"]:
        depth, width = s["shape"]
        for key, flat in values.items():
            rows = [[flat[s["offset"] + r * width + c] for c in range(width)]
                    for r in range(depth)]
            out[key][s["name"]] = np.array(rows)
    return out


def ranking_csv(folder: Path, cls: str, by: str = "forgetting", min_pixels: int = 50,
                epochs: int | None = None, never_learned: str = "zero",
                lines: tuple[list[int], list[int]] | None = None) -> str:
    """The expected ranking.csv text; ``lines``: the inline and crossline numbers of the
    volume (None: the numbers are blank)."""
    meta, labels, _, _ = read(folder)
    forgetting, switches, _ = pixel_events(folder, epochs, never_learned)
    counts = forgetting if by == "forgetting" else switches
    k = meta["classes"].index(cls)
    rows = []
    for order, s in enumerate(meta["sections"]):
        events = pixels = 0
        for i in range(s["offset"], s["offset"] + s["shape"][0] * s["shape"][1]):
            if labels[i] == k:
                pixels += 1
                events += counts[i]
        if pixels >= max(min_pixels, 1):
            il = xl = ""
            if lines is not None and s["axis"] == "inline":
                il = lines[0][s["index"]]
            elif lines is not None:
                xl = lines[1][s["index"]]
            rows.append((-(events / pixels), -events, order, s["name"], events, pixels, il, xl))
    rows.sort()
    text = ["class,rank,section,inline,crossline,density,events,class_pixels"]
    for rank, (neg_density, _, _, name, events, pixels, il, xl) in enumerate(rows, start=1):
        text.append(f"{cls},{rank},{name},{il},{xl},{-neg_density!r},{events},{pixels}")
    return "\n".join(text) + "\n"


def report_stats(folder: Path, target: int, epochs: int, region_events: int, min_region: int,
                 boundary_px: int = 2) -> dict[str, float]:
    """The report's forgetting statistics by plain loops: totals, the target class's events,
    density, high-density regions (flood fill, 8-neighbours) and their area, and the event
    density within ``boundary_px`` of another labelled class against the interior's, in all
    and per class, and each class's share of never-learned pixels."""
    meta, labels, _, _ = read(folder)
    forgetting, _, never = pixel_events(folder, epochs)
    ignore = meta["ignore_index"]
    regions, area = 0, 0
    edge_events = edge_pixels = inner_events = inner_pixels = 0
    per_class: dict[tuple[bool, int], list[int]] = {}  # (near, class): [events, pixels]
    for s in meta["sections"]:
        depth, width = s["shape"]

        def at(r: int, c: int, values: list[int]) -> int:
            return values[s["offset"] + r * width + c]

        hot = {(r, c) for r in range(depth) for c in range(width)
               if at(r, c, labels) == target and at(r, c, forgetting) >= region_events}
        while hot:
            stack, size = [hot.pop()], 0
            while stack:
                r, c = stack.pop()
                size += 1
                for dr in (-1, 0, 1):
                    for dc in (-1, 0, 1):
                        if (r + dr, c + dc) in hot:
                            hot.remove((r + dr, c + dc))
                            stack.append((r + dr, c + dc))
            if size >= min_region:
                regions += 1
                area += size
        for r in range(depth):
            for c in range(width):
                y = at(r, c, labels)
                if y == ignore:
                    continue
                near = any(at(rr, cc, labels) not in (y, ignore)
                           for rr in range(max(r - boundary_px, 0), min(r + boundary_px + 1, depth))
                           for cc in range(max(c - boundary_px, 0), min(c + boundary_px + 1, width)))
                tally = per_class.setdefault((near, y), [0, 0])
                tally[0] += at(r, c, forgetting)
                tally[1] += 1
                if near:
                    edge_events += at(r, c, forgetting)
                    edge_pixels += 1
                else:
                    inner_events += at(r, c, forgetting)
                    inner_pixels += 1
    in_class = [i for i, y in enumerate(labels) if y == target]
    class_events = sum(forgetting[i] for i in in_class)
    return {"forgetting_events": float(sum(forgetting)),
            "target_events": float(class_events),
            "target_density": class_events / len(in_class),
            "high_density_regions": float(regions), "high_density_area": float(area),
            "boundary_density": edge_events / edge_pixels,
            "interior_density": inner_events / inner_pixels,
            **{f"{'boundary' if near else 'interior'}_density/{meta['classes'][k]}": e / n
               for (near, k), (e, n) in per_class.items()},
            **{f"never_learned/{c}": sum(never[i] for i, y in enumerate(labels) if y == k)
               / sum(1 for y in labels if y == k)
               for k, c in enumerate(meta["classes"]) if k in labels}}


def locality(images: np.ndarray, references: np.ndarray, labels: np.ndarray,
             targets: list[np.ndarray], target: int) -> tuple[list[float], list[float]]:
    """Claim C5b's per-sample numbers by plain loops over the pixels: the mean
    |sample − reference| inside class ``target`` over the same outside it (the reference: the
    identity sample, same target and noise), and the mean |sample − target| outside the
    class over the target's own mean |amplitude| there."""
    ratios, relative = [], []
    for image, reference, label, original in zip(images, references, labels, targets):
        swap = {True: 0.0, False: 0.0}
        counts = {True: 0, False: 0}
        change = amplitude = 0.0
        for r in range(image.shape[0]):
            for c in range(image.shape[1]):
                inside = int(label[r, c]) == target
                swap[inside] += abs(float(image[r, c]) - float(reference[r, c]))
                counts[inside] += 1
                if not inside:
                    change += abs(float(image[r, c]) - float(original[r, c]))
                    amplitude += abs(float(original[r, c]))
        ratios.append((swap[True] / counts[True]) / (swap[False] / counts[False]))
        relative.append(change / amplitude)
    return ratios, relative


def group_means(values: list[float], groups: list[str]) -> list[float]:
    """The mean of the values of each group, groups in order of first appearance."""
    sums: dict[str, list[float]] = {}
    for value, group in zip(values, groups):
        sums.setdefault(group, []).append(value)
    return [sum(v) / len(v) for v in sums.values()]


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided ``level`` Student-t interval of independent values, from the sums."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / n ** 0.5
    return mean, mean - half, mean + half


def traced_shares(model, params: list[str], batches: list, masks: list, optimizer: str,
                  lr: float, weight_decay: float, momentum: float = 0.0,
                  betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> dict:
    """Each share's accumulated step (Pfahler & Morik's split), computed the plain way in
    float64 for a model trained on ``batches`` of (images, labels) by plain per-element
    Adam or SGD formulas: one fresh forward and backward per share per step, each share's
    own first moment as a Python list of tensors, the whole gradient's second moment.
    ``masks[t]``: one bool mask (labels' shape) per share at step t; the mean loss over the
    batch's labelled pixels is split by them. Returns ``{param: (shares + 1, ...)}``, the
    last share being weight decay; the model ends at the trained weights."""
    import torch
    import torch.nn.functional as F

    named = dict(model.named_parameters())
    m: dict = {}
    v = {n: torch.zeros_like(named[n], dtype=torch.float64) for n in params}
    total: dict = {}
    for t, (images, labels) in enumerate(batches, start=1):
        w = {n: named[n].detach().double() for n in params}
        grads = []
        for mask in masks[t - 1]:
            model.zero_grad()
            out = model(images)
            pixel = F.cross_entropy(out, labels, ignore_index=255, reduction="none")
            ((pixel * mask).sum() / (labels != 255).sum()).backward()
            grads.append({n: named[n].grad.double() for n in params})
        grads.append({n: weight_decay * w[n] for n in params})
        for k, g in enumerate(grads):
            for n in params:
                old = m.get((k, n))
                if optimizer == "adam":
                    m[k, n] = g[n] * (1 - betas[0]) + (0 if old is None else betas[0] * old)
                else:
                    m[k, n] = g[n] + (0 if old is None else momentum * old)
        for n in params:
            g = sum(grads[k][n] for k in range(len(grads)))
            if optimizer == "adam":
                v[n] = betas[1] * v[n] + (1 - betas[1]) * g * g
                denom = (v[n] / (1 - betas[1] ** t)).sqrt() + eps
                steps = [-lr / (1 - betas[0] ** t) * m[k, n] / denom for k in range(len(grads))]
            else:
                steps = [-lr * m[k, n] for k in range(len(grads))]
            total[n] = [a + b for a, b in zip(total.get(n, [0] * len(steps)), steps)]
            with torch.no_grad():
                named[n].copy_(w[n] + sum(steps))
    return {n: torch.stack(total[n]) for n in params}


def exact_verdict(tests: list[list[float]], unit: str) -> str:
    """A claim's verdict by plain loops: each test's values are claimed > 0; one-sided
    sign-flip p-values by listing every sign pattern; holds when every test's p <= 2.5 %,
    does not hold when Holm's step-down over the other-side p-values rejects one; none below
    3 values or from a test whose values are all equal."""
    from itertools import product

    def p_greater(values: list[float]) -> float:
        observed = sum(values)
        hits = sum(1 for signs in product((1, -1), repeat=len(values))
                   if sum(s * abs(v) for s, v in zip(signs, values)) >= observed - 1e-9)
        return hits / 2 ** len(values)

    n = min(len(t) for t in tests)
    if n < 3:
        return f"inconclusive: too few {unit}s: n = {n}, need 3"
    usable = [t for t in tests if max(t) > min(t)]
    if len(usable) == len(tests) and all(p_greater(t) <= 0.025 for t in tests):
        return "holds"
    other = sorted(p_greater([-v for v in t]) if t in usable else 1.0 for t in tests)
    if other[0] <= 0.025 / len(other):  # Holm's first step; any rejection starts there
        return "does not hold"
    return f"inconclusive at {n} {unit}s"


def datamap(probs: np.ndarray, preds: np.ndarray, late_from: int) -> dict[str, np.ndarray]:
    """The data-map accumulators from a whole history: ``probs`` (E, 2, P) of the label and
    the top wrong class, ``preds`` (E, P); per pixel, by plain loops over the late window."""
    E, _, P = probs.shape
    late = range(late_from - 1, E)
    margin = [min(float(probs[t, 1, i] - probs[t, 0, i]) for t in late) if late else 0.0
              for i in range(P)]
    stable = [bool(late) and all(preds[t, i] == preds[late[0], i] for t in late)
              for i in range(P)]
    return {"label_mean": probs[:, 0].mean(0).astype(np.float32),
            "label_var": probs[:, 0].var(0).astype(np.float32),
            "wrong_mean": probs[:, 1].mean(0).astype(np.float32),
            "wrong_var": probs[:, 1].var(0).astype(np.float32),
            "late_margin": np.array(margin, np.float32),
            "late_class": np.array([preds[late[0], i] if stable[i] else 255
                                    for i in range(P)], np.uint8),
            "epochs": np.array(E), "late_from": np.array(late_from),
            "late_epochs": np.array(len(late))}


def regions(mask: np.ndarray, labels: np.ndarray, pred: np.ndarray, score: np.ndarray
            ) -> list[dict]:
    """4-connected regions of ``mask`` pixels sharing (label, pred), by flood fill: each with
    its depth and trace range, classes, size and mean score; unordered."""
    seen = np.zeros(mask.shape, bool)
    out = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        key = (labels[start], pred[start])
        stack, cells = [start], []
        seen[start] = True
        while stack:
            r, c = stack.pop()
            cells.append((r, c))
            for rr, cc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if (0 <= rr < mask.shape[0] and 0 <= cc < mask.shape[1] and not seen[rr, cc]
                        and mask[rr, cc] and (labels[rr, cc], pred[rr, cc]) == key):
                    seen[rr, cc] = True
                    stack.append((rr, cc))
        rows, cols = [r for r, _ in cells], [c for _, c in cells]
        out.append({"top": min(rows), "bottom": max(rows), "cols": (min(cols), max(cols)),
                    "given": int(key[0]), "predicted": int(key[1]), "pixels": len(cells),
                    "score": sum(float(score[r, c]) for r, c in cells) / len(cells)})
    return out
