// Package nssdb is everything ipsecca does to an NSS database, through the
// real NSS tools (certutil, pk12util, crlutil from Debian's
// libnss3-tools): create it, list it, add the CA, put the node's key pair
// in safely, verify, import a CRL.
//
// Facts this package relies on (NSS 3.87, checked by its tests): all
// certificates with one subject share one nickname, whatever name an
// import asks for; `certutil -D/-F/--rename -n NICK` act on the "best"
// certificate of that nickname (the newest valid one); `certutil -F -n`
// deletes a key and its certificate; pk12util takes the nickname from the
// PKCS#12 friendlyName. CA certificates are named one by one through a
// PKCS #11 URI instead (ca.go: Under, MoveCA, DeleteCA).
//
// Replacing the node certificate (PutKeyPair) therefore goes:
//
//  1. import the new key pair under NICK (NICK now holds old and new;
//     lookups by NICK give the new one), verify it;
//  2. rename the best certificate of NICK (the new one) to the swap
//     nickname SwapNickname(NICK), ipsecca_swap_<CN> for ovs_certkey_<CN>
//     (NICK still holds the old, valid pair);
//  3. delete the old pair(s) under NICK with certutil -F;
//  4. rename the swap nickname back to NICK; verify.
//
// The database holds a valid certificate and key for the node at every
// moment; NICK itself resolves to nothing only between steps 3 and 4 (one
// certutil run). A process killed at any step leaves a state PutKeyPair
// recognises and finishes on its next call, also when an older version
// parked the pair under NICK~ipsecca-new.
//
// The swap nickname lies outside ovs_: ovs-monitor-ipsec deletes every
// ovs_cert_*/ovs_certkey_* entry it does not manage when it (re)starts, and
// would take a parked pair with it.
//
// The tools run with LC_ALL=C (toolEnv): their output is parsed.
package nssdb

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/fips140"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/ipsecca/ipsecca/internal/pemutil"
)

// Trust flags.
const (
	TrustCA   = "CT,,"  // a CA trusted to issue peer certificates
	TrustUser = "u,u,u" // our own certificate with its key
)

// SwapPrefix starts the nickname PutKeyPair parks the new pair under.
const SwapPrefix = "ipsecca_swap_"

// LegacySwapSuffix made the swap nickname of earlier versions (NICK + it,
// inside ovs_ for a node); a swap interrupted under it is still finished.
const LegacySwapSuffix = "~ipsecca-new"

// SwapNickname is where PutKeyPair parks the new pair of nickname:
// ipsecca_swap_<CN> for ovs_certkey_<CN>, ipsecca_swap_<nickname> otherwise.
func SwapNickname(nickname string) string {
	return SwapPrefix + strings.TrimPrefix(nickname, "ovs_certkey_")
}

// LockFile is the lock file PutKeyPair's callers take in the DB directory.
const LockFile = ".ipsecca.lock"

// DefaultTimeout bounds one tool run.
const DefaultTimeout = 30 * time.Second

// DB is an NSS database directory (sql: format).
type DB struct {
	Dir     string
	Timeout time.Duration // DefaultTimeout when zero
	// Hook, when set, is called after each step of PutKeyPair with the
	// step's name; an error stops PutKeyPair there (fault injection in
	// tests; nil in production).
	Hook func(step string) error
	// Now, when set, is the time certificates are verified at (certutil -V
	// -b); NSS's own clock otherwise.
	Now func() time.Time
}

// New returns the database in dir.
func New(dir string) *DB { return &DB{Dir: dir} }

// ErrToolMissing means an NSS tool is not installed.
var ErrToolMissing = errors.New("nssdb: NSS tools not found (Debian package libnss3-tools)")

// ToolError is a failed tool run: the command (never a password) and
// what it printed.
type ToolError struct {
	Args   []string
	Code   int
	Output string
}

func (e *ToolError) Error() string {
	return fmt.Sprintf("nssdb: %s exited %d: %s", strings.Join(e.Args, " "), e.Code, strings.TrimSpace(e.Output))
}

func (d *DB) spec() string { return "sql:" + d.Dir }

// run runs an NSS tool and returns its stdout.
func (d *DB) run(ctx context.Context, tool string, args ...string) ([]byte, error) {
	if _, err := exec.LookPath(tool); err != nil {
		return nil, ErrToolMissing
	}
	t := d.Timeout
	if t == 0 {
		t = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, t)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Env = toolEnv(os.Environ())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		code := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		return out.Bytes(), &ToolError{Args: append([]string{tool}, args...), Code: code,
			Output: errb.String() + out.String()}
	}
	return out.Bytes(), nil
}

// toolEnv is env for an NSS tool: untranslated messages and C formats
// (LC_ALL=C, no other locale variable), since what the tools print is
// parsed.
func toolEnv(env []string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if k == "LANG" || k == "LANGUAGE" || strings.HasPrefix(k, "LC_") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "LC_ALL=C")
}

// Exists reports whether the directory holds an sql: database.
func (d *DB) Exists() bool {
	_, err := os.Stat(filepath.Join(d.Dir, "cert9.db"))
	return err == nil
}

// Ensure creates the database (empty password) when it does not exist,
// and leaves an existing one (e.g. made by `ipsec initnss`) untouched.
func (d *DB) Ensure(ctx context.Context) (created bool, err error) {
	if d.Exists() {
		return false, nil
	}
	if err := os.MkdirAll(d.Dir, 0o700); err != nil {
		return false, fmt.Errorf("nssdb: %w", err)
	}
	if _, err := d.run(ctx, "certutil", "-N", "-d", d.spec(), "--empty-password"); err != nil {
		return false, err
	}
	return true, nil
}

// Lock takes an exclusive lock on the database directory (one writer at
// a time: parallel NSS imports of one object fail), waiting until ctx ends.
func (d *DB) Lock(ctx context.Context) (unlock func(), err error) {
	if err := os.MkdirAll(d.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("nssdb: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(d.Dir, LockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("nssdb: lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("nssdb: lock: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("nssdb: %s is locked by another process: %w", d.Dir, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Entry is one nickname of the database with its trust flags and the
// certificates `certutil -L -n` prints for it (newest-valid first): every
// certificate with the subject of the nickname's best one, including any
// filed under another nickname.
type Entry struct {
	Nickname string
	Trust    string // of the last certificate listed under the nickname
	// Trusts has the trust flags of each certificate under the nickname,
	// in `certutil -L` order (which does not say which certificate is which).
	Trusts []string
	Certs  []*x509.Certificate
}

// List returns the database's entries in certutil's order. A nickname
// listed twice (two certificates) appears once with both certificates.
func (d *DB) List(ctx context.Context) ([]Entry, error) {
	out, err := d.run(ctx, "certutil", "-L", "-d", d.spec())
	if err != nil {
		return nil, err
	}
	entries := parseList(out)
	for i := range entries {
		certs, err := d.Certs(ctx, entries[i].Nickname)
		if err != nil {
			return nil, err
		}
		entries[i].Certs = certs
	}
	return entries, nil
}

// parseList reads `certutil -L` output: the entries without certificates,
// in order, a nickname listed twice once (with its last trust).
func parseList(out []byte) []Entry {
	var entries []Entry
	seen := map[string]int{}
	for _, line := range strings.Split(string(out), "\n") {
		nick, trust, ok := parseListLine(line)
		if !ok {
			continue
		}
		if i, ok := seen[nick]; ok {
			entries[i].Trust = trust // same nickname listed again
			entries[i].Trusts = append(entries[i].Trusts, trust)
			continue
		}
		seen[nick] = len(entries)
		entries = append(entries, Entry{Nickname: nick, Trust: trust, Trusts: []string{trust}})
	}
	return entries
}

var trustRe = regexp.MustCompile(`^[a-zA-Z]*,[a-zA-Z]*,[a-zA-Z]*$`)

// parseListLine splits a `certutil -L` line into nickname and trust; the
// trust column is the last field (nicknames may hold spaces).
func parseListLine(line string) (nick, trust string, ok bool) {
	line = strings.TrimRight(line, " \t\r")
	i := strings.LastIndexAny(line, " \t")
	if i < 0 {
		return "", "", false
	}
	trust = line[i+1:]
	nick = strings.TrimSpace(line[:i])
	if nick == "" || !trustRe.MatchString(trust) || strings.HasPrefix(nick, "Certificate Nickname") {
		return "", "", false
	}
	return nick, trust, true
}

// Certs returns every certificate under a nickname (none: empty, no error).
func (d *DB) Certs(ctx context.Context, nickname string) ([]*x509.Certificate, error) {
	out, err := d.run(ctx, "certutil", "-L", "-d", d.spec(), "-n", nickname, "-a")
	if err != nil {
		var te *ToolError
		if errors.As(err, &te) && strings.Contains(te.Output, "SEC_ERROR_BAD_DATABASE") {
			return nil, err
		}
		if errors.As(err, &te) && strings.Contains(strings.ToLower(te.Output), "could not find cert") {
			return nil, nil
		}
		return nil, err
	}
	certs, err := parseCerts(out)
	if err != nil {
		return nil, fmt.Errorf("nssdb: certificate under %q does not parse: %w", nickname, err)
	}
	return certs, nil
}

// parseCerts reads `certutil -L -n NICK -a` output: PEM certificates,
// none for none; what follows the last block is ignored.
func parseCerts(out []byte) ([]*x509.Certificate, error) {
	return pemutil.ParseCertificates(out, pemutil.Options{AllowTrailing: true, AllowEmpty: true})
}

// Key is one private key of the database.
type Key struct {
	Type     string // rsa, ec
	ID       string // CKA_ID, hex
	Nickname string // "" for an orphan key
}

var keyRe = regexp.MustCompile(`^<\s*\d+>\s+(\S+)\s+([0-9a-fA-F]+)\s+(.*)$`)

// Keys lists the private keys (`certutil -K`).
func (d *DB) Keys(ctx context.Context) ([]Key, error) {
	out, err := d.run(ctx, "certutil", "-K", "-d", d.spec())
	if err != nil {
		var te *ToolError
		if errors.As(err, &te) && strings.Contains(te.Output, "no keys found") {
			return nil, nil
		}
		return nil, err
	}
	return parseKeys(out), nil
}

// parseKeys reads `certutil -K` output.
func parseKeys(out []byte) []Key {
	var keys []Key
	for _, line := range strings.Split(string(out), "\n") {
		m := keyRe.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		nick := strings.TrimSpace(m[3])
		nick = strings.TrimPrefix(nick, "NSS Certificate DB:")
		if nick == "(orphan)" {
			nick = ""
		}
		keys = append(keys, Key{Type: m[1], ID: strings.ToLower(m[2]), Nickname: nick})
	}
	return keys
}

// KeyID is NSS's CKA_ID for a public key: SHA-1 of the RSA modulus or of
// the EC public point. It is NSS's name for the key, not a security check,
// so it is computed outside FIPS 140-3 enforcement (NSS computes the same
// in its own FIPS mode).
func KeyID(pub crypto.PublicKey) (string, error) {
	var b []byte
	switch k := pub.(type) {
	case *rsa.PublicKey:
		b = k.N.Bytes()
	case *ecdsa.PublicKey:
		var err error
		if b, err = k.Bytes(); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("nssdb: unsupported key type %T", pub)
	}
	var sum [sha1.Size]byte
	fips140.WithoutEnforcement(func() { sum = sha1.Sum(b) })
	return hex.EncodeToString(sum[:]), nil
}

// HasKey reports whether the database holds the private key of cert.
func (d *DB) HasKey(ctx context.Context, cert *x509.Certificate) (bool, error) {
	id, err := KeyID(cert.PublicKey)
	if err != nil {
		return false, err
	}
	keys, err := d.Keys(ctx)
	if err != nil {
		return false, err
	}
	for _, k := range keys {
		if k.ID == id {
			return true, nil
		}
	}
	return false, nil
}

// AddCA adds a CA certificate under nickname with trust (TrustCA when
// empty). Adding one that is there already changes nothing.
func (d *DB) AddCA(
	ctx context.Context, nickname string, cert *x509.Certificate, trust string,
) (changed bool, err error) {
	if trust == "" {
		trust = TrustCA
	}
	entries, err := d.List(ctx)
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		for _, c := range e.Certs {
			if c.Equal(cert) && e.Trust == trust {
				return false, nil
			}
		}
	}
	if err := d.ImportCA(ctx, nickname, cert, trust); err != nil {
		return false, err
	}
	return true, nil
}

// importKeyPair imports cert and key through a PKCS#12
// written 0600 in a private temporary directory, removed afterwards.
// The CA is not put in the PKCS#12: imported that way it would land
// under its CN without trust.
func (d *DB) importKeyPair(ctx context.Context, cert *x509.Certificate, key crypto.Signer) error {
	var pw [16]byte
	if _, err := rand.Read(pw[:]); err != nil {
		return err
	}
	password := hex.EncodeToString(pw[:])
	// go-pkcs12 writes no friendlyName: pk12util then files the pair under
	// the subject's existing nickname, or under the CN for a new subject
	// (PutKeyPair renames it).
	// Modern2023 encrypts with PBKDF2-HMAC-SHA-256 and AES-256-CBC and
	// MACs with HMAC-SHA-256, all FIPS 140-3 approved; go-pkcs12 also takes
	// a SHA-1 of the certificate as its localKeyId, an identifier, which
	// fips140=only would refuse: hence no enforcement around the call.
	var p12 []byte
	var err error
	fips140.WithoutEnforcement(func() {
		p12, err = pkcs12.Modern2023.WithRand(rand.Reader).Encode(key, cert, nil, password)
	})
	if err != nil {
		return fmt.Errorf("nssdb: encode PKCS#12: %w", err)
	}
	dir, err := os.MkdirTemp("", "ipsecca-nss-")
	if err != nil {
		return fmt.Errorf("nssdb: %w", err)
	}
	defer os.RemoveAll(dir)
	p12File, pwFile := filepath.Join(dir, "node.p12"), filepath.Join(dir, "pw")
	if err := os.WriteFile(p12File, p12, 0o600); err != nil {
		return fmt.Errorf("nssdb: %w", err)
	}
	if err := os.WriteFile(pwFile, []byte(password), 0o600); err != nil {
		return fmt.Errorf("nssdb: %w", err)
	}
	if d.Hook != nil {
		if err := d.Hook("p12-written:" + p12File); err != nil {
			return err
		}
	}
	_, err = d.run(ctx, "pk12util", "-i", p12File, "-d", d.spec(), "-w", pwFile)
	return err
}

// Rename moves the best certificate of a nickname to another nickname.
func (d *DB) Rename(ctx context.Context, from, to string) error {
	_, err := d.run(ctx, "certutil", "--rename", "-d", d.spec(), "-n", from, "--new-n", to)
	return err
}

// DeleteBest deletes the best certificate of a nickname and its key (the
// certificate alone when it has no key).
func (d *DB) DeleteBest(ctx context.Context, nickname string) error {
	if _, err := d.run(ctx, "certutil", "-F", "-d", d.spec(), "-n", nickname); err != nil {
		if _, err2 := d.run(ctx, "certutil", "-D", "-d", d.spec(), "-n", nickname); err2 != nil {
			return err
		}
	}
	return nil
}

// Verify validates a nickname's certificate chain inside NSS for usage
// ("C": SSL client, "V": SSL server).
func (d *DB) Verify(ctx context.Context, nickname, usage string) error {
	args := []string{"-V", "-d", d.spec(), "-n", nickname, "-u", usage}
	if d.Now != nil {
		args = append(args, "-b", d.Now().UTC().Format("060102150405Z"))
	}
	out, err := d.run(ctx, "certutil", args...)
	if err != nil {
		return err
	}
	if !strings.Contains(string(out), "certificate is valid") {
		return fmt.Errorf("nssdb: %s for usage %s: %s", nickname, usage, strings.TrimSpace(string(out)))
	}
	return nil
}

// ImportCRL imports (or replaces) a DER CRL without NSS checking its
// signature: the caller must have checked it. crlutil would check it with
// the newest certificate of the issuer's subject, and during a CA key
// rollover (two certificates of that subject with different keys) the CRL
// is signed by the older key, the one every running pluto verifies CRLs
// with (NSS binds a subject's CRLs to the first certificate it verified
// them with, for the life of the process).
func (d *DB) ImportCRL(ctx context.Context, der []byte) error {
	dir, err := os.MkdirTemp("", "ipsecca-nss-")
	if err != nil {
		return fmt.Errorf("nssdb: %w", err)
	}
	defer os.RemoveAll(dir)
	f := filepath.Join(dir, "crl.der")
	if err := os.WriteFile(f, der, 0o600); err != nil {
		return fmt.Errorf("nssdb: %w", err)
	}
	_, err = d.run(ctx, "crlutil", "-I", "-B", "-d", d.spec(), "-t", "1", "-i", f)
	return err
}

func (d *DB) step(name string) error {
	if d.Hook != nil {
		return d.Hook(name)
	}
	return nil
}

func holds(certs []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range certs {
		if x.Equal(c) {
			return true
		}
	}
	return false
}

// PutKeyPair makes nickname hold exactly cert, with key, following the
// safe sequence in the package doc: import, park, delete the old pair(s),
// restore the name. Each step starts from where the new pair is, so a run
// stopped at any step is finished by the next call. It reports whether it
// changed anything; with the pair already in place it runs no write.
func (d *DB) PutKeyPair(
	ctx context.Context, nickname string, cert *x509.Certificate, key crypto.Signer,
) (changed bool, err error) {
	s := &keyPairSwap{db: d, nick: nickname, swap: SwapNickname(nickname), cert: cert, key: key}
	under, err := d.Certs(ctx, nickname)
	if err != nil {
		return false, err
	}
	if s.inPlace(ctx, under) {
		return false, nil
	}
	parked, err := s.importPair(ctx, under)
	if err != nil {
		return s.changed, err
	}
	if parked == "" {
		var done bool
		if parked, done, err = s.park(ctx); err != nil || done {
			return s.changed, err
		}
	}
	if err := s.deleteOld(ctx); err != nil {
		return s.changed, err
	}
	err = s.restoreName(ctx, parked)
	return s.changed, err
}

// keyPairSwap is one PutKeyPair: the steps of the package doc, and whether
// one of them wrote to the database.
type keyPairSwap struct {
	db      *DB
	nick    string // the nickname to hold the pair
	swap    string // SwapNickname(nick), where the new pair is parked
	cert    *x509.Certificate
	key     crypto.Signer
	changed bool
}

// swaps are the nicknames a new pair may be parked under: the swap
// nickname, and the one of older versions.
func (s *keyPairSwap) swaps() []string { return []string{s.swap, s.nick + LegacySwapSuffix} }

// inPlace reports whether the nickname holds exactly the pair, with its
// key, and no swap nickname is left over: nothing to do. An error reading
// the database counts as not in place (the steps then look again).
func (s *keyPairSwap) inPlace(ctx context.Context, under []*x509.Certificate) bool {
	if len(under) != 1 || !under[0].Equal(s.cert) {
		return false
	}
	if ok, err := s.db.HasKey(ctx, s.cert); err != nil || !ok {
		return false
	}
	left, err := s.db.anyListed(ctx, s.swaps())
	return err == nil && !left
}

// importPair is step 1. It returns where the new pair is parked when a
// previous run got that far, or the import filed it under a nickname of
// pk12util's choosing ("<CN> - <O>") for a subject new to the database.
// Otherwise it removes stale swap entries (an older attempt's pair),
// imports the pair unless the nickname holds it already, checks that its
// key is in, and returns "": the new pair is under the nickname.
func (s *keyPairSwap) importPair(ctx context.Context, under []*x509.Certificate) (parked string, err error) {
	d := s.db
	if parked, err := d.parkedAt(ctx, s.nick, s.cert); err != nil || parked != "" {
		return parked, err
	}
	for _, sw := range s.swaps() {
		for {
			stale, err := d.Certs(ctx, sw)
			if err != nil {
				return "", err
			}
			if len(stale) == 0 {
				break
			}
			if err := d.DeleteBest(ctx, sw); err != nil {
				return "", err
			}
			s.changed = true
		}
	}
	if !holds(under, s.cert) {
		if err := d.importKeyPair(ctx, s.cert, s.key); err != nil {
			return "", err
		}
		s.changed = true
		if err := d.step("imported"); err != nil {
			return "", err
		}
	}
	if ok, err := d.HasKey(ctx, s.cert); err != nil {
		return "", err
	} else if !ok {
		return "", fmt.Errorf("nssdb: the key of %s (serial %x) is not in the database after import",
			s.nick, s.cert.SerialNumber)
	}
	return d.parkedAt(ctx, s.nick, s.cert)
}

// park is step 2: the nickname holds the old pair(s) and the new one, the
// best; it renames the best certificate to the swap nickname until the new
// pair is there (an older certificate that was the best is dropped once
// parked). It returns the swap nickname, or done when the nickname holds
// the new pair alone (verified; nothing left to replace).
func (s *keyPairSwap) park(ctx context.Context) (parked string, done bool, err error) {
	d := s.db
	for {
		under, err := d.Certs(ctx, s.nick)
		if err != nil {
			return "", false, err
		}
		if len(under) == 1 && under[0].Equal(s.cert) {
			return "", true, d.verify(ctx, s.nick)
		}
		if err := d.verify(ctx, s.nick); err != nil {
			return "", false, err
		}
		if err := d.Rename(ctx, s.nick, s.swap); err != nil {
			return "", false, err
		}
		s.changed = true
		if err := d.step("renamed-new"); err != nil {
			return "", false, err
		}
		moved, err := d.Certs(ctx, s.swap)
		if err != nil {
			return "", false, err
		}
		if holds(moved, s.cert) {
			return s.swap, false, nil
		}
		if err := d.DeleteBest(ctx, s.swap); err != nil {
			return "", false, err
		}
	}
}

// deleteOld is step 3: with the new pair parked, it removes every old pair
// under the nickname, which resolves to an old, still valid pair until the
// last one goes.
func (s *keyPairSwap) deleteOld(ctx context.Context) error {
	d := s.db
	for {
		old, err := d.Certs(ctx, s.nick)
		if err != nil {
			return err
		}
		if len(old) == 0 {
			return nil
		}
		if err := d.DeleteBest(ctx, s.nick); err != nil {
			return err
		}
		s.changed = true
		if err := d.step("deleted-old"); err != nil {
			return err
		}
	}
}

// restoreName is step 4: it gives the parked pair the nickname and
// verifies it.
func (s *keyPairSwap) restoreName(ctx context.Context, parked string) error {
	if err := s.db.Rename(ctx, parked, s.nick); err != nil {
		return err
	}
	s.changed = true
	if err := s.db.step("renamed-back"); err != nil {
		return err
	}
	return s.db.verify(ctx, s.nick)
}

// anyListed reports whether `certutil -L` lists one of nicknames.
func (d *DB) anyListed(ctx context.Context, nicknames []string) (bool, error) {
	out, err := d.run(ctx, "certutil", "-L", "-d", d.spec())
	if err != nil {
		return false, err
	}
	for _, e := range parseList(out) {
		if slices.Contains(nicknames, e.Nickname) {
			return true, nil
		}
	}
	return false, nil
}

// verify checks the nickname for SSL client and server use.
func (d *DB) verify(ctx context.Context, nickname string) error {
	for _, u := range []string{"C", "V"} {
		if err := d.Verify(ctx, nickname, u); err != nil {
			return err
		}
	}
	return nil
}

// parkedAt returns the nickname other than nickname whose best certificate
// is cert, or "".
func (d *DB) parkedAt(ctx context.Context, nickname string, cert *x509.Certificate) (string, error) {
	entries, err := d.List(ctx)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if e.Nickname != nickname && len(e.Certs) > 0 && e.Certs[0].Equal(cert) {
			return e.Nickname, nil
		}
	}
	return "", nil
}

// ImportP12 imports a PKCS#12 file as given (its friendlyName becomes the
// nickname), the way OpenShift's external-endpoint recipe does. The file
// and the password file are written 0600 in a private temporary directory.
func (d *DB) ImportP12(ctx context.Context, p12 []byte, password string) error {
	dir, err := os.MkdirTemp("", "ipsecca-nss-")
	if err != nil {
		return fmt.Errorf("nssdb: %w", err)
	}
	defer os.RemoveAll(dir)
	p12File, pwFile := filepath.Join(dir, "bundle.p12"), filepath.Join(dir, "pw")
	if err := os.WriteFile(p12File, p12, 0o600); err != nil {
		return fmt.Errorf("nssdb: %w", err)
	}
	if err := os.WriteFile(pwFile, []byte(password), 0o600); err != nil {
		return fmt.Errorf("nssdb: %w", err)
	}
	args := []string{"-i", p12File, "-d", d.spec(), "-w", pwFile}
	if password == "" {
		args = []string{"-i", p12File, "-d", d.spec(), "-W", ""}
	}
	_, err = d.run(ctx, "pk12util", args...)
	return err
}

// SetTrust changes a nickname's trust flags (certutil -M).
func (d *DB) SetTrust(ctx context.Context, nickname, trust string) error {
	_, err := d.run(ctx, "certutil", "-M", "-d", d.spec(), "-n", nickname, "-t", trust)
	return err
}
