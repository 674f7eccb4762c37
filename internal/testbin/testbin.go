// Package testbin builds the real third-party servers the tests run (etcd
// and kube-apiserver) from the Go module proxy, from pinned nested modules
// in kube/internal/kubebin, and caches them in the repository's git-ignored
// .cache/kubebin/<hash>/, so only the first run pays the build (etcd about
// 30 s, kube-apiserver about 4 minutes). A failed build is an error for
// the caller to fail its test with: nothing here skips.
package testbin

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Pinned sources of the binaries, relative to the repository root. The
// cache key covers every file listed here.
var (
	apiserverModule = filepath.Join("kube", "internal", "kubebin", "apiserver")
	etcdModule      = filepath.Join("kube", "internal", "kubebin", "etcd")
	pinnedFiles     = []string{
		filepath.Join(
			apiserverModule,
			"go.mod",
		), filepath.Join(apiserverModule, "go.sum"), filepath.Join(apiserverModule, "tools.go"),
		filepath.Join(etcdModule, "go.mod"), filepath.Join(etcdModule, "go.sum"), filepath.Join(etcdModule, "main.go"),
	}
)

var (
	etcdOnce, kasOnce sync.Once
	etcdBin, kasBin   string
	etcdErr, kasErr   error
)

// Etcd returns the path of the etcd binary, building it when needed.
func Etcd() (string, error) {
	etcdOnce.Do(func() { etcdBin, etcdErr = build("etcd", etcdModule, ".") })
	return etcdBin, etcdErr
}

// KubeAPIServer returns the path of the kube-apiserver binary, building it
// when needed.
func KubeAPIServer() (string, error) {
	kasOnce.Do(func() {
		kasBin, kasErr = build("kube-apiserver", apiserverModule, "k8s.io/kubernetes/cmd/kube-apiserver")
	})
	return kasBin, kasErr
}

// RepoRoot returns the main module's directory (the repository root).
func RepoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the ipsecca module (go env GOMOD is empty)")
	}
	return filepath.Dir(gomod), nil
}

// CacheDir returns the directory the binaries for the current pins live
// in: .cache/kubebin/<hash of the pinned files and the Go version>.
func CacheDir() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	gov, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOVERSION: %w", err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n", bytes.TrimSpace(gov))
	for _, f := range pinnedFiles {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", filepath.ToSlash(f), len(b))
		h.Write(b)
	}
	return filepath.Join(root, ".cache", "kubebin", hex.EncodeToString(h.Sum(nil))[:16]), nil
}

// build builds pkg of the nested module into the cache as name, unless
// it is there. Several test processes may get here together: one builds,
// the others wait on the lock and find the result.
func build(name, module, pkg string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	dir, err := CacheDir()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, name)
	if exists(out) {
		return out, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", dir, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if exists(out) {
		return out, nil
	}
	fmt.Fprintf(
		os.Stderr,
		"testbin: building %s from the Go module proxy (first run only; kube-apiserver takes about 4 minutes) ...\n",
		name,
	)
	logPath := out + ".build.log"
	log, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	start := time.Now()
	cmd := exec.Command("go", "build", "-o", out+".tmp", pkg)
	cmd.Dir = filepath.Join(root, module)
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly -buildvcs=false")
	cmd.Stdout, cmd.Stderr = log, log
	err = cmd.Run()
	log.Close()
	if err != nil {
		return "", fmt.Errorf("go build %s in %s: %v\n%s", pkg, module, err, Tail(logPath, 40))
	}
	if err := os.Rename(out+".tmp", out); err != nil {
		return "", err
	}
	fmt.Fprintf(os.Stderr, "testbin: built %s in %s\n", name, time.Since(start).Round(time.Second))
	return out, nil
}

func exists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Size() > 0
}

// Tail returns the last n lines of a file.
func Tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// FreePorts returns n distinct free TCP ports on 127.0.0.1, for the
// servers a test starts.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
