"""Plumbing every layer uses: config, workdir, console, errors, runtime, distributed,
checkpoints. Imports nothing from the layers above (data, method, stages)."""
