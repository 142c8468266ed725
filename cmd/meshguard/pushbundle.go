package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/distributor/auth"
	"github.com/meshguard/meshguard/distributor/server"
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
		return nil, closer, &exitError{code: 2, err: err}
	}
	tok := d.token
	if tok == "" {
		tok = os.Getenv("MESHGUARD_TOKEN")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	return &server.Client{Base: d.server, Token: tok, HTTP: &http.Client{Transport: tr, Timeout: 5 * time.Minute}}, closer, nil
}

func init() {
	var flags distClientFlags
	var channel string
	cmd := &cobra.Command{
		Use:   "bundle FILE",
		Short: "Publish a signed policy bundle to a distributor channel",
		Long: `Publish a signed policy bundle to a distributor channel.

The distributor verifies the signature (and the channel's scope) and refuses a
revision that is not above the channel's latest with 409 (exit code 3); a bundle
that fails verification is refused with 422 (exit code 4).

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
			data, err := os.ReadFile(args[0])
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			c, closer, err := flags.client(cmd.Context())
			if err != nil {
				return err
			}
			defer closer()
			res, err := c.PublishBundle(cmd.Context(), channel, data)
			var apiErr *server.APIError
			if errors.As(err, &apiErr) {
				switch apiErr.Code {
				case http.StatusConflict:
					return &exitError{code: 3, err: fmt.Errorf("rejected: %w", err)}
				case http.StatusUnprocessableEntity:
					return &exitError{code: 4, err: fmt.Errorf("rejected: %w", err)}
				}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "published %s revision %d %s\n", res.Channel, res.Revision, res.Digest)
			warnExpiry(cmd.ErrOrStderr(), "bundle", res.Revision, res.Expires, time.Now())
			return nil
		},
	}
	flags.register(cmd, true)
	cmd.Flags().StringVar(&channel, "channel", "default", "channel name ([a-z0-9][a-z0-9._-]{0,62})")
	pushCmd.AddCommand(cmd)
}
