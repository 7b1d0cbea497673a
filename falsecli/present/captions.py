"""The titles and captions of the report's figures and of its active-learning table: what a
reader needs to read each figure without the code (what is shown, over which runs and epochs,
what the colours mean). Each takes the figure's file under report/ (its owner names it)."""

from __future__ import annotations

from typing import Any

from falsecli.present.document import FigureRef, Table


def fig5(rel: str, sections: list[str], name: str, window: int,
         heat_runs: dict[str, list[str]], sources: list[str]) -> FigureRef:
    """Fig. 5: the ranked ``sections`` (named by survey line; not the style ``sources``),
    each method's mean maps over ``heat_runs``."""
    return FigureRef(rel, "Fig. 5 — forgetting heat maps per method", (
        f"Rows: the {len(sections)} validation sections rank/ ranked highest for {name} "
        "forgetting on train/"
        + (f" that were not style sources (transfer learned the look of {', '.join(sources)})"
           if sources else "")
        + f" ({', '.join(sections)}; line numbers across, time or depth down): seismic, "
        "annotation, "
        "then each method's forgetting events per pixel over the first "
        f"{window} epochs, averaged over its runs ("
        + "; ".join(f"{m}: {', '.join(n)}" for m, n in heat_runs.items())
        + "), on one colour scale: dark blue = never forgotten, red = forgotten most, "
        f"grey = unlabelled; the {name} unit is outlined in magenta. The sections were "
        "chosen on train/, so its maps are at their worst by selection: no column includes "
        "train/ or any method's run with train/'s seed (same initial weights and batch "
        "order)."))


def most_forgotten(rel: str, section: str, name: str) -> FigureRef:
    """Fig. 2: heatmap/'s figure of the top-ranked ``section``."""
    return FigureRef(rel, f"Fig. 2 — the most-forgotten section, {section}", (
        f"The validation section rank/ ranked highest for {name} forgetting (among those "
        "heatmap/ drew), from train/: seismic amplitude, the annotation in facies colours, "
        "and the forgetting events per pixel (discrete colour bar). Events concentrate "
        "where units are thin or their boundaries are ambiguous in the seismic."))


def fig3(rel: str, name: str) -> FigureRef:
    """Fig. 3: the style transfer of class ``name``, as transfer/ drew it."""
    return FigureRef(rel, f"Fig. 3 — style transfer of {name}", (
        f"Each row: a random training section (target) whose {name} takes the style "
        f"of a most-forgotten section (style source); the target's labels are the new "
        f"sample's labels. transfer − target shows what the generator changed (the "
        f"{name} unit should change, the geology around it should not); the last "
        "column, two transfers from different sources into the same target with the "
        "same noise, shows what the style code alone changes. Difference scales are "
        "symmetric and shared by all rows."))


def fig3_style(rel: str, name: str) -> FigureRef:
    """Fig. 3b: whether the style of class ``name`` moved, as transfer/ drew it."""
    return FigureRef(rel, f"Fig. 3b — did the style of {name} move?", (
        f"Per row of Fig. 3, the {name} region's amplitude distribution, amplitude spectrum "
        "along depth and lateral coherence in the target, the style source and the "
        "transfer (the style descriptor of docs/definitions.md), titled with the "
        "transfer's style_moved. A transfer that takes the source's style lies "
        "on the source's curves; one that keeps the target's, on the target's. style_moved "
        "(1: the source's style, 0: the target's) per sample is in transfer/changes.csv, "
        "and claim C5a compares it with the identity control."))


def training_curves(rel: str) -> FigureRef:
    """The training curves of every compared run."""
    return FigureRef(rel, "Training curves", (
        "Left: training loss (cross-entropy per labelled pixel) per epoch; right: mean "
        "class accuracy on the tracked validation sections after each epoch. One line per "
        "run, one colour per method."))


def learning_curves(rel: str) -> FigureRef:
    """The active-learning curves of ``falsecli al``."""
    return FigureRef(rel, "Active learning: learning curves", (
        "mIoU and mean class accuracy (val: the tracked validation sections; test: the test "
        "volume) against the training sections labelled, after each round of falsecli al; "
        "line = mean over seeds, band = ± one standard deviation. A curve above the others "
        "reaches the same accuracy with fewer labelled sections."))


def learning_areas(header: list[str], body: list[list[str]], last: int) -> Table:
    """Table 5: the area under each learning curve up to round ``last``."""
    return ("Table 5 — active learning: area under the learning curves", header, body,
            f"Area under each learning curve (trapezoids over the labelled sections, "
            f"divided by their range: the metric's mean over the labelling budget) from "
            f"round 0 to round {last}, the last round every curve reached; mean ± half-width "
            "of the 95 % Student-t interval over seeds. Higher is better.")


def learning_differences(header: list[str], body: list[list[str]], last: int) -> Table:
    """Table 5b: each strategy's area minus random's and entropy's, paired by seed."""
    return ("Table 5b — active learning: areas against random and entropy, paired by seed",
            header, body,
            f"Each strategy's area under the learning curve (rounds 0 to {last}) minus the "
            "reference strategy's with the same seed (same initial labels and training "
            "randomness); mean ± half-width of the 95 % Student-t interval over those "
            "per-seed differences. An interval that excludes 0 says the strategy beats (or "
            "trails) the reference over the budget.")


def datamap_classes(rows: list[dict[str, Any]], late_window: str, issues: int) -> Table:
    """The data maps' per-class summary (heatmap/datamap_classes.csv)."""
    body = [[r["class"], f"{r['pixels']:,}", f"{r['confidence']:.3f}", f"{r['variability']:.3f}",
             *(f"{100 * r[z]:.1f} %" for z in ("easy", "ambiguous", "hard")),
             f"{r['issue_pixels']:,}"] for r in rows]
    return ("Data maps per class", ["class", "tracked pixels", "confidence", "variability",
                                    "easy", "ambiguous", "hard", "likely label issues"], body,
            "Per given class of the tracked pixels of train/: confidence = mean over epochs of "
            "the softmax probability of the pixel's label, variability = its standard "
            "deviation, averaged over the class's pixels; the shares of its pixels in the "
            "cartography zones (docs/definitions.md); and its pixels that the network, in every "
            f"epoch of the late window ({late_window}), gave to one other class by at least "
            f"heatmap.issue_margin — {issues} regions in heatmap/label_issues.csv, largest "
            "summed score first: places to re-check, not verdicts.")


def cartography(rel: str) -> FigureRef:
    """The data map of train/'s tracked pixels, as heatmap/ drew it."""
    return FigureRef(rel, "Data map of the tracked pixels", (
        "Each labelled tracked pixel of train/ (a seeded sample of at most 20,000) by the "
        "variability (x) and confidence (y) of its label's softmax probability over the "
        "epochs, coloured by its given class, on the easy (green), ambiguous (orange) and "
        "hard-to-learn (purple) zones (Swayamdipta et al., 2020). Hard-to-learn pixels the "
        "network confidently gives another class are the likely label issues."))


def label_issues(rows: list[dict[str, Any]]) -> Table:
    """The first regions of heatmap/label_issues.csv."""
    body = [[r["section"], r["inline"], r["crossline"], f"{r['top']}–{r['bottom']}",
             r["given_class"], r["predicted_class"], f"{r['pixels']:,}", f"{r['score']:.3f}"]
            for r in rows]
    return (f"Likely label issues: the first {len(rows)} regions", [
        "section", "inline", "crossline", "depth", "given class", "predicted class", "pixels",
        "score"], body,
        "Connected regions of train/'s tracked pixels that the network, in every epoch of the "
        "late window, gave to one other class by at least heatmap.issue_margin, ranked by "
        "pixels × mean score; inline and crossline are volume indices, depth in samples. "
        "Places to re-check in the interpretation, not verdicts: a region can as well be "
        "the network's own confusion.")
