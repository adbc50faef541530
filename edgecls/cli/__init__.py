"""The ``edgecls`` command line: a thin typer skin over the library.

One module per command; each parses
options into the stage's config, calls one library function and renders its
result (``render``). Heavy frameworks are imported inside the commands, so
``edgecls --help`` is instant.
"""

from edgecls.cli.app import app, main

# Each module registers its commands on ``app`` when imported: this order is the order `edgecls --help` lists
# them in (not sorted; ruff's isort rule is off for this file).
from edgecls.cli import train as _train  # noqa: F401,E402
from edgecls.cli import evaluate as _evaluate  # noqa: F401,E402
from edgecls.cli import compare as _compare  # noqa: F401,E402
from edgecls.cli import export as _export  # noqa: F401,E402
from edgecls.cli import models as _models  # noqa: F401,E402
from edgecls.cli import info as _info  # noqa: F401,E402
from edgecls.cli import explain as _explain  # noqa: F401,E402
from edgecls.cli import pipeline as _pipeline  # noqa: F401,E402
from edgecls.cli import tune as _tune  # noqa: F401,E402
from edgecls.cli import bench as _bench  # noqa: F401,E402
from edgecls.cli import watch as _watch  # noqa: F401,E402
from edgecls.cli import targets as _targets  # noqa: F401,E402
from edgecls.cli import quantize as _quantize  # noqa: F401,E402
from edgecls.cli import calib_data as _calib_data  # noqa: F401,E402
from edgecls.cli import prune as _prune  # noqa: F401,E402
from edgecls.cli import distill as _distill  # noqa: F401,E402

__all__ = ["app", "main"]
