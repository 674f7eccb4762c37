package server

import (
	"context"
	"strconv"
	"strings"

	"github.com/ipsecca/ipsecca/bundle"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
	"github.com/ipsecca/ipsecca/store"
)

func (s adminService) ValidateBundle(
	ctx context.Context,
	req *ipseccav1.ValidateBundleRequest,
) (*ipseccav1.ValidateBundleResponse, error) {
	in := bundle.Input{
		P12:          req.GetP12(),
		Password:     req.GetPassword(),
		CAPEM:        req.GetCaPem(),
		RightCertPEM: req.GetRightCertPem(),
		Left:         req.GetLeft(),
		Right:        req.GetRight(),
		RightSubnet:  req.GetRightSubnet(),
		Type:         req.GetType(),
		LeftCert:     req.GetLeftcert(),
	}
	// The PKCS#12 decoder cannot be interrupted; ValidateContext stops waiting for it when the caller goes.
	rep, err := bundle.ValidateContext(ctx, in, bundle.Options{Now: s.clock.Now()})
	if err != nil {
		return nil, s.toStatus(err)
	}
	resp := &ipseccav1.ValidateBundleResponse{Errors: int32(rep.Errors), Warnings: int32(rep.Warnings), Ok: rep.OK,
		LeafSubject: rep.LeafSubject, LeafSerial: rep.LeafSerial, Nickname: rep.Nickname}
	var codes []string
	for _, f := range rep.Findings {
		resp.Findings = append(
			resp.Findings,
			&ipseccav1.BundleFinding{
				Code:     f.Code,
				Severity: string(f.Severity),
				Message:  f.Message,
				Subject:  f.Subject,
			},
		)
		codes = append(codes, f.Code)
	}
	caller, _ := CallerFrom(ctx)
	// The audit record names the endpoint and the outcome, never the
	// password or the key.
	ev := store.Event{Type: store.EventBundleValidated, Actor: caller.String(), Serial: rep.LeafSerial,
		Detail: map[string]string{
			"left":         in.Left,
			"right":        in.Right,
			"ok":           strconv.FormatBool(rep.OK),
			"errors":       strconv.Itoa(rep.Errors),
			"warnings":     strconv.Itoa(rep.Warnings),
			"codes":        strings.Join(codes, ","),
			"leaf_subject": rep.LeafSubject,
		}}
	if err := s.auth.Record(ctx, ev); err != nil {
		return nil, s.toStatus(err)
	}
	return resp, nil
}
