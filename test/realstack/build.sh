#!/usr/bin/env bash
# Builds the real control plane the realstack tests run, from the Go modules pinned in go/:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (one Kubernetes
# release, go/go.mod), kwok (go/kwok/go.mod), the CSI snapshot-controller with its CRDs and
# RBAC (go/snapshotter/go.mod), Flux's source-, kustomize- and helm-controller with their CRDs
# and Flux's RBAC (go/flux/*/go.mod), and our OCI registry (go/registry). Binaries go to $FLUXGATE_REALSTACK_BIN,
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

# Flux: each controller from its own wrapper module (go/flux/update-gomod.sh says why), built
# as upstream's Dockerfiles do (CGO_ENABLED=0, -trimpath; their Makefiles add no -X stamps).
flux_start=$SECONDS
declare -A flux
rm -rf "$bin/flux" && mkdir -p "$bin/flux"
for c in source kustomize helm; do
  cd "$here/go/flux/$c"
  pkg="github.com/fluxcd/$c-controller"
  flux[$c]="$(go list -m -f '{{.Version}}' "$pkg")"
  echo "build.sh: $c-controller ${flux[$c]}"
  go build -ldflags "-s -w" -o "$bin/$c-controller" "$pkg"
  # Its CRDs, as its release's <name>.crds.yaml is made (kustomize of config/crd/bases).
  dir="$(go list -m -f '{{.Dir}}' "$pkg")"
  for f in "$dir"/config/crd/bases/*.yaml; do cp "$f" "$bin/flux/"; done
done
# The RBAC Flux's own install gives the controllers (flux2's manifests/rbac: ClusterRole
# crd-controller for all of them, cluster-admin for kustomize- and helm-controller through
# ClusterRoleBinding cluster-reconciler), from the flux2 release that ships these
# controllers (its manifests/bases name source-controller v1.9.3, kustomize-controller
# v1.9.4; helm-controller v1.6.3, whose Helm fork the proxy refuses, see the README). Only
# the module's files are used; nothing of flux2 is built.
flux2=v2.9.3
flux2_dir="$(cd / && go mod download -json "github.com/fluxcd/flux2/v2@$flux2" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')"
[ -d "$flux2_dir/manifests/rbac" ] || { echo "build.sh: no manifests/rbac in github.com/fluxcd/flux2/v2@$flux2 ($flux2_dir)" >&2; exit 1; }
cp "$flux2_dir/manifests/rbac/controller.yaml" "$flux2_dir/manifests/rbac/reconciler.yaml" "$bin/flux/"
chmod -R u+w "$bin/flux"

# Our OCI registry (go/registry/main.go) for OCIRepository charts.
cd "$here/go/registry"
ggcr="$(go list -m -f '{{.Version}}' github.com/google/go-containerregistry)"
echo "build.sh: oci-registry (go-containerregistry $ggcr)"
go build -ldflags "-s -w" -o "$bin/oci-registry" .
echo "build.sh: Flux and the registry took $((SECONDS - flux_start)) s"

# What the launcher prints and checks: which versions these binaries are.
{
  echo "kubernetes=$k8s"
  echo "etcd=$etcd"
  echo "kwok=$kwok"
  echo "snapshot-controller=$snapshotter"
  echo "source-controller=${flux[source]}"
  echo "kustomize-controller=${flux[kustomize]}"
  echo "helm-controller=${flux[helm]}"
  echo "flux2-rbac=$flux2"
  echo "oci-registry=go-containerregistry@$ggcr"
  echo "go=$(go env GOVERSION)"
} > "$bin/VERSIONS"
echo "build.sh: done in $((SECONDS - start)) s: $(tr '\n' ' ' < "$bin/VERSIONS")"
