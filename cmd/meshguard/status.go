package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/meshguard/meshguard/distributor/server"
)

func init() { rootCmd.AddCommand(newStatusCmd()) }

// statusFormats are the -o values of meshguard status.
var statusFormats = []string{"table", "json", "yaml"}

// newStatusCmd is `meshguard status`: the distributor's state from GET /v1/status.
func newStatusCmd() *cobra.Command {
	var flags distClientFlags
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a distributor's channels, revisions, expiry, polling proxies and decision log",
		Long: `Show what a distributor serves and what its proxies enforce (GET /v1/status,
which needs the audit action):

  channels     latest revision, its signing key, created and expiry, retained revisions
  proxies      who polled which channel last (authenticated identity, the proxy id the
               guard sends, the revision it says it enforces, the revision served, when)
  decision log records, size, head, last checkpoint (today the unsigned hash chain
               head) and how far the distributor has verified the chain

Proxies are remembered from the distributor's start, in a bounded table.
Exit code 0; 3 when the distributor found the decision log's chain broken;
1/2 when it could not ask.`,
		Example: `  meshguard status --server https://distributor:8443 --token $AUDIT_TOKEN
  meshguard status --server http://127.0.0.1:8443 -o json | jq '.channels[].pollers'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains(statusFormats, output) {
				return &exitError{code: 2, err: fmt.Errorf("-o %q: want one of %s", output, strings.Join(statusFormats, ", "))}
			}
			c, closer, err := flags.client(cmd.Context())
			if err != nil {
				return err
			}
			defer closer()
			st, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			if err := writeStatus(cmd.OutOrStdout(), output, st, time.Now()); err != nil {
				return err
			}
			if in := st.DecisionLog.Integrity; in.Problem != "" {
				return &exitError{code: 3, err: fmt.Errorf("decision log NOT intact at seq %d: %s", in.BadSeq, in.Problem)}
			}
			return nil
		},
	}
	flags.register(cmd, true)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: "+strings.Join(statusFormats, ", "))
	_ = cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return statusFormats, cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

// writeStatus prints st as a table (for people) or as JSON or YAML (the
// API's field names, for scripts).
func writeStatus(w io.Writer, format string, st server.Status, now time.Time) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	case "yaml":
		b, err := json.Marshal(st)
		if err != nil {
			return err
		}
		y, err := yaml.JSONToYAML(b)
		if err != nil {
			return err
		}
		_, err = w.Write(y)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHANNEL\tREVISION\tSIGNING KEY\tCREATED\tEXPIRES\tRETAINED")
	for _, ch := range st.Channels {
		if ch.Latest == nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\n", ch.Name)
			continue
		}
		l := ch.Latest
		revs := make([]string, 0, len(ch.Revisions))
		for _, r := range ch.Revisions {
			revs = append(revs, fmt.Sprint(r.Revision))
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", ch.Name, l.Revision, statusDash(l.KeyID), statusStamp(l.Created), statusExpiry(l.Expires, ch.Expiry, now), strings.Join(revs, ","))
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
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s ago\t%d\n", ch.Name, p.Identity, statusDash(p.Proxy), enf, p.Served,
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
		integrity = fmt.Sprintf("BROKEN at seq %d: %s (verified through seq %d)", in.BadSeq, in.Problem, in.Verified)
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
