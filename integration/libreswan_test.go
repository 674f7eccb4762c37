package integration

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// kernelHasESP reports whether this kernel can install an ESP SA (tried
// in a throw-away network namespace).
func kernelHasESP() bool {
	ns := fmt.Sprintf("ipsecca-espprobe-%d", os.Getpid())
	if exec.Command("ip", "netns", "add", ns).Run() != nil {
		return false
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	return exec.Command("ip", "-n", ns, "xfrm", "state", "add", "src", "198.18.0.1", "dst", "198.18.0.2", "proto", "esp", "spi", "0x1000",
		"mode", "transport", "aead", "rfc4106(gcm(aes))", "0x"+strings.Repeat("0", 72), "128").
		Run() ==
		nil
}

// TestLibreswanESP is the proof with the real consumer: two nodes in
// network namespaces authenticate IKEv2 with certificates ipsecca issued
// and its sidecar delivered, carry only ESP (AES-GCM-16-256, transport),
// come back with the new certificate after a forced rotation, and refuse
// a node whose certificate comes from another CA. Natively where the
// kernel has ESP, else inside a user-mode-Linux guest. `make e2e` runs it
// alone.
func TestLibreswanESP(t *testing.T) {
	for _, tool := range []string{"ipsec", "tcpdump", "ping", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run `make deps` (libreswan tcpdump iputils-ping iproute2)", tool)
		}
	}
	if _, err := os.Stat("/usr/libexec/ipsec/pluto"); err != nil {
		t.Fatalf("pluto not found: install libreswan (make deps)")
	}
	script, err := filepath.Abs("testdata/ipsec-e2e.sh")
	if err != nil {
		t.Fatal(err)
	}
	// IPSECCA_E2E_OUT keeps the logs and captures for a look afterwards.
	out := os.Getenv("IPSECCA_E2E_OUT")
	if out == "" {
		out = t.TempDir()
	} else {
		os.RemoveAll(out)
		os.MkdirAll(out, 0o755)
	}
	start := time.Now()
	if kernelHasESP() {
		t.Log("kernel has ESP: running natively")
		cmd := exec.Command(script)
		cmd.Env = append(os.Environ(), "E2E_OUT="+out, "E2E_STAGE=native", "IPSECCA="+binary)
		console, _ := cmd.CombinedOutput()
		os.WriteFile(filepath.Join(out, "console.log"), console, 0o644)
	} else {
		if _, err := exec.LookPath("linux.uml"); err != nil {
			t.Fatal("this kernel has no ESP and linux.uml is missing: run `make deps` (user-mode-linux)")
		}
		t.Log("kernel cannot install ESP SAs: running inside a user-mode-Linux guest")
		bootUML(t, script, out, "768M", 600, "E2E_STAGE=guest", "E2E_OUT="+out, "IPSECCA="+binary)
	}
	t.Logf("e2e took %s", time.Since(start).Round(time.Second))
	facts := readFacts(t, out)
	defer func() {
		if t.Failed() {
			for _, f := range []string{"console.log", "logs/nodeA-pluto.log", "logs/nodeB-pluto.log", "logs/sidecar.log"} {
				b, _ := os.ReadFile(filepath.Join(out, f))
				t.Logf("---- %s ----\n%s", f, tail(string(b), 80))
			}
		}
	}()
	rc, _ := os.ReadFile(filepath.Join(out, "result"))
	if strings.TrimSpace(string(rc)) != "0" {
		t.Fatalf("e2e script result %q; facts %v", strings.TrimSpace(string(rc)), facts)
	}
	want := func(key, val string) {
		t.Helper()
		if facts[key] != val {
			t.Errorf("%s = %q, want %q", key, facts[key], val)
		}
	}
	atLeast := func(key string, min int) {
		t.Helper()
		if n, err := strconv.Atoi(facts[key]); err != nil || n < min {
			t.Errorf("%s = %q, want at least %d", key, facts[key], min)
		}
	}
	for _, tag := range []string{"1", "2"} {
		want("sa"+tag+"_up", "1")
		// rfc4106(gcm(aes)) with a 256-bit key plus 32-bit salt, 128-bit ICV.
		want("sa"+tag+"_aead", "rfc4106(gcm(aes)) 288 128")
		want("sa"+tag+"_mode", "transport")
		want("sa"+tag+"_child", "xfrm=AES_GCM_16_256")
		want("t"+tag+"_ping_rc", "0")
		atLeast("t"+tag+"_esp", 10)
		want("t"+tag+"_icmp", "0")
	}
	if facts["node_a_serial_rotated"] == "" || facts["node_a_serial_rotated"] == facts["node_a_serial"] {
		t.Errorf(
			"rotation did not give node-a a new certificate: %q -> %q",
			facts["node_a_serial"],
			facts["node_a_serial_rotated"],
		)
	}
	want("node_a_nss_certs", "1")
	// nodeB logs the key id of the certificate it verified; the script maps
	// it back to the serial of the node-a certificate with that key.
	want("sa1_peer_serial", facts["node_a_serial"])
	want("sa2_peer_serial", facts["node_a_serial_rotated"])
	if facts["sa1_peer_keyid"] == facts["sa2_peer_keyid"] {
		t.Errorf("nodeB verified the same key %q before and after the rotation", facts["sa1_peer_keyid"])
	}
	// A revoked node is refused by its peer once the peer's sidecar has
	// imported the CRL.
	want("crl_in_nodeB", "1")
	want("revoked_sa_up", "0")
	if !strings.Contains(strings.ToLower(facts["revoked_refusal"]), "revoked") {
		t.Errorf("nodeB's log shows no refusal of the revoked certificate: %q", facts["revoked_refusal"])
	}
	want("rogue_sa_up", "0")
	if facts["rogue_refusal"] == "" {
		t.Error("nodeB's log shows no refusal of the other CA's certificate")
	}

	// Under an organisation's root: both nodes' NSS holds the root as the
	// anchor and the subordinate as an intermediate; their certificates
	// verify (certutil -V, openssl verify) and carry ESP.
	for _, n := range []string{"a", "b"} {
		if nss := facts["sub_nss_"+n]; !strings.Contains(nss, "CT,, ovs_cert_cacert;") ||
			!strings.Contains(nss, ",, ipsecca-intermediate-") || !strings.Contains(nss, "u,u,u ovs_certkey_node-"+n) {
			t.Errorf("node %s's NSS under the subordinate CA: %q", n, nss)
		}
		want("sub_certutil_v_"+n, "0")
		want("sub_openssl_verify_"+n, "0")
	}
	want("sub_sa_up", "1")
	want("sub_aead", "rfc4106(gcm(aes)) 288 128")
	want("tsub_ping_rc", "0")
	atLeast("tsub_esp", 10)
	want("tsub_icmp", "0")
	// A sibling subordinate of the same root: NSS validates its chain, and
	// rightca=%same refuses it (its issuer's subject is not ours).
	want("sibling_certutil_v", "0")
	want("sibling_sa_up", "0")
	atLeast("sibling_pluto_chain_valid", 1)
	if !strings.HasPrefix(facts["sibling_rightca"], "trusted_ca: returning untrusted") {
		t.Errorf("nodeB's pluto did not refuse the sibling by rightca (trusted_ca): %q", facts["sibling_rightca"])
	}
	t.Logf("sibling subordinate refused by nodeB: %q", facts["sibling_refusal"])
	if facts["sibling_refusal"] == "" {
		t.Error("nodeB's log shows no refusal of the sibling subordinate's certificate")
	}
}

// bootUML boots a user-mode-Linux guest on the host's root (read-write)
// with script as its init, mem of memory, for at most timeout seconds;
// args (KEY=VALUE) become the init's environment. The script writes
// out/result.
func bootUML(t *testing.T, script, out, mem string, timeout int, args ...string) {
	t.Helper()
	mods, err := os.ReadDir("/usr/lib/uml/modules")
	if err != nil || len(mods) == 0 {
		t.Fatal("no UML kernel modules in /usr/lib/uml/modules: install user-mode-linux (make deps)")
	}
	uml := filepath.Join(out, "uml")
	os.MkdirAll(filepath.Join(uml, "root", "lib"), 0o755)
	os.Symlink("/usr/lib/uml/modules", filepath.Join(uml, "root", "lib", "modules"))
	os.WriteFile(
		filepath.Join(uml, "modprobe"),
		[]byte("#!/bin/sh\nexec /sbin/modprobe -d "+filepath.Join(uml, "root")+" \"$@\"\n"),
		0o755,
	)
	// Unknown key=value boot arguments become the init's environment.
	cmdline := []string{"-k", "10", strconv.Itoa(timeout), "linux.uml", "mem=" + mem, "rootfstype=hostfs",
		"rootflags=/", "rw", "quiet", "con=null", "con0=null,fd:1", "init=" + script}
	cmd := exec.Command("timeout", append(cmdline, args...)...)
	cmd.Stdin = nil
	console, err := cmd.CombinedOutput()
	os.WriteFile(filepath.Join(out, "console.log"), console, 0o644)
	if _, serr := os.Stat(filepath.Join(out, "result")); serr != nil {
		t.Fatalf("the UML guest produced no result (%v):\n%s", err, tail(string(console), 60))
	}
}

func readFacts(t *testing.T, out string) map[string]string {
	facts := map[string]string{}
	f, err := os.Open(filepath.Join(out, "facts"))
	if err != nil {
		return facts
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), "="); ok {
			facts[k] = v
		}
	}
	return facts
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
