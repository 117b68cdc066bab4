# syntax=docker/dockerfile:1
# The scheduler: periodic jobs and the NATS consumers. No cgo: a static
# binary on a distroless base, no shell, user 65532.
# Build from the repository root: docker build -f build/docker/scheduler.Dockerfile .
ARG GO_VERSION=1.27.3

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
ENV GOFLAGS=-mod=mod CGO_ENABLED=0
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/scheduler ./cmd/scheduler

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="tandem-scheduler" \
      org.opencontainers.image.description="Tandem scheduler: periodic jobs and feedback-event consumers" \
      org.opencontainers.image.source="https://github.com/tandem-ai/tandem" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/scheduler /usr/local/bin/scheduler
ENV TANDEM_ADMIN_ADDR=:9102 TANDEM_DATA_DIR=/var/lib/tandem
EXPOSE 9102
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/scheduler"]
