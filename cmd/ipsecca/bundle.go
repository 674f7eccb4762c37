package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ipsecca/ipsecca/bundle"
	"github.com/ipsecca/ipsecca/nssdb"
)

// bundleFlags are shared by validate and render.
type bundleFlags struct {
	p12, password, passwordFile, ca, rightCert, policy string
	in                                                 bundle.Input
	nssCheck                                           bool
	output                                             *outputFlags
}

func (f *bundleFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.p12, "p12", "", "the endpoint's PKCS#12 (left_server.p12)")
	fs.StringVar(&f.password, "password", "", "PKCS#12 password (prefer --password-file)")
	fs.StringVar(&f.passwordFile, "password-file", "", "file holding the PKCS#12 password")
	fs.StringVar(&f.ca, "ca-file", "", "the CA bundle (ca.pem)")
	alias(fs, "ca", "ca-file")
	fs.StringVar(&f.in.Left, "left", "", "the cluster node's host name (NMState left)")
	fs.StringVar(&f.in.Right, "right", "", "the external host's name (NMState right)")
	fs.StringVar(&f.in.RightSubnet, "right-subnet", "", "NMState rightsubnet, an IPv4 /32")
	fs.StringVar(&f.rightCert, "right-cert", "", "the external host's certificate (PEM), to check --right against")
	fs.StringVar(&f.in.Type, "type", bundle.DefaultType, "transport or tunnel")
	fs.StringVar(&f.in.LeftCert, "leftcert", bundle.DefaultLeftCert, "NSS nickname the policy names (leftcert)")
	fs.StringVar(
		&f.policy,
		"policy",
		"",
		"take left, right, leftcert, rightsubnet and type from this NodeNetworkConfigurationPolicy",
	)
	fs.BoolVar(
		&f.nssCheck,
		"nss-check",
		false,
		"also import the bundle into a throwaway NSS database with pk12util/certutil and verify it there",
	)
	cmd.MarkFlagRequired("p12")
	cmd.MarkFlagsMutuallyExclusive("password", "password-file")
}

// load reads the files and checks the flags that cobra does not;
// usage errors exit 2.
func (f *bundleFlags) load() error {
	if f.policy != "" {
		raw, err := os.ReadFile(f.policy)
		if err != nil {
			return usageError("--policy: %v", err)
		}
		if err := bundle.ParsePolicy(raw, &f.in); err != nil {
			return usageError("--policy %s: %v", f.policy, err)
		}
	}
	if f.ca == "" {
		return usageError(`required flag(s) "ca-file" not set`)
	}
	if f.in.Left == "" || f.in.Right == "" {
		return usageError("--left and --right are required (or --policy)")
	}
	switch f.in.Type {
	case "", "transport", "tunnel":
	default:
		return usageError("--type %q: want transport or tunnel", f.in.Type)
	}
	var err error
	if f.in.P12, err = os.ReadFile(f.p12); err != nil {
		return usageError("--p12: %v", err)
	}
	if f.in.CAPEM, err = os.ReadFile(f.ca); err != nil {
		return usageError("--ca-file: %v", err)
	}
	if f.rightCert != "" {
		if f.in.RightCertPEM, err = os.ReadFile(f.rightCert); err != nil {
			return usageError("--right-cert: %v", err)
		}
	}
	f.in.Password = f.password
	if f.passwordFile != "" {
		b, err := os.ReadFile(f.passwordFile)
		if err != nil {
			return usageError("--password-file: %v", err)
		}
		f.in.Password = strings.TrimRight(string(b), "\r\n")
	}
	return nil
}

// validate runs the checks (and the NSS check when asked).
func (f *bundleFlags) validate(ctx context.Context) *bundle.Report {
	rep := bundle.Validate(f.in, bundle.Options{Now: time.Now()})
	if f.nssCheck && !rep.Has(bundle.CodeP12WrongPassword) && !rep.Has(bundle.CodeP12Undecodable) {
		nssCheck(ctx, rep, f.in)
	}
	rep.OK = rep.Errors == 0
	return rep
}

// nssCheck imports the bundle into a throwaway NSS database the way the
// node will (CA with CT,C,C, the p12, u,u,u on leftcert) and verifies it.
func nssCheck(ctx context.Context, rep *bundle.Report, in bundle.Input) {
	dir, err := os.MkdirTemp("", "ipsecca-nss-check-")
	if err != nil {
		rep.Findings = append(
			rep.Findings,
			bundle.Finding{Code: bundle.CodeNSSImport, Severity: bundle.SeverityError, Message: err.Error()},
		)
		rep.Errors++
		return
	}
	defer os.RemoveAll(dir)
	db := nssdb.New(filepath.Join(dir, "nss"))
	fail := func(code string, err error) {
		rep.Findings = append(
			rep.Findings,
			bundle.Finding{
				Code:     code,
				Severity: bundle.SeverityError,
				Message:  "NSS: " + strings.TrimPrefix(err.Error(), "nssdb: "),
			},
		)
		rep.Errors++
	}
	if _, err := db.Ensure(ctx); err != nil {
		fail(bundle.CodeNSSImport, err)
		return
	}
	roots, err := bundle.ParsePEMCerts(in.CAPEM)
	if err != nil {
		return // already reported
	}
	for _, r := range roots {
		if _, err := db.AddCA(ctx, "CA", r, "CT,C,C"); err != nil {
			fail(bundle.CodeNSSImport, err)
			return
		}
	}
	if err := db.ImportP12(ctx, in.P12, in.Password); err != nil {
		fail(bundle.CodeNSSImport, err)
		return
	}
	nick := in.LeftCert
	if nick == "" {
		nick = bundle.DefaultLeftCert
	}
	if err := db.SetTrust(ctx, nick, "u,u,u"); err != nil {
		fail(bundle.CodeNSSImport, err)
		return
	}
	for _, u := range []string{"V", "C"} {
		if err := db.Verify(ctx, nick, u); err != nil {
			fail(bundle.CodeNSSVerify, err)
			return
		}
	}
}

func printReport(w io.Writer, rep *bundle.Report) error {
	for _, f := range rep.Findings {
		sev := "ERROR"
		if f.Severity == bundle.SeverityWarning {
			sev = "WARN "
		}
		subj := ""
		if f.Subject != "" {
			subj = " [" + f.Subject + "]"
		}
		fmt.Fprintf(w, "%s %s: %s%s\n", sev, f.Code, f.Message, subj)
	}
	verdict := "OK"
	if !rep.OK {
		verdict = "FAILED"
	}
	fmt.Fprintf(w, "%s: %d error(s), %d warning(s)", verdict, rep.Errors, rep.Warnings)
	if rep.LeafSubject != "" {
		fmt.Fprintf(w, "; endpoint %s (serial %s, nickname %q)", rep.LeafSubject, rep.LeafSerial, rep.Nickname)
	}
	fmt.Fprintln(w)
	return nil
}

func newBundleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bundle",
		Short: "Validate external IPsec endpoint bundles (PKCS#12 + CA) and render their NMState/Butane config",
	}
	var vf bundleFlags
	validate := &cobra.Command{
		Use:   "validate",
		Short: "Check a bundle offline; exit 0 without errors, 1 with errors, 2 on usage errors",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := vf.load(); err != nil {
				return err
			}
			rep := vf.validate(cmd.Context())
			if err := vf.output.print(cmd, rep, func(w io.Writer) error { return printReport(w, rep) }); err != nil {
				return err
			}
			if !rep.OK {
				return &exitError{code: exitFailure}
			}
			return nil
		},
	}
	vf.register(validate)
	vf.output = addOutput(validate, true)

	var rf bundleFlags
	var out, name string
	render := &cobra.Command{
		Use: "render",
		Short: "Validate, then write the NodeNetworkConfigurationPolicy, its removal policy and the Butane configs " +
			"into --out",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := rf.load(); err != nil {
				return err
			}
			rep := rf.validate(cmd.Context())
			if !rep.OK {
				printReport(cmd.ErrOrStderr(), rep)
				return failure(fmt.Errorf("bundle render: the bundle has %d error(s); nothing written", rep.Errors))
			}
			files, err := bundle.Render(bundle.RenderInput{Input: rf.in, Name: name})
			if err != nil {
				return failure(err)
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return err
			}
			var written []string
			for _, f := range files {
				if err := os.WriteFile(filepath.Join(out, f.Name), f.Content, os.FileMode(f.Mode)); err != nil {
					return err
				}
				written = append(written, filepath.Join(out, f.Name))
			}
			v := struct {
				Files []string `json:"files"`
			}{written}
			return rf.output.print(cmd, v, func(w io.Writer) error {
				_, err := fmt.Fprintln(w, strings.Join(written, "\n"))
				return err
			})
		},
	}
	rf.register(render)
	rf.output = addOutput(render, false)
	render.Flags().StringVar(&out, "out", "", "directory to write the files into")
	render.Flags().StringVar(&name, "name", "", "connection name (default <right>_conn)")
	render.MarkFlagRequired("out")
	cmd.AddCommand(validate, render)
	return cmd
}
