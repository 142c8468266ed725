package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/distributor/server"
	"github.com/meshguard/meshguard/internal/output"
)

// newStatusCmd is `meshguard status`: the distributor's state from GET /v1/status.
func newStatusCmd() *cobra.Command {
	var flags distClientFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a distributor's channels, revisions, expiry, polling proxies and decision log",
		Long: `Show what a distributor serves and what its proxies enforce (GET /v1/status,
which needs the audit action):

  channels     latest revision, its signing key, created and expiry, retained revisions
  proxies      who polled which channel last (authenticated identity, the proxy id the
               guard sends, the revision it says it enforces, the revision served, when)
  decision log records, size, head (Merkle tree size and root), the latest signed
               checkpoint and how far the distributor has verified the tree

Proxies are remembered from the distributor's start, in a bounded table.
Exit code 0; 4 (tampering) when the distributor found a record that does
not match the decision log's tree; the common table otherwise (meshguard --help).`,
		Example: `  meshguard status --server https://distributor:8443 --token $AUDIT_TOKEN
  meshguard status --server http://127.0.0.1:8443 -o json | jq '.channels[].pollers'`,
		Args: cobra.NoArgs,
	}
	out := addOutputFlag(cmd, output.All...)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, closer, err := flags.client(cmd.Context())
		if err != nil {
			return err
		}
		defer closer()
		st, err := c.Status(cmd.Context())
		if err != nil {
			return err
		}
		if err := out.print(cmd, statusView{st: st, now: time.Now()}); err != nil {
			return err
		}
		if in := st.DecisionLog.Integrity; in.Problem != "" {
			return &codeError{code: exitTampered, err: fmt.Errorf("decision log NOT intact at seq %d: %s", in.BadSeq, in.Problem)}
		}
		return nil
	}
	flags.register(cmd, true)
	return cmd
}

// statusView is a status as -o prints it: the API's fields in json and
// yaml, writeStatus's tables for people.
type statusView struct {
	st  server.Status
	now time.Time
}

// MarshalJSON gives json and yaml the API's own field names.
func (v statusView) MarshalJSON() ([]byte, error) { return json.Marshal(v.st) }

// Text is the table form.
func (v statusView) Text(w io.Writer) error { return writeStatus(w, v.st, v.now) }

// Rows is the csv form: one row a channel and poller (a channel no proxy
// polled has one row with empty poller cells).
func (v statusView) Rows() ([]string, [][]string) {
	cols := []string{"channel", "revision", "signing_key", "created", "expires", "poller_identity", "proxy", "enforcing", "served", "last_seen", "polls"}
	var rows [][]string
	for _, ch := range v.st.Channels {
		head := []string{ch.Name, "", "", "", ""}
		if l := ch.Latest; l != nil {
			head = []string{ch.Name, fmt.Sprint(l.Revision), l.KeyID, statusStamp(l.Created), statusStamp(l.Expires)}
		}
		if len(ch.Pollers) == 0 {
			rows = append(rows, append(head, "", "", "", "", "", ""))
		}
		for _, p := range ch.Pollers {
			enf := ""
			if p.Enforcing != nil {
				enf = fmt.Sprint(*p.Enforcing)
			}
			rows = append(rows, append(append([]string(nil), head...), p.Identity, p.Proxy, enf, fmt.Sprint(p.Served), statusStamp(p.LastSeen), fmt.Sprint(p.Polls)))
		}
	}
	return cols, rows
}

// writeStatus prints st as tables for people. Poller identities, proxy ids
// and key ids are what callers claimed, so every cell goes through
// output.Clean (no terminal escapes or bidi tricks).
func writeStatus(w io.Writer, st server.Status, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHANNEL\tREVISION\tSIGNING KEY\tCREATED\tEXPIRES\tRETAINED")
	for _, ch := range st.Channels {
		if ch.Latest == nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\n", output.Clean(ch.Name))
			continue
		}
		l := ch.Latest
		revs := make([]string, 0, len(ch.Revisions))
		for _, r := range ch.Revisions {
			revs = append(revs, fmt.Sprint(r.Revision))
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", output.Clean(ch.Name), l.Revision, output.Clean(statusDash(l.KeyID)), statusStamp(l.Created), statusExpiry(l.Expires, ch.Expiry, now), strings.Join(revs, ","))
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "CHANNEL\tIDENTITY\tPROXY ID\tENFORCING\tSERVED\tLAST SEEN\tPOLLS")
	any := false
	for _, ch := range st.Channels {
		for _, p := range ch.Pollers {
			any = true
			enf := "-"
			if p.Enforcing != nil {
				enf = fmt.Sprint(*p.Enforcing)
				if ch.Latest != nil && *p.Enforcing != ch.Latest.Revision {
					enf += " (behind)"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s ago\t%d\n", output.Clean(ch.Name), output.Clean(p.Identity), output.Clean(statusDash(p.Proxy)), enf, p.Served,
				statusDur(now.Sub(p.LastSeen)), p.Polls)
		}
	}
	if !any {
		fmt.Fprintln(tw, "(no proxy has polled since the distributor started)")
	}
	tw.Flush()
	fmt.Fprintln(w)
	d := st.DecisionLog
	in := d.Integrity
	integrity := fmt.Sprintf("%s verified through seq %d", in.Method, in.Verified)
	switch {
	case in.Problem != "":
		integrity = fmt.Sprintf("BROKEN at seq %d: %s (verified through seq %d)", in.BadSeq, output.Clean(in.Problem), in.Verified)
	case in.Verified < d.Records:
		integrity += fmt.Sprintf(" (checking, %d to go)", d.Records-in.Verified)
	}
	fmt.Fprintln(w, "DECISION LOG")
	files := "files"
	if d.Segments == 1 {
		files = "file"
	}
	fmt.Fprintf(tw, "records\t%d (%s in %d segment %s)\n", d.Records, statusSize(d.Bytes), d.Segments, files)
	fmt.Fprintf(tw, "head\tseq %d %s\n", d.Head.Seq, d.Head.Hash)
	fmt.Fprintf(tw, "checkpoint\t%s: seq %d %s\n", d.Checkpoint.Kind, d.Checkpoint.Seq, d.Checkpoint.Hash)
	fmt.Fprintf(tw, "integrity\t%s\n", integrity)
	if c := in.Checkpoint; c != nil {
		fmt.Fprintf(tw, "\tthe tree gives the root of the signed checkpoint of %d records\n", c.Size)
	}
	fmt.Fprintf(tw, "indexed\t%d of %d records\n", d.Indexed, d.Records)
	if st.Pollers.Evicted > 0 {
		fmt.Fprintf(tw, "pollers\t%d tracked, %d dropped (table full)\n", st.Pollers.Tracked, st.Pollers.Evicted)
	}
	return tw.Flush()
}

func statusDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func statusStamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func statusExpiry(t time.Time, e *server.ExpiryStatus, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	left := t.Sub(now)
	s := fmt.Sprintf("%s (in %s)", statusStamp(t), statusDur(left))
	if left <= 0 {
		s = fmt.Sprintf("%s (%s ago)", statusStamp(t), statusDur(-left))
	}
	switch {
	case e != nil && e.Expired:
		s += " EXPIRED"
	case e != nil:
		s += " expires soon"
	}
	return s
}

func statusSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// statusDur is a duration in the two largest units: 3d4h, 5h12m, 7m, 12s.
func statusDur(d time.Duration) string {
	d = max(d, 0)
	switch {
	case d >= 24*time.Hour:
		return fmt.Sprintf("%dd%dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%dm", d/time.Hour, d%time.Hour/time.Minute)
	case d >= time.Minute:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}
