"""Each artifact's name in a run's report: the table, the plots and [compare] all call it the same."""

from __future__ import annotations

from typing import Any


def artifact_labels(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Artifact path → the name the report table gives it, made unique.

    A repeated name gets its stage, then a number.
    """
    labels: dict[str, str] = {}
    for row in rows:
        name = row["name"]
        if name in labels.values():
            name = f"{name} ({row['stage']})"
        base, count = name, 2
        while name in labels.values():
            name, count = f"{base} #{count}", count + 1
        labels[row["path"]] = name
    return labels
