# lbsync as a sidecar next to HAProxy (or nginx): docs/container.md.
#
# The image carries HAProxy and nginx only to validate rendered files (`haproxy -c`, `nginx -t`);
# the proxy itself runs in its own container, reloaded through its master socket (the default
# of examples/sidecar/) or through the engine's API (`reload = { method = "docker" }`).
#
# Build arguments:
#   BASE      the base image: Python >= 3.11 with the venv module on Debian 12, whose HAProxy
#             (2.6) and nginx (1.22) validate; run the same versions as the proxy
#             (default python:3.11-slim-bookworm)
#   PIP_ARGS  extra arguments for pip, e.g. "--no-index --find-links /wheels" to install from
#             a wheelhouse mounted with `podman build --volume DIR:/wheels:ro` (no index)
#   UID, GID  the unprivileged user lbsync runs as (default 10001): give the proxy's
#             container the same ones, so both can use the shared sockets and files
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
ARG PIP_ARGS=""
COPY pyproject.toml README.md /src/
COPY lbsync /src/lbsync
COPY templates /src/templates
# A virtualenv: the same on a python image and on Debian's python3 (which refuses a system-wide
# pip install); the dependency ranges are pyproject.toml's. pip and setuptools are not needed
# to run, so they go.
RUN python3 -m venv /opt/lbsync \
    && /opt/lbsync/bin/pip install --no-cache-dir --disable-pip-version-check $PIP_ARGS \
        "/src[docker]" \
    && /opt/lbsync/bin/pip uninstall --yes --quiet setuptools pip

FROM ${BASE}
ARG UID=10001
ARG GID=10001
LABEL org.opencontainers.image.title="lbsync" \
      org.opencontainers.image.description="Keeps HAProxy and nginx configuration in step with etcd, Consul or a services file; runs beside the proxy as a sidecar." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.documentation="docs/container.md"

RUN apt-get update \
    && apt-get install -y --no-install-recommends haproxy nginx-light ca-certificates \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \
    && groupadd --system --gid "$GID" lbsync \
    && useradd --system --uid "$UID" --gid "$GID" --home-dir /nonexistent \
        --shell /usr/sbin/nologin lbsync \
    && install -d -o "$UID" -g "$GID" -m 0755 /etc/lbsync /etc/lbsync/templates \
    && install -d -o "$UID" -g "$GID" -m 0775 /etc/haproxy /run/haproxy /var/lib/lbsync
COPY --from=build /opt/lbsync /opt/lbsync
COPY image/entrypoint.sh /usr/local/bin/lbsync-entrypoint
COPY image/lbsync.toml /etc/lbsync/lbsync.toml
COPY --chown=${UID}:${GID} image/services.toml /var/lib/lbsync/services.toml

ENV PATH=/opt/lbsync/bin:$PATH \
    LBSYNC_CONFIG=/etc/lbsync/lbsync.toml \
    PYTHONDONTWRITEBYTECODE=1
USER ${UID}:${GID}
WORKDIR /var/lib/lbsync

# Volumes (mount them; none is declared, so nothing is created behind your back):
#   /etc/lbsync/lbsync.toml  the configuration (a default for the file source is baked in)
#   /etc/lbsync/templates    your own templates, when `template = ...` points there
#   /etc/haproxy             the rendered configuration DIRECTORY, shared with the proxy
#                            (a single-file bind mount keeps the old file after a rename)
#   /run/haproxy             the master socket, the stats socket and the server states,
#                            shared with the proxy
#   /var/lib/lbsync          the services file of the file source, and lbsync's own files
# The status API listens on the container's loopback (the pod's, in Kubernetes) unless told
# otherwise. Beyond loopback lbsync requires a bearer token, so to be scraped from outside:
#   LBSYNC_API_LISTEN=0.0.0.0:9180 LBSYNC_API_TOKEN_FILE=/run/secrets/lbsync-api-token
# (or LBSYNC_API_OPEN=true for no token, which lbsync logs as a warning at every start).
EXPOSE 9180
# lbsync-health is `lbsync health` with the standard library alone: quick on a busy machine
HEALTHCHECK --interval=10s --timeout=10s --start-period=30s --retries=3 \
    CMD ["lbsync-health"]
ENTRYPOINT ["/usr/local/bin/lbsync-entrypoint"]
CMD ["run"]
