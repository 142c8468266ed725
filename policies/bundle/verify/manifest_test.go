package verify

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// stdManifest is how decodeManifest read the manifest with encoding/json.
func stdManifest(b []byte) (Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return m, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return m, errors.New("trailing data")
	}
	return m, nil
}

var manifestSeeds = []string{
	`{"version":1,"revision":7,"created":"2026-01-01T00:00:00Z","expires":"2026-02-01T00:00:00Z","scope":["grid",null],"kid":"k","files":{"policies/p.yaml":"` + strings.Repeat("ab", 32) + `"}}`,
	`{"version":1,"revision":-1}`,
	`{"version":1.0}`,
	`{"created":"2026-01-01"}`,
	`{"created":null,"scope":null,"files":null,"kid":null}`,
	`{"Version":1}`,
	`{"kid":"a","kid":"b"}`,
	`{"files":{"a":1}}`,
	`[]`,
	`{} x`,
}

// checkManifest: what decodeObject accepts, encoding/json reads the same;
// what encoding/json refuses, it refuses (it refuses more only for the
// strict reasons: duplicates, case-folded names, bad UTF-8, trailing data).
func checkManifest(t *testing.T, in []byte) {
	got, err := decodeOnly(in)
	want, stdErr := stdManifest(in)
	switch {
	case err == nil:
		require.NoError(t, stdErr, "accepted what encoding/json refuses: %s", in)
		require.Equal(t, want, got, "%s", in)
	case stdErr == nil:
		ok := false
		for _, s := range []string{"duplicate member", "not valid UTF-8", "unpaired surrogate", "nesting too deep", "unknown field", "trailing data"} {
			ok = ok || strings.Contains(err.Error(), s)
		}
		require.True(t, ok, "refused what encoding/json accepts: %v (%s)", err, in)
	}
}

// decodeOnly is decodeManifest's decoding without its checks.
func decodeOnly(in []byte) (Manifest, error) {
	m, err := decodeManifestFields(in)
	if err != nil {
		return Manifest{}, err
	}
	return *m, nil
}

func TestManifestMatchesEncodingJSON(t *testing.T) {
	for _, s := range manifestSeeds {
		checkManifest(t, []byte(s))
	}
	m, err := decodeManifest([]byte(manifestSeeds[0]))
	require.NoError(t, err)
	require.Equal(t, []string{"grid", ""}, m.Scope)
}

func FuzzManifestMatchesEncodingJSON(f *testing.F) {
	for _, s := range manifestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) { checkManifest(t, in) })
}
