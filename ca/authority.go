package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"sync/atomic"
	"time"

	"github.com/ipsecca/ipsecca/store"
)

// Store is what the Authority needs from a store backend.
type Store interface {
	RootStore
	Token(ctx context.Context, id string) (*store.Token, error)
	PutToken(ctx context.Context, t *store.Token, ev store.Event) error
	Cert(ctx context.Context, serial string) (*store.Cert, error)
	NameOwner(ctx context.Context, cn string) (string, error)
	Issue(ctx context.Context, is store.Issuance) error
	AppendEvent(ctx context.Context, ev store.Event) error
	RevokeNodeCode(ctx context.Context, node string, code int, at time.Time, ev store.Event) (int, error)
	ReadmitNode(ctx context.Context, node string, ev store.Event) error
	ForgetNode(ctx context.Context, node string, at time.Time, ev store.Event) ([]string, error)
	RevokeCert(ctx context.Context, serial string, at time.Time, ev store.Event) (*store.Cert, error)
	RevokeSerial(
		ctx context.Context,
		serial string,
		code int,
		at time.Time,
		ev store.Event,
	) (store.CertRevocation, error)
	RevokeToken(ctx context.Context, id, by string, at time.Time, ev store.Event) (*store.Token, bool, error)
	Revoked(ctx context.Context) ([]*store.Cert, error)
	PutInventory(ctx context.Context, node string, rep store.Report, at time.Time, ev store.Event) (bool, error)
	Node(ctx context.Context, name string) (*store.NodeInfo, error)
	CurrentCert(ctx context.Context, node string) (*store.Cert, error)
	NodeInfos(ctx context.Context) ([]*store.NodeInfo, error)
	NameCerts(ctx context.Context, names []string) (map[string][]*store.Cert, error)
	ListCerts(ctx context.Context, f store.CertFilter) ([]*store.Cert, string, error)
}

// Config holds the Authority's parameters.
type Config struct {
	Clock  Clock     // required
	Rand   io.Reader // required; crypto/rand.Reader in production
	Logger *slog.Logger
	// RotateAfter computes a node certificate's rotate_after; NotBefore +
	// RotateFraction of the lifetime when nil. The rotation package
	// supplies its policy (with its spread) here.
	RotateAfter func(notBefore, notAfter time.Time, serial string) time.Time
	// KEK seals the CA key when the root is renewed (same as at Bootstrap).
	KEK KEK
}

// Authority issues certificates under the node policy and records every
// decision in the store.
type Authority struct {
	st    Store
	root  atomic.Pointer[Root]
	org   string
	clock Clock
	rand  io.Reader
	log   *slog.Logger

	rotateAfter func(notBefore, notAfter time.Time, serial string) time.Time
	kek         KEK

	crl        crlCache
	anonDenied Sampler
}

// New returns an Authority signing with root.
func New(st Store, root *Root, cfg Config) *Authority {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	org := DefaultOrganization
	if o := root.Cert.Subject.Organization; len(o) > 0 {
		org = o[0]
	}
	a := &Authority{
		st:          st,
		org:         org,
		clock:       cfg.Clock,
		rand:        cfg.Rand,
		log:         log,
		rotateAfter: cfg.RotateAfter,
		kek:         cfg.KEK,
		anonDenied:  Sampler{Every: time.Minute},
	}
	if a.rotateAfter == nil {
		a.rotateAfter = func(notBefore, notAfter time.Time, _ string) time.Time { return RotateAfter(notBefore, notAfter) }
	}
	a.root.Store(root)
	return a
}

// Root returns the current root.
func (a *Authority) Root() *Root { return a.root.Load() }

// Caller is an authenticated mTLS client: a certificate this CA issued and
// still considers valid.
type Caller struct {
	Kind   store.Kind
	Node   string
	CN     string
	Serial string
	// SupersededBy is set when the certificate is no longer the active
	// one: Authenticate then also returns a certificate-superseded denial,
	// and only a Renew retry (Authority.Renew) may go on with it.
	SupersededBy string
}

// String names the caller for logs and audit records.
func (c Caller) String() string { return fmt.Sprintf("%s:%s", c.Kind, c.Node) }

// Authenticate maps a verified client certificate to its stored record:
// it must be one this CA issued (same bytes), not revoked and not expired.
func (a *Authority) Authenticate(ctx context.Context, leaf *x509.Certificate) (Caller, error) {
	serial := SerialString(leaf.SerialNumber)
	rec, err := a.st.Cert(ctx, serial)
	if errors.Is(err, store.ErrNotFound) {
		return Caller{}, deny(
			ErrUnauthenticated,
			ReasonCallerUnknown,
			"the client certificate (serial %s) was not issued by this CA",
			serial,
		)
	}
	if err != nil {
		return Caller{}, err
	}
	if string(rec.DER) != string(leaf.Raw) {
		return Caller{}, deny(
			ErrUnauthenticated,
			ReasonCallerUnknown,
			"the client certificate (serial %s) does not match the issued one",
			serial,
		)
	}
	if rec.State == store.StateRevoked {
		return Caller{}, deny(
			ErrUnauthenticated,
			ReasonCallerRevoked,
			"the client certificate (serial %s) is revoked",
			serial,
		)
	}
	if !a.clock.Now().Before(rec.NotAfter) {
		return Caller{}, deny(
			ErrUnauthenticated,
			ReasonCallerExpired,
			"the client certificate (serial %s) has expired; enrol again with a new token",
			serial,
		)
	}
	caller := Caller{Kind: rec.Kind, Node: rec.Node, CN: rec.CommonName, Serial: rec.Serial}
	if rec.State == store.StateSuperseded {
		caller.SupersededBy = rec.SupersededBy
		return caller, deny(ErrUnauthenticated, ReasonCallerSuperseded,
			"the client certificate (serial %s) was superseded by %s; only the %s's active certificate authenticates",
			serial, rec.SupersededBy, rec.Kind)
	}
	if rec.State != store.StateActive {
		return Caller{}, deny(
			ErrUnauthenticated,
			ReasonCallerUnknown,
			"the client certificate (serial %s) is %s",
			serial,
			rec.State,
		)
	}
	return caller, nil
}

// CreateToken makes a single-use bootstrap token admitting node to a
// certificate named cn (node when empty), valid for ttl (DefaultTokenTTL
// when zero, at most MaxTokenTTL). The token is returned once and stored
// only as a hash.
func (a *Authority) CreateToken(
	ctx context.Context,
	node, cn string,
	ttl time.Duration,
	actor string,
) (string, *store.Token, error) {
	if cn == "" {
		cn = node
	}
	node, cn = store.CanonicalName(node), store.CanonicalName(cn)
	for _, name := range []string{node, cn} {
		if HasOVSPrefix(name) {
			return "", nil, deny(
				ErrInvalidRequest,
				ReasonCNForbiddenOVS,
				"the name %q starts with \"ovs_\": ovs-monitor-ipsec owns and deletes NSS entries in that namespace",
				name,
			)
		}
	}
	if err := ValidName(node); err != nil {
		return "", nil, deny(ErrInvalidRequest, ReasonNodeNameInvalid, "node name: %v", err)
	}
	if err := ValidName(cn); err != nil {
		return "", nil, deny(ErrInvalidRequest, ReasonCNInvalid, "certificate name: %v", err)
	}
	switch {
	case ttl == 0:
		ttl = DefaultTokenTTL
	case ttl < 0 || ttl > MaxTokenTTL:
		return "", nil, deny(
			ErrInvalidRequest,
			ReasonTokenInvalid,
			"token lifetime %s is outside (0, %s]",
			ttl,
			MaxTokenTTL,
		)
	}
	if owner, err := a.st.NameOwner(ctx, cn); err != nil {
		return "", nil, err
	} else if owner != "" && owner != node {
		return "", nil, deny(ErrConflict, ReasonNameHeld, "the certificate name %q is held by node %q", cn, owner)
	}
	token, id, hash, err := newToken(a.rand)
	if err != nil {
		return "", nil, err
	}
	now := a.clock.Now().UTC()
	rec := &store.Token{
		ID:         id,
		Node:       node,
		CommonName: cn,
		SecretHash: hash,
		CreatedAt:  now,
		ExpiresAt:  now.Add(ttl),
		CreatedBy:  actor,
	}
	ev := store.Event{Time: now, Type: store.EventTokenCreated, Actor: actor, Node: node,
		Detail: map[string]string{"token_id": id, "common_name": cn, "expires_at": rec.ExpiresAt.Format(time.RFC3339)}}
	if err := a.st.PutToken(ctx, rec, ev); err != nil {
		if errors.Is(err, store.ErrNodeRevoked) {
			return "", nil, deny(
				ErrFailedPrecondition,
				ReasonNodeRevoked,
				"node %q is revoked: re-admit it first (ipsecca nodes readmit %s); tokens made before that stay void",
				node,
				node,
			)
		}
		return "", nil, err
	}
	a.log.Info("token created", "token_id", id, "node", node, "cn", cn, "expires_at", rec.ExpiresAt, "actor", actor)
	return token, rec, nil
}

// EnrollWithToken issues a node certificate for csrPEM to the node the
// bootstrap token admits, consuming the token in the same transaction.
//
// Enrolment is idempotent: a token already used returns the certificate it
// was used for when the CSR proves the same key and that certificate is
// still the node's active one (the reply to the first call was lost).
//
// Calls that fail before the token is recognised (malformed, unknown, wrong
// secret) cost no audit record: anyone can make them. They are counted by
// the caller's metrics and logged in sampled form.
func (a *Authority) EnrollWithToken(ctx context.Context, token string, csrPEM []byte) (*store.Cert, error) {
	id, secret, err := ParseToken(token)
	if err != nil {
		return nil, a.anonymous("", err)
	}
	actor := "token:" + id
	tok, err := a.st.Token(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !secretMatches(secret, tok.SecretHash)) {
		return nil, a.anonymous(id, deny(ErrUnauthenticated, ReasonTokenInvalid, "the bootstrap token is not valid"))
	}
	if err != nil {
		return nil, err
	}
	if !tok.UsedAt.IsZero() {
		return a.enrolledBefore(ctx, tok, csrPEM)
	}
	if !tok.RevokedAt.IsZero() {
		return nil, a.denied(ctx, actor, tok.Node, tokenRevoked(tok.RevokedAt))
	}
	if !a.clock.Now().Before(tok.ExpiresAt) {
		return nil, a.denied(
			ctx,
			actor,
			tok.Node,
			deny(
				ErrUnauthenticated,
				ReasonTokenExpired,
				"the bootstrap token expired at %s; ask an admin for a new one",
				tok.ExpiresAt.Format(time.RFC3339),
			),
		)
	}
	rec, err := a.issueNode(
		ctx,
		NodeRequest{
			CSRPEM:   csrPEM,
			Identity: Identity{Node: tok.Node, CN: tok.CommonName},
			Via:      "token",
			Actor:    actor,
			TokenID:  id,
		},
		store.EventEnrolled,
	)
	var de *DenyError
	if errors.As(err, &de) && de.Reason == ReasonTokenUsed {
		// Used meanwhile, by a concurrent call with this token.
		if tok, terr := a.st.Token(ctx, id); terr == nil && !tok.UsedAt.IsZero() {
			return a.enrolledBefore(ctx, tok, csrPEM)
		}
	}
	return rec, err
}

// enrolledBefore answers a used token: the certificate it was used for when
// csrPEM proves that certificate's key and it is still the node's active
// one; token-used otherwise.
func (a *Authority) enrolledBefore(ctx context.Context, tok *store.Token, csrPEM []byte) (*store.Cert, error) {
	actor := "token:" + tok.ID
	used := deny(
		ErrUnauthenticated,
		ReasonTokenUsed,
		"the bootstrap token was already used (tokens are single-use); ask an admin for a new one",
	)
	rec, err := a.st.Cert(ctx, tok.UsedFor)
	if errors.Is(err, store.ErrNotFound) {
		return nil, a.denied(ctx, actor, tok.Node, used)
	}
	if err != nil {
		return nil, err
	}
	if !a.sameKey(csrPEM, rec) || rec.StateAt(a.clock.Now()) != store.StateActive {
		return nil, a.denied(ctx, actor, tok.Node, used)
	}
	a.log.Info(
		"enrolment retried: returning the certificate already issued for this token and key",
		"node",
		rec.Node,
		"serial",
		rec.Serial,
		"token_id",
		tok.ID,
	)
	return rec, nil
}

// sameKey reports whether csrPEM is a validly signed CSR for rec's public key.
func (a *Authority) sameKey(csrPEM []byte, rec *store.Cert) bool {
	csr, err := ParseCSR(csrPEM)
	if err != nil || csr.CheckSignature() != nil {
		return false
	}
	cert, err := x509.ParseCertificate(rec.DER)
	if err != nil {
		return false
	}
	pub, ok := csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}

// Renew issues a new certificate for the caller's own node; the caller
// authenticated with a current certificate of that node.
func (a *Authority) Renew(ctx context.Context, caller Caller, csrPEM []byte) (*store.Cert, error) {
	if caller.Kind != store.KindNode {
		return nil, a.denied(
			ctx,
			caller.String(),
			"",
			deny(
				ErrPermissionDenied,
				ReasonCallerNotNode,
				"only node certificates can renew; this is a %s certificate",
				caller.Kind,
			),
		)
	}
	if caller.SupersededBy != "" {
		return a.renewedBefore(ctx, caller, csrPEM)
	}
	return a.issueNode(
		ctx,
		NodeRequest{
			CSRPEM:     csrPEM,
			Identity:   Identity{Node: caller.Node, CN: caller.CN},
			Via:        "renewal",
			Actor:      "node:" + caller.Node,
			AuthSerial: caller.Serial,
		},
		store.EventRenewed,
	)
}

// renewedBefore answers a Renew made with a superseded certificate: when
// that certificate's successor is the node's active one and csrPEM proves
// the successor's key, the node lost the reply to its renewal and gets the
// successor again; anything else is certificate-superseded.
func (a *Authority) renewedBefore(ctx context.Context, caller Caller, csrPEM []byte) (*store.Cert, error) {
	actor := "node:" + caller.Node
	superseded := deny(
		ErrUnauthenticated,
		ReasonCallerSuperseded,
		"the client certificate (serial %s) was superseded by %s; only the node's active certificate authenticates",
		caller.Serial,
		caller.SupersededBy,
	)
	next, err := a.st.Cert(ctx, caller.SupersededBy)
	if errors.Is(err, store.ErrNotFound) {
		return nil, a.denied(ctx, actor, caller.Node, superseded)
	}
	if err != nil {
		return nil, err
	}
	if next.Kind != store.KindNode || next.Node != caller.Node || next.StateAt(a.clock.Now()) != store.StateActive ||
		!a.sameKey(csrPEM, next) {
		return nil, a.denied(ctx, actor, caller.Node, superseded)
	}
	a.log.Info(
		"renewal retried: returning the certificate already issued for this key",
		"node",
		next.Node,
		"serial",
		next.Serial,
		"superseded",
		caller.Serial,
	)
	return next, nil
}

// NodeRequest is a node certificate request whose identity a front door
// has already proven (a token, an mTLS certificate, or the Kubernetes API
// server's word about the requester).
type NodeRequest struct {
	CSRPEM   []byte
	Identity Identity
	Via      string // token, renewal, kube
	Actor    string // who asked, for the audit log
	// TokenID is consumed in the same transaction (token enrolment).
	TokenID string
	// AuthSerial is the certificate the caller authenticated with (renewal).
	AuthSerial string
	// RequestUID keys the certificate by a Kubernetes CSR's UID: a second
	// issue for it fails with store.ErrExists.
	RequestUID string
	// MaxLifetime shortens the certificate (Kubernetes expirationSeconds);
	// zero keeps the profile's 5 years. At least MinLifetime.
	MaxLifetime time.Duration
}

// MinLifetime is the shortest certificate a request may ask for, as
// Kubernetes' own signer allows.
const MinLifetime = 10 * time.Minute

// IssueForNode runs the node policy on req and issues, stores and audits
// the certificate. Every front door (gRPC token, gRPC renewal, Kubernetes
// CSR) goes through here.
func (a *Authority) IssueForNode(ctx context.Context, req NodeRequest) (*store.Cert, error) {
	evType := store.EventEnrolled
	if req.Via == "renewal" {
		evType = store.EventRenewed
	}
	return a.issueNode(ctx, req, evType)
}

func (a *Authority) issueNode(ctx context.Context, req NodeRequest, evType string) (*store.Cert, error) {
	id, actor := req.Identity, req.Actor
	id.Node, id.CN = store.CanonicalName(id.Node), store.CanonicalName(id.CN)
	csr, err := ParseCSR(req.CSRPEM)
	if err != nil {
		return nil, a.denied(ctx, actor, id.Node, err)
	}
	if err := Evaluate(NodePolicy, &Request{CSR: csr, Identity: id}); err != nil {
		return nil, a.denied(ctx, actor, id.Node, err)
	}
	if req.MaxLifetime != 0 && req.MaxLifetime < MinLifetime {
		return nil, a.denied(
			ctx,
			actor,
			id.Node,
			deny(
				ErrInvalidRequest,
				ReasonLifetimeTooShort,
				"a lifetime of %s is shorter than the %s minimum",
				req.MaxLifetime,
				MinLifetime,
			),
		)
	}
	// Cheap early answer; the store re-checks inside the transaction.
	if owner, err := a.st.NameOwner(ctx, id.CN); err != nil {
		return nil, err
	} else if owner != "" && owner != id.Node {
		return nil, a.denied(ctx, actor, id.Node,
			deny(ErrConflict, ReasonNameHeld, "the certificate name %q is held by node %q", id.CN, owner))
	}
	now := a.clock.Now()
	rec, err := a.sign(
		store.KindNode,
		id.Node,
		id.CN,
		"",
		csr.PublicKey,
		[]string{id.CN},
		nil,
		NodeYears,
		req.MaxLifetime,
		now,
	)
	if err != nil {
		return nil, err
	}
	rec.IssuedVia = req.Via
	rec.RequestUID = req.RequestUID
	ev := store.Event{Time: now.UTC(), Type: evType, Actor: actor, Node: id.Node, Serial: rec.Serial,
		Detail: map[string]string{
			"common_name":  id.CN,
			"via":          req.Via,
			"not_after":    rec.NotAfter.Format(time.RFC3339),
			"rotate_after": rec.RotateAfter.Format(time.RFC3339),
		}}
	if req.TokenID != "" {
		ev.Detail["token_id"] = req.TokenID
	}
	if req.RequestUID != "" {
		ev.Detail["request_uid"] = req.RequestUID
	}
	completed := func(old *store.Cert) *store.Event {
		if old.DueAt.IsZero() {
			return nil
		}
		return &store.Event{
			Time:      now.UTC(),
			Type:      store.EventRotationCompleted,
			Actor:     actor,
			Node:      id.Node,
			Serial:    rec.Serial,
			OldSerial: old.Serial,
			Detail: map[string]string{
				"reason": old.DueReason,
				"took":   now.Sub(old.DueAt).Round(time.Second).String(),
			},
		}
	}
	err = a.st.Issue(
		ctx,
		store.Issuance{
			Cert:        rec,
			TokenID:     req.TokenID,
			AuthSerial:  req.AuthSerial,
			RequestUID:  req.RequestUID,
			Event:       ev,
			OnSupersede: completed,
		},
	)
	switch {
	case errors.Is(err, store.ErrRevoked):
		return nil, a.denied(
			ctx,
			actor,
			id.Node,
			deny(
				ErrUnauthenticated,
				ReasonCallerRevoked,
				"the client certificate was revoked; re-admitting the node takes a new token",
			),
		)
	case errors.Is(err, store.ErrTokenUsed):
		return nil, a.denied(
			ctx,
			actor,
			id.Node,
			deny(
				ErrUnauthenticated,
				ReasonTokenUsed,
				"the bootstrap token was already used (tokens are single-use); ask an admin for a new one",
			),
		)
	case errors.Is(err, store.ErrTokenRevoked):
		// Revoked between the token's check and the issue.
		return nil, a.denied(ctx, actor, id.Node, tokenRevoked(now))
	case errors.Is(err, store.ErrNameHeld):
		return nil, a.denied(
			ctx,
			actor,
			id.Node,
			deny(ErrConflict, ReasonNameHeld, "the certificate name %q is held by another node", id.CN),
		)
	case errors.Is(err, store.ErrNodeRevoked):
		return nil, a.denied(ctx, actor, id.Node, deny(
			ErrPermissionDenied,
			ReasonNodeRevoked,
			"node %q is revoked; it gets no certificate until an admin re-admits it (ipsecca nodes readmit %s)",
			id.Node,
			id.Node,
		))
	case errors.Is(err, store.ErrTokenVoided):
		return nil, a.denied(ctx, actor, id.Node, deny(
			ErrUnauthenticated,
			ReasonTokenVoided,
			"the bootstrap token was made before node %q was revoked, which voided it; ask an admin for a new one",
			id.Node,
		))
	case errors.Is(err, store.ErrOutcomeUnknown):
		// The store may have committed it: a read tells.
		if stored, rerr := a.st.Cert(context.WithoutCancel(ctx), rec.Serial); rerr == nil &&
			string(stored.DER) == string(rec.DER) {
			a.log.Warn("issue outcome was unknown; the certificate is stored", "node", id.Node, "serial", rec.Serial)
			break
		}
		a.log.Error("issue outcome unknown", "node", id.Node, "serial", rec.Serial, "err", err)
		return nil, err
	case err != nil:
		a.log.Error("issue failed: not stored, not returned", "node", id.Node, "serial", rec.Serial, "err", err)
		return nil, err
	}
	a.log.Info(
		"issued",
		"node",
		id.Node,
		"cn",
		id.CN,
		"serial",
		rec.Serial,
		"via",
		req.Via,
		"not_after",
		rec.NotAfter,
		"rotate_after",
		rec.RotateAfter,
	)
	return rec, nil
}

// IssueService issues and stores a server or admin certificate of the
// given lifetime in years for pub.
func (a *Authority) IssueService(
	ctx context.Context,
	kind store.Kind,
	name string,
	pub crypto.PublicKey,
	dnsNames []string,
	ips []net.IP,
	years int,
	actor string,
) (*store.Cert, error) {
	now := a.clock.Now()
	ou := "ipsecca " + string(kind)
	rec, err := a.sign(kind, name, name, ou, pub, dnsNames, ips, years, 0, now)
	if err != nil {
		return nil, err
	}
	rec.IssuedVia = "server"
	ev := store.Event{Time: now.UTC(), Type: store.EventIssued, Actor: actor, Node: name, Serial: rec.Serial,
		Detail: map[string]string{"kind": string(kind), "not_after": rec.NotAfter.Format(time.RFC3339)}}
	if err := a.st.Issue(ctx, store.Issuance{Cert: rec, Event: ev}); err != nil {
		return nil, err
	}
	a.log.Info("issued", "kind", kind, "name", name, "serial", rec.Serial, "not_after", rec.NotAfter)
	return rec, nil
}

func (a *Authority) sign(
	kind store.Kind,
	node, cn, ou string,
	pub crypto.PublicKey,
	dnsNames []string,
	ips []net.IP,
	years int,
	maxLife time.Duration,
	now time.Time,
) (*store.Cert, error) {
	serial, err := newSerial(a.rand, now)
	if err != nil {
		return nil, err
	}
	root := a.Root()
	tmpl, err := leafTemplate(serial, a.org, ou, cn, pub, now, years, root.Cert)
	if err != nil {
		return nil, err
	}
	if maxLife > 0 && tmpl.NotAfter.After(tmpl.NotBefore.Add(maxLife)) {
		tmpl.NotAfter = tmpl.NotBefore.Add(maxLife)
	}
	// Nothing outlives the CA's certificate, nor (for a subordinate CA) a
	// certificate above it: rotate_after follows from the capped life.
	if capAt := root.NodeNotAfterCap(); tmpl.NotAfter.After(capAt) {
		tmpl.NotAfter = capAt
	}
	if !tmpl.NotAfter.After(now) {
		return nil, deny(ErrFailedPrecondition, ReasonCAExpired,
			"the CA's certificate (or one above it) ended at %s: nothing can be issued until it is renewed",
			tmpl.NotAfter.UTC().Format(time.RFC3339))
	}
	tmpl.DNSNames = dnsNames
	tmpl.IPAddresses = ips
	tmpl.SignatureAlgorithm = signatureAlgorithm(root.Signer)
	der, err := createLeaf(a.rand, tmpl, root.Cert, pub, root.Signer)
	if err != nil {
		return nil, fmt.Errorf("ca: sign: %w", err)
	}
	return &store.Cert{
		Serial:      SerialString(serial),
		Kind:        kind,
		Node:        node,
		CommonName:  cn,
		Subject:     tmpl.Subject.String(),
		State:       store.StateActive,
		NotBefore:   tmpl.NotBefore,
		NotAfter:    tmpl.NotAfter,
		RotateAfter: a.rotateAfter(tmpl.NotBefore, tmpl.NotAfter, SerialString(serial)),
		IssuedAt:    now.UTC(),
		DER:         der,
	}, nil
}

// denied logs and audits a denial and returns err unchanged. Denials of
// malformed tokens carry no node (the token proved nothing).
func (a *Authority) denied(ctx context.Context, actor, node string, err error) error {
	var de *DenyError
	if !errors.As(err, &de) {
		return err
	}
	a.log.Warn("denied", "actor", actor, "node", node, "reason", de.Reason, "detail", de.Detail)
	ev := store.Event{
		Time:   a.clock.Now().UTC(),
		Type:   store.EventDenied,
		Actor:  actor,
		Node:   node,
		Reason: string(de.Reason),
		Detail: map[string]string{"detail": de.Detail},
	}
	if aerr := a.st.AppendEvent(context.WithoutCancel(ctx), ev); aerr != nil {
		a.log.Error("audit append failed", "err", aerr)
	}
	return err
}

// RevokeNode revokes every unexpired certificate of node. Re-admitting the
// node takes a new bootstrap token. Revoking a revoked node with nothing
// left to revoke is an error wrapping store.ErrAlreadyRevoked (callers
// answer it as done); a node nothing is known of, a *NotFoundError. A
// reason that is an RFC 5280 name (keyCompromise...) is also the CRLReason
// of the certificates' CRL entries.
func (a *Authority) RevokeNode(ctx context.Context, node, reason, actor string) (int, error) {
	now := a.clock.Now().UTC()
	ev := store.Event{Time: now, Type: store.EventNodeRevoked, Actor: actor, Node: node, Reason: reason}
	code, _ := ParseRevocationReason(reason) // free text: unspecified
	n, err := a.st.RevokeNodeCode(ctx, node, code, now, ev)
	if errors.Is(err, store.ErrNotFound) {
		return 0, &NotFoundError{What: fmt.Sprintf("node %q (no certificate, no token)", node)}
	}
	if err != nil {
		return 0, err
	}
	a.crl.invalidate()
	a.log.Warn("node revoked", "node", node, "certificates", n, "reason", reason, "actor", actor)
	return n, nil
}

// ReadmitNode lets a revoked node get certificates again, through any
// door, with a token made after this call.
func (a *Authority) ReadmitNode(ctx context.Context, node, actor string) error {
	node = store.CanonicalName(node)
	ev := store.Event{Time: a.clock.Now().UTC(), Type: store.EventNodeReadmitted, Actor: actor, Node: node}
	if err := a.st.ReadmitNode(ctx, node, ev); err != nil {
		return notRevoked(node, err)
	}
	a.log.Warn("node re-admitted", "node", node, "actor", actor)
	return nil
}

// ForgetNode releases the certificate names a revoked node holds, so a
// re-provisioned chassis may take them; it returns the names released.
func (a *Authority) ForgetNode(ctx context.Context, node, actor string) ([]string, error) {
	node = store.CanonicalName(node)
	now := a.clock.Now().UTC()
	ev := store.Event{Time: now, Type: store.EventNodeForgotten, Actor: actor, Node: node}
	names, err := a.st.ForgetNode(ctx, node, now, ev)
	if err != nil {
		return nil, notRevoked(node, err)
	}
	a.log.Warn("node forgotten: its names are free", "node", node, "names", names, "actor", actor)
	return names, nil
}

func notRevoked(node string, err error) error {
	if errors.Is(err, store.ErrNotRevoked) {
		return deny(
			ErrFailedPrecondition,
			ReasonNodeNotRevoked,
			"node %q is not revoked (revoke it first: ipsecca nodes revoke %s)",
			node,
			node,
		)
	}
	return err
}

// RotateAdmin issues a new admin certificate for csrPEM to the calling
// admin; it supersedes the caller's, which then authenticates no more.
func (a *Authority) RotateAdmin(ctx context.Context, caller Caller, csrPEM []byte) (*store.Cert, error) {
	if caller.Kind != store.KindAdmin {
		return nil, deny(
			ErrPermissionDenied,
			ReasonCallerNotAdmin,
			"only an admin certificate can rotate admin credentials",
		)
	}
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	if err := Evaluate([]Check{{"key", CheckKey}, {"csr-signature", CheckSignature}}, &Request{CSR: csr}); err != nil {
		return nil, err
	}
	return a.IssueService(ctx, store.KindAdmin, caller.Node, csr.PublicKey, nil, nil, AdminCertYears, caller.String())
}

// RevokeAdmin revokes one admin certificate by serial: it authenticates no
// more and is listed in the CRL. An admin cannot revoke the certificate it
// calls with (rotate first), so the CA is never left without an admin.
func (a *Authority) RevokeAdmin(ctx context.Context, caller Caller, serial, reason string) (*store.Cert, error) {
	rec, err := a.st.Cert(ctx, serial)
	if err != nil {
		return nil, err
	}
	if rec.Kind != store.KindAdmin {
		return nil, deny(
			ErrInvalidRequest,
			ReasonNotAdminCert,
			"certificate %s is a %s certificate; revoke nodes with ipsecca nodes revoke",
			serial,
			rec.Kind,
		)
	}
	if serial == caller.Serial {
		return nil, deny(
			ErrFailedPrecondition,
			ReasonRevokeSelf,
			"certificate %s is the one this call is made with; rotate it first (ipsecca admin rotate)",
			serial,
		)
	}
	now := a.clock.Now().UTC()
	ev := store.Event{
		Time:   now,
		Type:   store.EventCertRevoked,
		Actor:  caller.String(),
		Node:   rec.Node,
		Serial: serial,
		Reason: reason,
		Detail: map[string]string{"kind": string(rec.Kind)},
	}
	rec, err = a.st.RevokeCert(ctx, serial, now, ev)
	if errors.Is(err, store.ErrRevoked) {
		return nil, deny(ErrFailedPrecondition, ReasonAlreadyRevoked, "certificate %s is already revoked", serial)
	}
	if err != nil {
		return nil, err
	}
	a.crl.invalidate()
	a.log.Warn(
		"admin certificate revoked",
		"serial",
		serial,
		"admin",
		rec.Node,
		"reason",
		reason,
		"actor",
		caller.String(),
	)
	return rec, nil
}

// CRLValidity is how long a CRL is valid (its NextUpdate).
const CRLValidity = 7 * 24 * time.Hour

// CRL returns a DER CRL listing every revoked certificate that has not
// expired yet, signed by the issuing CA, or during a key rollover's issue
// phase by the outgoing one (outgoingSignsCRL). It signs only when the
// revocation set or the signing CA changed, or the cached CRL is past half
// its validity; otherwise it answers with the cached one (anyone may ask
// for it).
func (a *Authority) CRL(ctx context.Context) ([]byte, error) {
	revoked, err := a.st.Revoked(ctx)
	if err != nil {
		return nil, err
	}
	now := a.clock.Now().UTC()
	cert, key, fellBack := a.Root().crlSigner()
	k := crlKey(cert, revoked, now)
	if der, ok := a.crl.get(k, now); ok {
		return der, nil
	}
	if fellBack {
		a.log.Warn("the outgoing CA key is not in the record: the issuing key signs the CRL, which plutos " +
			"running since before the rollover do not verify")
	}
	der, err := a.signCRL(cert, key, revoked, now)
	if err != nil {
		return nil, err
	}
	a.crl.put(k, der, now)
	return der, nil
}

// tokenRevoked is the denial of a revoked token: the code of an expired one.
func tokenRevoked(at time.Time) error {
	return deny(ErrUnauthenticated, ReasonTokenRevoked,
		"the bootstrap token was revoked at %s; ask an admin for a new one", at.UTC().Format(time.RFC3339))
}

// signCRL signs, as issuer (its subject and key identifier) with key, a
// CRL listing the certificates of revoked unexpired at now.
func (a *Authority) signCRL(
	issuer *x509.Certificate,
	key crypto.Signer,
	revoked []*store.Cert,
	now time.Time,
) ([]byte, error) {
	thisUpdate := a.crl.nextThisUpdate(now)
	list := &x509.RevocationList{Number: big.NewInt(thisUpdate.Unix()), ThisUpdate: thisUpdate,
		NextUpdate: thisUpdate.Add(CRLValidity)}
	for _, c := range revoked {
		if !now.Before(c.NotAfter) {
			continue
		}
		serial, ok := new(big.Int).SetString(c.Serial, 16)
		if !ok {
			continue
		}
		// A non-zero reason becomes the entry's reasonCode extension
		// (RFC 5280 5.3.1: unspecified is left out).
		list.RevokedCertificateEntries = append(
			list.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: serial, RevocationTime: c.RevokedAt, ReasonCode: c.RevocationReason},
		)
	}
	der, err := x509.CreateRevocationList(a.rand, list, issuer, key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign CRL: %w", err)
	}
	return der, nil
}

// Record appends an audit event for a decision made outside the CA core
// (e.g. a bundle validation), stamped with the clock's time.
func (a *Authority) Record(ctx context.Context, ev store.Event) error {
	ev.Time = a.clock.Now().UTC()
	return a.st.AppendEvent(ctx, ev)
}
