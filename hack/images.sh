#!/usr/bin/env bash
# Builds ironlb's images without a container engine and without pulling
# anything: static binaries (CGO_ENABLED=0, -trimpath, -ldflags "-s -w") on
# an empty base, written by go-containerregistry (hack/images/main.go says
# why each choice).
#
#   hack/images.sh [controller] [speaker] [pause] [backend] [kubectl-ironlb]
#
# With no names it builds all five. The images go into bin/images/NAME.tar,
# named docker.io/$REPO/NAME:$TAG:
#   controller  the controller (manifests/ironlb.yaml)
#   speaker     the speaker DaemonSet (manifests/ironlb.yaml)
#   pause       the pod sandbox image, for a containerd that cannot pull
#               registry.k8s.io/pause (its sandbox_image)
#   backend     the HTTP server the test and demo Services run: GET /health
#               answers "UP <node>"
# and kubectl-ironlb, the kubectl plugin, is the release archive
# bin/release/kubectl-ironlb-linux-$ARCH.tar.gz (the static binary and the
# LICENSE; unpack it onto the PATH of the machine that runs kubectl).
#
# The archives are in `docker save` format (manifest.json, config, layer),
# which all three loaders below take and name the image from (RepoTags):
#   kind load image-archive bin/images/controller.tar
#   ctr -n k8s.io images import bin/images/controller.tar
#   docker load -i bin/images/controller.tar
# Building twice gives byte-identical archives.
#
# Environment:
#   TAG                image tag (default v0.1.0, the tag manifests/ironlb.yaml uses)
#   REPO               repository prefix (default ironlb: ironlb/controller, ...)
#   ARCH               target GOARCH (default: this machine's)
#   OUT                output directory (default bin/images)
#   RELEASE_OUT        directory of the plugin's archive (default bin/release)
#   SOURCE_DATE_EPOCH  time of the image and of every file in it (default 0)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# GOARCH in the environment would cross-compile the builder itself.
ARCH=${ARCH:-${GOARCH:-$(go env GOARCH)}}
unset GOARCH GOOS
exec go run ./hack/images -out "${OUT:-bin/images}" -release "${RELEASE_OUT:-bin/release}" -tag "${TAG:-v0.1.0}" -repo "${REPO:-ironlb}" -arch "$ARCH" "$@"
