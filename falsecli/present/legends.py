"""Where a figure's legend goes: beside or below its panels, never over data. Shared by every
figure module, so that no figure puts a legend inside a panel ("best" placement covers data
as soon as the data fill the panel)."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure
from matplotlib.legend import Legend


def legend_outside(fig: Figure, *, title: str | None = None, below: bool = False) -> Legend:
    """One legend for the whole figure, to the right of every panel (``below``: under them,
    in one row, for figures whose panel titles reach the right edge), where it covers no data
    (the figure's constrained layout makes room for it): each label of the panels' artists
    once, in the order first drawn."""
    entries: dict[str, Any] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    where = {"loc": "outside lower center", "ncol": len(entries)} if below else {
        "loc": "outside right upper"}
    return fig.legend(list(entries.values()), list(entries), fontsize=8, title=title,
                      title_fontsize=8, **where)
