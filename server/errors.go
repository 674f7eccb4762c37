package server

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/store"
)

// ErrorDomain is the domain of the ErrorInfo detail attached to denials.
const ErrorDomain = "ipsecca.io"

// toStatus maps a domain error to a gRPC status. It is the one place where
// errors become codes. Denials carry their stable reason as an
// errdetails.ErrorInfo; unexpected errors are logged and answered with a
// generic Internal so nothing internal leaks to the caller.
func (s *Server) toStatus(err error) error {
	var de *ca.DenyError
	if errors.As(err, &de) {
		s.metrics.denials.WithLabelValues(string(de.Reason)).Inc()
	}
	return toStatus(s.log, err)
}

// caPreconditions are the CA's state errors: the request is fine, the CA
// is not in a state to do it; their messages say what to do.
var caPreconditions = []error{ca.ErrRolloverInProgress, ca.ErrNoRollover, ca.ErrRolloverNotReady,
	ca.ErrRolloverRetiring, ca.ErrSubordinateRenewal, ca.ErrAwaitingCertificate}

func toStatus(log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var de *ca.DenyError
	if errors.As(err, &de) {
		code := codes.PermissionDenied
		switch {
		case errors.Is(err, ca.ErrInvalidRequest):
			code = codes.InvalidArgument
		case errors.Is(err, ca.ErrUnauthenticated):
			code = codes.Unauthenticated
		case errors.Is(err, ca.ErrConflict):
			code = codes.AlreadyExists
		case errors.Is(err, ca.ErrFailedPrecondition):
			code = codes.FailedPrecondition
		}
		st := status.New(code, "denied ("+string(de.Reason)+"): "+de.Detail)
		info := &errdetails.ErrorInfo{Reason: string(de.Reason), Domain: ErrorDomain}
		if withInfo, derr := st.WithDetails(info); derr == nil {
			st = withInfo
		}
		return st.Err()
	}
	for _, pre := range caPreconditions {
		if errors.Is(err, pre) {
			return status.Error(codes.FailedPrecondition, err.Error())
		}
	}
	var nf *ca.NotFoundError
	switch {
	case errors.As(err, &nf):
		return status.Error(codes.NotFound, nf.Error())
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, "not found")
	case errors.Is(err, store.ErrOutcomeUnknown):
		log.Error("store write outcome unknown", "err", err)
		return status.Error(
			codes.Unavailable,
			"the CA's store lost the answer to its write: the certificate may have been "+
				"issued; retry with the same token or certificate and the same key, and the CA returns it if it was",
		)
	case errors.Is(err, store.ErrUnavailable):
		log.Error("store unavailable", "err", err)
		return status.Error(
			codes.Unavailable,
			"the CA's store cannot take writes right now; nothing was issued; retry later",
		)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "request deadline exceeded")
	}
	log.Error("internal error", "err", err)
	return status.Error(codes.Internal, "internal error; nothing was issued; see the CA's log")
}

// ReasonOf returns the denial reason carried by a gRPC error, or "".
func ReasonOf(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Domain == ErrorDomain {
			return info.Reason
		}
	}
	return ""
}
