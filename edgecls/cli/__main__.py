"""``python -m edgecls.cli``: the ``edgecls`` command without its console script."""

from edgecls.cli import app

app(prog_name="edgecls")
