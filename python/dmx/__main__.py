"""``python -m dmx``: the ``dmx`` command."""

from ._cli import main

main()
