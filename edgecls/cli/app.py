"""The typer app and what every command shares: quiet frameworks, errors, output."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer

from edgecls.base.errors import EdgeclsError

app = typer.Typer(
    name="edgecls",
    help="Train, compress, quantize and benchmark image classifiers for Raspberry Pi and Jetson.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state: dict[str, Any] = {"debug": False, "command": None}

# ``--json`` of the commands whose progress goes to stderr while they run.
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout (progress stays on stderr).")]


@app.callback()
def _root(
    context: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks and framework logs."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More progress detail on stderr."),
) -> None:
    _state["debug"], _state["command"] = debug, context.invoked_subcommand
    quiet_frameworks()
    logging.basicConfig(
        level=logging.DEBUG if debug else (logging.INFO if verbose else logging.WARNING),
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def quiet_frameworks() -> None:
    """Silence TensorFlow/absl start-up chatter (set before TensorFlow is imported)."""
    if not _state["debug"]:
        import warnings

        # Keras/tf2onnx deprecation chatter about NumPy 2 is not the user's concern.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")


# What ``edgecls[train]`` brings beyond ``edgecls[runtime]``, by import name: the workstation commands need it.
WORKSTATION_MODULES = {
    "tensorflow": "tensorflow",
    "keras": "keras",
    "tf2onnx": "tf2onnx",
    "onnx": "onnx",
    "sklearn": "scikit-learn",
    "matplotlib": "matplotlib",
    "tensorboard": "tensorboard",
    "sympy": "sympy",
    "PIL": "pillow",
    "optuna": "optuna",
}
TRAIN_INSTALL = 'pip install "edgecls[train]"'


def require_workstation(*modules: str) -> None:
    """Exit 2 with one line when a workstation command runs on a ``[runtime]``-only install (a Pi, a Jetson).

    Checked by module spec, before anything is imported: ``edgecls train`` on a
    Pi says what to install instead of a ``ModuleNotFoundError`` traceback.
    """
    wanted = modules or ("tensorflow", "onnx", "tf2onnx", "sklearn", "matplotlib")
    missing = [WORKSTATION_MODULES.get(name, name) for name in wanted if importlib.util.find_spec(name) is None]
    if missing:
        _workstation_exit(", ".join(missing))


def _workstation_exit(missing: str) -> None:
    command = f"edgecls {_state['command']}" if _state["command"] else "this command"
    message = f"error: {command} runs on the workstation and needs {missing}, not installed here: {TRAIN_INSTALL}"
    typer.echo(message, err=True)
    raise typer.Exit(2)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 closed off: its C++ start-up
    lines (absl, CUDA stubs) are written before any log level applies."""
    if _state["debug"] or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_logical_devices("GPU")  # the CUDA probe logs once more here
    except ImportError:
        pass  # commands that need it will say so
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Libraries that print to stdout (Keras' exporters, tf2onnx) must not
    pollute ``--json`` output: send their stdout to stderr while they run."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


# Lines TensorFlow Lite and the LiteRT converter write straight to file descriptor 2, past every log level.
NATIVE_CHATTER = re.compile(
    rb"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.|INFO: Initialized TensorFlow Lite "
    rb"runtime\.|fully_quantize: \d+, inference_type: "
)


@contextlib.contextmanager
def native_chatter_dropped() -> Iterator[None]:
    """Drop ``NATIVE_CHATTER`` lines that native code writes to file descriptor 2; pass every other line through.

    Descriptor 2 runs through a pipe that a thread reads line by line. Python's
    own ``sys.stderr`` is pointed at the real stderr meanwhile, so progress bars
    still see a terminal and nothing of ours waits on the thread. ``--debug``
    keeps everything.
    """
    if _state["debug"]:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    python_stderr = sys.stderr
    own = _on_descriptor_2(python_stderr)
    if own:
        sys.stderr = open(
            saved,
            "w",
            buffering=1,
            encoding=python_stderr.encoding or "utf-8",
            errors="backslashreplace",
            closefd=False,
        )
    forward = threading.Thread(target=_forward_lines, args=(read_end, saved), name="edgecls-native-stderr", daemon=True)
    forward.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        if own:
            sys.stderr.close()
            sys.stderr = python_stderr
        python_stderr.flush()
        os.dup2(saved, 2)  # the pipe's last write end closes: the thread reads to the end and stops
        forward.join(timeout=2.0)  # a child process still holding the pipe must not hang the command
        if not forward.is_alive():  # else the thread still forwards that child's lines to ``saved``
            os.close(saved)


def _on_descriptor_2(stream: Any) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # CliRunner's and pytest's capture streams have no descriptor
        return False


def _forward_lines(read_end: int, out: int) -> None:
    with open(read_end, "rb") as pipe:
        for line in pipe:
            if NATIVE_CHATTER.match(line):
                continue
            while line:  # a terminal or a pipe may take part of it
                line = line[os.write(out, line) :]


class Terminated(BaseException):
    """SIGTERM (``timeout``, a cancelled CI job), raised like Ctrl-C's ``KeyboardInterrupt``: every ``finally`` runs."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While a command runs, SIGTERM raises ``Terminated`` instead of ending the process on the spot.

    Temporary folders are removed and a remote benchmark is stopped, as for Ctrl-C.
    """

    def raise_terminated(signum: int, frame: Any) -> None:
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, raise_terminated)
    except ValueError:  # not the main thread (a test runner's worker): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(call: Callable[[], Any], *, as_json: bool, render: Callable[[Any], None], tensorflow: bool = True) -> None:
    """Call a library function, then print its result as JSON or with ``render``.

    An ``EdgeclsError`` becomes one line on stderr and its exit code (2), and so
    does an ``OSError`` (the file system refused: it names the path); Ctrl-C
    is ``interrupted`` (130) and SIGTERM ``terminated`` (143); anything
    else is a bug: one line plus a hint, or the traceback with --debug.
    Commands that never touch TensorFlow (the runtime's) pass ``tensorflow=False``.
    """
    if tensorflow:
        import_tensorflow_quietly()
    try:
        with sigterm_raises(), native_chatter_dropped(), stdout_to_stderr():
            result = call()
    except Terminated:
        typer.echo("terminated", err=True)
        raise typer.Exit(143) from None
    except EdgeclsError as exc:
        if _state["debug"]:
            traceback.print_exc()
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except ModuleNotFoundError as exc:  # a workstation package reached on a device install: say what to install
        root = (exc.name or "").partition(".")[0]
        if root in WORKSTATION_MODULES and not _state["debug"]:
            _workstation_exit(WORKSTATION_MODULES[root])
        _unexpected(exc)
    except OSError as exc:  # the file system said no: --out names a file, no permission, a full disk
        if _state["debug"]:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename else ""
        hint = " (a folder was expected there)" if isinstance(exc, (FileExistsError, NotADirectoryError)) else ""
        typer.echo(f"error: {where}{exc.strerror or exc}{hint}", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:  # an unexpected failure: short message, details on --debug
        _unexpected(exc)
    try:
        if as_json:
            typer.echo(json.dumps(to_jsonable(result), indent=2))
        else:
            render(result)
        sys.stdout.flush()
    except BrokenPipeError:  # `edgecls targets --json | head -c 10`: the reader has what it wanted
        _quiet_broken_pipe()


def _quiet_broken_pipe() -> None:
    """End quietly with 141 (128 + SIGPIPE, what a shell reports for a writer whose reader left).

    stdout is pointed at /dev/null first, so the interpreter's flush at exit cannot raise again.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    raise typer.Exit(141)


def _unexpected(exc: Exception) -> None:
    """A bug or an environment we did not foresee: one line and exit 1, the traceback with --debug."""
    if _state["debug"]:
        traceback.print_exc()
    typer.echo(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", err=True)
    raise typer.Exit(1) from None


def to_jsonable(value: Any) -> Any:
    """Result dataclasses → JSON-ready dicts (``to_dict()`` where a result defines it)."""
    if hasattr(value, "to_dict"):
        return to_jsonable(value.to_dict())
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


# Tables piped to a file or a pager keep their rows whole; rich would fold them at 80 columns.
PIPED_WIDTH = 200


def ssh_defaults(
    ssh_key: Any = None, remote_python: str = "python3", accept_new_host_key: bool = False, known_hosts: Any = None
) -> Any:
    """The SSH options a command took (``--ssh-key``, ``--remote-python``, ``--accept-new-host-key``,
    ``--known-hosts``) as the ``RemoteConfig`` every ``--remote`` / fleet device starts from."""
    from edgecls.runtime.ssh import RemoteConfig

    return RemoteConfig(
        destination="",
        ssh_key=str(ssh_key) if ssh_key else None,
        remote_python=remote_python,
        accept_new_host_key=accept_new_host_key,
        known_hosts=str(known_hosts) if known_hosts else None,
    )


def console():
    """A rich console on stdout for human-readable results: the terminal's width, or 200 columns when piped.

    Markup is off: paths, labels and install hints are printed as they are
    ('edgecls[runtime]' is not a style); emphasis goes through ``styled``.
    """
    from rich.console import Console

    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    out = Console(highlight=False, markup=False, width=PIPED_WIDTH if piped else None)
    out.on_broken_pipe = _quiet_broken_pipe  # rich's own handler exits 1
    return out


def progress_console():
    """A rich console on stderr for progress (markup off, as ``console``)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, markup=False)


def styled(text: str, style: str = "bold"):
    """``text`` in a rich style (bold by default), for ``console().print(styled("top-1 98%"), "on 359 images")``."""
    from rich.text import Text

    return Text(text, style=style)


def main() -> None:
    """The ``edgecls`` console script."""
    app(prog_name="edgecls")
