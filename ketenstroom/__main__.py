"""``python -m ketenstroom``: the same CLI as the ``ketenstroom`` script."""

from ketenstroom.cli import main

main()
