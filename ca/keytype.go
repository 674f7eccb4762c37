package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"fmt"
	"io"
	"strings"

	"github.com/cloudflare/cfssl/csr"

	"github.com/ipsecca/ipsecca/ca/nodecert"
)

// KeyType names a key algorithm and size, as on the command line.
type KeyType string

// Supported key types. DefaultCAKeyType is the root's default.
// Their names are nodecert's, which the node sidecar uses too.
const (
	KeyECDSAP256 KeyType = nodecert.KeyECDSAP256
	KeyECDSAP384 KeyType = nodecert.KeyECDSAP384
	KeyRSA2048   KeyType = nodecert.KeyRSA2048
	KeyRSA3072   KeyType = nodecert.KeyRSA3072
	KeyRSA4096   KeyType = nodecert.KeyRSA4096

	DefaultCAKeyType = KeyECDSAP256
)

// KeyTypes lists the supported key types in help-text order.
var KeyTypes = []KeyType{KeyECDSAP256, KeyECDSAP384, KeyRSA2048, KeyRSA3072, KeyRSA4096}

// ParseKeyType parses a key type name (case-insensitive).
func ParseKeyType(s string) (KeyType, error) {
	for _, k := range KeyTypes {
		if strings.EqualFold(s, string(k)) {
			return k, nil
		}
	}
	names := make([]string, len(KeyTypes))
	for i, k := range KeyTypes {
		names[i] = string(k)
	}
	return "", fmt.Errorf("ca: unknown key type %q (want one of %s)", s, strings.Join(names, ", "))
}

// cfsslKeyRequest is the cfssl key request for k.
func (k KeyType) cfsslKeyRequest() *csr.KeyRequest {
	switch k {
	case KeyECDSAP384:
		return &csr.KeyRequest{A: "ecdsa", S: 384}
	case KeyRSA2048:
		return &csr.KeyRequest{A: "rsa", S: 2048}
	case KeyRSA3072:
		return &csr.KeyRequest{A: "rsa", S: 3072}
	case KeyRSA4096:
		return &csr.KeyRequest{A: "rsa", S: 4096}
	default:
		return &csr.KeyRequest{A: "ecdsa", S: 256}
	}
}

// GenerateKey makes a new private key of type k from rand.
func (k KeyType) GenerateKey(rand io.Reader) (crypto.Signer, error) {
	switch k {
	case KeyECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand)
	case KeyECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand)
	case KeyRSA2048:
		return rsa.GenerateKey(rand, 2048)
	case KeyRSA3072:
		return rsa.GenerateKey(rand, 3072)
	case KeyRSA4096:
		return rsa.GenerateKey(rand, 4096)
	}
	return nil, fmt.Errorf("ca: unknown key type %q", k)
}
