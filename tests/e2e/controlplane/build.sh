#!/usr/bin/env bash
# Build kube-apiserver, kubectl (k8s.io/kubernetes), etcd (go.etcd.io/etcd/server/v3) and helm
# (helm.sh/helm/v3) from their Go modules at pinned versions, with this machine's Go toolchain.
#
# Binaries are cached outside the work tree, in $DM_CONTROLPLANE_CACHE (default
# ~/.cache/kubevirt-dynamic-memory/controlplane/<versions>/bin), so a second run takes seconds.
# Prints the bin directory on its last line.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.19.5}"

cache="${DM_CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubevirt-dynamic-memory/controlplane}"
RECIPE=2  # bump when this script builds differently, so caches of the old recipe are not reused
bin="$cache/r$RECIPE-k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION/bin"
want=(kube-apiserver kubectl etcd helm)

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

# k8s.io/kubernetes is not meant to be a dependency: its go.mod points the k8s.io/* staging
# modules at ./staging. Replace each with its published v0.x twin of the same minor
# (kubernetes/kubernetes#79384).
staging_version="v0.${K8S_VERSION#v1.}"
mkdir -p "$work/k8s" && cd "$work/k8s"
go mod init dm-controlplane >/dev/null 2>&1
gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
{
    echo "require k8s.io/kubernetes $K8S_VERSION"
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#replace \1 => \1 '"$staging_version"'#p' "$gomod"
} >> go.mod
cat > tools.go <<GO
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
go mod tidy >/dev/null
echo "building kube-apiserver and kubectl $K8S_VERSION ..." >&2
# Kubernetes reports the version stamped at link time (helm checks charts' kubeVersion against it)
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
kver="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1"
kver="$kver -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
kver="$kver -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1"
kver="$kver -X k8s.io/client-go/pkg/version.gitMinor=$minor"
go build -ldflags "$kver" -o "$bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
go build -ldflags "$kver" -o "$bin/kubectl" k8s.io/kubernetes/cmd/kubectl

echo "building etcd $ETCD_VERSION ..." >&2
mkdir -p "$work/etcd" && cd "$work/etcd"
go mod init dm-etcd >/dev/null 2>&1
go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1
go build -o "$bin/etcd" go.etcd.io/etcd/server/v3

echo "building helm $HELM_VERSION ..." >&2
mkdir -p "$work/helm" && cd "$work/helm"
go mod init dm-helm >/dev/null 2>&1
go get "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >/dev/null 2>&1
go build -ldflags "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" -o "$bin/helm" \
    helm.sh/helm/v3/cmd/helm

echo "built in $(( $(date +%s) - started ))s" >&2
have_all
echo "$bin"
