package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/store"
	"github.com/ipsecca/ipsecca/store/bolt"
	"github.com/ipsecca/ipsecca/store/etcd"
)

func init() { subcommands = append(subcommands, newStoreCmd) }

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
	check.Flags().StringVar(&dataDir, "data-dir", "", "data directory (default $"+envDataDir+", else "+defaultDataDir+")")
	cmd.AddCommand(check, newMigrateCmd())
	return cmd
}

// caSink hands the exported records on, with the CA key sealed.
type caSink struct {
	*etcd.Importer
	ca *store.CA
}

func (s caSink) PutCA(*store.CA) error { return s.Importer.PutCA(s.ca) }

func newMigrateCmd() *cobra.Command {
	var from, to, kekFile string
	var sf storeFlags
	cmd := &cobra.Command{
		Use:   "migrate --from bolt:DIR --to etcd:ENDPOINTS --kek-file F",
		Short: "Move a CA from a bbolt data directory to etcd (root and key, certificates, tokens, audit chain, schedule); verify it",
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
				return usageError("migrate needs the key-encryption key the replicas will use (--kek-file or $IPSECCA_KEK)")
			}
			ctx := cmd.Context()
			src, err := bolt.Open(dir)
			if err != nil {
				return err
			}
			defer src.Close()
			material, err := src.CA(ctx)
			if err != nil {
				return fmt.Errorf("store migrate: %s holds no CA: %w", dir, err)
			}
			sealedCA, sealed, err := ca.SealForMove(material, kek)
			if err != nil {
				return err
			}
			dst, err := sf.openEtcd(ctx, slog.New(slog.DiscardHandler))
			if err != nil {
				return err
			}
			defer dst.Close()
			start := time.Now()
			im, err := dst.NewImporter(ctx)
			if err != nil {
				return err
			}
			if err := src.Export(caSink{Importer: im, ca: sealedCA}); err != nil {
				return err
			}
			if err := im.Finish(); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "copied %d certificates, %d tokens, %d nodes, %d request UIDs, %d audit records to %s%s in %s\n",
				im.Counts.Certs, im.Counts.Tokens, im.Counts.Nodes, im.Counts.Requests, im.Counts.Events, strings.Join(sf.endpoints, ","), dst.Prefix(), time.Since(start).Round(time.Millisecond))
			// Verify the copy against the source.
			problems := 0
			check := func(what string, a, b any) {
				if fmt.Sprint(a) != fmt.Sprint(b) {
					fmt.Fprintf(out, "%s: MISMATCH: bolt %v, etcd %v\n", what, a, b)
					problems++
				} else {
					fmt.Fprintf(out, "%s: ok (%v)\n", what, a)
				}
			}
			nSrc, err := src.VerifyAudit(ctx)
			if err != nil {
				return fmt.Errorf("store migrate: the source's audit chain: %w", err)
			}
			nDst, err := dst.VerifyAudit(ctx)
			if err != nil {
				return fmt.Errorf("store migrate: the copy's audit chain: %w", err)
			}
			check("audit chain", nSrc, nDst)
			now := time.Now()
			cSrc, err := src.CertCounts(ctx, now)
			if err != nil {
				return err
			}
			cDst, err := dst.CertCounts(ctx, now)
			if err != nil {
				return err
			}
			check("certificate counts", cSrc, cDst)
			sSrc, err := src.Schedule(ctx, 1000)
			if err != nil {
				return err
			}
			sDst, err := dst.Schedule(ctx, 1000)
			if err != nil {
				return err
			}
			check("schedule (first 1000)", serialsOf(sSrc), serialsOf(sDst))
			if problems > 0 {
				return failure(fmt.Errorf("store migrate: %d check(s) failed; the etcd prefix %s holds a partial copy: delete it before trying again", problems, dst.Prefix()))
			}
			if sealed {
				ev := store.Event{Time: now.UTC(), Type: store.EventCAKeySealed, Actor: "migrate", Detail: map[string]string{"from": "bolt:" + dir}}
				if err := dst.AppendEvent(ctx, ev); err != nil {
					return err
				}
				fmt.Fprintln(out, "CA key: sealed under the key-encryption key (it was in the clear in bbolt)")
			}
			fmt.Fprintf(out, "done: start the replicas with --store etcd --etcd-endpoints %s --etcd-prefix %s and the same key-encryption key\n", strings.Join(sf.endpoints, ","), strings.TrimSuffix(dst.Prefix(), "/"))
			return nil
		},
	}
	sf.registerEtcd(cmd.Flags())
	cmd.Flags().Lookup("etcd-endpoints").Hidden = true // given in --to
	cmd.Flags().StringVar(&from, "from", "", "source: bolt:DIR (the data directory; stop its server first)")
	cmd.Flags().StringVar(&to, "to", "", "destination: etcd:ENDPOINT[,ENDPOINT...]")
	cmd.Flags().StringVar(&kekFile, "kek-file", "", "key-encryption key the replicas will use (default $IPSECCA_KEK)")
	return cmd
}

func serialsOf(cs []*store.Cert) string {
	var b strings.Builder
	for _, c := range cs {
		b.WriteString(c.Serial)
		b.WriteByte(' ')
	}
	sum := sha256.Sum256([]byte(b.String()))
	return fmt.Sprintf("%d certificates, sha256 %s", len(cs), hex.EncodeToString(sum[:8]))
}
