"""The stages: one module per command (train, heatmap, rank, transfer, retrain, report,
inspect) and the pipeline that chains them. Each stage is a plain function of a config and a
workdir; the CLI only parses options and calls them."""
