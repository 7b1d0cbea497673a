"""falsecli: explain a seismic facies segmentation network through its forgetting events."""

__version__ = "0.1.0"
