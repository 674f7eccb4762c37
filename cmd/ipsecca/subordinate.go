package main

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/daemon"
	"github.com/ipsecca/ipsecca/internal/flagnames"
	"github.com/ipsecca/ipsecca/internal/pemutil"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
	"github.com/ipsecca/ipsecca/store/bolt"
)

// subExtfile is an openssl extfile that signs ca.csr as ipsecca needs it.
const subExtfile = `basicConstraints=critical,CA:TRUE,pathlen:0
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid:always`

// initSubordinate is init --subordinate: the key and request, no serving.
func initSubordinate(cmd *cobra.Command, f *caFlags) error {
	if !cmd.Flags().Changed("ca-name") {
		f.caName = ca.DefaultSubordinateName
	}
	opts, _, err := f.options()
	if err != nil {
		return err
	}
	req, err := daemon.InitSubordinate(cmd.Context(), opts)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	csr := filepath.Join(f.dataDir, daemon.CSRFile)
	sealed := "in the clear (protected by file permissions; give --kek-file to seal it)"
	if opts.Root.KEK != nil {
		sealed = "sealed under the key-encryption key"
	}
	fmt.Fprintf(out, "subordinate CA: %s\nkey: %s, %s\nrequest: %s\n", req.Subject, req.Key, sealed, csr)
	switch req.State {
	case ca.SubordinateCreated:
		fmt.Fprintln(out, "state: created; awaiting the certificate (serve refuses to start until it is imported)")
	case ca.SubordinateAwaiting:
		fmt.Fprintln(out, "state: made by an earlier init, unchanged; awaiting the certificate")
		want := fmt.Sprintf("CN=%s,O=%s", f.caName, f.org)
		if (cmd.Flags().Changed("ca-name") || cmd.Flags().Changed("org")) && want != req.Subject {
			fmt.Fprintf(out, "note: --org/--ca-name apply when the request is made; it keeps %s\n", req.Subject)
		}
	case ca.SubordinateRenewal:
		fmt.Fprintf(out, "state: the CA has its certificate (serial %s, not after %s); %s holds a request for its "+
			"renewal (same key and subject)\n", ca.SerialString(req.Cert.SerialNumber),
			req.Cert.NotAfter.UTC().Format(time.RFC3339), daemon.CSRFile)
	}
	fmt.Fprintf(out, `
next:
  1. Have %s signed by your organisation's CA as a CA certificate, valid at least
     %d years and 6 months (shorter: node certificates are capped to end with it), e.g.
       openssl x509 -req -in %s -CA root.pem -CAkey root.key -days 3650 -extfile sub.ext -out sub.pem
     with sub.ext:
%s
     Keep the subject as requested: node certificates name it as their issuer, and
     libreswan's rightca=%%same compares it.
  2. ipsecca ca import --data-dir %s sub.pem --chain chain.pem
     (chain.pem: the issuer of sub.pem and every certificate above it, up to your root)
  3. ipsecca serve --data-dir %s ...
`, daemon.CSRFile, ca.NodeYears, csr, indent(subExtfile, "       "), f.dataDir, f.dataDir)
	return nil
}

func indent(s, by string) string { return by + strings.ReplaceAll(s, "\n", "\n"+by) }

// maxImportFile bounds the certificate and --chain files (the server takes 1 MiB).
const maxImportFile = 1 << 20

func readImportFile(what, path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxImportFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if len(b) > maxImportFile {
		return nil, usageError("%s %s: larger than %d bytes", what, path, maxImportFile)
	}
	return b, nil
}

// newCAImportCmd is `ca import`; conn are the ca group's admin connection
// flags (its --cert and --key are the admin credential, as in every admin
// command: the certificate to import is the argument).
func newCAImportCmd(conn *connFlags) *cobra.Command {
	var chainFile, kekFile string
	var offline bool
	var out *outputFlags
	var sf storeFlags
	cmd := &cobra.Command{
		Use:   "import SUB.pem [--chain CHAIN.pem]",
		Short: "Import the subordinate CA's certificate signed by your organisation's root (first time, or renewal)",
		Long: `import checks the subordinate CA's certificate (SUB.pem; it may be followed by
its chain) and its chain (--chain: the issuer and every certificate above it,
up to your organisation's self-signed root, in any order) and makes the CA
issue under it: its key must be the CA's (the one ca.csr was made with); it
must be a CA certificate (CA:TRUE) with keyCertSign (and cRLSign, else a
warning), valid now, and chain by signature to a root whose path length allows
it; on a renewal its subject must be the current one. A certificate ending
within 5 years and 6 months is imported with a warning naming the date node
certificates are capped to.

Two routes, printed first:
  - offline, on the store (as init: --data-dir, --store/--etcd-*, --kek-file):
    with --offline, or when the data directory holds no admin credential
    (admin.pem) yet: a subordinate makes none before its certificate is
    imported, so the first import takes this route.
    bbolt: the server must be stopped (the store is locked while it runs);
    etcd: the replicas take the new certificate from the store.
  - otherwise over the running CA's admin connection (AdminService.ImportCA,
    admin credentials from the data directory or --cert/--key):
    the renewal of a running subordinate. The nodes get the new bundle.

Either way it prints the chain, the cap on node certificates, when to renew
the subordinate (renew_by), the warnings and the next step.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			certPEM, err := readImportFile("the certificate", args[0])
			if err != nil {
				return err
			}
			chainPEM, err := readImportFile("--chain", chainFile)
			if err != nil {
				return err
			}
			conn.resolveAdmin()
			reason := "--offline"
			if !offline {
				if _, err := os.Stat(conn.certFile); errors.Is(err, os.ErrNotExist) {
					offline, reason = true, "no admin credential at "+conn.certFile+" yet"
				}
			}
			storeFlagsGiven := false
			for _, name := range []string{flagnames.Store, flagnames.EtcdEndpoints, flagnames.KEKFile} {
				storeFlagsGiven = storeFlagsGiven || cmd.Flags().Changed(name)
			}
			show := func(resp *ipseccav1.GetCAResponse, next string) error {
				if out.structured() {
					return out.data(cmd, resp)
				}
				return printImported(cmd.OutOrStdout(), resp, next)
			}
			if !offline {
				if storeFlagsGiven {
					return usageError("--store, --etcd-* and --kek-file open the store directly: add --offline " +
						"(or leave them out to ask the running CA)")
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "ca import: asking the running CA (ImportCA) with %s\n",
					conn.certFile)
				return adminCall(conn, func(c ipseccav1.AdminServiceClient, ctx context.Context) error {
					resp, err := c.ImportCA(ctx, &ipseccav1.ImportCARequest{CertPem: certPEM, ChainPem: chainPEM})
					if status.Code(err) == codes.Unavailable {
						return fmt.Errorf("%w (to import into a stopped CA's store, add --offline)",
							rpcError("", err))
					}
					if err != nil {
						return rpcError("", err)
					}
					return show(resp, "the CA issues under the new certificate now; the nodes get the new "+
						"bundle on their next pass")
				})
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "ca import: importing into the store directly (offline: %s)\n", reason)
			resp, first, err := importOffline(cmd.Context(), conn.dataDir, &sf, kekFile, certPEM, chainPEM)
			if err != nil {
				return err
			}
			next := "start the CA: ipsecca serve --data-dir " + conn.dataDir + " ..."
			if !first {
				next = "start the CA again (or, on etcd, the running replicas take it from the store)"
			}
			return show(resp, next)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&chainFile, "chain", "",
		"its chain (PEM): the issuer and every certificate above it, up to your organisation's root")
	fs.BoolVar(&offline, "offline", false, "import into the store directly (no server running on it)")
	out = addOutput(cmd, true)
	fs.StringVar(&kekFile, flagnames.KEKFile, "",
		"offline: the key-encryption key sealing the CA key (default $IPSECCA_KEK)")
	fs.StringVar(&sf.kind, flagnames.Store, storeBolt, "offline: store backend, bolt (in --data-dir) or etcd")
	sf.registerEtcd(fs)
	return cmd
}

// importOffline imports into the store itself; first reports a first
// import (the CA was awaiting its certificate).
func importOffline(
	ctx context.Context,
	dataDir string,
	sf *storeFlags,
	kekFile string,
	certPEM, chainPEM []byte,
) (*ipseccav1.GetCAResponse, bool, error) {
	kek, err := readKEK(kekFile)
	if err != nil {
		return nil, false, err
	}
	switch sf.kind {
	case storeBolt:
		if _, err := os.Stat(filepath.Join(dataDir, bolt.FileName)); err != nil {
			return nil, false, fmt.Errorf("no CA store in %s (%v): make the subordinate CA there first "+
				"(ipsecca init --subordinate --data-dir %s)", dataDir, err, dataDir)
		}
	case storeEtcd:
		if kek == nil {
			return nil, false, usageError("--store etcd needs the key-encryption key (--kek-file or $IPSECCA_KEK)")
		}
	default:
		return nil, false, usageError("--store %q: want bolt or etcd", sf.kind)
	}
	log := slog.New(slog.DiscardHandler)
	res, err := daemon.ImportSubordinate(ctx, daemon.Options{
		DataDir: dataDir,
		OpenStore: func(ctx context.Context) (daemon.Store, daemon.Cluster, error) {
			return sf.open(ctx, dataDir, log)
		},
		Root: ca.RootConfig{KEK: kek},
	}, certPEM, chainPEM)
	if err != nil {
		return nil, false, err
	}
	resp := &ipseccav1.GetCAResponse{Subordinate: true, NodeNotAfterCap: timestamppb.New(res.NodeNotAfterCap()),
		RenewBy: timestamppb.New(res.RenewBy()), Warnings: res.Warnings}
	for i, c := range append([]*x509.Certificate{res.Cert}, res.Chain...) {
		resp.BundlePem = append(resp.BundlePem, pemOf(c)...)
		role := "issuer"
		if i == 0 {
			role = "issuing"
		}
		resp.Roots = append(resp.Roots, rootInfo(c, role, i == 0))
	}
	_, _, capWarnings := (&ca.Root{Cert: res.Cert, Chain: res.Chain}).SubordinateInfo(time.Now())
	for _, w := range capWarnings {
		if !slices.Contains(resp.Warnings, w) {
			resp.Warnings = append(resp.Warnings, w)
		}
	}
	return resp, res.Current == nil, nil
}

func pemOf(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func rootInfo(c *x509.Certificate, role string, current bool) *ipseccav1.RootInfo {
	sum := sha256.Sum256(c.Raw)
	return &ipseccav1.RootInfo{
		Serial: ca.SerialString(c.SerialNumber), Subject: c.Subject.String(),
		NotBefore: timestamppb.New(c.NotBefore), NotAfter: timestamppb.New(c.NotAfter),
		Sha256Fingerprint: hex.EncodeToString(sum[:]), Current: current, Role: role,
		SelfSigned: string(c.RawIssuer) == string(c.RawSubject) && c.CheckSignatureFrom(c) == nil,
	}
}

// printImported prints an import's result: the chain, the cap, renew_by,
// the warnings and the next step.
func printImported(out io.Writer, resp *ipseccav1.GetCAResponse, next string) error {
	certs, err := pemutil.ParseCertificates(resp.GetBundlePem(), pemutil.Options{AllowEmpty: true})
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "imported; the CA's chain (ca.pem, given to every node):")
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "  ROLE\tSUBJECT\tISSUER\tNOT AFTER\tSHA256")
	for i, c := range certs {
		role := "issuer"
		switch {
		case i == 0:
			role = "issuing (this CA)"
		case i == len(certs)-1 && c.CheckSignatureFrom(c) == nil:
			role = "root"
		}
		sum := sha256.Sum256(c.Raw)
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\n", role, c.Subject.String(), c.Issuer.String(),
			c.NotAfter.UTC().Format(time.RFC3339), hex.EncodeToString(sum[:]))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "node certificates end at the latest: %s\n", fmtTime(resp.GetNodeNotAfterCap()))
	fmt.Fprintf(out, "renew the subordinate CA before: %s (from then on node certificates are shorter than "+
		"%d years)\n", fmtTime(resp.GetRenewBy()), ca.NodeYears)
	for _, warn := range resp.GetWarnings() {
		fmt.Fprintf(out, "warning: %s\n", warn)
	}
	_, err = fmt.Fprintf(out, "next: %s\n", next)
	return err
}
