package sidecar

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ipsecca/ipsecca/ca/nodecert"
	"github.com/ipsecca/ipsecca/internal/atomicfile"
)

// Kubernetes names OVN-Kubernetes' node script uses.
const (
	LabelIPsecCSR       = "k8s.ovn.org/ipsec-csr"
	AnnotationChassisID = "k8s.ovn.org/node-chassis-id"
	CABundleKey         = "ca-bundle.crt"
	// CRLKey holds the CA's CRL (PEM) in the same ConfigMap (ipsecca's signer).
	CRLKey = "ca-crl.pem"
	// ReasonNodeRevoked is the Denied reason of a revoked node's CSR.
	ReasonNodeRevoked = "NodeRevoked"
)

// KubeConfig makes the agent enrol and renew through
// certificates.k8s.io/v1 CertificateSigningRequest objects, exactly as
// OpenShift's node script creates them, instead of gRPC.
type KubeConfig struct {
	Client     KubeAPI // NewKubeClient
	SignerName string  // network.openshift.io/signer by default
	// CABundleConfigMap is namespace/name of the ConfigMap holding the CA
	// bundle under ca-bundle.crt; openshift-ovn-kubernetes/signer-ca by default.
	CABundleConfigMap string
	// Wait bounds how long a CSR may wait for its certificate: 2 min.
	Wait time.Duration
	// Poll is how often Run reads the ConfigMap between passes, to take a
	// new CRL or bundle into NSS: 1 min. One GET a node a minute.
	Poll time.Duration

	seen string // the ConfigMap's bundle and CRL the last pass delivered
}

func (k *KubeConfig) setDefaults() {
	if k.SignerName == "" {
		k.SignerName = "network.openshift.io/signer"
	}
	if k.CABundleConfigMap == "" {
		k.CABundleConfigMap = "openshift-ovn-kubernetes/signer-ca"
	}
	if k.Wait == 0 {
		k.Wait = 2 * time.Minute
	}
	if k.Poll <= 0 {
		k.Poll = time.Minute
	}
}

// kubeCA reads the CA bundle and the CRL (nil when the ConfigMap has none)
// from the ConfigMap.
func (a *Agent) kubeCA(ctx context.Context) (bundle, crl []byte, err error) {
	ns, name, ok := strings.Cut(a.cfg.Kube.CABundleConfigMap, "/")
	if !ok {
		return nil, nil, fmt.Errorf(
			"sidecar: CA bundle ConfigMap %q: want namespace/name",
			a.cfg.Kube.CABundleConfigMap,
		)
	}
	cm, err := a.cfg.Kube.Client.ConfigMap(ctx, ns, name)
	if ctx.Err() == nil {
		// An API status (NotFound, Forbidden) is an answer; a timeout or
		// a connection refused is not.
		var answer apierrors.APIStatus
		a.setReachable(err == nil || errors.As(err, &answer) && !apierrors.IsServiceUnavailable(err) &&
			!apierrors.IsTimeout(err) && !apierrors.IsServerTimeout(err))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("sidecar: read the CA bundle ConfigMap %s: %w", a.cfg.Kube.CABundleConfigMap, err)
	}
	b := cm.Data[CABundleKey]
	if b == "" {
		return nil, nil, fmt.Errorf("sidecar: ConfigMap %s has no %s yet", a.cfg.Kube.CABundleConfigMap, CABundleKey)
	}
	if c := cm.Data[CRLKey]; c != "" {
		crl = []byte(c)
	}
	return []byte(b), crl, nil
}

// kubeSeen identifies what a pass delivers from the ConfigMap.
func kubeSeen(bundle, crl []byte) string {
	h := sha256.New()
	h.Write(bundle)
	h.Write([]byte{0})
	h.Write(crl)
	return hex.EncodeToString(h.Sum(nil))
}

// kubeCN is the certificate name: --cn, else the Node's chassis-id
// annotation (OVN's system-id), else the node name.
func (a *Agent) kubeCN(ctx context.Context) (string, error) {
	// Lower case: libreswan compares IDs without regard to case, and the CA
	// issues the name in lower case (comparing the current certificate's CN
	// with an upper-case one would ask for a new certificate every pass).
	if a.cfg.CN != "" {
		return strings.ToLower(a.cfg.CN), nil
	}
	node, err := a.cfg.Kube.Client.Node(ctx, a.cfg.Node)
	if err != nil {
		return "", fmt.Errorf("sidecar: read Node %s for its %s annotation (or give --cn, the OVS system-id): %w",
			a.cfg.Node, AnnotationChassisID, err)
	}
	if id := strings.TrimSpace(node.Annotations[AnnotationChassisID]); id != "" {
		return strings.ToLower(id), nil
	}
	return a.cfg.Node, nil
}

// kubePass is Pass through CSR objects: a certificate when there is none,
// it expired, it no longer chains to the bundle, or 90% of its life has
// passed (the rotation point; there is no Watch on this path).
func (a *Agent) kubePass(ctx context.Context) (changed bool, err error) {
	unlock, changed, err := a.begin(ctx)
	if err != nil {
		return changed, err
	}
	defer unlock()
	bundle, crl, err := a.kubeCA(ctx)
	fromCM := err == nil
	if err != nil {
		if bundle = a.state.ReadCABundle(); len(bundle) == 0 {
			// First start, before the signer published the bundle: wait.
			a.log.Info("waiting for the CA bundle", "configmap", a.cfg.Kube.CABundleConfigMap, "err", err)
			deadline, wait := time.Now().Add(a.cfg.Kube.Wait), 200*time.Millisecond
			for err != nil && time.Now().Before(deadline) && sleep(ctx, wait) {
				bundle, crl, err = a.kubeCA(ctx)
				wait = min(2*wait, 2*time.Second)
			}
			if err != nil {
				return changed, err
			}
			fromCM = true
		} else {
			a.log.Warn("keeping the last CA bundle", "err", err)
		}
	}
	cn, err := a.kubeCN(ctx)
	if err != nil {
		return changed, err
	}
	if a.cfg.Nickname == "" {
		a.cfg.Nickname = NodeNickname(cn)
	}
	pair, _ := a.state.Current()
	prev, delivered, now := pair, a.state.ReadCABundle(), a.cfg.Now()
	need := pair == nil || !now.Before(pair.Cert.NotAfter) || !strings.EqualFold(pair.Cert.Subject.CommonName, cn) ||
		!now.Before(nodecert.RotateAfter(pair.Cert.NotBefore, pair.Cert.NotAfter)) || !chains(pair.Cert, bundle, now)
	if need {
		p, err := a.kubeObtain(ctx, cn)
		if err != nil {
			if pair != nil && now.Before(pair.Cert.NotAfter) {
				a.log.Error("certificate request failed; keeping the current certificate", "err", err)
			} else {
				return changed, err
			}
		} else {
			pair = p
		}
	}
	probe := a.probeDrift(ctx, prev, pair, delivered, bundle)
	c, err := a.deliver(ctx, pair, bundle)
	a.noteDrift(ctx, probe, c, err)
	changed = changed || c
	if err != nil {
		return changed, err
	}
	if len(crl) > 0 {
		c, err := a.kubeImportCRL(ctx, crl, bundle)
		if err != nil {
			a.log.Warn("CRL not updated", "err", err)
			fromCM = false // try again at the next poll
		}
		changed = changed || c
	}
	if fromCM {
		a.cfg.Kube.seen = kubeSeen(bundle, crl)
	}
	a.passDone(pair)
	if changed {
		a.reload(ctx)
	}
	return changed, nil
}

// kubeCRLFile records the CRL last imported from the ConfigMap (its
// SHA-256), to import only a new one.
const kubeCRLFile = "crl-kube.sha256"

// kubeImportCRL imports the ConfigMap's CRL into NSS when it is new, so
// libreswan refuses revoked peers. It must be signed by a CA certificate
// of the bundle (verifiedCRL). Unlike the
// gRPC path (which follows the revoked serials), a CRL re-signed before
// its NextUpdate is imported too, so NSS never holds a stale one.
func (a *Agent) kubeImportCRL(ctx context.Context, crlPEM, bundle []byte) (bool, error) {
	b, _ := pem.Decode(crlPEM)
	if b == nil || b.Type != "X509 CRL" {
		return false, fmt.Errorf(
			"sidecar: %s in ConfigMap %s is not a PEM X509 CRL",
			CRLKey,
			a.cfg.Kube.CABundleConfigMap,
		)
	}
	crl, err := verifiedCRL(b.Bytes, bundle)
	if err != nil {
		return false, fmt.Errorf("%w (ConfigMap %s)", err, a.cfg.Kube.CABundleConfigMap)
	}
	sum := sha256.Sum256(b.Bytes)
	key := hex.EncodeToString(sum[:])
	path := a.state.path(kubeCRLFile)
	if prev, err := os.ReadFile(path); err == nil && string(prev) == key {
		a.setCRL(crl) // the one in NSS
		return false, nil
	}
	if err := a.db.ImportCRL(ctx, b.Bytes); err != nil {
		return false, err
	}
	a.crlImported(b.Bytes, crl)
	a.log.Info("imported CRL into NSS", "revoked", len(crl.RevokedCertificateEntries), "next_update", crl.NextUpdate)
	return true, atomicfile.WriteFile(path, []byte(key), 0o600)
}

func chains(c *x509.Certificate, bundle []byte, now time.Time) bool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(bundle)
	_, err := c.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

// kubeObtain creates a CSR object as OpenShift's node script does and
// waits for its certificate.
func (a *Agent) kubeObtain(ctx context.Context, cn string) (*Pair, error) {
	key, _, err := a.state.PendingKey(a.newKey)
	if err != nil {
		return nil, err
	}
	csrPEM, err := newCSR(key, cn)
	if err != nil {
		return nil, err
	}
	obj, err := a.cfg.Kube.Client.CreateCSR(ctx, &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "ipsec-csr-" + a.cfg.Node + "-",
			Labels: map[string]string{LabelIPsecCSR: a.cfg.Node}},
		Spec: certificatesv1.CertificateSigningRequestSpec{Request: csrPEM, SignerName: a.cfg.Kube.SignerName,
			Usages: []certificatesv1.KeyUsage{certificatesv1.UsageIPsecTunnel}},
	})
	if err != nil {
		return nil, fmt.Errorf("sidecar: create CertificateSigningRequest: %w", err)
	}
	a.log.Info("created CertificateSigningRequest", "name", obj.Name, "cn", cn, "signer", a.cfg.Kube.SignerName)
	deadline := time.Now().Add(a.cfg.Kube.Wait)
	wait := 100 * time.Millisecond
	for {
		got, err := a.cfg.Kube.Client.CSR(ctx, obj.Name)
		if err == nil {
			for _, c := range got.Status.Conditions {
				if (c.Type == certificatesv1.CertificateDenied || c.Type == certificatesv1.CertificateFailed) &&
					c.Status == corev1.ConditionTrue {
					return nil, &CSRRefusedError{
						CSR:     obj.Name,
						Type:    string(c.Type),
						Reason:  c.Reason,
						Message: c.Message,
					}
				}
			}
			if len(got.Status.Certificate) > 0 {
				pair, err := a.state.Commit(got.Status.Certificate)
				if err != nil {
					return nil, err
				}
				a.log.Info("certificate issued through Kubernetes", "csr", obj.Name,
					"serial", pair.Serial(), "not_after", pair.Cert.NotAfter)
				return pair, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("sidecar: CSR %s got no certificate within %s (is the signer %s running?)",
				obj.Name, a.cfg.Kube.Wait, a.cfg.Kube.SignerName)
		}
		if !sleep(ctx, wait) {
			return nil, ctx.Err()
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// CSRRefusedError is a CSR the signer Denied (or Failed): asking again at
// once would only be refused again.
type CSRRefusedError struct {
	CSR, Type, Reason, Message string
}

func (e *CSRRefusedError) Error() string {
	return fmt.Sprintf("sidecar: CSR %s %s (%s): %s", e.CSR, strings.ToLower(e.Type), e.Reason, e.Message)
}

// kubeRun keeps the node current on the Kubernetes path: a pass, then
// sleep until the rotation point (at most an hour), reading the ConfigMap
// every Poll for a new CRL or bundle; backing off on errors.
func (a *Agent) kubeRun(ctx context.Context) error {
	backoff := newBackoff(a.cfg.MaxBackoff)
	for ctx.Err() == nil {
		if _, err := a.Pass(ctx); err != nil {
			var refused *CSRRefusedError
			if errors.As(err, &refused) && refused.Reason == ReasonNodeRevoked {
				// Only an admin can change that: no quick retries.
				backoff.Duration = backoff.Cap
				d := backoff.Step()
				a.log.Error("this node was revoked; it gets no certificate until an admin re-admits it "+
					"(ipsecca nodes readmit "+a.cfg.Node+")",
					"csr", refused.CSR, "retry_in", d)
				if !sleep(ctx, d) {
					break
				}
				continue
			}
			d := backoff.Step()
			a.log.Error("pass failed", "err", err, "retry_in", d)
			if !sleep(ctx, d) {
				break
			}
			continue
		}
		backoff = newBackoff(a.cfg.MaxBackoff)
		next := time.Hour
		if p, _ := a.state.Current(); p != nil {
			next = min(next, max(nodecert.RotateAfter(p.Cert.NotBefore, p.Cert.NotAfter).Sub(a.cfg.Now()), time.Second))
		}
		a.idle()
		if !a.kubeWait(ctx, time.Now().Add(next)) {
			break
		}
	}
	return nil
}

// kubeWait sleeps until deadline or until the ConfigMap's bundle or CRL
// differs from what the last pass delivered; false when ctx ended.
func (a *Agent) kubeWait(ctx context.Context, deadline time.Time) bool {
	for {
		d := time.Until(deadline)
		if d <= 0 {
			return true
		}
		if !sleep(ctx, min(d, a.cfg.Kube.Poll)) {
			return false
		}
		if !time.Now().Before(deadline) {
			return true
		}
		bundle, crl, err := a.kubeCA(ctx)
		if err != nil {
			a.log.Warn("reading the CA ConfigMap", "err", err)
			continue
		}
		if kubeSeen(bundle, crl) != a.cfg.Kube.seen {
			a.log.Info("the CA ConfigMap changed (bundle or CRL)", "configmap", a.cfg.Kube.CABundleConfigMap)
			return true
		}
	}
}
