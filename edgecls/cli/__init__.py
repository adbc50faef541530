"""The ``edgecls`` command line: a thin typer skin over the library.

One module per command; each parses options into the stage's config, calls
one library function and renders its result (``render``). Heavy frameworks
are imported inside the commands, so ``edgecls --help`` is instant.
"""

from edgecls.cli.app import app, main

# Each module registers its commands on ``app`` when imported.
from edgecls.cli import train as _train  # noqa: F401,E402
from edgecls.cli import inspect as _inspect  # noqa: F401,E402
from edgecls.cli import pipeline as _pipeline  # noqa: F401,E402
from edgecls.cli import bench as _bench  # noqa: F401,E402
from edgecls.cli import quantize as _quantize  # noqa: F401,E402
from edgecls.cli import prune as _prune  # noqa: F401,E402
from edgecls.cli import distill as _distill  # noqa: F401,E402

__all__ = ["app", "main"]
