package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/distributor/auth"
	"github.com/meshguard/meshguard/distributor/server"
	"github.com/meshguard/meshguard/internal/output"
)

// distClientFlags are the flags every distributor client verb shares.
type distClientFlags struct {
	server, token string
	tls           auth.ClientOptions
}

func (d *distClientFlags) register(cmd *cobra.Command, serverRequired bool) {
	f := cmd.Flags()
	f.StringVar(&d.server, "server", "", "distributor URL, e.g. https://distributor:8443")
	f.StringVar(&d.token, "token", "", "bearer token (default $MESHGUARD_TOKEN)")
	f.StringVar(&d.tls.CA, "tls-ca", "", "CA / SPIFFE trust bundle PEM file")
	f.StringVar(&d.tls.Cert, "tls-cert", "", "client certificate (X509-SVID) PEM file")
	f.StringVar(&d.tls.Key, "tls-key", "", "client TLS key PEM file")
	aliasFlag(f, "tls-ca", "ca")
	aliasFlag(f, "tls-cert", "cert")
	aliasFlag(f, "tls-key", "key")
	f.StringVar(&d.tls.WorkloadSocket, "spiffe-socket", "", "SPIFFE Workload API address (unix:///...) for the client SVID and bundle")
	f.StringVar(&d.tls.ServerID, "server-id", "", "expected SPIFFE ID of the distributor (default: any ID of the trust domain)")
	f.StringVar(&d.tls.TrustDomain, "trust-domain", "", "trust domain of --tls-ca when no client SVID names it")
	f.BoolVar(&d.tls.Insecure, "insecure-skip-verify", false, "do not verify the server certificate (testing only)")
	if serverRequired {
		_ = cmd.MarkFlagRequired("server")
	}
}

func (d *distClientFlags) client(ctx context.Context) (*server.Client, func() error, error) {
	tc, closer, err := auth.ClientTLSConfig(ctx, d.tls)
	if err != nil {
		return nil, closer, usage(err)
	}
	tok := d.token
	if tok == "" {
		tok = os.Getenv("MESHGUARD_TOKEN")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	return &server.Client{Base: d.server, Token: tok, HTTP: &http.Client{Transport: tr, Timeout: 5 * time.Minute}}, closer, nil
}

// newPushCmd is the push verb group.
func newPushCmd() *cobra.Command {
	return newGroup("push", "Publish filter modules and policy bundles", newPushBundleCmd(), newPushModuleCmd())
}

// publishResult is what push bundle prints.
type publishResult struct {
	Channel  string    `json:"channel"`
	Revision uint64    `json:"revision"`
	Digest   string    `json:"digest"`
	Expires  time.Time `json:"expires"`
}

// Text is the summary line.
func (r publishResult) Text(w io.Writer) error {
	_, err := fmt.Fprintf(w, "published %s revision %d %s\n", output.Clean(r.Channel), r.Revision, r.Digest)
	return err
}

// Rows is one row.
func (r publishResult) Rows() ([]string, [][]string) {
	return []string{"channel", "revision", "digest", "expires"},
		[][]string{{r.Channel, strconv.FormatUint(r.Revision, 10), r.Digest, r.Expires.UTC().Format(time.RFC3339)}}
}

func newPushBundleCmd() *cobra.Command {
	var flags distClientFlags
	var channel string
	var format *outputFormat
	cmd := &cobra.Command{
		Use:   "bundle FILE|-",
		Short: "Publish a signed policy bundle to a distributor channel",
		Long: `Publish a signed policy bundle to a distributor channel (- reads it from stdin).

The distributor verifies the signature (and the channel's scope) and refuses a
revision that is not above the channel's latest with 409 (exit code 3); a bundle
that fails verification is refused with 422 (exit code 1).

Rolling back: the distributor never serves a lower revision as latest. To return
to an older policy, fetch it (GET /v1/bundles/CHANNEL/revisions/N), rebuild and
re-sign the same files with a new revision above the latest, and push that.

Expiry: a bundle is valid until the expiry signed into it (policy bundle
--expires, default 30 days); proxies fail closed after it. The distributor
refuses an expired bundle (422), and this command warns when the published one
expires within 7 days.`,
		Example: `  meshguard push bundle policy.bundle --server https://distributor:8443 --channel prod \
      --tls-ca bundle.pem --tls-cert ci.pem --tls-key ci.key
  MESHGUARD_TOKEN=... meshguard push bundle policy.bundle --server http://127.0.0.1:8443`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := newInputs(cmd).read("bundle", args[0])
			if err != nil {
				return err
			}
			c, closer, err := flags.client(cmd.Context())
			if err != nil {
				return err
			}
			defer closer()
			res, err := c.PublishBundle(cmd.Context(), channel, data)
			if err != nil {
				return fmt.Errorf("publish to channel %q: %w", channel, err)
			}
			if err := format.print(cmd, publishResult{Channel: res.Channel, Revision: res.Revision, Digest: res.Digest, Expires: res.Expires}); err != nil {
				return err
			}
			warnExpiry(cmd.ErrOrStderr(), "bundle", res.Revision, res.Expires, time.Now())
			return nil
		},
	}
	flags.register(cmd, true)
	cmd.Flags().StringVar(&channel, "channel", "default", "channel name ([a-z0-9][a-z0-9._-]{0,62})")
	format = addOutputFlag(cmd, output.All...)
	return cmd
}
