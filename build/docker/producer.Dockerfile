# syntax=docker/dockerfile:1
# The producer: HTTP API, CLI and asynqmon UI. It runs no model, so it builds
# without cgo (the pure-Go matrix fallback) into a static binary on a
# distroless base: no shell, no package manager, user 65532.
# Build from the repository root: docker build -f build/docker/producer.Dockerfile .
ARG GO_VERSION=1.27.3

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
ENV GOFLAGS=-mod=mod CGO_ENABLED=0
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/producer ./cmd/producer

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="tandem-producer" \
      org.opencontainers.image.description="Tandem producer: job submission HTTP API, CLI and asynqmon UI" \
      org.opencontainers.image.source="https://github.com/tandem-ai/tandem" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/producer /usr/local/bin/producer
ENV TANDEM_HTTP_ADDR=:8080 TANDEM_DATA_DIR=/var/lib/tandem
EXPOSE 8080
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/producer"]
CMD ["serve"]
