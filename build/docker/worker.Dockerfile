# syntax=docker/dockerfile:1
# The CPU worker. Matrix products go through OpenBLAS by cgo, so the binary
# links glibc and libopenblas: the run stage is Debian slim with the OpenBLAS
# runtime only (no compiler, no headers). The shell the base carries is not
# used: the entrypoint is the binary itself. User 65532.
# Build from the repository root: docker build -f build/docker/worker.Dockerfile .
ARG GO_VERSION=1.27.3
ARG DEBIAN_RELEASE=bookworm

FROM golang:${GO_VERSION}-${DEBIAN_RELEASE} AS build
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libopenblas-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
ENV GOFLAGS=-mod=mod CGO_ENABLED=1
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/worker ./cmd/worker

FROM debian:${DEBIAN_RELEASE}-slim
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="tandem-worker" \
      org.opencontainers.image.description="Tandem worker (CPU): asynq job handlers, transformer kernels on OpenBLAS" \
      org.opencontainers.image.source="https://github.com/tandem-ai/tandem" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libopenblas0-pthread ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/worker /usr/local/bin/worker
ENV TANDEM_ADMIN_ADDR=:9101 TANDEM_DATA_DIR=/var/lib/tandem TANDEM_DEVICE=cpu
EXPOSE 9101
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/worker"]
