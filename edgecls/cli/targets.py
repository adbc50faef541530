"""``edgecls targets``: the device profiles (``targets/*.toml``) that ``bench --target`` takes."""

from __future__ import annotations

from edgecls.cli.app import JsonOption, app, console, run


@app.command()
def targets(json: JsonOption = False) -> None:
    """List the device profiles `edgecls bench --target` takes."""
    from edgecls.runtime.targets import get_target, list_targets

    run(
        lambda: {"targets": [get_target(name).to_dict() for name in list_targets()]},
        as_json=json,
        render=_render_targets,
        tensorflow=False,
    )


def _render_targets(listing) -> None:
    from rich.table import Table

    table = Table("target", "aliases", "arch", "engines", "threads", "precisions", "memory")
    for target in listing["targets"]:
        providers = [provider.replace("ExecutionProvider", "") for provider in target["providers"]]
        table.add_row(
            target["name"],
            ", ".join(target["aliases"]),
            target["arch"],
            ", ".join(target["engines"])
            + (f"\n({' > '.join(providers)})" if "onnxruntime" in target["engines"] and len(providers) > 1 else ""),
            str(target["threads"] or "all"),
            ", ".join(target["precisions"]),
            f"{target['memory_mb']} MB" if target["memory_mb"] else "-",
        )
    out = console()
    out.print(table)
    out.print("Install the runtime on the device:")  # a paragraph each: too long for a table cell
    for target in listing["targets"]:
        out.print(f"  {target['name']}: {target['install']}")
