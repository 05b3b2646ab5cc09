# syntax=docker/dockerfile:1
#
# recoveryd container image (Debian 12 "bookworm").
#
#   docker build -t recoveryd:0.1.0 .
#   docker build --build-arg RUN_TESTS=1 -t recoveryd:0.1.0 .   # also run the test suite
#
# Stages:
#   deck     decK (Kong's CLI), the one program the shipped playbooks run
#            through recovery.exec (--exec-allow /usr/local/bin/deck).
#   build    the same build as CI: scripts/deps.sh installs the Debian
#            packages, then scripts/build.sh (Release). The tests are optional.
#   runtime  debian:12-slim with only the runtime libraries, the binary,
#            the playbooks and the Lua helper library; runs as uid 65532.
#
# The Kubernetes manifests (k8s/) mount the playbooks and the Lua library
# from ConfigMaps over these paths; the copies in the image serve plain
# `docker run` and are the defaults to start from.

ARG DEBIAN_IMAGE=debian:12-slim
# Pin by digest for reproducible builds (kong/deck:v1.65.1@sha256:...).
ARG DECK_IMAGE=kong/deck:v1.65.1

FROM ${DECK_IMAGE} AS deck

FROM ${DEBIAN_IMAGE} AS build
ARG RUN_TESTS=0
WORKDIR /src
# deps.sh first, alone: the package layer is cached until the list changes.
COPY scripts/deps.sh scripts/deps.sh
RUN bash scripts/deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN set -eu; \
    tests=OFF; if [ "$RUN_TESTS" = 1 ]; then tests=ON; fi; \
    bash scripts/build.sh /build Release -DRECOVERYD_TESTS="$tests"; \
    if [ "$RUN_TESTS" = 1 ]; then cd /build && ctest --output-on-failure -j2 --timeout 600; fi; \
    /build/recoveryd --version

FROM ${DEBIAN_IMAGE} AS runtime
RUN set -eu; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libmicrohttpd12 libcjson1 libcurl4 liblua5.4-0 libsqlite3-0 libre2-9 ca-certificates; \
    rm -rf /var/lib/apt/lists/*; \
    install -d -o 65532 -g 65532 -m 0750 /var/lib/recoveryd
COPY --from=build /build/recoveryd /usr/local/bin/recoveryd
COPY --from=deck /usr/local/bin/deck /usr/local/bin/deck
COPY --from=build /src/playbooks/ /etc/recoveryd/playbooks-default/
COPY --from=build /src/lua/ /usr/share/recoveryd/lua/
USER 65532:65532
WORKDIR /var/lib/recoveryd
EXPOSE 9095
ENTRYPOINT ["/usr/local/bin/recoveryd"]
# `docker run IMAGE` alone prints the flags. Arguments after the image name
# replace this CMD; give at least --listen 0.0.0.0:9095, --playbooks
# /etc/recoveryd/playbooks-default, --lua-path /usr/share/recoveryd/lua,
# --state /var/lib/recoveryd/journal.db and the two token files (mounted).
# Kubernetes sets them with the Deployment's args (k8s/base/deployment.yaml).
CMD ["--help"]
