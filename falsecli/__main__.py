"""``python -m falsecli`` (and ``torchrun -m falsecli``)."""

from falsecli.cli import main

main()
