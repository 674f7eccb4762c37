package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/internal/flagnames"
	"github.com/ipsecca/ipsecca/store"
	"github.com/ipsecca/ipsecca/store/bolt"
	"github.com/ipsecca/ipsecca/store/migrate"
)

func newStoreCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "store", Short: "Inspect the data directory's store (offline: stop the server first)"}
	var dataDir string
	check := &cobra.Command{
		Use:   "check",
		Short: "Check the bbolt file's consistency and the audit hash chain; print counts and the root fingerprint",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" {
				dataDir = envOr(envDataDir, defaultDataDir)
			}
			st, err := bolt.Open(dataDir)
			if err != nil {
				return err
			}
			defer st.Close()
			ctx := context.Background()
			problems := 0
			out := cmd.OutOrStdout()
			if err := st.Check(); err != nil {
				fmt.Fprintf(out, "bbolt consistency: FAILED: %v\n", err)
				problems++
			} else {
				fmt.Fprintln(out, "bbolt consistency: ok")
			}
			if n, err := st.VerifyAudit(ctx); err != nil {
				fmt.Fprintf(out, "audit chain: FAILED: %v\n", err)
				problems++
			} else {
				fmt.Fprintf(out, "audit chain: ok (%d records)\n", n)
			}
			counts, err := st.CertCounts(ctx, time.Now())
			if err != nil {
				return err
			}
			total := 0
			for k, n := range counts {
				fmt.Fprintf(out, "certificates %s/%s: %d\n", k[0], k[1], n)
				total += n
			}
			fmt.Fprintf(out, "certificates: %d\n", total)
			if m, err := st.CA(ctx); err == nil {
				if b, _ := pem.Decode(m.CertPEM); b != nil {
					sum := sha256.Sum256(b.Bytes)
					fmt.Fprintf(out, "root sha256: %s\n", hex.EncodeToString(sum[:]))
				}
			} else if err != store.ErrNotFound {
				return err
			}
			if problems > 0 {
				return failure(fmt.Errorf("store check: %d problem(s)", problems))
			}
			return nil
		},
	}
	check.Flags().
		StringVar(&dataDir, flagnames.DataDir, "", "data directory (default $"+envDataDir+", else "+defaultDataDir+")")
	cmd.AddCommand(check, newMigrateCmd())
	return cmd
}

func newMigrateCmd() *cobra.Command {
	var from, to, kekFile string
	var sf storeFlags
	cmd := &cobra.Command{
		Use: "migrate --from bolt:DIR --to etcd:ENDPOINTS --kek-file F",
		Short: "Move a CA from a bbolt data directory to etcd (root and key, certificates, tokens, audit chain, " +
			"schedule); verify it",
		Long: `migrate copies everything the bbolt store in DIR holds into an empty etcd
prefix, deriving etcd's indexes, then checks the copy: the audit chain
verifies with the same number of records, certificate counts by kind and
state match, the schedule matches. The CA key is stored in etcd only sealed
under the key-encryption key (--kek-file or $IPSECCA_KEK), the same one the
replicas will be given; a key in the clear is sealed on the way (recorded as
ca.key_sealed). Stop the bbolt server first; run migrate before starting the
etcd replicas. A prefix that already holds a CA or records is refused.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, ok := strings.CutPrefix(from, "bolt:")
			if !ok || dir == "" {
				return usageError("--from %q: want bolt:DIR", from)
			}
			eps, ok := strings.CutPrefix(to, "etcd:")
			if !ok || eps == "" {
				return usageError("--to %q: want etcd:ENDPOINT[,ENDPOINT...]", to)
			}
			sf.endpoints = strings.Split(eps, ",")
			kek, err := readKEK(kekFile)
			if err != nil {
				return err
			}
			if kek == nil {
				return usageError(
					"migrate needs the key-encryption key the replicas will use (--kek-file or $IPSECCA_KEK)",
				)
			}
			dst, err := sf.etcdOptions(slog.New(slog.DiscardHandler))
			if err != nil {
				return err
			}
			rep, err := migrate.FromBolt(cmd.Context(), migrate.Options{From: dir, To: dst,
				Seal: func(m *store.CA) (*store.CA, bool, error) { return ca.SealForMove(m, kek) }})
			printMigrateReport(cmd.OutOrStdout(), rep, err == nil)
			var mismatch *migrate.MismatchError
			if errors.As(err, &mismatch) {
				return failure(err)
			}
			return err
		},
	}
	sf.registerEtcd(cmd.Flags())
	cmd.Flags().Lookup(flagnames.EtcdEndpoints).Hidden = true // given in --to
	cmd.Flags().StringVar(&from, "from", "", "source: bolt:DIR (the data directory; stop its server first)")
	cmd.Flags().StringVar(&to, "to", "", "destination: etcd:ENDPOINT[,ENDPOINT...]")
	cmd.Flags().
		StringVar(&kekFile, flagnames.KEKFile, "", "key-encryption key the replicas will use (default $IPSECCA_KEK)")
	cmd.MarkFlagRequired("from")
	cmd.MarkFlagRequired("to")
	return cmd
}

// printMigrateReport prints what a migration did, as far as it got, and
// on success how to start the replicas.
func printMigrateReport(out io.Writer, rep *migrate.Report, done bool) {
	if !rep.Imported {
		return
	}
	eps := strings.Join(rep.Endpoints, ",")
	fmt.Fprintf(
		out,
		"copied %d certificates, %d tokens, %d nodes, %d request UIDs, %d audit records to %s%s in %s\n",
		rep.Counts.Certs,
		rep.Counts.Tokens,
		rep.Counts.Nodes,
		rep.Counts.Requests,
		rep.Counts.Events,
		eps,
		rep.Prefix,
		rep.Took.Round(time.Millisecond),
	)
	for _, c := range rep.Checks {
		if c.OK() {
			fmt.Fprintf(out, "%s: ok (%s)\n", c.Name, c.Source)
		} else {
			fmt.Fprintf(out, "%s: MISMATCH: bolt %s, etcd %s\n", c.Name, c.Source, c.Copy)
		}
	}
	if rep.KeySealed {
		fmt.Fprintln(out, "CA key: sealed under the key-encryption key (it was in the clear in bbolt)")
	}
	if done {
		fmt.Fprintf(
			out,
			"done: start the replicas with --store etcd --etcd-endpoints %s --etcd-prefix %s and the same "+
				"key-encryption key\n",
			eps,
			strings.TrimSuffix(rep.Prefix, "/"),
		)
	}
}
