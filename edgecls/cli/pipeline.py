"""``edgecls pipeline``: every stage from one TOML file, re-running only what changed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecls.cli.app import app, console, progress_console, require_workstation, run, styled


@app.command()
def pipeline(
    config: Annotated[Path, typer.Argument(help="Pipeline TOML (see examples/digits.toml).")],
    from_stage: Annotated[
        str | None, typer.Option("--from", help="Re-run from this stage even if nothing changed.")
    ] = None,
    until_stage: Annotated[str | None, typer.Option("--until", help="Stop after this stage.")] = None,
    force: Annotated[
        list[str] | None,
        typer.Option(
            "--force",
            help="Re-run this stage even if nothing changed (repeatable); later stages re-run "
            "only if its output changed.",
        ),
    ] = None,
    runs_dir: Annotated[
        Path | None,
        typer.Option("--runs-dir", help="Where runs/<name>/ goes (default: runs, or the file's runs_dir)."),
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """train → prune → distill → quantize → export → bench; writes runs/NAME/report.md."""
    require_workstation()
    from edgecls.cli.train import epoch_progress
    from edgecls.pipeline import load_pipeline_config, run_pipeline

    def announce(stage: str, status: str) -> None:
        progress_console().print(styled(f"{stage}:"), status)

    def go():
        result = run_pipeline(
            load_pipeline_config(config, runs_dir=runs_dir),
            from_stage=from_stage,
            until_stage=until_stage,
            force=tuple(force or ()),
            on_stage=announce,
            callbacks=[epoch_progress(0)],  # every fit of train, prune, distill and QAT draws its epochs
        )
        if result.failed:
            from edgecls.base.errors import EdgeclsError

            raise EdgeclsError(
                f"stage {result.failed} (earlier outputs kept in {result.run_dir}; fix it and run again to resume)"
            )
        return result

    run(go, as_json=json, render=_render)


def _render(result) -> None:
    out = console()
    for stage in result.stages:
        when = f"  (from {stage.reused_from})" if stage.reused_from else ""
        out.print(f"{stage.stage:9s} {stage.status:8s} {stage.seconds:7.1f} s{when}")
    out.print(f"report: {result.report_md} ({result.seconds:.0f} s in all)")
