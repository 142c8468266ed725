package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/distributor/decisionlog"
	"github.com/meshguard/meshguard/internal/contract"
	"github.com/meshguard/meshguard/internal/enumflag"
	"github.com/meshguard/meshguard/internal/output"
)

// newAuditCmd is the audit verb group.
func newAuditCmd() *cobra.Command {
	return newGroup("audit", "Inspect and verify the decision audit trail", newAuditVerifyCmd(), newAuditQueryCmd())
}

// chainResult is what audit verify prints for an intact log.
type chainResult struct {
	Intact  bool   `json:"intact"`
	Records uint64 `json:"records"`
	// Pruned records (1..Pruned) were removed by retention; the chain is
	// verified from the first kept.
	Pruned  uint64 `json:"pruned"`
	HeadSeq uint64 `json:"headSeq"`
	Head    string `json:"headHash"`
}

// Text is the summary line (and what retention removed).
func (r chainResult) Text(w io.Writer) error {
	_, err := fmt.Fprintf(w, "decision log intact: %d records, head seq %d hash %s\n", r.Records, r.HeadSeq, r.Head)
	if err == nil && r.Pruned > 0 {
		_, err = fmt.Fprintf(w, "records 1..%d were removed by retention; the chain is verified from there\n", r.Pruned)
	}
	return err
}

// Rows is one row.
func (r chainResult) Rows() ([]string, [][]string) {
	return []string{"intact", "records", "pruned", "headSeq", "headHash"},
		[][]string{{strconv.FormatBool(r.Intact), strconv.FormatUint(r.Records, 10), strconv.FormatUint(r.Pruned, 10), strconv.FormatUint(r.HeadSeq, 10), r.Head}}
}

func newAuditVerifyCmd() *cobra.Command {
	var flags distClientFlags
	var dataDir string
	var format *outputFormat
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Verify the hash chain of the decision log (offline files or a server)",
		Long: `Verify the decision log's hash chain and report exactly where it breaks.

--data DIR checks the segment files offline (DIR is the distributor data
directory or its decisions/ folder): every record's hash, seq order, prev_hash
links, segment boundaries and the end of the chain against HEAD. --server URL
downloads the log and checks it against the head the server reports.
Exit code 0: intact; 4: tampering or truncation found; 5: intact up to HEAD,
but the last segment ends in an interrupted write (a crash during a batch
that was never acknowledged; the distributor cuts it off when it starts);
2/6: could not check.`,
		Example: `  meshguard audit verify --data /var/lib/meshguard
  meshguard audit verify --server https://distributor:8443 --token $AUDIT_TOKEN`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (dataDir == "") == (flags.server == "") {
				return usagef("give exactly one of --data or --server")
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
				return fmt.Errorf("decision log intact up to seq %d (%d records, hash %s), with a recoverable torn tail: %w",
					rep.Head.Seq, rep.Records, rep.Head.Hash, err)
			}
			var ce *decisionlog.ChainError
			if errors.As(err, &ce) {
				return fmt.Errorf("decision log NOT intact: %w", err)
			}
			if err != nil {
				return err
			}
			return format.print(cmd, chainResult{Intact: true, Records: rep.Records, Pruned: rep.Pruned, HeadSeq: rep.Head.Seq, Head: rep.Head.Hash})
		},
	}
	flags.register(verify, false)
	verify.Flags().StringVar(&dataDir, "data", "", "distributor data directory (or its decisions/ folder)")
	format = addOutputFlag(verify, output.All...)
	return verify
}

// recordColumns are the decision record fields of the table and csv forms
// of audit query (json and yaml print every field).
var recordColumns = []string{"seq", "time", "decision", "rule_ids", "subject", "device_id", "method", "path", "reason", "bundle_revision"}

// recordRow is a record's cells in recordColumns order: strings as they
// are, arrays of strings joined with spaces, other values as JSON.
func recordRow(raw json.RawMessage) ([]string, error) {
	var rec map[string]json.RawMessage
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, fmt.Errorf("decision record: %w", err)
	}
	row := make([]string, len(recordColumns))
	for i, c := range recordColumns {
		v, ok := rec[c]
		if !ok {
			continue
		}
		var s string
		var list []string
		switch {
		case json.Unmarshal(v, &s) == nil:
			row[i] = s
		case json.Unmarshal(v, &list) == nil:
			row[i] = strings.Join(list, " ")
		default:
			row[i] = string(v)
		}
	}
	return row, nil
}

func newAuditQueryCmd() *cobra.Command {
	var qflags distClientFlags
	var since, until, subject, decision string
	var limit int
	var after uint64
	var all bool
	var format *outputFormat
	query := &cobra.Command{
		Use:   "query",
		Short: "Query decision records on a distributor (NDJSON on stdout; -o yaml, table or csv)",
		Long: `Query decision records on a distributor. -o json (the default) prints each
record as it is stored, one JSON object a line (NDJSON); yaml prints them as
documents; table and csv print the main fields (` + strings.Join(recordColumns, ", ") + `),
one record a row (csv cells that a spreadsheet would run as formulas start
with an apostrophe).`,
		Example: `  meshguard audit query --server https://distributor:8443 --decision deny --since 2026-11-23T00:00:00Z
  meshguard audit query --server http://127.0.0.1:8443 --subject spiffe://grid.example/ns/grid/sa/meter --all -o csv`,
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
			stream := output.NewStream(cmd.OutOrStdout(), format.format(), recordColumns)
			for {
				if after > 0 {
					p.Set("after", strconv.FormatUint(after, 10))
				}
				res, err := c.QueryDecisions(cmd.Context(), p)
				if err != nil {
					return err
				}
				for _, r := range res.Records {
					row, err := recordRow(r)
					if err != nil {
						return err
					}
					if err := stream.Record(r, row); err != nil {
						return err
					}
				}
				if err := stream.Flush(); err != nil {
					return err
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
	enumflag.Var(f, &decision, "decision", "", "", contract.RecordDecisions, "only this decision")
	f.IntVar(&limit, "limit", 100, "records per page (max 10000)")
	f.Uint64Var(&after, "after", 0, "only records with seq above this")
	f.BoolVar(&all, "all", false, "follow pages until the end")
	format = addOutputFlag(query, output.JSON, output.YAML, output.Table, output.CSV)
	return query
}
