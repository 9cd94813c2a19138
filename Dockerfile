# weir: the broker (every role: combined, controller, broker) and the `weir` CLI in one image.
#
# The binaries are built on the host, not in the image:
#
#   cargo build --release -p weir-broker -p weir-cli --bins
#   docker build -t weir:local .                        # BASE defaults to debian:bookworm-slim
#
# The base must have a glibc at least as new as the host that built them (bookworm: 2.36; pass
# e.g. --build-arg BASE=debian:trixie-slim or ubuntu:24.04 when building on something newer).
# Without a registry, docker/build-images.sh makes a base from the host's own libraries
# (weir-base:local) and builds this file on it. No RUN: the file works on a base without a shell.

ARG BASE=debian:bookworm-slim
FROM ${BASE}

LABEL org.opencontainers.image.title="weir" \
      org.opencontainers.image.description="A Kafka-style append-only log broker: weir-broker and the weir CLI" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY target/release/weir-broker target/release/weir /usr/local/bin/
# The data directory, owned by the unprivileged user (a new named volume copies this ownership).
# docker/empty-dir holds only a README that .dockerignore leaves out, so this copies an empty
# directory; COPY --chown gives the directory it creates to the user.
COPY --chown=10001:10001 docker/empty-dir/ /var/lib/weir/

# Every flag of weir-broker has a WEIR_* variable (weir-broker --help); these are the container
# defaults. WEIR_BROKER is the CLI's address: `docker exec <container> weir cluster` dials this
# node (change it with WEIR_LISTEN). The metrics listener (Prometheus /metrics, /healthz,
# /readyz) listens on every interface so a published port reaches it; WEIR_METRICS is where
# `weir health`, the health check, asks (change both together).
ENV WEIR_DATA_DIR=/var/lib/weir \
    WEIR_LISTEN=0.0.0.0:9092 \
    WEIR_DATA_LISTEN=0.0.0.0:9093 \
    WEIR_METRICS_LISTEN=0.0.0.0:7072 \
    WEIR_BROKER=127.0.0.1:9092 \
    WEIR_METRICS=127.0.0.1:7072

USER 10001:10001
WORKDIR /var/lib/weir
VOLUME ["/var/lib/weir"]
# 9092 gRPC (clients and other nodes), 9093 the data port (fetches over sendfile), 7072 the
# metrics listener. An external listener (WEIR_EXTERNAL_LISTEN) is another port, chosen per
# node: see docker-compose.yml.
EXPOSE 9092 9093 7072

# The node is ready: serving, with its data dir open and its controller reachable (GET /readyz
# on the metrics listener, by the CLI: exec form, no shell or curl needed).
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/weir", "health"]

# SIGTERM (docker stop) shuts the node down cleanly.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/weir-broker"]
