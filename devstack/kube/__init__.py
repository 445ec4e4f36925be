"""A real Kubernetes control plane on loopback for tests: kube-apiserver, etcd, kube-controller-manager and
the CloudNativePG operator with its CRDs and admission webhooks, all built from Go modules (`build`) and
started in a temp dir (`testbed`)."""
