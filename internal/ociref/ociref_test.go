package ociref

import (
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const dgst = "sha256:4a5c0f9b6b3c1d2e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e"

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{"127.0.0.1:5000/meshguard/guard:v1", "127.0.0.1:5000/meshguard/guard:v1", ""},
		{"oci://127.0.0.1:5000/meshguard/guard:v1", "127.0.0.1:5000/meshguard/guard:v1", ""},
		{"oci://registry.example.com/meshguard/guard@" + dgst, "registry.example.com/meshguard/guard@" + dgst, ""},
		{"localhost/guard:v1", "localhost/guard:v1", ""},
		{"localhost:5000/guard", "localhost:5000/guard:latest", ""},
		{"docker.io/meshguard/guard:v1", "index.docker.io/meshguard/guard:v1", ""},
		{"[::1]:5000/guard:v1", "[::1]:5000/guard:v1", ""},
		// Never Docker Hub by accident.
		{"127.0.0.1:5000", "", "no repository"},
		{"oci://registry.example.com:443", "", "no repository"},
		{"registry.example.com/", "", "no repository"},
		{"guard:v1", "", "no repository"},
		{"meshguard/guard:v1", "", `"meshguard" is not a registry host`},
		{"", "", "empty"},
		{"oci://", "", "empty"},
		{"registry.example.com/Guard:v1", "", "could not parse reference"},
		{"registry.example.com/guard@sha256:abc", "", "reference"},
		{"https://registry.example.com/guard:v1", "", "must not contain a URL scheme"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Parse(tc.in)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"127.0.0.1:5000/g:v1", "oci://r.example/a/b@" + dgst, "127.0.0.1:5000", "a/b", "localhost/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := Parse(in)
		if err != nil {
			return
		}
		// Accepted: the registry is the one written (Docker Hub only when
		// named), and the result parses to itself.
		host, _, _ := strings.Cut(strings.TrimPrefix(in, Scheme), "/")
		r, err := name.ParseReference(got, name.WithDefaultRegistry(""))
		require.NoError(t, err, "%q -> %q", in, got)
		if reg := r.Context().RegistryStr(); reg != host {
			require.Contains(t, []string{"docker.io", "index.docker.io"}, host, "%q resolved to registry %q", in, reg)
		}
		again, err := Parse(got)
		require.NoError(t, err)
		require.Equal(t, got, again)
	})
}
