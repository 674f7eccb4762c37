// Package ca is the certificate authority core: root bootstrap (through
// cfssl's initca policy), the node issuance profile, the auto-approval
// policy chain, bootstrap tokens, and the Authority that ties them to a
// store.
//
// Time and randomness are parameters: a Clock and an io.Reader are given
// to New, so a test can live five years in a millisecond and get the same
// serials twice. Nothing here calls time.Now.
//
// Signing: node certificates are signed with crypto/x509 under the profile
// in profile.go rather than cfssl's signer/local. cfssl's signer re-parses
// the CSR from PEM, re-checks it against its own policy and lints the
// result on every call; doing that ourselves once keeps issuance near the
// raw ECDSA/RSA signing cost, and keeps the profile (subject built by the
// CA, KU/EKU, lifetime) in one readable function. The root is made by
// cfssl's initca policy and local signer.
package ca
