package integration

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/kube/deploy"
)

// The image `make image` builds, and the flags every podman command here needs: crun refuses this
// host's cgroups (hybrid mode), and podman's default ulimits exceed the sandbox's hard limits.
const (
	testImage = "localhost/ipsecca:dev"
	// maxImageBytes bounds the image: the debootstrap-made slim base (about 78 MB), libnss3-tools with
	// its libraries and ca-certificates/openssl (about 20 MB), and the stripped static binaries
	// (ipsecca about 70 MB, ipsecca-sidecar about 24 MB) make about 190 MB; the bound leaves about 20%
	// for growth, and catches a stray build context, an unstripped binary (+35 MB) or apt lists and
	// caches left behind.
	maxImageBytes = 230_000_000
	imageUID      = "65532" // the manifests' runAsUser (kube/deploy)
)

var podmanFlags = []string{"--runtime", "runc"}

var podmanUlimits = []string{"--ulimit", "nofile=20000:20000", "--ulimit", "nproc=1000:1000"}

// confined runs a container as kube/deploy's manifests do: read-only root filesystem, all
// capabilities dropped, no privilege escalation. podman's --read-only still mounts a tmpfs on /tmp;
// noTmp takes it away too, as a pod with readOnlyRootFilesystem and no /tmp volume has none.
// memoryTmp is the sidecar's /tmp in the manifests (an emptyDir in memory, 16 MiB).
var (
	confined  = []string{"--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"}
	noTmp     = []string{"--read-only-tmpfs=false"}
	memoryTmp = []string{"--tmpfs", "/tmp:rw,size=16m,mode=1777"}
)

// podman runs podman with args and returns its stdout; stderr goes in the failure message.
func podman(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "podman", append(append([]string{}, podmanFlags...), args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("podman %s: %w\nstdout: %s\nstderr: %s",
			strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String(), nil
}

// podmanRun runs a container of testImage on the host network and returns its stdout.
func podmanRun(t *testing.T, runArgs []string, cmdArgs ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append(append([]string{"run", "--rm", "--network", "host"}, podmanUlimits...), runArgs...)
	out, err := podman(ctx, append(append(args, testImage), cmdArgs...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ownedDir makes a host directory owned by the image's user, for a volume the container writes.
func ownedDir(t *testing.T, path string) string {
	t.Helper()
	uid, _ := strconv.Atoi(imageUID)
	if err := os.MkdirAll(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, uid, uid); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestContainerImage builds the image (make image) and runs the CA, the admin CLI and a node's
// sidecar from it against each other, as a user of the image would.
func TestContainerImage(t *testing.T) {
	if _, err := exec.LookPath("podman"); err != nil {
		t.Fatal("podman not found: run `make deps` (apt-get install podman runc debootstrap)")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "make", "-C", root, "image", "IMAGE="+testImage)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	t.Logf("make image: %s", time.Since(start).Round(time.Second))

	t.Run("user", func(t *testing.T) {
		out, err := podman(context.Background(), "image", "inspect", "--format", "{{.Config.User}}", testImage)
		if err != nil {
			t.Fatal(err)
		}
		if u := strings.TrimSpace(out); u != imageUID && !strings.HasPrefix(u, imageUID+":") {
			t.Errorf("image user = %q, want %s (the manifests' runAsUser)", u, imageUID)
		}
		if got := strings.TrimSpace(podmanRun(t, []string{"--entrypoint", "id"}, "-u")); got != imageUID {
			t.Errorf("id -u in the image = %q, want %s", got, imageUID)
		}
	})

	t.Run("nss tools and no apt lists", func(t *testing.T) {
		// Each tool does real work: a DB, a key and certificate, a PKCS#12 export and listing, a CRL list.
		script := `set -e; d=sql:/tmp; certutil -N -d $d --empty-password
head -c 2048 /dev/urandom >/tmp/noise
certutil -S -x -n probe -s CN=probe -t CT,, -k ec -q nistp256 -d $d -z /tmp/noise >/dev/null 2>&1
pk12util -o /tmp/p.p12 -n probe -d $d -W pw >/dev/null
pk12util -l /tmp/p.p12 -W pw | grep -q 'CN=probe'
crlutil -L -d $d >/dev/null
echo tools-ok; ls -A /var/lib/apt/lists`
		out := podmanRun(t, []string{"--entrypoint", "sh"}, "-c", script)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if lines[0] != "tools-ok" {
			t.Fatalf("NSS tools in the image: %q", out)
		}
		if len(lines) > 1 {
			t.Errorf("apt lists left in the image: %q", lines[1:])
		}
	})

	t.Run("version", func(t *testing.T) {
		bi, err := buildinfo.ReadFile(filepath.Join(root, "bin", "image", "ipsecca"))
		if err != nil {
			t.Fatal(err)
		}
		rev := ""
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				rev = s.Value
			}
		}
		if len(rev) < 12 {
			t.Fatalf("the image's binary has no VCS revision stamped (vcs.revision %q)", rev)
		}
		if out := podmanRun(t, nil, "version"); !strings.Contains(out, rev) {
			t.Errorf("ipsecca version in the image = %q, want the revision %s", out, rev)
		}
		// The node agent the DaemonSet runs is of the same revision.
		if out := podmanRun(t, []string{"--entrypoint", deploy.SidecarCommand}, "--version"); !strings.Contains(
			out, rev) {
			t.Errorf("%s --version in the image = %q, want the revision %s", deploy.SidecarCommand, out, rev)
		}
	})

	t.Run("size", func(t *testing.T) {
		out, err := podman(context.Background(), "image", "inspect", "--format", "{{.Size}}", testImage)
		if err != nil {
			t.Fatal(err)
		}
		size, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("image size: %d bytes (%.1f MB)", size, float64(size)/1e6)
		if size > maxImageBytes {
			t.Errorf("image is %d bytes, more than %d", size, maxImageBytes)
		}
	})

	// One CA from the image serves two nodes' sidecars from the image.
	data, addr := imageServe(t)
	t.Run("serve and sidecar", func(t *testing.T) { imageSidecar(t, data, addr, "worker-1", confined) })
	// Without podman's default /tmp: only the manifests' own in-memory /tmp volume (kube/deploy's
	// TestSidecarHasMemoryTmp holds the manifests to it). Without it certutil fails on the read-only root.
	t.Run("sidecar with the manifests' /tmp", func(t *testing.T) {
		imageSidecar(t, data, addr, "worker-2", slices.Concat(confined, noTmp, memoryTmp))
	})
}

// imageServe runs `ipsecca serve` from the image on the host network with a data dir volume, and
// returns the data dir (on the host) and the address once it serves.
func imageServe(t *testing.T) (data, addr string) {
	data = ownedDir(t, filepath.Join(t.TempDir(), "data"))
	addr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	name := fmt.Sprintf("ipsecca-image-test-%d-serve", os.Getpid())

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := append([]string{"run", "-d", "--name", name, "--network", "host"}, podmanUlimits...)
	args = append(append(append(args, confined...), noTmp...), "-v", data+":/var/lib/ipsecca",
		testImage, "serve", "--data-dir", "/var/lib/ipsecca", "--listen", addr)
	if _, err := podman(ctx, args...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := exec.Command("podman", append(podmanFlags, "logs", name)...).CombinedOutput()
			t.Logf("serve container log:\n%s", logs)
		}
		if _, err := podman(context.Background(), "rm", "-f", "-t", "5", name); err != nil {
			t.Errorf("removing the serve container: %v", err)
		}
	})
	srv := &serverProc{DataDir: data, Addr: addr}
	deadline := time.Now().Add(30 * time.Second)
	for !srv.healthy() {
		if time.Now().After(deadline) {
			t.Fatal("ipsecca serve in the container is not healthy within 30s")
		}
		state, _ := podman(ctx, "inspect", "--format", "{{.State.Status}}", name)
		if strings.TrimSpace(state) == "exited" {
			t.Fatal("ipsecca serve in the container exited at start")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return data, addr
}

// imageSidecar makes a token for node with the image's admin CLI, enrols the node with
// `sidecar --once` from the image (run with runArgs) into an NSS DB, and reads that DB on the host.
// It runs the command the manifests' DaemonSet runs, the small ipsecca-sidecar.
func imageSidecar(t *testing.T, data, addr, node string, runArgs []string) {
	nodeDir := ownedDir(t, filepath.Join(t.TempDir(), "node"))
	adminEnv := []string{"-v", data + ":/var/lib/ipsecca", "-e", "IPSECCA_SERVER=" + addr,
		"-e", "IPSECCA_DATA_DIR=/var/lib/ipsecca"}
	token := strings.TrimSpace(podmanRun(t, adminEnv, "token", "create", "--node", node))
	if token == "" {
		t.Fatal("token create printed no token")
	}
	caPEM, err := os.ReadFile(filepath.Join(data, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(imageUID)
	for f, b := range map[string][]byte{"token": []byte(token), "ca.pem": caPEM} {
		p := filepath.Join(nodeDir, f)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
	}

	// podmanRun fails the test unless the sidecar exits 0: --once exits 0 only when the NSS DB is right.
	podmanRun(t, slices.Concat([]string{"-v", nodeDir + ":/node", "--entrypoint", deploy.SidecarCommand}, runArgs),
		"sidecar", "--once", "--server", addr,
		"--ca-file", "/node/ca.pem", "--node", node, "--token-file", "/node/token",
		"--nss-dir", "/node/nss", "--state-dir", "/node/state")

	got := certutilL(t, filepath.Join(nodeDir, "nss"))
	if trust := got["ovs_cert_cacert"]; trust != "CT,," {
		t.Errorf("NSS DB: ovs_cert_cacert trust %q, want CT,,; all: %v", trust, got)
	}
	if _, ok := got["ovs_certkey_"+node]; !ok {
		t.Errorf("NSS DB has no ovs_certkey_%s; all: %v", node, got)
	}
}
