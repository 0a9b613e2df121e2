# syntax=docker/dockerfile:1
#
# ironlb images for people who build with Docker (BuildKit, the default
# since Docker 23). Without Docker, hack/images.sh writes the same images as
# image archives.
#
#   docker build --build-arg BINARY=controller -t ironlb/controller:v0.1.0 .
#   docker build --build-arg BINARY=speaker    -t ironlb/speaker:v0.1.0 .
#
# Multi-platform: docker buildx build --platform linux/amd64,linux/arm64 ...
# (the binaries are cross-compiled on the build platform).

# Which binary: controller or speaker. It names the final stage below.
ARG BINARY=controller
ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG BINARY
ARG TARGETOS=linux
ARG TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
# Only the packages the binaries are built from, so that .cache/, bin/ and
# .git/ stay out of the build context's transfer.
COPY api/ api/
COPY config/ config/
COPY controller/ controller/
COPY ipam/ ipam/
COPY speaker/ speaker/
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
	case "$BINARY" in controller|speaker) ;; *) echo "BINARY must be controller or speaker, not '$BINARY'" >&2; exit 1 ;; esac && \
	CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
	go build -trimpath -ldflags "-s -w" -o /out/$BINARY ./$BINARY/cmd/$BINARY

# The controller runs as nobody (65534, as in manifests/ironlb.yaml), with no
# capabilities.
FROM gcr.io/distroless/static:nonroot AS controller
COPY --from=build /out/controller /controller
USER 65534:65534
EXPOSE 7472 7473
ENTRYPOINT ["/controller"]

# The speaker runs as root so that the one capability the DaemonSet leaves
# it, NET_RAW, is effective; the DaemonSet drops every other one.
FROM gcr.io/distroless/static AS speaker
COPY --from=build /out/speaker /speaker
USER 0:0
EXPOSE 7474 7475 7946 7946/udp
ENTRYPOINT ["/speaker"]

FROM ${BINARY}
