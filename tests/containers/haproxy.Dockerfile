# A local stand-in for the official `haproxy:2.6` image (no registry is reachable where the
# tests run): Debian 12's HAProxy 2.6, the same command-line convention (`haproxy ARGS` runs
# `haproxy -W -db ARGS`, master-worker in the foreground as PID 1), an unprivileged user.
ARG BASE=localhost/lbsync-base:bookworm
FROM ${BASE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends haproxy \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb
COPY haproxy-entrypoint.sh /usr/local/bin/haproxy-entrypoint
USER haproxy
STOPSIGNAL SIGUSR1
ENTRYPOINT ["/usr/local/bin/haproxy-entrypoint"]
CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
