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


def ops_outside_delegate(interpreter: Any) -> tuple[int, dict[str, int]]:
    """How many partitions XNNPACK took (DELEGATE nodes), and the ops left to the built-in kernels, by type.

    An op XNNPACK does not take splits the graph: each split costs a hand-over between the delegate and the
    built-in kernels, and the op itself runs on the slower kernel (an INT8 MobileNetV3-Small under LiteRT 2.3.0:
    its 18 HARD_SWISH ops left out, 19 partitions, 2.2x its FP32 graph's time on an x86 host). Found by walking
    back from each partition's inputs, and the graph's outputs, through tensors no partition produced.
    """
    try:
        ops = interpreter._get_ops_details()  # noqa: SLF001 - see the module docstring
    except AttributeError:
        return 0, {}
    delegates = [op for op in ops if op.get("op_name") == "DELEGATE"]
    if not delegates:
        return 0, {}
    delegated = {int(t) for op in delegates for t in op.get("outputs", ())}
    producer = {int(t): op for op in ops if op.get("op_name") != "DELEGATE" for t in op.get("outputs", ())}
    outputs = [int(detail["index"]) for detail in interpreter.get_output_details()]
    pending = [int(t) for op in delegates for t in op.get("inputs", ())] + outputs
    outside: dict[int, str] = {}
    while pending:
        tensor = pending.pop()
        op = producer.get(tensor)
        if tensor in delegated or op is None or int(op["index"]) in outside:
            continue
        outside[int(op["index"])] = str(op["op_name"])
        pending += [int(t) for t in op.get("inputs", ())]
    counts: dict[str, int] = {}
    for name in outside.values():
        counts[name] = counts.get(name, 0) + 1
    return len(delegates), counts
