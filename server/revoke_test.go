package server

import (
	"context"
	"crypto/x509"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"

	"github.com/ipsecca/ipsecca/internal/buildinfo"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// TestTokenLifecycle: token list shows tokens that can still admit a node
// (all states on request, never the secret); a revoked token is refused
// by Enroll like an expired one; revoking again is OK and says so.
func TestTokenLifecycle(t *testing.T) {
	c := startCA(t)
	ctx := context.Background()
	admin := ipseccav1.NewAdminServiceClient(c.conn(t, c.admin(t)))
	nodes := ipseccav1.NewNodeServiceClient(c.conn(t, nil))
	toks := map[string]*ipseccav1.CreateTokenResponse{}
	for _, n := range []string{"node-used", "node-rev", "node-live"} {
		r, err := admin.CreateToken(ctx, &ipseccav1.CreateTokenRequest{Node: n})
		if err != nil {
			t.Fatal(err)
		}
		toks[n] = r
	}
	if _, err := nodes.Enroll(ctx, &ipseccav1.EnrollRequest{Token: toks["node-used"].GetToken(),
		CsrPem: csrFor(t, newKey(t), "node-used")}); err != nil {
		t.Fatal(err)
	}
	list := func(all bool) string {
		t.Helper()
		resp, err := admin.ListTokens(ctx, &ipseccav1.ListTokensRequest{All: all})
		if err != nil {
			t.Fatal(err)
		}
		text := prototext.Format(resp)
		for n, tok := range toks {
			if _, secret, _ := strings.Cut(tok.GetToken(), "."); strings.Contains(text, secret) {
				t.Fatalf("the listing shows %s's secret", n)
			}
		}
		var got []string
		for _, tok := range resp.GetTokens() {
			if tok.GetId() != toks[tok.GetNode()].GetTokenId() {
				t.Fatalf("token of %s listed as %s", tok.GetNode(), tok.GetId())
			}
			got = append(got, tok.GetNode()+":"+tok.GetState())
		}
		return fmt.Sprint(got)
	}
	before := list(false)

	revoked, err := admin.RevokeToken(ctx, &ipseccav1.RevokeTokenRequest{Id: toks["node-rev"].GetTokenId()})
	if err != nil || revoked.GetAlready() || revoked.GetToken().GetState() != "revoked" ||
		revoked.GetToken().GetRevokedBy() == "" {
		t.Fatalf("revoke: %v %v", revoked, err)
	}
	// The whole token names it too; a second revoke is OK and says so.
	again, err := admin.RevokeToken(ctx, &ipseccav1.RevokeTokenRequest{Id: toks["node-rev"].GetToken()})
	if err != nil || !again.GetAlready() {
		t.Fatalf("second revoke: %v %v; want OK, already", again, err)
	}
	evs, err := admin.ListEvents(ctx, &ipseccav1.ListEventsRequest{Type: "token.revoked"})
	if err != nil || len(evs.GetEvents()) != 1 || evs.GetEvents()[0].GetNode() != "node-rev" {
		t.Fatalf("audit of the revocation: %v %v", evs, err)
	}

	for _, tc := range []struct {
		name, got, want string
	}{
		{"before the revocation", before, "[node-live:unused node-rev:unused]"},
		{"unused only (default)", list(false), "[node-live:unused]"},
		{"all", list(true), "[node-live:unused node-rev:revoked node-used:used]"},
	} {
		if got := sortedList(tc.got); got != tc.want {
			t.Errorf("%s: %s; want %s", tc.name, got, tc.want)
		}
	}

	_, err = nodes.Enroll(ctx, &ipseccav1.EnrollRequest{Token: toks["node-rev"].GetToken(),
		CsrPem: csrFor(t, newKey(t), "node-rev")})
	wantDenied(t, "enroll with a revoked token", err, codes.Unauthenticated, "token-revoked")
	c.clock.Add(2 * time.Hour)
	_, err = nodes.Enroll(ctx, &ipseccav1.EnrollRequest{Token: toks["node-live"].GetToken(),
		CsrPem: csrFor(t, newKey(t), "node-live")})
	wantDenied(t, "enroll with an expired token (the same code)", err, codes.Unauthenticated, "token-expired")
	if got := sortedList(list(false)); got != "[]" {
		t.Errorf("unused tokens after expiry: %s", got)
	}

	for _, tc := range []struct {
		id   string
		code codes.Code
	}{
		{toks["node-used"].GetTokenId(), codes.FailedPrecondition},
		{"0123456789abcdef", codes.NotFound},
		{"not-a-token", codes.InvalidArgument},
		{"", codes.InvalidArgument},
	} {
		_, err := admin.RevokeToken(ctx, &ipseccav1.RevokeTokenRequest{Id: tc.id})
		if status.Code(err) != tc.code {
			t.Errorf("revoke %q: %v; want %s", tc.id, err, tc.code)
		}
	}
}

func sortedList(s string) string {
	f := strings.Fields(strings.Trim(s, "[]"))
	slices.Sort(f)
	return "[" + strings.Join(f, " ") + "]"
}

// TestRevokeCertificate: revocation by serial with an RFC 5280 reason. A
// superseded certificate is revoked alone; the node's current one revokes
// the node (no live credential left, Watch told, no token until
// re-admitted); the CRL carries each reason; bad input is refused with
// the right code; a second revocation is OK and says so.
func TestRevokeCertificate(t *testing.T) {
	c := startCA(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin := ipseccav1.NewAdminServiceClient(c.conn(t, c.admin(t)))
	gen1 := c.enrollNode(t, "node-a")
	key2 := newKey(t)
	r2, err := ipseccav1.NewNodeServiceClient(c.conn(t, gen1)).
		Renew(ctx, &ipseccav1.RenewRequest{CsrPem: csrFor(t, key2, "node-a")})
	if err != nil {
		t.Fatal(err)
	}
	gen2 := pairFrom(t, r2, key2)
	other := c.enrollNode(t, "node-b")
	stream, err := ipseccav1.NewNodeServiceClient(c.conn(t, gen2)).Watch(ctx, &ipseccav1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	hexColons := func(n *big.Int) string { // the form openssl prints: upper case, colons
		h := strings.ToUpper(n.Text(16))
		if len(h)%2 == 1 {
			h = "0" + h
		}
		var parts []string
		for i := 0; i < len(h); i += 2 {
			parts = append(parts, h[i:i+2])
		}
		return strings.Join(parts, ":")
	}
	s1, s2 := gen1.Leaf.SerialNumber, gen2.Leaf.SerialNumber
	for _, tc := range []struct {
		name, serial, reason string
		code                 codes.Code
		already, nodeRevoked bool
		revoked              int32
		wantReason           string
	}{
		{"superseded certificate: alone", s1.Text(16), "superseded", codes.OK, false, false, 1, "superseded"},
		{"again: OK, already", s1.Text(16), "keyCompromise", codes.OK, true, false, 0, "superseded"},
		{"unknown serial", "abcdef0123", "", codes.NotFound, false, false, 0, ""},
		{"malformed serial", "not-hex", "", codes.InvalidArgument, false, false, 0, ""},
		{"empty serial", "", "", codes.InvalidArgument, false, false, 0, ""},
		{"certificateHold refused", s2.Text(16), "certificateHold", codes.InvalidArgument, false, false, 0, ""},
		{"unknown reason", s2.Text(16), "stolen", codes.InvalidArgument, false, false, 0, ""},
		{"the admin's own certificate", c.admin(t).Leaf.SerialNumber.Text(16), "", codes.FailedPrecondition,
			false, false, 0, ""},
		{"current certificate: the node", hexColons(s2), "keycompromise", codes.OK, false, true, 1, "keyCompromise"},
		{"the node's, again", s2.Text(16), "", codes.OK, true, false, 0, "keyCompromise"},
	} {
		resp, err := admin.RevokeCertificate(ctx,
			&ipseccav1.RevokeCertificateRequest{Serial: tc.serial, Reason: tc.reason})
		if status.Code(err) != tc.code {
			t.Fatalf("%s: %v; want %s", tc.name, err, tc.code)
		}
		if err != nil {
			continue
		}
		if resp.GetAlready() != tc.already || resp.GetNodeRevoked() != tc.nodeRevoked ||
			resp.GetRevoked() != tc.revoked || resp.GetReason() != tc.wantReason ||
			resp.GetCertificate().GetState() != "revoked" ||
			resp.GetCertificate().GetRevocationReason() != tc.wantReason {
			t.Fatalf("%s: %v", tc.name, resp)
		}
	}
	// The node's Watch stream hears of it; its certificate authenticates no
	// more; it gets no token until re-admitted, as after RevokeNode.
	if ev, err := stream.Recv(); err != nil || ev.GetKind() != ipseccav1.NodeEvent_REVOKED {
		t.Fatalf("watch after revoking the current certificate: %v %v", ev, err)
	}
	_, err = ipseccav1.NewNodeServiceClient(c.conn(t, gen2)).
		Renew(ctx, &ipseccav1.RenewRequest{CsrPem: csrFor(t, newKey(t), "node-a")})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("renew with the revoked certificate: %v", err)
	}
	_, err = admin.CreateToken(ctx, &ipseccav1.CreateTokenRequest{Node: "node-a"})
	wantDenied(t, "token for the node", err, codes.FailedPrecondition, "node-revoked")
	if resp, err := admin.RevokeNode(ctx, &ipseccav1.RevokeNodeRequest{Node: "node-a"}); err != nil ||
		!resp.GetAlreadyRevoked() {
		t.Fatalf("node revoke after its current certificate was: %v %v; want already revoked", resp, err)
	}
	// Another node is untouched.
	if _, err := ipseccav1.NewNodeServiceClient(c.conn(t, other)).
		ReportInventory(ctx, &ipseccav1.ReportInventoryRequest{}); err != nil {
		t.Fatalf("node-b after node-a's revocation: %v", err)
	}
	// The CRL carries both, each with its reason code.
	crl, err := ipseccav1.NewNodeServiceClient(c.conn(t, nil)).GetCRL(ctx, &ipseccav1.GetCRLRequest{})
	if err != nil {
		t.Fatal(err)
	}
	list, err := x509.ParseRevocationList(crl.GetDer())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, e := range list.RevokedCertificateEntries {
		got[e.SerialNumber.Text(16)] = e.ReasonCode
	}
	want := map[string]int{s1.Text(16): 4, s2.Text(16): 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("CRL entries (serial: reason code) %v; want %v", got, want)
	}
	evs, err := admin.ListEvents(ctx, &ipseccav1.ListEventsRequest{Node: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range evs.GetEvents() {
		if strings.Contains(e.GetType(), "revoked") {
			types = append(types, e.GetType()+":"+e.GetSerial()+":"+e.GetReason())
		}
	}
	if w := fmt.Sprint([]string{"cert.revoked:" + s1.Text(16) + ":superseded",
		"node.revoked:" + s2.Text(16) + ":keyCompromise"}); fmt.Sprint(types) != w {
		t.Errorf("audit %v; want %v", types, w)
	}
}

// TestStatusShowsVersion: status names the build of the answering server
// and of each replica.
func TestStatusShowsVersion(t *testing.T) {
	c := startCA(t)
	st, err := ipseccav1.NewAdminServiceClient(c.conn(t, c.admin(t))).
		GetStatus(context.Background(), &ipseccav1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	b := buildinfo.Get()
	if st.GetVersion() == "" || st.GetVersion() != b.Version || st.GetRevision() != b.Revision {
		t.Fatalf("status version %q revision %q; want %q %q", st.GetVersion(), st.GetRevision(), b.Version, b.Revision)
	}
	if r := st.GetReplicas(); len(r) != 1 || r[0].GetVersion() != b.Version || r[0].GetRevision() != b.Revision {
		t.Fatalf("replicas %v", r)
	}
}
