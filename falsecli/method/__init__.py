"""The method layer: the network, training pieces, tracking, forgetting and switch events,
metrics, style-transfer networks, and which runs the report compares and what it measures on
them. Imports ``core`` and ``data``, never the presentation floor or a stage."""
