# syntax=docker/dockerfile:1
# The GPU worker: the worker built with -tags cuda (gorgonia.org/cu, the CUDA
# driver API) on NVIDIA's CUDA runtime image. CUDA 12: gorgonia.org/cu does
# not build against CUDA 13's headers. The build links the driver stub;
# libcuda.so.1 itself comes from the node's driver at run time, mounted by
# the NVIDIA container toolkit. User 65532.
# Build from the repository root: docker build -f build/docker/worker-cuda.Dockerfile .
ARG GO_VERSION=1.27.3
ARG CUDA_VERSION=12.6.3
ARG UBUNTU_RELEASE=ubuntu24.04

# Go's release tree, copied into the CUDA build image below.
FROM golang:${GO_VERSION}-bookworm AS go

FROM nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU_RELEASE} AS build
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libopenblas-dev \
    && rm -rf /var/lib/apt/lists/*
COPY --from=go /usr/local/go /usr/local/go
ENV PATH=/usr/local/go/bin:${PATH} GOPATH=/go GOFLAGS=-mod=mod CGO_ENABLED=1 \
    CGO_CFLAGS=-I/usr/local/cuda/include \
    CGO_LDFLAGS=-L/usr/local/cuda/lib64/stubs
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -tags cuda -trimpath -ldflags="-s -w" -o /out/worker ./cmd/worker

FROM nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU_RELEASE}
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="tandem-worker-cuda" \
      org.opencontainers.image.description="Tandem worker (CUDA): asynq job handlers, transformer kernels on the GPU" \
      org.opencontainers.image.source="https://github.com/tandem-ai/tandem" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libopenblas0-pthread \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/worker /usr/local/bin/worker
# The toolkit mounts the driver's compute libraries only when asked.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    TANDEM_ADMIN_ADDR=:9101 TANDEM_DATA_DIR=/var/lib/tandem TANDEM_DEVICE=cuda:0 \
    HOME=/tmp CUDA_CACHE_PATH=/tmp/cuda-cache
EXPOSE 9101
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/worker"]
