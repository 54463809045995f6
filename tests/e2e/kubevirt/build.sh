#!/usr/bin/env bash
# Build the parts of the e2e tier's KubeVirt cluster that come from Go modules, at pinned versions,
# with this machine's Go toolchain:
# - KubeVirt's own virt-controller and virt-api (kubevirt.io/kubevirt), and dm-kubevirt-manifests,
#   our small program that prints KubeVirt's CRDs, RBAC and webhooks from KubeVirt's own generator;
# - kwok (sigs.k8s.io/kwok), the Kubernetes SIG project that plays the kubelets;
# - kube-scheduler (k8s.io/kubernetes, the version of our kube-apiserver).
#
# Cached outside the work tree like the control plane, in $DM_KUBEVIRT_CACHE (default
# ~/.cache/kubevirt-dynamic-memory/kubevirt/<versions>/bin). Prints the bin directory on its last line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

KUBEVIRT_VERSION="${KUBEVIRT_VERSION:-v1.8.0}"
KWOK_VERSION="${KWOK_VERSION:-v0.7.0}"
K8S_VERSION="${K8S_VERSION:-v1.34.4}"

cache="${DM_KUBEVIRT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubevirt-dynamic-memory/kubevirt}"
RECIPE=1  # bump when this script builds differently, so caches of the old recipe are not reused
manifests_sum="$(sha256sum "$here/manifests/main.go" | cut -c1-12)"
bin="$cache/r$RECIPE-kubevirt-$KUBEVIRT_VERSION-kwok-$KWOK_VERSION-k8s-$K8S_VERSION-m$manifests_sum/bin"
want=(virt-controller virt-api dm-kubevirt-manifests kwok kube-scheduler)

have_all() { for b in "${want[@]}"; do [ -x "$bin/$b" ] || return 1; done; }
if have_all; then
    echo "$bin"
    exit 0
fi
mkdir -p "$bin"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export GOFLAGS="-buildvcs=false -trimpath"
export CGO_ENABLED=0
started=$(date +%s)

# kubevirt.io/kubevirt is not meant to be a dependency: its go.mod points kubevirt.io/api and
# kubevirt.io/client-go at ./staging. A wrapper module takes KubeVirt's own replace block, with those
# two replaced by their published modules of the same version, and starts from KubeVirt's go.sum.
echo "building KubeVirt $KUBEVIRT_VERSION (virt-controller, virt-api) ..." >&2
mkdir -p "$work/kubevirt/cmd/dm-kubevirt-manifests" && cd "$work/kubevirt"
kvdir="$(go mod download -json "kubevirt.io/kubevirt@$KUBEVIRT_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
gover="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$kvdir/go.mod")"
{
    echo "module dm-kubevirt"
    echo
    echo "go $gover"
    echo
    echo "require kubevirt.io/kubevirt $KUBEVIRT_VERSION"
    echo
    sed -n '/^replace (/,/^)/p' "$kvdir/go.mod" | grep -v '=> \./staging/'
    echo "replace kubevirt.io/api => kubevirt.io/api $KUBEVIRT_VERSION"
    echo "replace kubevirt.io/client-go => kubevirt.io/client-go $KUBEVIRT_VERSION"
} > go.mod
cp "$kvdir/go.sum" go.sum
chmod u+w go.sum
cp "$here/manifests/main.go" cmd/dm-kubevirt-manifests/main.go
printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "kubevirt.io/kubevirt/cmd/virt-api"\n\t_ "kubevirt.io/kubevirt/cmd/virt-controller"\n)\n' > tools.go
go mod tidy -e >/dev/null 2>&1
go build -o "$bin/virt-controller" kubevirt.io/kubevirt/cmd/virt-controller
go build -o "$bin/virt-api" kubevirt.io/kubevirt/cmd/virt-api
go build -o "$bin/dm-kubevirt-manifests" ./cmd/dm-kubevirt-manifests

echo "building kwok $KWOK_VERSION ..." >&2
GOBIN="$bin" go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"

echo "building kube-scheduler $K8S_VERSION ..." >&2
staging_version="v0.${K8S_VERSION#v1.}"
mkdir -p "$work/k8s" && cd "$work/k8s"
go mod init dm-scheduler >/dev/null 2>&1
gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
{
    echo "require k8s.io/kubernetes $K8S_VERSION"
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#replace \1 => \1 '"$staging_version"'#p' "$gomod"
} >> go.mod
printf '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-scheduler"\n' > tools.go
go mod tidy >/dev/null
go build -o "$bin/kube-scheduler" k8s.io/kubernetes/cmd/kube-scheduler

echo "built in $(( $(date +%s) - started ))s" >&2
have_all
echo "$bin"
