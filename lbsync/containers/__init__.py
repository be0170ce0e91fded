"""The container engine's API (Docker's, or podman's compatible one): what a reload asks of
the proxy's container when lbsync runs beside it as a sidecar."""

from lbsync.containers.confirm import ReloadNotConfirmed, signal_and_confirm
from lbsync.containers.engine import (
    ContainerNotRunning,
    ContainerUnknown,
    ContainerView,
    Engine,
    EngineError,
    EngineUnreachable,
)

__all__ = [
    "ContainerNotRunning",
    "ContainerUnknown",
    "ContainerView",
    "Engine",
    "EngineError",
    "EngineUnreachable",
    "ReloadNotConfirmed",
    "signal_and_confirm",
]
