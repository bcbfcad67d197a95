"""``python -m cli``: the same CLI as the ``ketenstroom`` script."""

from cli import main

main()
