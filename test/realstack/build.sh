#!/usr/bin/env bash
# Builds the real control plane the realstack tests run, from the Go modules pinned in go/:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (one Kubernetes
# release, go/go.mod), kwok (go/kwok/go.mod) and the CSI snapshot-controller with its CRDs and
# RBAC (go/snapshotter/go.mod). Binaries go to $FLUXGATE_REALSTACK_BIN,
# default test/realstack/bin (git-ignored); nothing downloaded lands in the repository.
# Go's module and build caches make a second run take seconds.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${FLUXGATE_REALSTACK_BIN:-$here/bin}"
mkdir -p "$bin"
bin="$(cd "$bin" && pwd)"

command -v go >/dev/null 2>&1 || { echo "build.sh: go is not installed (Go >= $(sed -n 's/^go //p' "$here/go/go.mod") is needed)" >&2; exit 1; }
# Static binaries as upstream releases them; no profile-guided optimisation (kube-apiserver
# ships a default.pgo that Go would otherwise apply: slower to build, nothing a test needs).
export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -trimpath -pgo=off -buildvcs=false"

start=$SECONDS
cd "$here/go"
k8s="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"
k8s_date="$(go list -m -f '{{.Time}}' k8s.io/kubernetes | cut -d' ' -f1)" # e.g. 2026-07-22
etcd="$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
minor="${k8s#v1.}"; minor="${minor%%.*}"
# Without these, /version says v0.0.0-master+$Format:%H$ (expanded only by git archive) and
# clients that parse the server version (kubectl, Helm) see nonsense. The module zip has no
# git commit, so gitCommit names the module version instead of a hash.
stamp=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  stamp+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  stamp+=" -X $pkg.gitCommit=module-k8s.io/kubernetes@$k8s -X $pkg.gitTreeState=clean"
  stamp+=" -X $pkg.buildDate=${k8s_date}T00:00:00Z"
done

echo "build.sh: Kubernetes $k8s (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl) into $bin"
go build -ldflags "-s -w$stamp" -o "$bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl
echo "build.sh: etcd $etcd"
go build -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3

cd "$here/go/kwok"
kwok="$(go list -m -f '{{.Version}}' sigs.k8s.io/kwok)"
echo "build.sh: kwok $kwok"
go build -ldflags "-s -w" -o "$bin/kwok" sigs.k8s.io/kwok/cmd/kwok
# The kwok binary embeds no stages. The node's are kwokctl's defaults (initialize, heartbeat
# with a Lease), from the same module version; the pods' are ours (kwok-stages/ in the
# realstack crate, which the launcher writes out itself).
kwok_dir="$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
rm -rf "$bin/kwok-stages" && mkdir -p "$bin/kwok-stages"
for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml; do
  cp "$kwok_dir/kustomize/stage/$f" "$bin/kwok-stages/"
done
chmod -R u+w "$bin/kwok-stages"

cd "$here/go/snapshotter"
snap_pkg=github.com/kubernetes-csi/external-snapshotter
snapshotter="$(go list -m -f '{{.Version}}' $snap_pkg/v8)"
echo "build.sh: snapshot-controller $snapshotter"
# cmd/snapshot-controller prints `var version` (main.version) at start and for --version.
go build -ldflags "-s -w -X main.version=$snapshotter" -o "$bin/snapshot-controller" $snap_pkg/v8/cmd/snapshot-controller
# Its v1 CRDs (from client/v8, the API the controller was built with) and its RBAC, as
# upstream deploys them; the launcher applies both. No group-snapshot CRDs: the controller
# does not watch them while its CSIVolumeGroupSnapshot gate is off (the default).
client_dir="$(go list -m -f '{{.Dir}}' $snap_pkg/client/v8)"
snap_dir="$(go list -m -f '{{.Dir}}' $snap_pkg/v8)"
rm -rf "$bin/snapshotter" && mkdir -p "$bin/snapshotter"
for kind in volumesnapshotclasses volumesnapshotcontents volumesnapshots; do
  cp "$client_dir/config/crd/snapshot.storage.k8s.io_$kind.yaml" "$bin/snapshotter/"
done
cp "$snap_dir/deploy/kubernetes/snapshot-controller/rbac-snapshot-controller.yaml" "$bin/snapshotter/"
chmod -R u+w "$bin/snapshotter"

# What the launcher prints and checks: which versions these binaries are.
{
  echo "kubernetes=$k8s"
  echo "etcd=$etcd"
  echo "kwok=$kwok"
  echo "snapshot-controller=$snapshotter"
  echo "go=$(go env GOVERSION)"
} > "$bin/VERSIONS"
echo "build.sh: done in $((SECONDS - start)) s: $(tr '\n' ' ' < "$bin/VERSIONS")"
