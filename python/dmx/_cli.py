"""The ``dmx`` command installed by pip: the Rust CLI itself, run in this process."""

from __future__ import annotations

import sys


def main() -> None:
    """Runs ``dmx`` with ``sys.argv`` and exits with its status (0 ok, 1 verification
    failure or corruption, 2 usage or I/O error)."""
    from . import _dmx

    sys.stdout.flush()
    sys.stderr.flush()
    raise SystemExit(_dmx.cli_main(["dmx", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
