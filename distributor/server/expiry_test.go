package server

import (
	"bytes"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBundleExpiryMetricReadyzAndLog(t *testing.T) {
	k := newSigner(t)
	var logs bytes.Buffer
	opts := k.options()
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	cfg := testConfig(t)
	cfg.Bundles.ExpiryWarning = 48 * time.Hour
	ts := startServer(t, cfg, opts)
	expires := k.created.Add(24 * time.Hour) // what signer.bundle signs

	r := do(t, nil, "GET", ts.URL+"/readyz", nil)
	require.Equal(t, http.StatusOK, r.Code)
	assert.NotContains(t, string(r.Body), "warnings", "no bundle, nothing to expire")

	r = do(t, nil, "POST", ts.URL+"/v1/bundles/prod", k.bundle(t, 1, "prod"))
	require.Equal(t, http.StatusCreated, r.Code, string(r.Body))

	r = do(t, nil, "GET", ts.URL+"/metrics", nil)
	require.Equal(t, http.StatusOK, r.Code)
	assert.Contains(t, string(r.Body), `meshguard_distributor_bundle_expiry_timestamp_seconds{channel="prod"} `+expFloat(expires))
	assert.Contains(t, string(r.Body), `meshguard_distributor_bundle_created_timestamp_seconds{channel="prod"} `+expFloat(k.created))

	r = do(t, nil, "GET", ts.URL+"/readyz", nil)
	require.Equal(t, http.StatusOK, r.Code, "expiry warns, it does not take the distributor out of service")
	var body struct {
		Ready    bool              `json:"ready"`
		Warnings map[string]string `json:"warnings"`
	}
	r.json(t, &body)
	assert.True(t, body.Ready)
	assert.Contains(t, body.Warnings["bundle_expiry/prod"], "revision 1 expires at "+expires.Format(time.RFC3339))

	// The revision metadata carries the expiry, so a restart exports it too.
	revs, err := ts.Registry().Revisions("prod")
	require.NoError(t, err)
	assert.True(t, revs[0].Expires.Equal(expires))

	// Logged once per state: soon, then expired.
	logs.Reset()
	ts.logExpiry(time.Now())
	ts.logExpiry(time.Now())
	assert.Equal(t, 1, strings.Count(logs.String(), "policy bundle expires soon"), logs.String())
	ts.logExpiry(expires.Add(time.Second))
	ts.logExpiry(expires.Add(time.Minute))
	assert.Equal(t, 1, strings.Count(logs.String(), "policy bundle expired"), logs.String())
	assert.Contains(t, ts.expiryWarnings(expires)["prod"].text, "deny every request")

	// Outside the window: no warning.
	cfg.Bundles.ExpiryWarning = time.Hour
	ts.cfg = cfg
	assert.Empty(t, ts.expiryWarnings(time.Now()))
}

// expFloat is how the Prometheus text format prints a Unix time gauge.
func expFloat(t time.Time) string { return strconv.FormatFloat(float64(t.Unix()), 'e', -1, 64) }
