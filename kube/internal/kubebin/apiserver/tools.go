//go:build tools

// Package tools pins the kube-apiserver the kube tests run against. It is its
// own module because k8s.io/kubernetes replaces its staging modules with
// ./staging, which only a separate module can undo (see go.mod).
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
