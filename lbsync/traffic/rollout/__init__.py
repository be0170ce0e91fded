"""`lbsync rollout`: raise a group's share step by step, behind health and error gates.

`spec` is what the operator asked for and the split at each step (pure), `gates` what must
hold before and during each step, `record` the rollout's state in `services/<svc>/rollout`
(which other terminals control, and `abort` takes over when its runner is gone), `revert` the
split put back only while it is still the rollout's, `driver` the loop that runs it on the
event loop's clock, `hooks` the webhooks called around it (Flagger's set). Its metric gates are
`traffic.analysis`.
"""
