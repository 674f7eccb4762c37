// Command etcd is the etcd server the kube tests run under their
// kube-apiserver. etcd's server module has no main package of its own.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
