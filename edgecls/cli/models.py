"""``edgecls models``: the model registry."""

from __future__ import annotations

import typer

from edgecls.cli.app import JsonOption, app, run


@app.command()
def models(json: JsonOption = False) -> None:
    """List the model registry."""
    from edgecls.models import get_entry, list_models

    def registry() -> dict:
        entries = [get_entry(name) for name in list_models()]
        return {
            "models": [
                {
                    "name": e.name,
                    "default_image_size": e.default_image_size,
                    "min_image_size": e.min_image_size,
                    "description": e.description,
                }
                for e in entries
            ]
        }

    def render(result: dict) -> None:
        for entry in result["models"]:
            typer.echo(f"{entry['name']:18s} {entry['default_image_size']:>4d}px  {entry['description']}")

    run(registry, as_json=json, render=render, tensorflow=False)
