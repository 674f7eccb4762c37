package kube

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"maps"
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
// current root, then the previous one during a renewal overlap): created
// when absent, updated on renewal, restored when edited. Other keys of the
// ConfigMap are left alone.
func (s *Signer) syncBundle(ctx context.Context, t *term) error {
	want := string(Bundle(s.cfg.Authority.Root().BundlePEM, s.cfg.Clock.Now()))
	fps := fingerprints([]byte(want))
	cms := s.cfg.Client.CoreV1().ConfigMaps(s.cmNS)
	obj, ok, err := t.configs.GetByKey(s.cmNS + "/" + s.cmName)
	if err != nil {
		return err
	}
	if !ok {
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: s.cmName, Namespace: s.cmNS,
				Labels:      map[string]string{LabelManagedBy: "ipsecca"},
				Annotations: map[string]string{AnnotationFingerprints: fps}},
			Data: map[string]string{CABundleKey: want},
		}
		_, err := cms.Create(ctx, cm, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil // the informer brings it and queues another look
		}
		if err != nil {
			return err
		}
		s.metrics.bundle.WithLabelValues("created").Inc()
		s.log.Info("created the CA bundle ConfigMap", "configmap", s.cmNS+"/"+s.cmName, "roots", fps)
		return nil
	}
	cur := obj.(*corev1.ConfigMap)
	if cur.Data[CABundleKey] == want && cur.Annotations[AnnotationFingerprints] == fps {
		return nil
	}
	cm := cur.DeepCopy()
	cm.Data = maps.Clone(cm.Data)
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[CABundleKey] = want
	if cm.Annotations == nil {
		cm.Annotations = map[string]string{}
	}
	cm.Annotations[AnnotationFingerprints] = fps
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return err
	}
	action := "updated"
	if cur.Annotations[AnnotationFingerprints] == fps {
		action = "restored"
	}
	s.metrics.bundle.WithLabelValues(action).Inc()
	s.log.Info("wrote the CA bundle ConfigMap", "configmap", s.cmNS+"/"+s.cmName, "action", action, "roots", fps)
	return nil
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
