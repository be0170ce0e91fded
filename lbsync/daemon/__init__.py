"""The daemon: the pipeline run as one task group, its immutable status, metrics, the API."""
