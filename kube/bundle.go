package kube

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Labels and annotations on the CA bundle ConfigMap.
const (
	LabelManagedBy         = "app.kubernetes.io/managed-by"
	AnnotationFingerprints = "ipsecca.io/ca-sha256" // the roots in the bundle, newest first
)

// syncBundle makes the ConfigMap hold the Authority's current bundle (the
// current root, then the previous one during a renewal overlap) and its
// current CRL: created when absent, updated on renewal or when the
// revocations change, restored when edited. Other keys of the ConfigMap
// are left alone. A CRL that cannot be made does not hold back the bundle.
func (s *Signer) syncBundle(ctx context.Context, t *term) error {
	want := string(Bundle(s.cfg.Authority.Root().BundlePEM, s.cfg.Clock.Now()))
	fps := fingerprints([]byte(want))
	cms := s.cfg.Client.CoreV1().ConfigMaps(s.cmNS)
	obj, ok, err := t.configs.GetByKey(s.cmNS + "/" + s.cmName)
	if err != nil {
		return err
	}
	var cur *corev1.ConfigMap
	if ok {
		cur = obj.(*corev1.ConfigMap)
	}
	crl, crlWhy, crlErr := s.wantCRL(ctx, cur)
	if crlErr != nil {
		s.log.Error("CRL not published", "err", crlErr)
	}
	if cur == nil {
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: s.cmName, Namespace: s.cmNS,
				Labels:      map[string]string{LabelManagedBy: "ipsecca"},
				Annotations: map[string]string{AnnotationFingerprints: fps}},
			Data: map[string]string{CABundleKey: want},
		}
		if crl != "" {
			cm.Data[CRLKey] = crl
		}
		_, err := cms.Create(ctx, cm, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return crlErr // the informer brings it and queues another look
		}
		if err != nil {
			return err
		}
		s.metrics.bundle.WithLabelValues("created").Inc()
		s.crlPublished(crl, crlWhy)
		s.log.Info("created the CA bundle ConfigMap", "configmap", s.cmNS+"/"+s.cmName, "roots", fps)
		return crlErr
	}
	bundleOK := cur.Data[CABundleKey] == want && cur.Annotations[AnnotationFingerprints] == fps
	if bundleOK && crl == "" {
		return crlErr
	}
	cm := cur.DeepCopy()
	cm.Data = maps.Clone(cm.Data)
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[CABundleKey] = want
	if crl != "" {
		cm.Data[CRLKey] = crl
	}
	if cm.Annotations == nil {
		cm.Annotations = map[string]string{}
	}
	cm.Annotations[AnnotationFingerprints] = fps
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return err
	}
	s.crlPublished(crl, crlWhy)
	if bundleOK {
		return crlErr
	}
	action := "updated"
	if cur.Annotations[AnnotationFingerprints] == fps {
		action = "restored"
	}
	s.metrics.bundle.WithLabelValues(action).Inc()
	s.log.Info("wrote the CA bundle ConfigMap", "configmap", s.cmNS+"/"+s.cmName, "action", action, "roots", fps)
	return crlErr
}

// wantCRL returns the CRL (PEM) to write into the ConfigMap and why, or
// "" when the published one is still good: it parses, is signed by the
// current root, lists the same serials as the Authority's current CRL and
// has more than half of its validity left. So the ConfigMap is written
// when the revocations or the root change and well before NextUpdate, not
// each time the Authority signs a new CRL.
func (s *Signer) wantCRL(ctx context.Context, cur *corev1.ConfigMap) (pemCRL, why string, err error) {
	der, err := s.cfg.Authority.CRL(ctx)
	if err != nil {
		return "", "", fmt.Errorf("kube: CRL: %w", err)
	}
	fresh, err := x509.ParseRevocationList(der)
	if err != nil {
		return "", "", fmt.Errorf("kube: the Authority's CRL does not parse: %w", err)
	}
	out := string(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}))
	if cur == nil || cur.Data[CRLKey] == "" {
		return out, "created", nil
	}
	if cur.Data[CRLKey] == out {
		s.metrics.crlNextUpdate.Set(float64(fresh.NextUpdate.Unix()))
		return "", "", nil
	}
	b, _ := pem.Decode([]byte(cur.Data[CRLKey]))
	if b == nil || b.Type != "X509 CRL" {
		return out, "restored", nil
	}
	old, err := x509.ParseRevocationList(b.Bytes)
	switch {
	case err != nil:
		return out, "restored", nil
	case old.CheckSignatureFrom(s.cfg.Authority.Root().Cert) != nil:
		return out, "root", nil
	case !slices.Equal(crlSerials(old), crlSerials(fresh)):
		return out, "revocations", nil
	case old.NextUpdate.Sub(s.cfg.Clock.Now()) < fresh.NextUpdate.Sub(fresh.ThisUpdate)/2:
		return out, "refresh", nil
	}
	s.metrics.crlNextUpdate.Set(float64(old.NextUpdate.Unix()))
	return "", "", nil
}

// crlSerials lists a CRL's serials, sorted.
func crlSerials(l *x509.RevocationList) []string {
	out := make([]string, 0, len(l.RevokedCertificateEntries))
	for _, e := range l.RevokedCertificateEntries {
		out = append(out, e.SerialNumber.Text(16))
	}
	slices.Sort(out)
	return out
}

// crlPublished counts and logs a CRL written into the ConfigMap.
func (s *Signer) crlPublished(crl, why string) {
	if crl == "" {
		return
	}
	s.metrics.crl.WithLabelValues(why).Inc()
	if b, _ := pem.Decode([]byte(crl)); b != nil {
		if l, err := x509.ParseRevocationList(b.Bytes); err == nil {
			s.metrics.crlNextUpdate.Set(float64(l.NextUpdate.Unix()))
			s.log.Info("published the CRL", "configmap", s.cmNS+"/"+s.cmName, "why", why,
				"revoked", len(l.RevokedCertificateEntries),
				"next_update", l.NextUpdate)
		}
	}
}

// Bundle is what the ConfigMap publishes of a root bundle at now: the
// current root (first) and every earlier root that has not expired, in
// order, as PEM. An expired previous root vouches for nothing any more.
func Bundle(bundlePEM []byte, now time.Time) []byte {
	var out []byte
	rest := bundlePEM
	for first := true; ; first = false {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return out
		}
		if !first {
			if c, err := x509.ParseCertificate(b.Bytes); err == nil && !now.Before(c.NotAfter) {
				continue
			}
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.Bytes})...)
	}
}

// fingerprints lists the SHA-256 of each certificate in a PEM bundle.
func fingerprints(bundle []byte) string {
	var out []string
	for {
		var b *pem.Block
		b, bundle = pem.Decode(bundle)
		if b == nil {
			break
		}
		sum := sha256.Sum256(b.Bytes)
		out = append(out, hex.EncodeToString(sum[:]))
	}
	return strings.Join(out, ",")
}
