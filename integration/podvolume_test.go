package integration

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/ipsecca/ipsecca/kube/deploy"
)

// TestDataDirOnPodVolume runs the CA as the manifests' pod user on a
// directory shaped like the volume the kubelet mounts with fsGroup (owned
// by root, group fsGroup, mode 2777 like an emptyDir): in the volume's
// root it refuses to start, since it cannot make a directory it does not
// own 0700; in the manifests' data directory, which it creates itself, it
// serves. Group read and write added to every file afterwards (what the
// kubelet does at each mount unless fsGroupChangePolicy is OnRootMismatch,
// which the manifests set) makes it refuse to start again.
func TestDataDirOnPodVolume(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root: it makes a root-owned volume and runs the CA as another user")
	}
	objs, err := deploy.Manifests(deploy.ManifestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var pod *corev1.PodSecurityContext
	for _, o := range objs {
		if ss, ok := o.(*appsv1.StatefulSet); ok {
			pod = ss.Spec.Template.Spec.SecurityContext
		}
	}
	if pod == nil || pod.RunAsUser == nil || pod.FSGroup == nil || pod.FSGroupChangePolicy == nil {
		t.Fatalf("the CA's pod security context %+v lacks a user, an fsGroup or an fsGroupChangePolicy", pod)
	}
	if *pod.FSGroupChangePolicy != corev1.FSGroupChangeOnRootMismatch {
		t.Errorf(
			"fsGroupChangePolicy %s: the kubelet would make the CA key group-readable at each mount",
			*pod.FSGroupChangePolicy,
		)
	}
	user := &syscall.Credential{
		Uid:    uint32(*pod.RunAsUser),
		Gid:    uint32(*pod.FSGroup),
		Groups: []uint32{uint32(*pod.FSGroup)},
	}

	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base, filepath.Dir(binary)} {
		if err := os.Chmod(d, 0o755); err != nil { // let the pod user reach the volume and the binary
			t.Fatal(err)
		}
	}
	vol := filepath.Join(base, "volume")
	if err := os.Mkdir(vol, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(vol, 0, int(*pod.FSGroup)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(vol, 0o777|fs.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(deploy.VolumeDir, deploy.DataDir)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		t.Fatalf("the data directory %s is not inside the volume %s", deploy.DataDir, deploy.VolumeDir)
	}
	launch := func(dir string) *serverProc {
		s := newServer(t, dir)
		s.Cred = user
		s.Launch()
		return s
	}
	exits := func(s *serverProc, want string) {
		t.Helper()
		select {
		case <-s.done:
		case <-time.After(20 * time.Second):
			t.Fatalf("ipsecca serve on %s did not exit:\n%s", s.DataDir, s.Log.String())
		}
		if !strings.Contains(s.Log.String(), want) {
			t.Errorf("ipsecca serve on %s: log does not say %q:\n%s", s.DataDir, want, s.Log.String())
		}
	}

	exits(launch(vol), "operation not permitted")

	data := filepath.Join(vol, rel)
	srv := launch(data)
	srv.WaitServing()
	fi, err := os.Stat(data)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o700 || st.Uid != user.Uid {
		t.Errorf("data directory mode %04o owner %d, want 0700 owned by %d", fi.Mode().Perm(), st.Uid, user.Uid)
	}
	srv.Stop()

	err = filepath.WalkDir(vol, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		return os.Chmod(p, fi.Mode()|0o060)
	})
	if err != nil {
		t.Fatal(err)
	}
	exits(launch(data), "must be 0700")
}
