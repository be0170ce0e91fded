"""The KV stores' clients: lbsync's own etcd client, the Consul agents' wrapper, and the store
that `split`, `rollout` and `register` write through."""
