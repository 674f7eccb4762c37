package kube

import (
	"context"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Expired says whether a CSR is old enough to delete at now: one with an
// answer (a certificate, Denied or Failed) issuedTTL after its last
// condition; one without pendingTTL after its creation. It returns the
// state for logs and metrics.
func Expired(
	c *certificatesv1.CertificateSigningRequest, now time.Time, issuedTTL, pendingTTL time.Duration,
) (bool, string) {
	if len(c.Status.Certificate) > 0 || refused(c) {
		state := "issued"
		if len(c.Status.Certificate) == 0 {
			state = "denied"
		}
		at := c.CreationTimestamp.Time
		for _, cond := range c.Status.Conditions {
			at = latest(at, cond.LastUpdateTime.Time, cond.LastTransitionTime.Time)
		}
		return !now.Before(at.Add(issuedTTL)), state
	}
	return !now.Before(c.CreationTimestamp.Add(pendingTTL)), "pending"
}

func latest(ts ...time.Time) time.Time {
	var m time.Time
	for _, t := range ts {
		if t.After(m) {
			m = t
		}
	}
	return m
}

// collectGarbage deletes this signer's old CSRs.
func (s *Signer) collectGarbage(ctx context.Context, t *term) {
	now := s.cfg.Clock.Now()
	csrs := s.cfg.Client.CertificatesV1().CertificateSigningRequests()
	for _, obj := range t.csrs.List() {
		c := obj.(*certificatesv1.CertificateSigningRequest)
		expired, state := Expired(c, now, s.cfg.IssuedTTL, s.cfg.PendingTTL)
		if !expired {
			continue
		}
		uid := c.UID
		err := csrs.Delete(ctx, c.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			s.log.Warn("delete old CSR", "csr", c.Name, "err", err)
			continue
		}
		if err == nil {
			s.metrics.deleted.WithLabelValues(state).Inc()
			s.log.Info("deleted old CSR", "csr", c.Name, "state", state, "created", c.CreationTimestamp.Time)
		}
	}
}
