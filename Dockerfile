# lbsync as a sidecar next to HAProxy (or nginx).
#
# The image carries HAProxy and nginx only to validate rendered files (`haproxy -c`, `nginx -t`);
# the proxy itself runs in its own container. Share the configuration DIRECTORY between the two
# containers (an atomic rename on a single-file bind mount leaves the mount on the old file),
# and the HAProxy master socket for confirmed reloads. See docs/operations.md.
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends haproxy nginx-light ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY lbsync ./lbsync
RUN pip install --no-cache-dir . && rm -rf /src

COPY docker/entrypoint.sh /usr/local/bin/lbsync-entrypoint
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin lbsync \
    && mkdir -p /etc/lbsync /run/haproxy \
    && chown lbsync /run/haproxy
USER lbsync
WORKDIR /etc/lbsync

ENV LBSYNC_CONFIG=/etc/lbsync/lbsync.toml
# The status API listens on the container's loopback (the pod's, in Kubernetes) unless told
# otherwise. Beyond loopback lbsync requires a bearer token, so to be scraped from outside:
#   LBSYNC_API_LISTEN=0.0.0.0:9180 LBSYNC_API_TOKEN_FILE=/run/secrets/lbsync-api-token
# (or LBSYNC_API_OPEN=true for no token, which lbsync logs as a warning). docs/container.md
EXPOSE 9180
ENTRYPOINT ["/usr/local/bin/lbsync-entrypoint"]
CMD ["run"]
