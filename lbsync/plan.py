"""The plan: what a target needs, from the rendered bytes, the file on disk and what runs.

Pure. `running` is the content the proxy is known to have loaded (None when unknown, e.g. a
reload could not be confirmed): a file that is already right on disk but not yet running only
needs the reload.
"""

from __future__ import annotations

from enum import StrEnum


class Plan(StrEnum):
    """What one cycle does to one target."""

    NOTHING = "nothing"
    RELOAD = "reload"
    FULL = "full"


def plan(rendered: bytes, on_disk: bytes | None, running: bytes | None) -> Plan:
    """Nothing when disk and proxy already have these bytes; reload only when just the proxy
    lags; otherwise the full path (validate, write, reload)."""
    if rendered != on_disk:
        return Plan.FULL
    return Plan.NOTHING if running == on_disk else Plan.RELOAD
