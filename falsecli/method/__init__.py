"""The method layer: the network, training pieces, tracking, forgetting and switch events,
metrics, style-transfer networks and figures. Imports ``core`` and ``data``, never a stage."""
