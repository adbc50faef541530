"""``python -m edgecls.cli``: the ``edgecls`` command without its console script."""

from edgecls.cli import main

main()
