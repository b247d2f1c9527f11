"""A local Kubernetes control plane from real binaries: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok (simulated nodes and pods).

Used by the test suite's cluster fixture and by `kubetune dev`. The binaries are
built from pinned Go modules by tests/cluster/build.sh (or taken from
KUBEBUILDER_ASSETS), so this needs a source checkout. Nothing here is used by the
operator itself.
"""
