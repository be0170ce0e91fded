"""Sources: each yields whole snapshots of the KV contract as an async iterator.

A source drops repeats, survives faults, and never raises into the pipeline for a transient
fault: it yields an unusable snapshot (the last good one stays in force) and carries on.
`build` makes the configured sources, `follow` keeps the last good snapshot of each for the
daemon, the one-shot commands and rollouts alike.
"""

from lbsync.sources.protocol import Source

__all__ = ["Source"]
