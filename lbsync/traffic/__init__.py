"""Traffic tools: `lbsync split` (shares written with compare-and-swap and history),
`lbsync rollout` (stepped shifts behind gates; its Prometheus metric gates in `analysis`) and
`lbsync register` (an instance under an etcd lease). They write to the KV store and read the
sources; they never import the daemon."""
