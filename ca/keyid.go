package ca

import (
	"crypto/rsa"
	"encoding/base64"
	"math/big"
)

// LibreswanKeyID is libreswan's key id of an RSA public key, as pluto
// lists the key a peer authenticated with: the first 9 characters of the
// standard base64 (padding kept) of the key's RFC 3110 encoding: the
// exponent's length in one byte (an int exponent never needs RFC 3110's
// three-byte form), the exponent, then the modulus, big-endian. For 65537
// the encoding starts 03 01 00 01, so every such id starts "AwEAA".
func LibreswanKeyID(pub *rsa.PublicKey) string {
	e := big.NewInt(int64(pub.E)).Bytes()
	blob := append([]byte{byte(len(e))}, e...)
	blob = append(blob, pub.N.Bytes()...)
	id := base64.StdEncoding.EncodeToString(blob)
	return id[:min(len(id), 9)]
}
