package config

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const keys = `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`

func TestParse(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		wantErr string
		check   func(t *testing.T, c *Config)
	}{
		{name: "empty", in: "  ", wantErr: "empty configuration"},
		{name: "not JSON", in: "{", wantErr: "guard config"},
		{name: "unknown field", in: `{"policy":{"inline":"AA==","verifyKeys":` + keys + `},"identity":{"peerCertificate":true},"bogus":1}`, wantErr: "unknown field"},
		{name: "trailing data", in: `{"policy":{"inline":"AA==","verifyKeys":` + keys + `},"identity":{"peerCertificate":true}} {}`, wantErr: "trailing data"},
		{name: "no policy source", in: `{"policy":{"verifyKeys":` + keys + `},"identity":{"peerCertificate":true}}`, wantErr: "set inline, distributor"},
		{name: "no verify keys", in: `{"policy":{"inline":"AA=="},"identity":{"peerCertificate":true}}`, wantErr: "verifyKeys"},
		{name: "bad base64", in: `{"policy":{"inline":"!!","verifyKeys":` + keys + `},"identity":{"peerCertificate":true}}`, wantErr: "base64"},
		{name: "no identity", in: `{"policy":{"inline":"AA==","verifyKeys":` + keys + `},"identity":{}}`, wantErr: "enable at least one"},
		{name: "bad direction", in: `{"direction":"egress","policy":{"inline":"AA==","verifyKeys":` + keys + `},"identity":{"peerCertificate":true}}`, wantErr: `direction: "egress"`},
		{name: "outbound with a caller identity", in: `{"direction":"outbound","policy":{"inline":"AA==","verifyKeys":` + keys + `},"identity":{"peerCertificate":true}}`, wantErr: "leave identity empty"},
		{name: "outbound", in: `{"direction":"outbound","policy":{"inline":"AA==","verifyKeys":` + keys + `},"identity":{"stripHeaders":["X-A"]}}`,
			check: func(t *testing.T, c *Config) {
				assert.True(t, c.Outbound())
				assert.Equal(t, []string{"x-a"}, c.Identity.StripHeaders)
			}},
		{name: "inbound by default", in: `{"policy":{"inline":"AA==","verifyKeys":` + keys + `},"identity":{"peerCertificate":true}}`,
			check: func(t *testing.T, c *Config) {
				assert.Empty(t, c.Direction, "empty is inbound")
				assert.False(t, c.Outbound())
			}},
		{name: "bad mode", in: `{"mode":"audit","policy":{"inline":"AA==","verifyKeys":` + keys + `},"identity":{"peerCertificate":true}}`, wantErr: "mode"},
		{name: "jwt without audience", in: `{"policy":{"inline":"AA==","verifyKeys":` + keys + `},"identity":{"jwtSvid":{"trustDomains":{"grid.example":null}}}}`, wantErr: "audience is required"},
		{name: "jwt empty audience", in: `{"policy":{"inline":"AA==","verifyKeys":` + keys + `},"identity":{"jwtSvid":{"audiences":[""],"trustDomains":{"grid.example":null}}}}`, wantErr: "empty audience"},
		{name: "bad trust domain", in: `{"policy":{"inline":"AA==","verifyKeys":` + keys + `},"identity":{"jwtSvid":{"audiences":["a"],"trustDomains":{"Grid/x":null}}}}`, wantErr: "not a trust domain"},
		{name: "poll too fast", in: `{"policy":{"distributor":{"cluster":"d","channel":"c","pollInterval":"10ms"},"verifyKeys":` + keys + `},"identity":{"peerCertificate":true}}`, wantErr: "below 1s"},
		{name: "negative duration", in: `{"policy":{"distributor":{"cluster":"d","channel":"c","pollInterval":"-1s"},"verifyKeys":` + keys + `},"identity":{"peerCertificate":true}}`, wantErr: "negative"},
		{name: "bad channel", in: `{"policy":{"distributor":{"cluster":"d","channel":"a/b"},"verifyKeys":` + keys + `},"identity":{"peerCertificate":true}}`, wantErr: "channel"},
		{name: "audit buffer too small", in: `{"policy":{"inline":"AA==","verifyKeys":` + keys + `},"identity":{"peerCertificate":true},"audit":{"sink":{"cluster":"d","bufferBytes":1024}}}`, wantErr: "bufferBytes: 1024 must be between"},
		{name: "audit buffer too large", in: `{"policy":{"inline":"AA==","verifyKeys":` + keys + `},"identity":{"peerCertificate":true},"audit":{"sink":{"cluster":"d","bufferBytes":2147483648}}}`, wantErr: "bufferBytes"},
		{name: "audit buffer negative", in: `{"policy":{"inline":"AA==","verifyKeys":` + keys + `},"identity":{"peerCertificate":true},"audit":{"sink":{"cluster":"d","bufferBytes":-5}}}`, wantErr: "bufferBytes"},
		{name: "audit backoff too short", in: `{"policy":{"inline":"AA==","verifyKeys":` + keys + `},"identity":{"peerCertificate":true},"audit":{"sink":{"cluster":"d","maxBackoff":"100ms"}}}`, wantErr: "maxBackoff"},
		{name: "audit negative flush", in: `{"policy":{"inline":"AA==","verifyKeys":` + keys + `},"identity":{"peerCertificate":true},"audit":{"sink":{"cluster":"d","flushInterval":"-1s"}}}`, wantErr: "negative"},
		{name: "defaults", in: `{"policy":{"inline":"AA==","distributor":{"cluster":"dist","channel":"grid"},"verifyKeys":` + keys + `},
			"identity":{"jwtSvid":{"audiences":["a"],"trustDomains":{"grid.example":null}},"device":{"issuers":{"i":{}},"audiences":["a"]},"stripHeaders":["X-Spoof"]},
			"audit":{"sink":{"cluster":"dist"}}}`,
			check: func(t *testing.T, c *Config) {
				assert.Equal(t, ModeEnforce, c.Mode)
				assert.Equal(t, DefaultDecisionHeader, c.DecisionHeader)
				assert.Equal(t, "dist", c.Policy.Distributor.Authority)
				assert.Equal(t, DefaultPollInterval, c.Policy.Distributor.PollInterval.Duration)
				assert.Equal(t, []string{DefaultJWTHeader, DefaultJWTSVIDHeader}, c.Identity.JWTSVID.Headers)
				assert.Equal(t, DefaultTokenCacheSize, c.Identity.JWTSVID.CacheSize)
				assert.Equal(t, DeviceClaims{ID: "ueid", Class: "hwmodel", Vendor: "oemid", Model: "hwversion", Firmware: "swversion"}, c.Identity.Device.Claims)
				assert.Equal(t, []string{"x-spoof"}, c.Identity.StripHeaders)
				assert.Equal(t, DefaultDecisionPath, c.Audit.Sink.Path)
				assert.Equal(t, 2*time.Second, c.Audit.Sink.FlushInterval.Duration)
				assert.Equal(t, DefaultAuditBufferBytes, c.Audit.Sink.BufferBytes)
				assert.Equal(t, DefaultAuditMaxBackoff, c.Audit.Sink.MaxBackoff.Duration)
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.in))
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				assert.Nil(t, c)
				return
			}
			require.NoError(t, err)
			tc.check(t, c)
		})
	}
}

func TestParseReportsAllProblems(t *testing.T) {
	_, err := Parse([]byte(`{"mode":"x","policy":{},"identity":{}}`))
	require.Error(t, err)
	for _, want := range []string{"mode", "policy:", "verifyKeys", "identity"} {
		assert.Contains(t, err.Error(), want)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(`{"policy":{"inline":"AA==","verifyKeys":` + keys + `},"identity":{"peerCertificate":true}}`)
	f.Add(`{"policy":{"distributor":{"cluster":"d","channel":"c","pollInterval":"1s"},"verifyKeys":{}},"identity":{"jwtSvid":{"audiences":["a"],"trustDomains":{"t":null}}},"audit":{"sink":{"cluster":"c","batchSize":5,"bufferSize":1}}}`)
	f.Add(`null`)
	f.Fuzz(func(t *testing.T, in string) {
		c, err := Parse([]byte(in))
		if err != nil {
			require.Nil(t, c)
			return
		}
		// A parsed configuration is valid and stable under re-validation.
		require.NoError(t, c.Validate())
		require.Contains(t, []string{ModeEnforce, ModeDryRun}, c.Mode)
		if c.Identity.JWTSVID != nil {
			require.NotEmpty(t, c.Identity.JWTSVID.Audiences)
			for _, a := range c.Identity.JWTSVID.Audiences {
				require.NotEmpty(t, strings.TrimSpace(a))
			}
		}
	})
}

func TestExpiryGraceBounds(t *testing.T) {
	for grace, ok := range map[string]bool{"0s": true, "24h": true, "168h": true, "169h": false, "-1s": false} {
		_, err := Parse([]byte(`{"policy":{"inline":"AA==","verifyKeys":` + keys + `,"expiryGrace":"` + grace + `"},"identity":{"peerCertificate":true}}`))
		if ok {
			assert.NoError(t, err, grace)
		} else {
			assert.Error(t, err, grace) // negative durations fail to parse at all
		}
	}
	_, err := Parse([]byte(`{"policy":{"inline":"AA==","verifyKeys":` + keys + `,"expiryGrace":"200h"},"identity":{"peerCertificate":true}}`))
	assert.ErrorContains(t, err, "policy.expiryGrace: 200h0m0s is outside 0..168h0m0s")
}
