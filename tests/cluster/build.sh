#!/usr/bin/env bash
# Builds the test control plane's binaries from the pinned Go modules beside this
# script, into a cache outside the clone, and prints the directory that holds them.
#
#   tests/cluster/build.sh [MODULE ...]     MODULE: kube etcd kwok helm (default)
#                                           or trainingoperator (the scale benchmark's
#                                           peer, bench/operator_scale.py; never by default)
#
# Each module is built into $KUBETUNE_CACHE/bin/<module>-<key>, where <key> hashes
# the module's go.mod and go.sum, its build_<module> function and the settings
# every build shares: a binary is rebuilt only when its pins (or the way it is
# built) change, and adding a module leaves the others' keys alone. Concurrent runs
# (parallel test sessions) wait for each other per module instead of building the
# same thing twice. The last line of stdout is a directory of links to every built
# binary; progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${KUBETUNE_CACHE:-$HOME/.cache/kubetune}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
export GOPATH=${GOPATH:-$(go env GOPATH)}

modules=("$@")
[ ${#modules[@]} -gt 0 ] || modules=(kube etcd kwok helm)

# Part of every module's cache key: the settings every build shares (keep in sync
# with the exports above).
shared_key="GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod $(go version)"

log() { printf '[kubetune build] %s\n' "$*" >&2; }

module_version() {  # module_dir go_module_path
  (cd "$1" && go list -m -f '{{.Version}}' "$2")
}

build_kube() {  # out_dir
  local v major minor ld="" pkg
  v=$(module_version "$here/kube" k8s.io/kubernetes)
  major=${v#v}; major=${major%%.*}
  minor=${v#v"$major".}; minor=${minor%%.*}
  # Unstamped binaries report v0.0.0, which breaks emulation-version checks and
  # helm's kubeVersion constraints.
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    log "go build $cmd $v"
    (cd "$here/kube" && go build -trimpath -buildvcs=false -ldflags "-s -w$ld" \
      -o "$1/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  done
}

build_etcd() {
  local v
  v=$(module_version "$here/etcd" go.etcd.io/etcd/server/v3)
  log "go build etcd $v"
  (cd "$here/etcd" && go build -trimpath -buildvcs=false -ldflags "-s -w" \
    -o "$1/etcd" go.etcd.io/etcd/server/v3)
}

build_kwok() {
  local v
  v=$(module_version "$here/kwok" sigs.k8s.io/kwok)
  log "go build kwok $v"
  (cd "$here/kwok" && go build -trimpath -buildvcs=false \
    -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$v" \
    -o "$1/kwok" sigs.k8s.io/kwok/cmd/kwok)
}

build_helm() {
  local v k minor ld pkg
  v=$(module_version "$here/helm" helm.sh/helm/v3)
  # The Kubernetes version `helm template` and `helm lint` assume without a
  # cluster: the client-go minor helm is built with (else it says v1.20).
  k=$(module_version "$here/helm" k8s.io/client-go)
  minor=${k#v0.}; minor=${minor%%.*}
  ld="-s -w -X helm.sh/helm/v3/internal/version.version=$v"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ld+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
  log "go build helm $v"
  (cd "$here/helm" && go build -trimpath -buildvcs=false -ldflags "$ld" \
    -o "$1/helm" helm.sh/helm/v3/cmd/helm)
}

build_trainingoperator() {
  local v
  v=$(module_version "$here/trainingoperator" github.com/kubeflow/training-operator)
  log "go build training-operator $v"
  (cd "$here/trainingoperator" && go build -trimpath -buildvcs=false -ldflags "-s -w" \
    -o "$1/training-operator" .)
}

module_key() {  # module
  { cat "$here/$1/go.mod" "$here/$1/go.sum"; declare -f module_version "build_$1"
    echo "$shared_key"; } | sha256sum | cut -c1-16
}

outs=()
for m in "${modules[@]}"; do
  [ -f "$here/$m/go.mod" ] || { log "unknown module: $m"; exit 2; }
  out="$cache/bin/$m-$(module_key "$m")"
  outs+=("$out")
  mkdir -p "$cache/bin"
  exec 9>"$out.lock"
  flock 9
  if [ -f "$out/.complete" ]; then
    log "$m: cached in $out"
  else
    log "$m: building into $out (first build of these pins takes minutes)"
    rm -rf "$out.tmp" && mkdir -p "$out.tmp"
    "build_$m" "$out.tmp"
    touch "$out.tmp/.complete"
    rm -rf "$out" && mv "$out.tmp" "$out"
  fi
  exec 9>&-
done

# One directory of links per combination of pins, so checkouts with different
# pins never see each other's binaries.
links="$cache/assets/$(printf '%s\n' "${outs[@]}" | sha256sum | cut -c1-16)"
mkdir -p "$links"
for out in "${outs[@]}"; do
  for bin in "$out"/*; do ln -sfn "$bin" "$links/$(basename "$bin")"; done
done
echo "$links"
