"""One log line per target and cycle: outcome, plan and timings, as text or JSON fields."""

from __future__ import annotations

import logging

from lbsync.pipeline.report import ApplyReport, Outcome

log = logging.getLogger("lbsync")


def log_report(report: ApplyReport) -> None:
    """Log one target's cycle; failures as errors, unchanged targets only at debug level."""
    timings = " ".join(f"{k}={v * 1000:.1f}ms" for k, v in sorted(report.seconds.items()))
    line = f"target={report.target} outcome={report.outcome} plan={report.plan} {timings}"
    if report.detail:
        line += f" detail={report.detail!r}"
    fields = {  # for `--log-format json` (lbsync/cli/logformat.py)
        "event": "apply",
        "target": report.target,
        "outcome": report.outcome.value,
        "plan": report.plan.value if report.plan is not None else None,
        "seconds": dict(sorted(report.seconds.items())),
        "digest": report.digest,
        "detail": report.detail,
        "error": report.error,
    }
    if report.error:
        log.error("%s error=%s", line, report.error, extra=fields)
    elif report.outcome is Outcome.UNCHANGED:
        log.debug("%s", line, extra=fields)
    else:
        log.info("%s", line, extra=fields)
