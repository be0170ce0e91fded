"""lbsync: keeps HAProxy and nginx configuration in step with etcd, Consul or a services file."""

__version__ = "0.1.0"
