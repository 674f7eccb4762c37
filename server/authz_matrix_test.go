package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ipsecca/ipsecca/ca"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// TestAuthorizationMatrix: every RPC × every kind of caller → the code,
// in one table. "pass" means authorization let the call through (the
// handler's own answer, e.g. NotFound for an unknown name, is fine).
func TestAuthorizationMatrix(t *testing.T) {
	c := startCA(t)
	ctx := context.Background()
	nodeA := c.enrollNode(t, "node-a")
	nodeB := c.enrollNode(t, "node-b")
	revoked := c.enrollNode(t, "node-r")
	if _, err := c.in.Authority.RevokeNode(ctx, "node-r", "test", "test"); err != nil {
		t.Fatal(err)
	}
	// A ten-minute certificate (the Kubernetes path allows that), then
	// eleven minutes later: expired.
	ekey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	erec, err := c.in.Authority.IssueForNode(
		ctx,
		ca.NodeRequest{
			CSRPEM:      csrFor(t, ekey, "node-e"),
			Identity:    ca.Identity{Node: "node-e", CN: "node-e"},
			Via:         "kube",
			Actor:       "test",
			MaxLifetime: 10 * time.Minute,
		},
	)
	if err != nil {
		t.Fatal(err)
	}
	eleaf, _ := x509.ParseCertificate(erec.DER)
	expired := &tls.Certificate{Certificate: [][]byte{erec.DER}, PrivateKey: ekey, Leaf: eleaf}
	other := startCA(t).enrollNode(t, "node-a")
	// Superseded credentials: a node's first certificate after it enrolled
	// again, and the admin certificate before an admin rotation.
	superseded := c.enrollNode(t, "node-s")
	c.enrollNode(t, "node-s")
	oldAdmin := c.admin(t)
	admin := c.rotateAdmin(t, oldAdmin)
	// Enrolment with a valid token is for a node of its own (node-t): an
	// enrolment of node-a would supersede the certificate node A calls with.
	tokA := func() string {
		tok, _, err := c.in.Authority.CreateToken(ctx, "node-t", "", 0, "test")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tokB := func() string {
		tok, _, err := c.in.Authority.CreateToken(ctx, "node-b", "", 0, "test")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csrA := csrFor(t, key, "node-a")
	csrT := csrFor(t, key, "node-t")
	c.clock.Add(11 * time.Minute)

	type caller struct {
		cert  *tls.Certificate
		token func() string // for Enroll
	}
	callers := map[string]caller{
		"anonymous":        {},
		"valid token":      {token: tokA},
		"wrong-node token": {token: tokB},
		"node A":           {cert: nodeA},
		"node B":           {cert: nodeB},
		"revoked":          {cert: revoked},
		"expired":          {cert: expired},
		"other CA":         {cert: other},
		"admin":            {cert: admin},
		"superseded":       {cert: superseded},
		"superseded admin": {cert: oldAdmin},
	}
	const pass = codes.Code(1000)
	U, P, OK := codes.Unauthenticated, codes.PermissionDenied, codes.OK
	node := func(self codes.Code) map[string]codes.Code { // node-only calls
		return map[string]codes.Code{
			"anonymous":        U,
			"valid token":      U,
			"wrong-node token": U,
			"node A":           self,
			"node B":           pass,
			"revoked":          U,
			"expired":          U,
			"other CA":         U,
			"admin":            P,
			"superseded":       U,
			"superseded admin": U,
		}
	}
	adminOnly := map[string]codes.Code{
		"anonymous":        U,
		"valid token":      U,
		"wrong-node token": U,
		"node A":           P,
		"node B":           P,
		"revoked":          U,
		"expired":          U,
		"other CA":         U,
		"admin":            pass,
		"superseded":       U,
		"superseded admin": U,
	}
	public := map[string]codes.Code{
		"anonymous":        OK,
		"valid token":      OK,
		"wrong-node token": OK,
		"node A":           OK,
		"node B":           OK,
		"revoked":          OK,
		"expired":          OK,
		"other CA":         OK,
		"admin":            OK,
		"superseded":       OK,
		"superseded admin": OK,
	}
	renew := node(OK)
	renew["node B"] = P // node B asking for node A's name
	table := []struct {
		rpc  string
		want map[string]codes.Code
		call func(conn *grpc.ClientConn, cl caller) error
	}{
		{
			"Enroll",
			map[string]codes.Code{
				"anonymous":        U,
				"valid token":      OK,
				"wrong-node token": P,
				"node A":           U,
				"node B":           U,
				"revoked":          U,
				"expired":          U,
				"other CA":         U,
				"admin":            U,
				"superseded":       U,
				"superseded admin": U,
			},
			func(conn *grpc.ClientConn, cl caller) error {
				tok := ""
				if cl.token != nil {
					tok = cl.token()
				}
				_, err := ipseccav1.NewNodeServiceClient(conn).
					Enroll(ctx, &ipseccav1.EnrollRequest{Token: tok, CsrPem: csrT})
				return err
			},
		},
		{"GetCABundle", public, func(conn *grpc.ClientConn, _ caller) error {
			_, err := ipseccav1.NewNodeServiceClient(conn).GetCABundle(ctx, &ipseccav1.GetCABundleRequest{})
			return err
		}},
		{"GetCRL", public, func(conn *grpc.ClientConn, _ caller) error {
			_, err := ipseccav1.NewNodeServiceClient(conn).GetCRL(ctx, &ipseccav1.GetCRLRequest{})
			return err
		}},
		{"Watch", node(OK), func(conn *grpc.ClientConn, _ caller) error {
			s, err := ipseccav1.NewNodeServiceClient(conn).Watch(ctx, &ipseccav1.WatchRequest{})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}},
		{"ReportInventory", node(OK), func(conn *grpc.ClientConn, _ caller) error {
			_, err := ipseccav1.NewNodeServiceClient(conn).ReportInventory(ctx, &ipseccav1.ReportInventoryRequest{})
			return err
		}},
	}
	adminCalls := map[string]func(a ipseccav1.AdminServiceClient) error{
		"CreateToken": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.CreateToken(ctx, &ipseccav1.CreateTokenRequest{Node: "node-z"})
			return err
		},
		"CreateTokens": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.CreateTokens(
				ctx,
				&ipseccav1.CreateTokensRequest{Requests: []*ipseccav1.CreateTokenRequest{{Node: "node-y"}}},
			)
			return err
		},
		"ListCertificates": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.ListCertificates(ctx, &ipseccav1.ListCertificatesRequest{})
			return err
		},
		"GetCertificate": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.GetCertificate(ctx, &ipseccav1.GetCertificateRequest{Serial: "abc"})
			return err
		},
		"ListEvents": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.ListEvents(ctx, &ipseccav1.ListEventsRequest{})
			return err
		},
		"VerifyAudit": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.VerifyAudit(ctx, &ipseccav1.VerifyAuditRequest{})
			return err
		},
		"Rotate": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.Rotate(ctx, &ipseccav1.RotateRequest{Node: "node-b"})
			return err
		},
		"ListSchedule": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.ListSchedule(ctx, &ipseccav1.ListScheduleRequest{})
			return err
		},
		"ListNodes": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.ListNodes(ctx, &ipseccav1.ListNodesRequest{})
			return err
		},
		"GetCA": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.GetCA(ctx, &ipseccav1.GetCARequest{})
			return err
		},
		"RenewCA": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.RenewCA(ctx, &ipseccav1.RenewCARequest{})
			return err
		},
		"RevokeNode": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.RevokeNode(ctx, &ipseccav1.RevokeNodeRequest{Node: "nobody"})
			return err
		},
		"ValidateBundle": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.ValidateBundle(ctx, &ipseccav1.ValidateBundleRequest{Left: "a", Right: "b"})
			return err
		},
		"GetStatus": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.GetStatus(ctx, &ipseccav1.GetStatusRequest{})
			return err
		},
		"ReadmitNode": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.ReadmitNode(ctx, &ipseccav1.ReadmitNodeRequest{Node: "nobody"})
			return err
		},
		"ForgetNode": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.ForgetNode(ctx, &ipseccav1.ForgetNodeRequest{Node: "nobody"})
			return err
		},
		"RotateAdmin": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.RotateAdmin(ctx, &ipseccav1.RotateAdminRequest{CsrPem: []byte("not a CSR")})
			return err
		},
		"ImportCA": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.ImportCA(ctx, &ipseccav1.ImportCARequest{})
			return err
		},
		"StartRollover": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.StartRollover(ctx, &ipseccav1.StartRolloverRequest{})
			return err
		},
		"GetRollover": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.GetRollover(ctx, &ipseccav1.GetRolloverRequest{})
			return err
		},
		"FinishRollover": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.FinishRollover(ctx, &ipseccav1.FinishRolloverRequest{})
			return err
		},
		"AbortRollover": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.AbortRollover(ctx, &ipseccav1.AbortRolloverRequest{})
			return err
		},
		"MeshStatus": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.MeshStatus(ctx, &ipseccav1.MeshStatusRequest{})
			return err
		},
		"RevokeAdmin": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.RevokeAdmin(ctx, &ipseccav1.RevokeAdminRequest{Serial: "abc"})
			return err
		},
		"RevokeCertificate": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.RevokeCertificate(ctx, &ipseccav1.RevokeCertificateRequest{Serial: "abc"})
			return err
		},
		"RevokeToken": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.RevokeToken(ctx, &ipseccav1.RevokeTokenRequest{Id: "0123456789abcdef"})
			return err
		},
		"ListTokens": func(a ipseccav1.AdminServiceClient) error {
			_, err := a.ListTokens(ctx, &ipseccav1.ListTokensRequest{})
			return err
		},
	}
	for name, fn := range adminCalls {
		table = append(table, struct {
			rpc  string
			want map[string]codes.Code
			call func(conn *grpc.ClientConn, cl caller) error
		}{name, adminOnly, func(conn *grpc.ClientConn, _ caller) error { return fn(ipseccav1.NewAdminServiceClient(conn)) }})
	}
	// Last: node A's successful renewal supersedes the certificate the
	// rows above call with.
	table = append(table, struct {
		rpc  string
		want map[string]codes.Code
		call func(conn *grpc.ClientConn, cl caller) error
	}{"Renew", renew, func(conn *grpc.ClientConn, _ caller) error {
		_, err := ipseccav1.NewNodeServiceClient(conn).Renew(ctx, &ipseccav1.RenewRequest{CsrPem: csrA})
		return err
	}})
	covered := map[string]bool{}
	for _, row := range table {
		covered[row.rpc] = true
		for who, want := range row.want {
			cl := callers[who]
			err := row.call(c.conn(t, cl.cert), cl)
			got := status.Code(err)
			ok := got == want || (want == pass && got != codes.Unauthenticated && got != codes.PermissionDenied)
			if !ok {
				t.Errorf("%s as %s: %s (%v), want %s", row.rpc, who, got, status.Convert(err).Message(), wantName(want))
			}
		}
	}
	for _, sd := range []grpc.ServiceDesc{ipseccav1.NodeService_ServiceDesc, ipseccav1.AdminService_ServiceDesc} {
		for _, m := range sd.Methods {
			if !covered[m.MethodName] {
				t.Errorf("%s is missing from the matrix", m.MethodName)
			}
		}
		for _, m := range sd.Streams {
			if !covered[m.StreamName] {
				t.Errorf("%s is missing from the matrix", m.StreamName)
			}
		}
	}
}

func wantName(c codes.Code) string {
	if c == codes.Code(1000) {
		return "authorized (not Unauthenticated/PermissionDenied)"
	}
	return fmt.Sprint(c)
}
