package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/ipsecca/ipsecca/store"
	"github.com/ipsecca/ipsecca/store/bolt"
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
	cmd.AddCommand(check)
	return cmd
}
