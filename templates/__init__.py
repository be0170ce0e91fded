"""The shipped templates, installed with lbsync as the package `lbsync.templates`.

`haproxy.cfg.j2` and `nginx.conf.j2` are the default templates of `haproxy` and `nginx`
targets; docs/templates.md describes their variables and the context they read.
"""
