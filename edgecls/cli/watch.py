"""``edgecls watch``: a model on a camera, live top-k and the source's stats; one JSON line a frame with ``--json``."""

from __future__ import annotations

import json as json_module
import sys
import time
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from edgecls.cli.app import app, console, progress_console, run

REFRESH_S = 0.25  # the live view on stderr is redrawn at most this often


@app.command()
def watch(
    model: Annotated[Path, typer.Argument(help="A .tflite or .onnx artifact.")],
    source: Annotated[
        str,
        typer.Option(
            "--source",
            "-s",
            help="0, /dev/video0, rtsp://…, http://…, a video file, a folder of images, picam://0?size=640x480, "
            "csi://0?size=1280x720&fps=30, gst://<pipeline ending in appsink>, or test://?fps=30.",
        ),
    ],
    show: Annotated[
        bool, typer.Option("--show", help="Draw frames and top label in a window (q or Esc stops).")
    ] = False,
    collect: Annotated[
        Path | None, typer.Option("--collect", help="Keep the frames the model was unsure of here, with JSON sidecars.")
    ] = None,
    duration: Annotated[float | None, typer.Option("--duration", help="Stop after this many seconds.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Labels shown per frame.")] = 3,
    threads: Annotated[int | None, typer.Option(help="Engine threads (default: every core).")] = None,
    json: Annotated[
        bool, typer.Option("--json", help='One JSON object per frame on stdout, then {"summary": …}.')
    ] = False,
) -> None:
    """Classify a camera's frames live: top-k, capture and processed fps, skipped frames, inference ms, frame age.

    Runs on a device install (edgecls[runtime]): no TensorFlow. Ctrl-C ends it with the summary.
    """
    from edgecls.runtime.watch import WatchConfig
    from edgecls.runtime.watch import watch as run_watch

    config = WatchConfig(
        model=str(model),
        source=source,
        duration_s=duration,
        top_k=top_k,
        threads=threads,
        collect=str(collect) if collect else None,
        show=show,
    )
    stdout = sys.stdout  # run() sends stdout to stderr while the call runs: the frame lines go here
    if json:
        run(
            lambda: run_watch(config, on_frame=_JsonLines(stdout)),
            as_json=False,
            render=lambda report: _print_line(stdout, {"summary": _to_jsonable(report)}),
            tensorflow=False,
        )
        return
    view = _LiveView()
    run(lambda: view.watch(run_watch, config), as_json=False, render=_render_report, tensorflow=False)


class _JsonLines:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, result: Any, source: Any) -> None:
        _print_line(self.out, result.to_dict())


def _print_line(out: TextIO, document: dict[str, Any]) -> None:
    out.write(json_module.dumps(document) + "\n")
    out.flush()


def _to_jsonable(value: Any) -> Any:
    from edgecls.cli.app import to_jsonable

    return to_jsonable(value)


class _LiveView:
    """The last frame's top-k and the source's stats, redrawn on stderr at most every ``REFRESH_S``."""

    def __init__(self) -> None:
        self._drawn = 0.0
        self._live: Any = None

    def watch(self, run_watch: Any, config: Any) -> Any:
        from rich.live import Live

        with Live(console=progress_console(), auto_refresh=False, transient=False) as live:
            self._live = live
            return run_watch(config, on_frame=self.update)

    def update(self, result: Any, source: Any) -> None:
        now = time.monotonic()
        if now - self._drawn < REFRESH_S:
            return
        self._drawn = now
        from rich.text import Text

        lines = [f"frame {result.sequence}: age {result.age_ms:.0f} ms, inference {result.inference_ms:.1f} ms"]
        lines += [f"  {score:6.3f}  {label}" for label, score in result.predictions]
        lines.append(source.stats().line())
        self._live.update(Text("\n".join(lines)), refresh=True)


def _render_report(report: Any) -> None:
    out = console()
    stats = report.stats
    out.print(f"{report.frames} frames in {report.seconds:.1f} s ({report.stopped}) from {report.source}")
    out.print(f"  {stats.line()}")
    out.print(f"  {report.model}: {report.engine}")
    if report.collected is not None:
        out.print(f"  collected {report.collected} unsure frames")
