package bundle

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math"
	"math/big"
)

// MaxP12KDFIterations caps the iteration count of each password-based key derivation a PKCS#12 asks for
// (its MAC, each encrypted safe, each shrouded key). go-pkcs12 has no cap: 2^31-1 rounds, a 4-byte field
// in a 1 KB file, pin a core for 8 minutes (a SHA-1 MAC) to over an hour (a 3DES key, derived four times).
// OpenSSL writes 2,048 by default and cautious exporters stay within a few hundred thousand; one million is
// generous to all of them and costs well under a second per KDF.
const MaxP12KDFIterations = 1_000_000

// MaxP12KDFIterationsTotal caps the sum over every KDF the file asks for: a MAC, two encrypted safes and
// one key at MaxP12KDFIterations. Without it a file could hold any number of shrouded keys at the cap,
// and the decoder derives a key for each.
const MaxP12KDFIterationsTotal = 4 * MaxP12KDFIterations

// P12KDF is one password-based key derivation that decoding a PKCS#12 runs.
type P12KDF struct {
	Where      string // "MAC", "encrypted safe 1", "shrouded key 1 (safe 2)"
	Algorithm  string // e.g. "PBES2/PBKDF2-HMAC-SHA-256"
	Iterations int64  // math.MaxInt64 stands for that or more
}

func (k P12KDF) count() string {
	if k.Iterations == math.MaxInt64 {
		return fmt.Sprintf("%d or more", k.Iterations)
	}
	return fmt.Sprint(k.Iterations)
}

// KDFIterationsError is returned for a PKCS#12 whose KDFs ask for more iterations than
// MaxP12KDFIterations (each) or MaxP12KDFIterationsTotal (together). No KDF has run.
type KDFIterationsError struct {
	Over  []P12KDF // the KDFs over MaxP12KDFIterations; empty when only the total is over
	Total int64    // the sum over every KDF (saturating)
	KDFs  int      // how many KDFs the sum is over
}

func (e *KDFIterationsError) Error() string {
	if len(e.Over) == 0 {
		return fmt.Sprintf("bundle: the PKCS#12 asks for %d KDF iterations over its %d KDFs; the cap is %d in all",
			e.Total, e.KDFs, MaxP12KDFIterationsTotal)
	}
	k := e.Over[0]
	s := fmt.Sprintf("bundle: the PKCS#12's %s asks for %s KDF iterations (%s); the cap is %d", k.Where, k.count(),
		k.Algorithm, MaxP12KDFIterations)
	if len(e.Over) > 1 {
		s += fmt.Sprintf(" (and %d more KDFs are over it)", len(e.Over)-1)
	}
	return s
}

// The structures below follow go-pkcs12's (RFC 7292, RFC 8018, RFC 9579) and are parsed, as it does, with
// encoding/asn1 (DER), but laxer: fields that carry no KDF parameter are RawValues and integers big.Ints,
// so that anything the library reads, this reads too. Each level is parsed once from its parent's bytes and
// the depth is fixed, so the cost is linear in the input.
type p12PFX struct {
	Version  asn1.RawValue
	AuthSafe p12ContentInfo
	MacData  asn1.RawValue `asn1:"optional"`
}

type p12ContentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"tag:0,explicit,optional"`
}

type p12MacData struct {
	Mac struct {
		Algorithm pkix.AlgorithmIdentifier
		Digest    asn1.RawValue
	}
	MacSalt    asn1.RawValue
	Iterations *big.Int `asn1:"optional"` // DEFAULT 1
}

type p12EncryptedData struct {
	Version              asn1.RawValue
	EncryptedContentInfo struct {
		ContentType                asn1.ObjectIdentifier
		ContentEncryptionAlgorithm pkix.AlgorithmIdentifier
		EncryptedContent           asn1.RawValue `asn1:"optional"`
	}
}

type p12SafeBag struct {
	ID         asn1.ObjectIdentifier
	Value      asn1.RawValue `asn1:"tag:0,explicit"`
	Attributes asn1.RawValue `asn1:"optional"`
}

type p12EncryptedPrivateKeyInfo struct {
	Algorithm     pkix.AlgorithmIdentifier
	EncryptedData asn1.RawValue
}

type p12PBEParams struct {
	Salt       asn1.RawValue
	Iterations *big.Int
}

type p12PBES2Params struct { // PBES2 and PBMAC1 alike: a KDF, then a cipher or a MAC
	KDF    pkix.AlgorithmIdentifier
	Scheme pkix.AlgorithmIdentifier
}

type p12PBKDF2Params struct {
	Salt       asn1.RawValue
	Iterations *big.Int
	KeyLength  *big.Int                 `asn1:"optional"`
	PRF        pkix.AlgorithmIdentifier `asn1:"optional"`
}

var (
	oidP12Data          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidP12EncryptedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 6}
	oidP12ShroudedKey   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 2}
	oidP12PBE           = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1} // pkcs-12PbeIds, the arc
	oidPBES2            = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2           = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidPBMAC1           = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 14}
)

var p12AlgNames = map[string]string{
	"1.3.14.3.2.26":           "SHA-1",
	"2.16.840.1.101.3.4.2.1":  "SHA-256",
	"2.16.840.1.101.3.4.2.2":  "SHA-384",
	"2.16.840.1.101.3.4.2.3":  "SHA-512",
	"1.2.840.113549.2.7":      "HMAC-SHA-1",
	"1.2.840.113549.2.9":      "HMAC-SHA-256",
	"1.2.840.113549.2.10":     "HMAC-SHA-384",
	"1.2.840.113549.2.11":     "HMAC-SHA-512",
	"1.2.840.113549.1.12.1.1": "pbeWithSHAAnd128BitRC4",
	"1.2.840.113549.1.12.1.2": "pbeWithSHAAnd40BitRC4",
	"1.2.840.113549.1.12.1.3": "pbeWithSHAAnd3-KeyTripleDES-CBC",
	"1.2.840.113549.1.12.1.4": "pbeWithSHAAnd2-KeyTripleDES-CBC",
	"1.2.840.113549.1.12.1.5": "pbeWithSHAAnd128BitRC2-CBC",
	"1.2.840.113549.1.12.1.6": "pbewithSHAAnd40BitRC2-CBC",
	"2.16.840.1.101.3.4.1.2":  "AES-128-CBC",
	"2.16.840.1.101.3.4.1.22": "AES-192-CBC",
	"2.16.840.1.101.3.4.1.42": "AES-256-CBC",
	"1.2.840.113549.1.5.13":   "PBES2",
	"1.2.840.113549.1.5.14":   "PBMAC1",
	"1.2.840.113549.1.5.12":   "PBKDF2",
}

func algName(oid asn1.ObjectIdentifier) string {
	if n := p12AlgNames[oid.String()]; n != "" {
		return n
	}
	return oid.String()
}

// unmarshalAll is asn1.Unmarshal refusing trailing bytes, as go-pkcs12 does.
func unmarshalAll(b []byte, v any) error {
	rest, err := asn1.Unmarshal(b, v)
	if err == nil && len(rest) > 0 {
		err = errors.New("trailing data")
	}
	return err
}

// iterations reads an iteration count, saturating at math.MaxInt64; nil (absent) is def.
func iterations(n *big.Int, def int64) int64 {
	switch {
	case n == nil:
		return def
	case n.IsInt64():
		return n.Int64()
	case n.Sign() < 0:
		return math.MinInt64
	}
	return math.MaxInt64
}

// P12KDFs reads a PKCS#12's structure without the password and returns every KDF that decoding it runs:
// the MAC's, each encrypted safe's and each shrouded key's. It sees shrouded keys in plain safes, where
// OpenSSL and go-pkcs12 put them (NSS, Windows and Java too, as far as we know); one inside an encrypted
// safe is only visible once that safe is decrypted (see ValidateContext). An error means the structure is
// not one go-pkcs12 decodes.
func P12KDFs(data []byte) ([]P12KDF, error) {
	var pfx p12PFX
	if err := unmarshalAll(data, &pfx); err != nil {
		return nil, fmt.Errorf("bundle: not a PKCS#12 (PFX): %v", err)
	}
	if !pfx.AuthSafe.ContentType.Equal(oidP12Data) {
		return nil, fmt.Errorf("bundle: the PKCS#12's content is %s; only password integrity (data) is supported",
			pfx.AuthSafe.ContentType)
	}
	var kdfs []P12KDF
	if len(pfx.MacData.FullBytes) > 0 {
		k, err := macKDF(pfx.MacData.FullBytes)
		if err != nil {
			return nil, fmt.Errorf("bundle: the PKCS#12's MAC: %v", err)
		}
		kdfs = append(kdfs, k)
	}
	var authSafe asn1.RawValue // an OCTET STRING holding the SEQUENCE OF ContentInfo
	if err := unmarshalAll(pfx.AuthSafe.Content.Bytes, &authSafe); err != nil {
		return nil, fmt.Errorf("bundle: the PKCS#12's authenticated safe: %v", err)
	}
	var safes []p12ContentInfo
	if err := unmarshalAll(authSafe.Bytes, &safes); err != nil {
		return nil, fmt.Errorf("bundle: the PKCS#12's authenticated safe: %v", err)
	}
	keys := 0
	for i, ci := range safes {
		switch {
		case ci.ContentType.Equal(oidP12Data):
			var contents []byte
			if err := unmarshalAll(ci.Content.Bytes, &contents); err != nil {
				return nil, fmt.Errorf("bundle: the PKCS#12's safe %d: %v", i+1, err)
			}
			var bags []p12SafeBag
			if err := unmarshalAll(contents, &bags); err != nil {
				return nil, fmt.Errorf("bundle: the PKCS#12's safe %d: %v", i+1, err)
			}
			for _, b := range bags {
				if !b.ID.Equal(oidP12ShroudedKey) {
					continue
				}
				keys++
				where := fmt.Sprintf("shrouded key %d (safe %d)", keys, i+1)
				var epki p12EncryptedPrivateKeyInfo
				if err := unmarshalAll(b.Value.Bytes, &epki); err != nil {
					return nil, fmt.Errorf("bundle: the PKCS#12's %s: %v", where, err)
				}
				k, err := pbeKDF(epki.Algorithm, where)
				if err != nil {
					return nil, err
				}
				kdfs = append(kdfs, k)
			}
		case ci.ContentType.Equal(oidP12EncryptedData):
			where := fmt.Sprintf("encrypted safe %d", i+1)
			var ed p12EncryptedData
			if err := unmarshalAll(ci.Content.Bytes, &ed); err != nil {
				return nil, fmt.Errorf("bundle: the PKCS#12's %s: %v", where, err)
			}
			k, err := pbeKDF(ed.EncryptedContentInfo.ContentEncryptionAlgorithm, where)
			if err != nil {
				return nil, err
			}
			kdfs = append(kdfs, k)
		}
		// Other content types (enveloped, signed) go-pkcs12 refuses before deriving anything.
	}
	return kdfs, nil
}

// macKDF reads MacData: a PKCS#12 KDF with its iterations (RFC 7292) or PBMAC1's PBKDF2 (RFC 9579).
func macKDF(der []byte) (P12KDF, error) {
	var md p12MacData
	if err := unmarshalAll(der, &md); err != nil {
		return P12KDF{}, err
	}
	alg := md.Mac.Algorithm
	if alg.Algorithm.Equal(oidPBMAC1) {
		return pbkdf2KDF(alg, "MAC")
	}
	switch n := p12AlgNames[alg.Algorithm.String()]; n {
	case "SHA-1", "SHA-256", "SHA-384", "SHA-512":
		return P12KDF{Where: "MAC", Algorithm: "PKCS#12 KDF, HMAC-" + n, Iterations: iterations(md.Iterations, 1)}, nil
	}
	return P12KDF{}, fmt.Errorf("MAC algorithm %s is not supported", alg.Algorithm)
}

// pbeKDF reads the KDF of an encryption algorithm: PKCS#12 PBE (salt, iterations) or PBES2 with PBKDF2.
func pbeKDF(alg pkix.AlgorithmIdentifier, where string) (P12KDF, error) {
	oid := alg.Algorithm
	switch {
	case len(oid) == len(oidP12PBE)+1 && oid[:len(oidP12PBE)].Equal(oidP12PBE):
		var p p12PBEParams
		if err := unmarshalAll(alg.Parameters.FullBytes, &p); err != nil {
			return P12KDF{}, fmt.Errorf("bundle: the PKCS#12's %s: %s parameters: %v", where, algName(oid), err)
		}
		return P12KDF{Where: where, Algorithm: algName(oid), Iterations: iterations(p.Iterations, 0)}, nil
	case oid.Equal(oidPBES2):
		return pbkdf2KDF(alg, where)
	}
	return P12KDF{}, fmt.Errorf("bundle: the PKCS#12's %s: encryption algorithm %s is not supported", where, algName(oid))
}

// pbkdf2KDF reads PBES2 or PBMAC1 parameters, whose KDF must be PBKDF2 (the only one go-pkcs12 runs).
func pbkdf2KDF(alg pkix.AlgorithmIdentifier, where string) (P12KDF, error) {
	name := algName(alg.Algorithm)
	var p p12PBES2Params
	if err := unmarshalAll(alg.Parameters.FullBytes, &p); err != nil {
		return P12KDF{}, fmt.Errorf("bundle: the PKCS#12's %s: %s parameters: %v", where, name, err)
	}
	if !p.KDF.Algorithm.Equal(oidPBKDF2) {
		return P12KDF{}, fmt.Errorf("bundle: the PKCS#12's %s: %s with KDF %s is not supported", where, name,
			algName(p.KDF.Algorithm))
	}
	var kp p12PBKDF2Params
	if err := unmarshalAll(p.KDF.Parameters.FullBytes, &kp); err != nil {
		return P12KDF{}, fmt.Errorf("bundle: the PKCS#12's %s: PBKDF2 parameters: %v", where, err)
	}
	prf := "HMAC-SHA-1" // the DEFAULT
	if len(kp.PRF.Algorithm) > 0 {
		prf = algName(kp.PRF.Algorithm)
	}
	return P12KDF{Where: where, Algorithm: name + "/PBKDF2-" + prf, Iterations: iterations(kp.Iterations, 0)}, nil
}

// checkP12KDFs refuses a PKCS#12 whose KDFs are over the caps (a *KDFIterationsError) or whose structure
// P12KDFs cannot read; it runs no KDF.
func checkP12KDFs(data []byte) error {
	kdfs, err := P12KDFs(data)
	if err != nil {
		return err
	}
	e := &KDFIterationsError{KDFs: len(kdfs)}
	for _, k := range kdfs {
		if k.Iterations > MaxP12KDFIterations {
			e.Over = append(e.Over, k)
		}
		if k.Iterations > 0 {
			e.Total = satAdd(e.Total, k.Iterations)
		}
	}
	if len(e.Over) > 0 || e.Total > MaxP12KDFIterationsTotal {
		return e
	}
	return nil
}

func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// kdfFindings turns a *KDFIterationsError into findings: one per KDF over the cap, else one for the total.
func kdfFindings(r *Report, e *KDFIterationsError) {
	const fix = "re-export with OpenSSL's default (2048)"
	for _, k := range e.Over {
		r.add(CodeP12KDFIterations, SeverityError, "", "the PKCS#12's %s asks for %s KDF iterations (%s); the cap is %d: "+
			"refused without running it; %s", k.Where, k.count(), k.Algorithm, MaxP12KDFIterations, fix)
	}
	if len(e.Over) == 0 {
		r.add(CodeP12KDFIterations, SeverityError, "", "the PKCS#12 asks for %d KDF iterations over its %d KDFs; "+
			"the cap is %d in all: refused without running them; %s", e.Total, e.KDFs, MaxP12KDFIterationsTotal, fix)
	}
}
