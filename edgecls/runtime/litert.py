"""The runtime's one reach into a LiteRT interpreter's privates (no TensorFlow here either).

``Interpreter._get_ops_details()``: no public Interpreter method lists the ops
of the graph as it runs, and only that list shows the ``DELEGATE`` node that
says whether XNNPACK took the graph over.
"""

from __future__ import annotations

from typing import Any


def delegate_provider(interpreter: Any) -> str:
    """What runs the graph: XNNPACK when it took over part of it (a DELEGATE node), else the built-in kernels.

    LiteRT applies XNNPACK by default to float and signed int8 graphs; an old
    uint8-quantised graph, or a build without it, runs on the built-in kernels.
    """
    try:
        ops = interpreter._get_ops_details()  # noqa: SLF001 - see the module docstring
    except AttributeError:  # an interpreter without it: say what was assumed
        return "XNNPACK/CPU (assumed)"
    return "XNNPACK/CPU" if any(op.get("op_name") == "DELEGATE" for op in ops) else "CPU (built-in kernels)"
