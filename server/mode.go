package server

import (
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// Mode is the cluster's IPsec mode, as OpenShift's network config names it.
type Mode string

// Modes.
const (
	// ModeFull: pod-to-pod and external IPsec; everything is served.
	ModeFull Mode = "Full"
	// ModeExternal: external endpoints only; nodes get no certificates,
	// bundle validation and admin calls are served.
	ModeExternal Mode = "External"
	// ModeDisabled: no IPsec; node enrolment is refused.
	ModeDisabled Mode = "Disabled"
)

// ParseMode parses a mode name (case-insensitive).
func ParseMode(s string) (Mode, error) {
	for _, m := range []Mode{ModeFull, ModeExternal, ModeDisabled} {
		if strings.EqualFold(s, string(m)) {
			return m, nil
		}
	}
	return "", fmt.Errorf("server: mode %q: want Full, External or Disabled", s)
}

// nodeCertMethods issue or deliver node certificates; they are refused
// unless the mode is Full.
var nodeCertMethods = map[string]bool{
	ipseccav1.NodeService_Enroll_FullMethodName:          true,
	ipseccav1.NodeService_Renew_FullMethodName:           true,
	ipseccav1.NodeService_Watch_FullMethodName:           true,
	ipseccav1.NodeService_ReportInventory_FullMethodName: true,
	ipseccav1.AdminService_CreateToken_FullMethodName:    true,
	ipseccav1.AdminService_CreateTokens_FullMethodName:   true,
	ipseccav1.AdminService_Rotate_FullMethodName:         true,
}

func (s *Server) checkMode(method string) error {
	if s.mode == "" || s.mode == ModeFull || !nodeCertMethods[method] {
		return nil
	}
	return status.Errorf(
		codes.FailedPrecondition,
		"the cluster's IPsec mode is %s: node certificates are not issued (serve --mode Full to enable)",
		s.mode,
	)
}
