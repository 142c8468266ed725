package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stdDecode is how Parse decoded before it had its own decoder.
func stdDecode(data []byte) (Config, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return c, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return c, errors.New("trailing data")
	}
	return c, nil
}

// The refusals decode adds to encoding/json's: jsonx's, and member names
// that match a field only when case is folded.
var stricter = []string{"duplicate member", "not valid UTF-8", "unpaired surrogate", "nesting too deep", "unknown field", "trailing data"}

var decodeSeeds = []string{
	`{"policy":{"inline":"AA==","verifyKeys":` + keys + `},"identity":{"peerCertificate":true}}`,
	`{"mode":"dry-run","decisionHeader":"x","paths":"normalize","direction":"outbound","policy":{"distributor":{"cluster":"d","authority":"a","channel":"c","bundlePath":"/b/","pollInterval":"1s","timeout":"2s","token":"t"},"verifyKeys":null,"scope":"s","minRevision":18446744073709551615,"expiryGrace":"1h"},"identity":{"peerCertificate":false,"jwtSvid":{"headers":["a",null],"audiences":[],"localAudience":true,"trustDomains":{"t":null,"u":{"keys":[]}},"cacheSize":-3},"device":{"header":"h","issuers":{},"claims":{"id":"i","class":"c","vendor":"v","model":"m","firmware":"f"},"audiences":null},"istioPeerMetadata":true,"stripHeaders":["X"],"trustedForwarders":["spiffe://a/b"],"keepCredentialHeaders":[],"endUser":{"jwtAuthn":["k"],"pseudonymKey":"AA==","cacheSize":5}},"audit":{"logAllows":true,"sink":{"cluster":"c","authority":"a","path":"/p","token":"t","batchSize":1,"bufferSize":2,"bufferBytes":3,"flushInterval":"1m","timeout":"1µs","maxBackoff":"0s"}}}`,
	`{"policy":{"minRevision":-1}}`,
	`{"policy":{"minRevision":1.0}}`,
	`{"audit":{"sink":{"batchSize":1e2}}}`,
	`{"policy":{"distributor":null,"expiryGrace":null}}`,
	`{"identity":{"jwtSvid":null,"device":null,"endUser":null},"audit":{"sink":null},"mode":null}`,
	`{"MODE":"x"}`,
	`{"mode":"a","mode":"b"}`,
	`{"identity":{"stripHeaders":"x"}}`,
	`{"policy":[]}`,
	`[]`,
	`null`,
	`{} {}`,
	`{"policy":{"verifyKeys":  {"a" : 1}  }}`,
	`{"audit":{"sink":{"timeout":5}}}`,
}

func TestDecodeMatchesEncodingJSON(t *testing.T) {
	for _, in := range decodeSeeds {
		checkDecode(t, []byte(in))
	}
	// And the seeds do reach both outcomes.
	_, err := decode([]byte(decodeSeeds[1]))
	require.NoError(t, err)
	_, err = decode([]byte(`{"MODE":"x"}`))
	assert.ErrorContains(t, err, `unknown field "MODE"`)
	_, err = decode([]byte(`{"identity":{"jwtSvid":{"cacheSize":"5"}}}`))
	assert.ErrorContains(t, err, "identity.jwtSvid.cacheSize: want a number, got string")
}

func checkDecode(t *testing.T, in []byte) {
	got, err := decode(in)
	want, stdErr := stdDecode(in)
	switch {
	case err == nil:
		require.NoError(t, stdErr, "decode accepted what encoding/json refuses: %s", in)
		require.Equal(t, want, got, "%s", in)
	case stdErr == nil:
		ok := false
		for _, s := range stricter {
			ok = ok || strings.Contains(err.Error(), s)
		}
		require.True(t, ok, "decode refused what encoding/json accepts: %v (%s)", err, in)
	}
}

// FuzzDecodeMatchesEncodingJSON: whatever decode accepts, encoding/json
// (DisallowUnknownFields) decodes to the same Config; whatever it refuses,
// decode refuses; decode refuses more only for the stricter reasons.
func FuzzDecodeMatchesEncodingJSON(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) { checkDecode(t, in) })
}
