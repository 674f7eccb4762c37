package kube

import (
	"cmp"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/store"
)

// EventCSRFailed is the audit event of a CSR someone else approved that
// the policy refuses: it gets a Failed condition and no certificate.
const EventCSRFailed = "csr.failed"

// Condition helpers.

func hasCondition(c *certificatesv1.CertificateSigningRequest, t certificatesv1.RequestConditionType) bool {
	for _, cond := range c.Status.Conditions {
		if cond.Type == t && cond.Status != corev1.ConditionFalse {
			return true
		}
	}
	return false
}

// finished: a CSR with a certificate, or one Denied or Failed, is never
// decided again.
func finished(c *certificatesv1.CertificateSigningRequest) bool {
	return len(c.Status.Certificate) > 0 || refused(c)
}

func refused(c *certificatesv1.CertificateSigningRequest) bool {
	return hasCondition(c, certificatesv1.CertificateDenied) || hasCondition(c, certificatesv1.CertificateFailed)
}

// newestFirst orders CSRs by creation time, newest first (then by name).
func newestFirst(a, b *certificatesv1.CertificateSigningRequest) int {
	if c := b.CreationTimestamp.Time.Compare(a.CreationTimestamp.Time); c != 0 {
		return c
	}
	return cmp.Compare(b.Name, a.Name)
}

// syncNode decides the CSRs of one node together.
func (s *Signer) syncNode(ctx context.Context, t *term, node string) error {
	objs, err := t.csrs.ByIndex(requesterIndex, s.cfg.RequesterPrefix+node)
	if err != nil {
		return err
	}
	csrs := make([]*certificatesv1.CertificateSigningRequest, 0, len(objs))
	for _, o := range objs {
		csrs = append(csrs, o.(*certificatesv1.CertificateSigningRequest))
	}
	// Without a Node each CSR is denied NodeNotFound (not audited), none is
	// superseded (audited) by a newer one.
	n, err := s.node(ctx, t, node)
	if err != nil {
		return err
	}
	return s.syncCSRs(ctx, t, node, csrs, n != nil)
}

// syncCSRs handles one requester's CSRs, newest first: a certificate
// already stored for a CSR is published as is; of the CSRs without one,
// only the newest is decided and the older ones are denied as superseded
// (as is one older than a CSR that got a certificate: creation times have
// a one-second resolution, so only a strictly newer one counts) when
// supersede is set.
func (s *Signer) syncCSRs(
	ctx context.Context, t *term, node string, csrs []*certificatesv1.CertificateSigningRequest, supersede bool,
) error {
	slices.SortFunc(csrs, newestFirst)
	var errs []error
	var wait time.Duration
	var newerPending, newerIssued *certificatesv1.CertificateSigningRequest
	issued := func(c *certificatesv1.CertificateSigningRequest) {
		if newerIssued == nil {
			newerIssued = c
		}
	}
	for _, c := range csrs {
		if refused(c) {
			continue
		}
		if len(c.Status.Certificate) > 0 || s.wasPublished(c.UID) {
			issued(c)
			continue
		}
		stored, err := s.cfg.Store.CertByRequest(ctx, string(c.UID))
		switch {
		case err == nil:
			errs = append(errs, s.publishStored(ctx, c, stored))
			issued(c)
			continue
		case !errors.Is(err, store.ErrNotFound):
			errs = append(errs, err)
			continue
		}
		if supersede {
			if newerPending != nil {
				errs = append(errs, s.supersede(ctx, c, node, newerPending.Name))
				continue
			}
			if newerIssued != nil && newerIssued.CreationTimestamp.After(c.CreationTimestamp.Time) {
				errs = append(errs, s.supersede(ctx, c, node, newerIssued.Name))
				continue
			}
		}
		newerPending = c
		err = s.decide(ctx, t, node, c)
		var after requeueAfter
		if errors.As(err, &after) {
			if wait == 0 || time.Duration(after) < wait {
				wait = time.Duration(after)
			}
			continue
		}
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if wait > 0 {
		return requeueAfter(wait)
	}
	return nil
}

// fresh re-reads a CSR from the API server (the cache may lag behind our
// own writes); nil when it is gone, finished or another object now.
func (s *Signer) fresh(
	ctx context.Context, c *certificatesv1.CertificateSigningRequest,
) (*certificatesv1.CertificateSigningRequest, error) {
	f, err := s.cfg.Client.CertificatesV1().CertificateSigningRequests().Get(ctx, c.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if f.UID != c.UID || f.Spec.SignerName != s.cfg.SignerName || finished(f) {
		return nil, nil
	}
	return f, nil
}

// node returns the Node (cache first, then the API server); nil when none.
func (s *Signer) node(ctx context.Context, t *term, name string) (*corev1.Node, error) {
	if name == "" {
		return nil, nil
	}
	if obj, ok, err := t.nodes.GetByKey(name); err == nil && ok {
		return obj.(*corev1.Node), nil
	}
	n, err := s.cfg.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return n, err
}

func (s *Signer) nodesWithCN(t *term) func(string) []string {
	return func(cn string) []string {
		objs, _ := t.nodes.ByIndex(cnIndex, cn)
		names := make([]string, 0, len(objs))
		for _, o := range objs {
			names = append(names, o.(*corev1.Node).Name)
		}
		slices.Sort(names)
		return names
	}
}

// decide runs the policy on one CSR and writes the outcome. c is the
// informer's copy, not read again first: the approval is written with its
// resourceVersion, so a CSR someone finished or deleted meanwhile is not
// approved and gets no certificate (the one the Authority stored for it
// stays unpublished, as when that happens while the Authority issues).
// The signer's own writes never look unfinished to it (wasPublished), and
// a stored certificate is published, never issued again. So a signed CSR
// costs the API server two writes, no read.
func (s *Signer) decide(ctx context.Context, t *term, node string, c *certificatesv1.CertificateSigningRequest) error {
	n, err := s.node(ctx, t, node)
	if err != nil {
		return err
	}
	req := &Request{CSR: c, Prefix: s.cfg.RequesterPrefix, CNFrom: s.cfg.CNFrom, NodeName: node, Node: n,
		NodesWithCN: s.nodesWithCN(t)}
	if n != nil {
		// A revoked node is told so at once, whatever else is wrong with
		// its CSR and without waiting for its chassis-id. The Authority
		// checks again when it commits.
		info, err := s.cfg.Store.Node(ctx, node)
		switch {
		case err == nil && info.Revoked:
			return s.refuse(ctx, c, req, revokedDenial(node), true)
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return err
		}
	}
	if n != nil && NodeCN(n, s.cfg.CNFrom) == "" && s.cfg.ChassisIDWait > 0 {
		if left := s.cfg.ChassisIDWait - s.cfg.Clock.Now().Sub(c.CreationTimestamp.Time); left > 0 {
			s.log.Info("waiting for the node's chassis-id", "csr", c.Name, "node", node, "for", left.Round(time.Second))
			return requeueAfter(min(left, 2*time.Second))
		}
	}
	if node != "" {
		if d := s.limit(node); d > 0 {
			s.metrics.throttled.Inc()
			return requeueAfter(d)
		}
	}
	if err := ca.Evaluate(KubePolicy, req); err != nil {
		de := DenyReason(err)
		if de == nil {
			return err
		}
		return s.refuse(ctx, c, req, de, true)
	}
	var lifetime time.Duration
	if e := c.Spec.ExpirationSeconds; e != nil {
		lifetime = time.Duration(*e) * time.Second
	}
	start := time.Now()
	cert, err := s.cfg.Authority.IssueForNode(ctx, ca.NodeRequest{
		CSRPEM:      c.Spec.Request,
		Identity:    req.Identity,
		Via:         "kube",
		Actor:       c.Spec.Username,
		RequestUID:  string(c.UID),
		MaxLifetime: lifetime,
	})
	if de := DenyReason(err); de != nil {
		// The Authority audited the denial. A revoked node's is final like
		// any other: Denied, never retried.
		return s.refuse(ctx, c, req, de, false)
	}
	if errors.Is(err, store.ErrNodeRevoked) {
		// Revoked between the Authority's check and its commit.
		return s.refuse(ctx, c, req, revokedDenial(node), true)
	}
	if errors.Is(err, store.ErrExists) {
		// Another replica stored it first: publish that one.
		if cert, err = s.cfg.Store.CertByRequest(ctx, string(c.UID)); err != nil {
			return err
		}
		return s.publishStored(ctx, c, cert)
	}
	if err != nil {
		return err
	}
	s.metrics.latency.Observe(time.Since(start).Seconds())
	if err := s.hook(ctx, StepStored); err != nil {
		return err
	}
	source := "name"
	if s.cfg.CNFrom == CNFromChassisID {
		source = AnnotationChassisID + " annotation"
	}
	msg := fmt.Sprintf("approved by ipsecca (%s, replica %s): the requester %s is node %q, which exists, "+
		"and the CN %q is the node's %s; the request passed the node policy (key, name, SANs); "+
		"certificate serial %s, valid until %s",
		s.cfg.SignerName, s.Identity(), c.Spec.Username, node, cert.CommonName, source,
		cert.Serial, cert.NotAfter.UTC().Format(time.RFC3339))
	c, err = s.approve(ctx, c, msg)
	if err != nil || c == nil {
		return err
	}
	if err := s.hook(ctx, StepApproved); err != nil {
		return err
	}
	if err := s.publish(ctx, c, cert); err != nil {
		return err
	}
	s.metrics.decisions.WithLabelValues("approved", string(ReasonApproved)).Inc()
	s.metrics.published.WithLabelValues("new").Inc()
	s.log.Info("approved and published", "csr", c.Name, "node", node, "cn", cert.CommonName,
		"serial", cert.Serial, "not_after", cert.NotAfter)
	return nil
}

func (s *Signer) hook(ctx context.Context, step string) error {
	if s.cfg.Hook == nil {
		return nil
	}
	return s.cfg.Hook(ctx, step)
}

// publishStored approves (when needed) and publishes a certificate stored
// earlier for c: after a crash between store and publish, or stored by
// another replica. It is never signed again.
func (s *Signer) publishStored(
	ctx context.Context, c *certificatesv1.CertificateSigningRequest, cert *store.Cert,
) error {
	c, err := s.fresh(ctx, c)
	if err != nil || c == nil {
		return err
	}
	if cert.State == store.StateRevoked {
		// Stored, then revoked before it was published: it is not handed out.
		de := denial(ca.ReasonNodeRevoked,
			"certificate %s was stored for this request but revoked (node %q was revoked) before it was published; "+
				"it is not handed out: once the node is re-admitted (ipsecca nodes readmit %s), create a new CSR",
			cert.Serial, cert.Node, cert.Node)
		return s.refuse(ctx, c, &Request{CSR: c, NodeName: cert.Node}, de, true)
	}
	msg := fmt.Sprintf("approved by ipsecca (%s, replica %s): certificate serial %s was issued and stored for this "+
		"request (UID %s) under the node policy; publishing it",
		s.cfg.SignerName, s.Identity(), cert.Serial, c.UID)
	c, err = s.approve(ctx, c, msg)
	if err != nil || c == nil {
		return err
	}
	if err := s.publish(ctx, c, cert); err != nil {
		return err
	}
	s.metrics.published.WithLabelValues("stored").Inc()
	s.log.Info("published a stored certificate", "csr", c.Name, "node", cert.Node, "serial", cert.Serial)
	return nil
}

// approve adds the Approved condition through the approval subresource
// (unless someone approved already) and returns the CSR as written, nil
// when it is gone. c is the CSR as last seen (never modified): it is
// written as seen (its resourceVersion guards the write) and read again
// only on a conflict.
func (s *Signer) approve(
	ctx context.Context, c *certificatesv1.CertificateSigningRequest, msg string,
) (*certificatesv1.CertificateSigningRequest, error) {
	csrs := s.cfg.Client.CertificatesV1().CertificateSigningRequests()
	cur := c
	var out *certificatesv1.CertificateSigningRequest
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		out = nil
		if cur == nil {
			var err error
			if cur, err = csrs.Get(ctx, c.Name, metav1.GetOptions{}); err != nil || cur.UID != c.UID {
				return ignoreNotFound(err)
			}
		}
		if hasCondition(cur, certificatesv1.CertificateApproved) || refused(cur) {
			out = cur
			return nil
		}
		upd := cur.DeepCopy()
		now := metav1.NewTime(s.cfg.Clock.Now())
		upd.Status.Conditions = append(upd.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue,
			Reason: string(ReasonApproved), Message: msg, LastUpdateTime: now, LastTransitionTime: now,
		})
		w, err := csrs.UpdateApproval(ctx, upd.Name, upd, metav1.UpdateOptions{})
		if err != nil {
			cur = nil // read it again
			return ignoreNotFound(err)
		}
		out = w
		return nil
	})
	return out, err
}

// publish writes the certificate to status.certificate through the status
// subresource, unless the CSR already carries one or was refused. c is the
// CSR as last read or written (approved): like approve, it is read again
// only on a conflict. Once the CSR carries a certificate it is remembered
// as published (see wasPublished).
func (s *Signer) publish(ctx context.Context, c *certificatesv1.CertificateSigningRequest, cert *store.Cert) error {
	csrs := s.cfg.Client.CertificatesV1().CertificateSigningRequests()
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.DER})
	cur := c
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if cur == nil {
			var err error
			if cur, err = csrs.Get(ctx, c.Name, metav1.GetOptions{}); err != nil || cur.UID != c.UID {
				return ignoreNotFound(err)
			}
		}
		if len(cur.Status.Certificate) > 0 {
			s.published.Store(cur.UID, struct{}{})
			return nil
		}
		if refused(cur) {
			return nil
		}
		if !hasCondition(cur, certificatesv1.CertificateApproved) {
			return fmt.Errorf("kube: CSR %s is not approved; not publishing", cur.Name)
		}
		upd := cur.DeepCopy()
		upd.Status.Certificate = certPEM
		if _, err := csrs.UpdateStatus(ctx, upd, metav1.UpdateOptions{}); err != nil {
			cur = nil // read it again
			return ignoreNotFound(err)
		}
		s.published.Store(cur.UID, struct{}{})
		return nil
	})
}

// wasPublished reports whether this replica saw the CSR with this UID
// carry a certificate: it is finished for good (the API server never lets
// a certificate be changed once set) even while the informer's copy lags
// behind the write, so the events of our own writes cost no request.
func (s *Signer) wasPublished(uid types.UID) bool {
	_, ok := s.published.Load(uid)
	return ok
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// refuse writes a denial: Denied through the approval subresource, or
// Failed through status when someone else approved the CSR. audit says
// whether this signer records the audit event (the Authority records its
// own denials).
func (s *Signer) refuse(
	ctx context.Context, c *certificatesv1.CertificateSigningRequest, req *Request, de *ca.DenyError, audit bool,
) error {
	reason := ConditionReason(de.Reason, s.cfg.CNFrom)
	msg := s.message(req, de, reason)
	csrs := s.cfg.Client.CertificatesV1().CertificateSigningRequests()
	decision := ""
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := csrs.Get(ctx, c.Name, metav1.GetOptions{})
		if err != nil || cur.UID != c.UID {
			return ignoreNotFound(err)
		}
		if finished(cur) {
			return nil
		}
		now := metav1.NewTime(s.cfg.Clock.Now())
		cond := certificatesv1.CertificateSigningRequestCondition{Status: corev1.ConditionTrue,
			Reason: string(reason), Message: msg, LastUpdateTime: now, LastTransitionTime: now}
		if hasCondition(cur, certificatesv1.CertificateApproved) {
			cond.Type = certificatesv1.CertificateFailed
			cond.Message = "approved by someone else, but refused by the ipsecca policy; no certificate is issued: " + msg
			cur.Status.Conditions = append(cur.Status.Conditions, cond)
			if _, err := csrs.UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
				return err
			}
			decision = "failed"
			return nil
		}
		cond.Type = certificatesv1.CertificateDenied
		cur.Status.Conditions = append(cur.Status.Conditions, cond)
		if _, err := csrs.UpdateApproval(ctx, cur.Name, cur, metav1.UpdateOptions{}); err != nil {
			return err
		}
		decision = "denied"
		return nil
	})
	if err != nil || decision == "" {
		return err
	}
	s.metrics.decisions.WithLabelValues(decision, string(reason)).Inc()
	if decision == "denied" && nonNode(de.Reason) {
		// Anyone may create CSRs: a flood of them must not grow the audit
		// log or the log by one record each. Counted, logged sampled.
		s.metrics.nonNode.WithLabelValues(string(reason)).Inc()
		if ok, held := s.nonNodeLog.Allow(c.Spec.Username, s.cfg.Clock.Now()); ok {
			s.log.Warn("refused a CSR from a requester that is not an existing node (logged once a minute per requester; "+
				"counted in ipsecca_kube_csr_non_node_denials_total)", "csr", c.Name, "requester", c.Spec.Username,
				"reason", reason, "detail", de.Detail, "not_logged_since_last", held)
		}
		return nil
	}
	s.log.Warn("refused", "csr", c.Name, "requester", c.Spec.Username,
		"decision", decision, "reason", reason, "detail", de.Detail)
	if audit || decision == "failed" {
		ev := store.Event{Time: s.cfg.Clock.Now().UTC(), Type: store.EventDenied, Actor: c.Spec.Username,
			Node: req.NodeName, Reason: string(de.Reason),
			Detail: map[string]string{"detail": de.Detail, "via": "kube", "csr": c.Name,
				"request_uid": string(c.UID), "condition": string(reason)}}
		if decision == "failed" {
			ev.Type = EventCSRFailed
		}
		if err := s.cfg.Store.AppendEvent(context.WithoutCancel(ctx), ev); err != nil {
			s.log.Error("audit append failed", "err", err)
		}
	}
	return nil
}

// nonNode reports whether a denial says the requester is not an existing
// node: no audit record per CSR for those.
func nonNode(r ca.Reason) bool { return r == auditRequesterNotNode || r == auditNodeNotFound }

// message is the sentence on a refused CSR: what is wrong and what to do.
func (s *Signer) message(req *Request, de *ca.DenyError, reason Reason) string {
	switch reason {
	case ReasonCNNotNodeChassisID, ReasonCNNotNodeName:
		what := "its " + AnnotationChassisID + " annotation"
		if reason == ReasonCNNotNodeName {
			what = "its name"
		}
		cn := ""
		if csr, err := ca.ParseCSR(req.CSR.Spec.Request); err == nil {
			cn = csr.Subject.CommonName
		}
		return fmt.Sprintf("the CSR asks for CN %q, but node %q may hold only %q (%s); "+
			"create a new CSR with CN=%s and SAN DNS:%s",
			cn, req.NodeName, req.Identity.CN, what, req.Identity.CN, req.Identity.CN)
	}
	return de.Detail
}

func revokedDenial(node string) *ca.DenyError {
	return denial(ca.ReasonNodeRevoked, "node %q is revoked; it gets no certificate, through any door, "+
		"until an admin re-admits it (ipsecca nodes readmit %s)", node, node)
}

// supersede denies an older CSR of a node that has a newer one.
func (s *Signer) supersede(ctx context.Context, c *certificatesv1.CertificateSigningRequest, node, newer string) error {
	de := denial(auditSuperseded, "node %q has a newer CSR %q; only a node's newest request is signed", node, newer)
	return s.refuse(ctx, c, &Request{CSR: c, NodeName: node}, de, true)
}
