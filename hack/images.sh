#!/usr/bin/env bash
# Builds the controller and speaker images without a container engine:
# static binaries (CGO_ENABLED=0, -trimpath, -ldflags "-s -w") in OCI image
# archives on an empty base, nothing pulled from a registry.
#
#   hack/images.sh [controller] [speaker]
#
# writes bin/images/controller.tar (docker.io/ironlb/controller:$TAG) and
# bin/images/speaker.tar (docker.io/ironlb/speaker:$TAG). Load them with
#   kind load image-archive bin/images/controller.tar
#   ctr -n k8s.io images import bin/images/controller.tar
#   docker load -i bin/images/controller.tar
#
# Environment:
#   TAG                image tag (default v0.1.0, the tag manifests/ironlb.yaml uses)
#   REPO               repository prefix (default ironlb: ironlb/controller, ironlb/speaker)
#   ARCH               target GOARCH (default: this machine's)
#   OUT                output directory (default bin/images)
#   SOURCE_DATE_EPOCH  timestamp of every file in the images (default 0)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# GOARCH in the environment would cross-compile the builder itself.
ARCH=${ARCH:-${GOARCH:-$(go env GOARCH)}}
unset GOARCH GOOS
exec go run ./hack/images -out "${OUT:-bin/images}" -tag "${TAG:-v0.1.0}" -repo "${REPO:-ironlb}" -arch "$ARCH" "$@"
