package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/note"

	"github.com/meshguard/meshguard/distributor/decisionlog"
	"github.com/meshguard/meshguard/distributor/server"
	"github.com/meshguard/meshguard/internal/contract"
	"github.com/meshguard/meshguard/internal/enumflag"
	"github.com/meshguard/meshguard/internal/output"
)

// newAuditCmd is the audit verb group.
func newAuditCmd() *cobra.Command {
	return newGroup("audit", "Inspect and verify the decision audit trail", newAuditVerifyCmd(), newAuditQueryCmd(),
		newAuditCheckpointCmd(), newAuditProveCmd())
}

// logKeyFlag is the --log-key flag: the log's checkpoint verifier key.
const logKeyHelp = "the decision log's checkpoint verifier key (name+hash+base64, or the .pub file holding it; pin it out of band)"

// logKey reads --log-key ("" when unset and not required).
func logKey(text string, required bool) (note.Verifier, error) {
	if text == "" {
		if required {
			return nil, usagef("give --log-key: a checkpoint is only as good as the key it is held to (the distributor's <data>/checkpoint.key.pub, or GET /v1/decisions/checkpoint/key once, then pin it)")
		}
		return nil, nil
	}
	v, err := decisionlog.ParseVerifier(text)
	return v, usage(err)
}

// readCheckpoints opens the signed checkpoint files against key.
func readCheckpoints(in *inputs, key note.Verifier, files []string) ([]decisionlog.Checkpoint, [][]byte, error) {
	var cps []decisionlog.Checkpoint
	var raw [][]byte
	for _, f := range files {
		b, err := in.read("--checkpoint", f)
		if err != nil {
			return nil, nil, err
		}
		c, err := decisionlog.OpenCheckpoint(b, key)
		if err != nil {
			return nil, nil, fmt.Errorf("--checkpoint %s: %w", f, err)
		}
		cps, raw = append(cps, c), append(raw, b)
	}
	return cps, raw, nil
}

// logVerifyResult is what audit verify prints for an intact log.
type logVerifyResult struct {
	Intact  bool   `json:"intact"`
	Records uint64 `json:"records"`
	// Pruned records (1..Pruned) were removed by retention; the tree is
	// rebuilt from the retention anchor.
	Pruned  uint64 `json:"pruned"`
	HeadSeq uint64 `json:"headSeq"`
	Head    string `json:"headHash"`
	// Checkpoint is the latest signed checkpoint the log was held to.
	Checkpoint *decisionlog.CheckpointReport `json:"checkpoint,omitempty"`
	// Earlier are the --checkpoint files the log is consistent with.
	Earlier []decisionlog.CheckpointReport `json:"earlier,omitempty"`
	// Proved says consistency was shown by the distributor's consistency
	// proof (tlog.CheckTree) rather than by rebuilding the tree.
	Proved bool `json:"proved,omitempty"`
}

// Text is the summary.
func (r logVerifyResult) Text(w io.Writer) error {
	var b strings.Builder
	if r.HeadSeq > 0 || r.Records > 0 || !r.Proved {
		fmt.Fprintf(&b, "decision log intact: %d records, head seq %d root %s\n", r.Records, r.HeadSeq, r.Head)
	}
	if r.Pruned > 0 {
		fmt.Fprintf(&b, "records 1..%d were removed by retention; the tree is rebuilt from there\n", r.Pruned)
	}
	if c := r.Checkpoint; c != nil {
		fmt.Fprintf(&b, "signed checkpoint of %d records (root %s) by %s: verified\n", c.Size, c.Root, c.Origin)
	} else {
		b.WriteString("signed checkpoint not checked: give --log-key to hold the log to its signature\n")
	}
	how := "the records rebuild its tree"
	if r.Proved {
		how = "consistency proof checked with tlog.CheckTree"
	}
	for _, e := range r.Earlier {
		fmt.Fprintf(&b, "consistent with the earlier checkpoint of %d records (root %s): %s\n", e.Size, e.Root, how)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Rows is one row.
func (r logVerifyResult) Rows() ([]string, [][]string) {
	var size, root, earlier string
	if r.Checkpoint != nil {
		size, root = strconv.FormatUint(r.Checkpoint.Size, 10), r.Checkpoint.Root
	}
	var es []string
	for _, e := range r.Earlier {
		es = append(es, strconv.FormatUint(e.Size, 10))
	}
	earlier = strings.Join(es, " ")
	return []string{"intact", "records", "pruned", "headSeq", "headHash", "checkpointSize", "checkpointRoot", "consistentWith"},
		[][]string{{strconv.FormatBool(r.Intact), strconv.FormatUint(r.Records, 10), strconv.FormatUint(r.Pruned, 10),
			strconv.FormatUint(r.HeadSeq, 10), r.Head, size, root, earlier}}
}

func newAuditVerifyCmd() *cobra.Command {
	var flags distClientFlags
	var dataDir, keyText string
	var earlierFiles []string
	var full bool
	var format *outputFormat
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Verify the decision log's Merkle tree and signed checkpoints (offline files or a server)",
		Long: `Verify the decision log and report exactly where it breaks.

--data DIR checks the files offline, without the distributor (DIR is the
distributor data directory or its decisions/ folder, or a copy of it): every
record is canonical JSON (RFC 8785) with the next seq, the Merkle tree is
rebuilt from the records (RFC 6962 leaf hashes SHA-256(0x00 || record)) and
compared with the stored tree hashes and, with --log-key, the signed
checkpoint.

--server URL with --checkpoint FILE (a checkpoint saved earlier with audit
checkpoint --save): fetches the latest signed checkpoint and the
distributor's consistency proof and checks it with tlog.CheckTree, so a
truncated, rewritten or forked log is found even if whoever changed it also
rebuilt the tree and re-signed the checkpoint. --full (or --server without
--checkpoint) also downloads every record and rebuilds the tree.

With --data, --checkpoint FILE holds the rebuilt tree to the earlier
checkpoint in the same way.

Exit code 0: intact; 4: tampering, truncation or inconsistency found (or a
checkpoint that does not verify with the key); 5: intact, but the last
segment ends in an interrupted write (a crash during a batch that was never
acknowledged; the distributor cuts it off when it starts); 2/6: could not
check.`,
		Example: `  meshguard audit verify --data /var/lib/meshguard --log-key checkpoint.key.pub
  meshguard audit verify --data ./copy-of-decisions --log-key checkpoint.key.pub --checkpoint cp-monday.txt
  meshguard audit verify --server https://distributor:8443 --token $AUDIT_TOKEN --log-key checkpoint.key.pub --checkpoint cp-monday.txt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (dataDir == "") == (flags.server == "") {
				return usagef("give exactly one of --data or --server")
			}
			key, err := logKey(keyText, flags.server != "" || len(earlierFiles) > 0)
			if err != nil {
				return err
			}
			in := newInputs(cmd)
			earlier, raw, err := readCheckpoints(in, key, earlierFiles)
			if err != nil {
				return err
			}
			res := logVerifyResult{Intact: true}
			var rep decisionlog.Report
			if dataDir != "" {
				dir := dataDir
				if st, serr := os.Stat(filepath.Join(dir, "decisions")); serr == nil && st.IsDir() {
					dir = filepath.Join(dir, "decisions")
				}
				rep, err = decisionlog.VerifyDir(dir, decisionlog.VerifyOptions{Key: key, Earlier: raw})
			} else {
				c, closer, cerr := flags.client(cmd.Context())
				if cerr != nil {
					return cerr
				}
				defer closer()
				for _, e := range earlier {
					latest, cerr := c.VerifyConsistency(cmd.Context(), key, e)
					if cerr != nil {
						return fmt.Errorf("decision log NOT consistent with --checkpoint of %d records: %w", e.Size, cerr)
					}
					rep.Checkpoint = &decisionlog.CheckpointReport{Origin: latest.Origin, Size: latest.Size, Root: latest.Root.String()}
					rep.Earlier = append(rep.Earlier, decisionlog.CheckpointReport{Origin: e.Origin, Size: e.Size, Root: e.Root.String()})
					res.Proved = true
				}
				if full || len(earlier) == 0 {
					earlierRep := rep.Earlier
					rep, err = c.VerifyDecisionLog(cmd.Context(), key)
					rep.Earlier = earlierRep
				} else {
					rep.Head = decisionlog.Head{Seq: rep.Checkpoint.Size, Hash: rep.Checkpoint.Root}
				}
			}
			var torn *decisionlog.TornTailError
			if errors.As(err, &torn) {
				return fmt.Errorf("decision log intact up to seq %d (%d records, root %s), with a recoverable torn tail: %w",
					rep.Head.Seq, rep.Records, rep.Head.Hash, err)
			}
			var ce *decisionlog.ChainError
			if errors.As(err, &ce) {
				return fmt.Errorf("decision log NOT intact: %w", err)
			}
			if err != nil {
				return err
			}
			res.Records, res.Pruned, res.HeadSeq, res.Head = rep.Records, rep.Pruned, rep.Head.Seq, rep.Head.Hash
			res.Checkpoint, res.Earlier = rep.Checkpoint, rep.Earlier
			return format.print(cmd, res)
		},
	}
	flags.register(verify, false)
	f := verify.Flags()
	f.StringVar(&dataDir, "data", "", "distributor data directory (or its decisions/ folder), checked offline")
	f.StringVar(&keyText, "log-key", "", logKeyHelp)
	f.StringArrayVar(&earlierFiles, "checkpoint", nil, "an earlier signed checkpoint file the log must still extend (repeatable)")
	f.BoolVar(&full, "full", false, "with --server and --checkpoint: also download every record and rebuild the tree")
	format = addOutputFlag(verify, output.All...)
	return verify
}

// checkpointResult is a verified checkpoint.
type checkpointResult struct {
	Origin string `json:"origin"`
	Size   uint64 `json:"size"`
	Root   string `json:"root"`
	// Note is the signed checkpoint as served (what --save writes).
	Note string `json:"note"`
}

// Text is the summary.
func (r checkpointResult) Text(w io.Writer) error {
	_, err := fmt.Fprintf(w, "checkpoint verified: log %s, %d records, root %s\n", r.Origin, r.Size, r.Root)
	return err
}

// Rows is one row.
func (r checkpointResult) Rows() ([]string, [][]string) {
	return []string{"origin", "size", "root"}, [][]string{{r.Origin, strconv.FormatUint(r.Size, 10), r.Root}}
}

func newAuditCheckpointCmd() *cobra.Command {
	var flags distClientFlags
	var keyText, save string
	var sign bool
	var format *outputFormat
	cmd := &cobra.Command{
		Use:   "checkpoint",
		Short: "Fetch the decision log's latest signed checkpoint and verify it against the log's key",
		Long: `Fetch the latest signed checkpoint (a C2SP tlog-checkpoint signed note: the
log's name, its number of records and the RFC 6962 Merkle tree root) and
verify its Ed25519 signature with --log-key. --sign asks the distributor to
sign one now (POST, the audit action). --save FILE keeps the signed note: a
later audit verify --checkpoint FILE proves the log still extends it.`,
		Example: `  meshguard audit checkpoint --server https://distributor:8443 --token $AUDIT_TOKEN --log-key checkpoint.key.pub --save cp-$(date +%F).txt`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := logKey(keyText, true)
			if err != nil {
				return err
			}
			c, closer, err := flags.client(cmd.Context())
			if err != nil {
				return err
			}
			defer closer()
			var cp decisionlog.Checkpoint
			if sign {
				cp, err = c.SignCheckpoint(cmd.Context(), key)
			} else {
				cp, err = c.LatestCheckpoint(cmd.Context(), key)
			}
			if err != nil {
				return err
			}
			if save != "" {
				if err := writeOutputFile(cmd, save, cp.Signed, 0o644); err != nil {
					return err
				}
			}
			return format.printTo(summaryOut(cmd, save), checkpointResult{Origin: cp.Origin, Size: cp.Size, Root: cp.Root.String(), Note: string(cp.Signed)})
		},
	}
	flags.register(cmd, true)
	f := cmd.Flags()
	f.StringVar(&keyText, "log-key", "", logKeyHelp)
	f.StringVar(&save, "save", "", "write the signed checkpoint to this file (- for stdout)")
	f.BoolVar(&sign, "sign", false, "ask the distributor to sign a checkpoint now")
	format = addOutputFlag(cmd, output.All...)
	return cmd
}

// proofBundle is an inclusion proof with the checkpoint it is against:
// everything an auditor needs to check it offline.
type proofBundle struct {
	// Checkpoint is the signed checkpoint note.
	Checkpoint string                     `json:"checkpoint"`
	Proof      decisionlog.InclusionProof `json:"proof"`
	Verified   bool                       `json:"verified"`
}

// Text is the summary.
func (p proofBundle) Text(w io.Writer) error {
	_, err := fmt.Fprintf(w, "record %d is included in the checkpoint of %d records: leaf hash %s, audit path of %d hashes verified with tlog.CheckRecord\n",
		p.Proof.Seq, p.Proof.Size, p.Proof.LeafHash, len(p.Proof.Proof))
	return err
}

// Rows is one row.
func (p proofBundle) Rows() ([]string, [][]string) {
	return []string{"seq", "size", "leafHash", "proofHashes", "verified"},
		[][]string{{strconv.FormatUint(p.Proof.Seq, 10), strconv.FormatUint(p.Proof.Size, 10), p.Proof.LeafHash.String(),
			strconv.Itoa(len(p.Proof.Proof)), strconv.FormatBool(p.Verified)}}
}

func newAuditProveCmd() *cobra.Command {
	var flags distClientFlags
	var keyText, cpFile, proofFile string
	var format *outputFormat
	cmd := &cobra.Command{
		Use:   "prove [SEQ]",
		Short: "Prove one decision record is in a signed checkpoint (online, or offline from a saved proof)",
		Long: `Fetch the inclusion proof of record SEQ against the latest signed checkpoint
(or --checkpoint FILE, an earlier one) and verify it: the checkpoint's
signature with --log-key, the record's leaf hash SHA-256(0x00 || record)
recomputed from the record text, and the audit path with tlog.CheckRecord.

-o json prints the proof with its checkpoint and the record; an auditor checks
such a file later without the distributor: audit prove --proof FILE
--log-key KEY.`,
		Example: `  meshguard audit prove 1234 --server https://distributor:8443 --token $AUDIT_TOKEN --log-key checkpoint.key.pub -o json > proof-1234.json
  meshguard audit prove --proof proof-1234.json --log-key checkpoint.key.pub`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := logKey(keyText, true)
			if err != nil {
				return err
			}
			in := newInputs(cmd)
			var b proofBundle
			var cp decisionlog.Checkpoint
			if proofFile != "" {
				if len(args) > 0 || flags.server != "" || cpFile != "" {
					return usagef("--proof checks a saved proof offline: give no SEQ, --server or --checkpoint")
				}
				data, err := in.read("--proof", proofFile)
				if err != nil {
					return err
				}
				dec := json.NewDecoder(strings.NewReader(string(data)))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&b); err != nil {
					return usagef("--proof %s: not a proof written by audit prove -o json: %w", proofFile, err)
				}
				if cp, err = decisionlog.OpenCheckpoint([]byte(b.Checkpoint), key); err != nil {
					return fmt.Errorf("--proof %s: %w", proofFile, err)
				}
			} else {
				if len(args) != 1 || flags.server == "" {
					return usagef("give SEQ and --server (or --proof FILE to check a saved proof)")
				}
				seq, perr := strconv.ParseUint(args[0], 10, 64)
				if perr != nil || seq == 0 {
					return usagef("SEQ %q: want a record sequence number", args[0])
				}
				c, closer, err := flags.client(cmd.Context())
				if err != nil {
					return err
				}
				defer closer()
				if cpFile != "" {
					cps, _, err := readCheckpoints(in, key, []string{cpFile})
					if err != nil {
						return err
					}
					cp = cps[0]
				} else if cp, err = c.LatestCheckpoint(cmd.Context(), key); err != nil {
					return err
				}
				if seq > cp.Size {
					return usagef("record %d is not in the checkpoint, which covers records 1..%d (audit checkpoint --sign signs a newer one)", seq, cp.Size)
				}
				if b.Proof, err = c.InclusionProof(cmd.Context(), seq, cp.Size); err != nil {
					return err
				}
				if b.Proof.Seq != seq {
					return fmt.Errorf("the distributor answered a proof of record %d for %d", b.Proof.Seq, seq)
				}
				b.Checkpoint = string(cp.Signed)
			}
			if err := b.Proof.Check(cp); err != nil {
				return &decisionlog.ChainError{File: "inclusion proof", Seq: b.Proof.Seq, Problem: err.Error()}
			}
			b.Verified = true
			return format.print(cmd, b)
		},
	}
	flags.register(cmd, false)
	f := cmd.Flags()
	f.StringVar(&keyText, "log-key", "", logKeyHelp)
	f.StringVar(&cpFile, "checkpoint", "", "prove against this earlier signed checkpoint file instead of the latest")
	f.StringVar(&proofFile, "proof", "", "check a proof saved with -o json, offline")
	format = addOutputFlag(cmd, output.All...)
	return cmd
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

// parseWhen reads a --since/--until value: an RFC 3339 time, or a
// duration back from now (24h, 90m, 7d).
func parseWhen(flag, v string, now time.Time) (string, error) {
	if v == "" {
		return "", nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.Format(time.RFC3339Nano), nil
	}
	d, err := time.ParseDuration(v)
	if days, ok := strings.CutSuffix(v, "d"); ok && err != nil {
		var n uint64
		if n, err = strconv.ParseUint(days, 10, 16); err == nil {
			d = time.Duration(n) * 24 * time.Hour
		}
	}
	if err != nil || d <= 0 {
		return "", usagef("--%s %q: want an RFC 3339 time or a positive duration back from now (24h, 90m, 7d)", flag, v)
	}
	return now.Add(-d).UTC().Format(time.RFC3339Nano), nil
}

func newAuditQueryCmd() *cobra.Command {
	var qflags distClientFlags
	var since, until, subject, decision, rule, path, device, proxy, uploader string
	var revision uint64
	var limit int
	var after uint64
	var all bool
	var format *outputFormat
	query := &cobra.Command{
		Use:   "query",
		Short: "Query decision records on a distributor (NDJSON on stdout; -o yaml, table or csv)",
		Long: `Query decision records on a distributor, oldest first. Filters combine (all
must match): --decision (one of ` + strings.Join(contract.RecordDecisions, ", ") + `; anything else is an error,
not an empty answer), --rule (any entry of rule_ids; "` + decisionlog.NoRule + `" for records without
one), --path, --device, --subject, --proxy, --uploader (the identity that
posted the record), each the whole value or a prefix ending in '*', and
--revision (the bundle revision). --since and --until take an RFC 3339 time
or a duration back from now (24h, 90m, 7d).

-o json (the default) prints each record as it is stored, one JSON object a
line (NDJSON); yaml prints them as documents; table and csv print the main
fields (` + strings.Join(recordColumns, ", ") + `), one record a row (csv cells
that a spreadsheet would run as formulas start with an apostrophe).`,
		Example: `  meshguard audit query --server https://distributor:8443 --decision deny --since 24h -o table
  meshguard audit query --server http://127.0.0.1:8443 --rule meter-read --path '/api/v1/meter/*' --revision 7 --all -o csv`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			now := time.Now()
			var err error
			if since, err = parseWhen("since", since, now); err != nil {
				return err
			}
			if until, err = parseWhen("until", until, now); err != nil {
				return err
			}
			c, closer, err := qflags.client(cmd.Context())
			if err != nil {
				return err
			}
			defer closer()
			p := url.Values{}
			for k, v := range map[string]string{"since": since, "until": until, "subject": subject, "decision": decision,
				"rule": rule, "path": path, "device": device, "proxy": proxy, "uploader": uploader} {
				if v != "" {
					p.Set(k, v)
				}
			}
			if cmd.Flags().Changed("revision") {
				p.Set("revision", strconv.FormatUint(revision, 10))
			}
			p.Set("limit", strconv.Itoa(limit))
			stream := output.NewStream(cmd.OutOrStdout(), format.format(), recordColumns)
			for {
				if after > 0 {
					p.Set("after", strconv.FormatUint(after, 10))
				}
				res, err := c.QueryDecisions(cmd.Context(), p)
				if err != nil {
					var api *server.APIError
					if errors.As(err, &api) && api.Code == http.StatusBadRequest {
						return usage(err)
					}
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
	f.StringVar(&since, "since", "", "records at or after this RFC 3339 time, or this long ago (24h, 7d)")
	f.StringVar(&until, "until", "", "records at or before this RFC 3339 time, or this long ago")
	f.StringVar(&subject, "subject", "", "only this subject (SPIFFE ID; a trailing * matches a prefix)")
	enumflag.Var(f, &decision, "decision", "", "", contract.RecordDecisions, "only this decision")
	f.StringVar(&rule, "rule", "", "only records naming this rule (a trailing * matches a prefix)")
	f.StringVar(&path, "path", "", "only this request path (a trailing * matches a prefix)")
	f.StringVar(&device, "device", "", "only this device id (a trailing * matches a prefix)")
	f.StringVar(&proxy, "proxy", "", "only records from this proxy (its proxy field; a trailing * matches a prefix)")
	f.StringVar(&uploader, "uploader", "", "only records posted under this identity (received_by)")
	f.Uint64Var(&revision, "revision", 0, "only records decided under this bundle revision")
	f.IntVar(&limit, "limit", 100, "records per page (max 10000)")
	f.Uint64Var(&after, "after", 0, "only records with seq above this")
	f.BoolVar(&all, "all", false, "follow pages until the end")
	format = addOutputFlag(query, output.JSON, output.YAML, output.Table, output.CSV)
	return query
}
