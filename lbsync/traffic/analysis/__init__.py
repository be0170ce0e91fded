"""Rollout analysis by Prometheus: metric gates that pass, fail or cannot tell.

`metrics` is what the operator asks for (`--metric error-ratio<0.05`, or a named query of
their own) and the shipped templates for HAProxy's exporter, `readings` one judged value as it
is stored in the rollout record, `tally` what a run of readings decides (go on, wait, fail,
pause for a person), `prometheus` the instant-query client, `measure` one round of readings.
Everything but `prometheus` and `measure` is pure.
"""
