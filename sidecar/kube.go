package sidecar

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/ipsecca/ipsecca/ca"
)

// Kubernetes names OVN-Kubernetes' node script uses.
const (
	LabelIPsecCSR       = "k8s.ovn.org/ipsec-csr"
	AnnotationChassisID = "k8s.ovn.org/node-chassis-id"
	CABundleKey         = "ca-bundle.crt"
)

// KubeConfig makes the agent enrol and renew through
// certificates.k8s.io/v1 CertificateSigningRequest objects, exactly as
// OpenShift's node script creates them, instead of gRPC.
type KubeConfig struct {
	Client     kubernetes.Interface
	SignerName string // network.openshift.io/signer by default
	// CABundleConfigMap is namespace/name of the ConfigMap holding the CA
	// bundle under ca-bundle.crt; openshift-ovn-kubernetes/signer-ca by default.
	CABundleConfigMap string
	// Wait bounds how long a CSR may wait for its certificate: 2 min.
	Wait time.Duration
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
}

// kubeBundle reads the CA bundle from the ConfigMap.
func (a *Agent) kubeBundle(ctx context.Context) ([]byte, error) {
	ns, name, ok := strings.Cut(a.cfg.Kube.CABundleConfigMap, "/")
	if !ok {
		return nil, fmt.Errorf("sidecar: CA bundle ConfigMap %q: want namespace/name", a.cfg.Kube.CABundleConfigMap)
	}
	cm, err := a.cfg.Kube.Client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("sidecar: read the CA bundle ConfigMap %s: %w", a.cfg.Kube.CABundleConfigMap, err)
	}
	b := cm.Data[CABundleKey]
	if b == "" {
		return nil, fmt.Errorf("sidecar: ConfigMap %s has no %s yet", a.cfg.Kube.CABundleConfigMap, CABundleKey)
	}
	return []byte(b), nil
}

// kubeCN is the certificate name: --cn, else the Node's chassis-id
// annotation (OVN's system-id), else the node name.
func (a *Agent) kubeCN(ctx context.Context) (string, error) {
	if a.cfg.CN != "" {
		return a.cfg.CN, nil
	}
	node, err := a.cfg.Kube.Client.CoreV1().Nodes().Get(ctx, a.cfg.Node, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("sidecar: read Node %s for its %s annotation (or give --cn, the OVS system-id): %w", a.cfg.Node, AnnotationChassisID, err)
	}
	if id := node.Annotations[AnnotationChassisID]; id != "" {
		return id, nil
	}
	return a.cfg.Node, nil
}

// kubePass is Pass through CSR objects: a certificate when there is none,
// it expired, it no longer chains to the bundle, or 90% of its life has
// passed (the rotation point; there is no Watch on this path).
func (a *Agent) kubePass(ctx context.Context) (changed bool, err error) {
	unlock, err := a.db.Lock(ctx)
	if err != nil {
		return false, err
	}
	defer unlock()
	if created, err := a.db.Ensure(ctx); err != nil {
		return false, err
	} else if created {
		changed = true
	}
	if err := a.state.Init(); err != nil {
		return changed, err
	}
	bundle, err := a.kubeBundle(ctx)
	if err != nil {
		if bundle = a.state.ReadCABundle(); len(bundle) == 0 {
			// First start, before the signer published the bundle: wait.
			a.log.Info("waiting for the CA bundle", "configmap", a.cfg.Kube.CABundleConfigMap, "err", err)
			deadline, wait := time.Now().Add(a.cfg.Kube.Wait), 200*time.Millisecond
			for err != nil && time.Now().Before(deadline) && sleep(ctx, wait) {
				bundle, err = a.kubeBundle(ctx)
				wait = min(2*wait, 2*time.Second)
			}
			if err != nil {
				return changed, err
			}
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
	now := a.cfg.Now()
	need := pair == nil || !now.Before(pair.Cert.NotAfter) || pair.Cert.Subject.CommonName != cn ||
		!now.Before(ca.RotateAfter(pair.Cert.NotBefore, pair.Cert.NotAfter)) || !chains(pair.Cert, bundle, now)
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
	c, err := a.deliver(ctx, pair, bundle)
	changed = changed || c
	if err != nil {
		return changed, err
	}
	if changed {
		a.reload(ctx)
	}
	return changed, nil
}

func chains(c *x509.Certificate, bundle []byte, now time.Time) bool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(bundle)
	_, err := c.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
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
	csrs := a.cfg.Kube.Client.CertificatesV1().CertificateSigningRequests()
	obj, err := csrs.Create(ctx, &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "ipsec-csr-" + a.cfg.Node + "-", Labels: map[string]string{LabelIPsecCSR: a.cfg.Node}},
		Spec: certificatesv1.CertificateSigningRequestSpec{Request: csrPEM, SignerName: a.cfg.Kube.SignerName,
			Usages: []certificatesv1.KeyUsage{certificatesv1.UsageIPsecTunnel}},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("sidecar: create CertificateSigningRequest: %w", err)
	}
	a.log.Info("created CertificateSigningRequest", "name", obj.Name, "cn", cn, "signer", a.cfg.Kube.SignerName)
	deadline := time.Now().Add(a.cfg.Kube.Wait)
	wait := 100 * time.Millisecond
	for {
		got, err := csrs.Get(ctx, obj.Name, metav1.GetOptions{})
		if err == nil {
			for _, c := range got.Status.Conditions {
				if (c.Type == certificatesv1.CertificateDenied || c.Type == certificatesv1.CertificateFailed) && c.Status == corev1.ConditionTrue {
					return nil, fmt.Errorf("sidecar: CSR %s %s (%s): %s", obj.Name, strings.ToLower(string(c.Type)), c.Reason, c.Message)
				}
			}
			if len(got.Status.Certificate) > 0 {
				pair, err := a.state.Commit(got.Status.Certificate)
				if err != nil {
					return nil, err
				}
				a.log.Info("certificate issued through Kubernetes", "csr", obj.Name, "serial", pair.Serial(), "not_after", pair.Cert.NotAfter)
				return pair, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("sidecar: CSR %s got no certificate within %s (is the signer %s running?)", obj.Name, a.cfg.Kube.Wait, a.cfg.Kube.SignerName)
		}
		if !sleep(ctx, wait) {
			return nil, ctx.Err()
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// kubeRun keeps the node current on the Kubernetes path: a pass, then
// sleep until the rotation point (at most an hour), backing off on errors.
func (a *Agent) kubeRun(ctx context.Context) error {
	backoff := minBackoff
	for ctx.Err() == nil {
		if _, err := a.kubePass(ctx); err != nil {
			a.log.Error("pass failed", "err", err, "retry_in", backoff)
			if !sleep(ctx, jitter(backoff)) {
				break
			}
			backoff = min(2*backoff, a.cfg.MaxBackoff)
			continue
		}
		backoff = minBackoff
		next := time.Hour
		if p, _ := a.state.Current(); p != nil {
			next = min(next, max(ca.RotateAfter(p.Cert.NotBefore, p.Cert.NotAfter).Sub(a.cfg.Now()), time.Second))
		}
		if !sleep(ctx, next) {
			break
		}
	}
	return nil
}
