// Package pemutil reads a PEM bundle of X.509 certificates: the one parser
// behind every ipsecca package that takes certificates as PEM (a CA bundle
// from the server or a ConfigMap, `certutil -a` output, an admin's
// ca.pem). It imports nothing of ipsecca's, so every layer may use it.
package pemutil

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// BlockType is the PEM type of a certificate.
const BlockType = "CERTIFICATE"

// Options say what ParseCertificates tolerates. The zero value is the
// strictest: every block must be a certificate that parses, nothing but
// white space may follow the last block, and there must be a certificate.
// Text before the first block and between blocks is always skipped (as
// pem.Decode does: it is where openssl writes its "subject=" lines).
type Options struct {
	// SkipOtherTypes skips blocks of another type than CERTIFICATE (a
	// key or a CRL next to the certificates); without it they are an error.
	SkipOtherTypes bool
	// AllowTrailing ignores what follows the last block, however it looks
	// (a truncated block included); without it anything there but white
	// space is an error.
	AllowTrailing bool
	// AllowEmpty returns no certificates and no error for input that holds
	// none; without it that is ErrNoCertificate.
	AllowEmpty bool
}

// ErrNoCertificate means the input holds no certificate.
var ErrNoCertificate = errors.New("pemutil: no certificate found")

// Error is a PEM bundle that does not read as certificates: which block
// (1-based, counting every block; the one after the last for trailing
// text) and why. It unwraps to the crypto/x509 error when there is one.
type Error struct {
	Block int
	Type  string // the block's PEM type; "" for trailing text
	Err   error
}

func (e *Error) Error() string {
	switch {
	case e.Type != "":
		return fmt.Sprintf("pemutil: block %d (%s): %v", e.Block, e.Type, e.Err)
	case e.Block <= 1:
		return "pemutil: the input is not PEM"
	}
	return fmt.Sprintf("pemutil: what follows block %d is not PEM (trailing text or a truncated block)", e.Block-1)
}

func (e *Error) Unwrap() error { return e.Err }

var (
	// ErrNotPEM is the Err of an *Error for text that is not PEM.
	ErrNotPEM = errors.New("pemutil: not PEM")
	// ErrOtherType is the Err of an *Error for a block of another type.
	ErrOtherType = errors.New("not a " + BlockType)
)

// ParseCertificates returns the certificates of a PEM bundle, in order,
// as opts allow. Errors are *Error or ErrNoCertificate.
func ParseCertificates(data []byte, opts Options) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := data
	for n := 1; ; n++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			if !opts.AllowTrailing && len(bytes.TrimSpace(rest)) > 0 {
				return nil, &Error{Block: n, Err: ErrNotPEM}
			}
			break
		}
		if b.Type != BlockType {
			if opts.SkipOtherTypes {
				continue
			}
			return nil, &Error{Block: n, Type: b.Type, Err: ErrOtherType}
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, &Error{Block: n, Type: b.Type, Err: err}
		}
		out = append(out, c)
	}
	if len(out) == 0 && !opts.AllowEmpty {
		return nil, ErrNoCertificate
	}
	return out, nil
}
