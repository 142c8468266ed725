package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/distributor/decisionlog"
)

func init() {
	var flags distClientFlags
	var dataDir string
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Verify the hash chain of the decision log (offline files or a server)",
		Long: `Verify the decision log's hash chain and report exactly where it breaks.

--data DIR checks the segment files offline (DIR is the distributor data
directory or its decisions/ folder): every record's hash, seq order, prev_hash
links, segment boundaries and the end of the chain against HEAD. --server URL
downloads the log and checks it against the head the server reports.
Exit code 0: intact; 3: tampering or truncation found; 4: intact up to HEAD,
but the last segment ends in an interrupted write (a crash during a batch
that was never acknowledged; the distributor cuts it off when it starts);
1/2: could not check.`,
		Example: `  meshguard audit verify --data /var/lib/meshguard
  meshguard audit verify --server https://distributor:8443 --token $AUDIT_TOKEN`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (dataDir == "") == (flags.server == "") {
				return &exitError{code: 2, err: errors.New("give exactly one of --data or --server")}
			}
			var rep decisionlog.Report
			var err error
			if dataDir != "" {
				dir := dataDir
				if st, serr := os.Stat(filepath.Join(dir, "decisions")); serr == nil && st.IsDir() {
					dir = filepath.Join(dir, "decisions")
				}
				rep, err = decisionlog.VerifyDir(dir)
			} else {
				c, closer, cerr := flags.client(cmd.Context())
				if cerr != nil {
					return cerr
				}
				defer closer()
				rep, err = c.VerifyDecisionLog(cmd.Context())
			}
			var torn *decisionlog.TornTailError
			if errors.As(err, &torn) {
				return &exitError{code: 4, err: fmt.Errorf("decision log intact up to seq %d (%d records, hash %s), with a recoverable torn tail: %w",
					rep.Head.Seq, rep.Records, rep.Head.Hash, err)}
			}
			var ce *decisionlog.ChainError
			if errors.As(err, &ce) {
				return &exitError{code: 3, err: fmt.Errorf("decision log NOT intact: %w", err)}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "decision log intact: %d records, head seq %d hash %s\n", rep.Records, rep.Head.Seq, rep.Head.Hash)
			if rep.Pruned > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "records 1..%d were removed by retention; the chain is verified from there\n", rep.Pruned)
			}
			return nil
		},
	}
	flags.register(verify, false)
	verify.Flags().StringVar(&dataDir, "data", "", "distributor data directory (or its decisions/ folder)")
	auditCmd.AddCommand(verify)

	var qflags distClientFlags
	var since, until, subject, decision string
	var limit int
	var after uint64
	var all bool
	query := &cobra.Command{
		Use:   "query",
		Short: "Query decision records on a distributor (NDJSON on stdout)",
		Example: `  meshguard audit query --server https://distributor:8443 --decision deny --since 2026-11-23T00:00:00Z
  meshguard audit query --server http://127.0.0.1:8443 --subject spiffe://grid.example/ns/grid/sa/meter --all`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, closer, err := qflags.client(cmd.Context())
			if err != nil {
				return err
			}
			defer closer()
			p := url.Values{}
			for k, v := range map[string]string{"since": since, "until": until, "subject": subject, "decision": decision} {
				if v != "" {
					p.Set(k, v)
				}
			}
			p.Set("limit", strconv.Itoa(limit))
			out := cmd.OutOrStdout()
			for {
				if after > 0 {
					p.Set("after", strconv.FormatUint(after, 10))
				}
				res, err := c.QueryDecisions(cmd.Context(), p)
				if err != nil {
					return err
				}
				for _, r := range res.Records {
					fmt.Fprintf(out, "%s\n", json.RawMessage(r))
				}
				if !all || res.Next == 0 {
					if res.Next != 0 {
						fmt.Fprintf(cmd.ErrOrStderr(), "more records: continue with --after %d\n", res.Next)
					}
					return nil
				}
				after = res.Next
			}
		},
	}
	qflags.register(query, true)
	f := query.Flags()
	f.StringVar(&since, "since", "", "records at or after this RFC 3339 time")
	f.StringVar(&until, "until", "", "records at or before this RFC 3339 time")
	f.StringVar(&subject, "subject", "", "only this subject (SPIFFE ID)")
	f.StringVar(&decision, "decision", "", "only this decision: allow, deny, dry-run-deny, error")
	f.IntVar(&limit, "limit", 100, "records per page (max 10000)")
	f.Uint64Var(&after, "after", 0, "only records with seq above this")
	f.BoolVar(&all, "all", false, "follow pages until the end")
	auditCmd.AddCommand(query)
}
