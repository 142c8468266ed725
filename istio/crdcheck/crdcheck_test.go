package crdcheck

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func load(t testing.TB) *Set {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/api").Output()
	require.NoError(t, err)
	s, err := Load(filepath.Join(strings.TrimSpace(string(out)), "kubernetes", "customresourcedefinitions.gen.yaml"))
	require.NoError(t, err)
	return s
}

const good = `apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: g, namespace: n}
spec:
  url: oci://r/g:v1
  sha256: 4a5c0f9b6b3c1d2e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e
  match: [{mode: SERVER, ports: [{number: 8080}]}]
`

func TestValidateYAML(t *testing.T) {
	s := load(t)
	assert.Contains(t, s.Kinds(), "extensions.istio.io/v1alpha1, WasmPlugin")
	require.NoError(t, s.ValidateYAML([]byte(good)))
	for name, doc := range map[string]string{
		"unknown kind":     "apiVersion: x/v1\nkind: Nope\nmetadata: {name: a}\n",
		"not yaml":         "{",
		"missing url":      "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: g}\nspec: {}\n",
		"string port":      strings.Replace(good, "number: 8080", "number: '8080'", 1),
		"duplicate port":   strings.Replace(good, "[{number: 8080}]", "[{number: 8080}, {number: 8080}]", 1),
		"unknown nested":   strings.Replace(good, "mode: SERVER", "mode: SERVER, modes: x", 1),
		"bad url (CEL)":    strings.Replace(good, "oci://r/g:v1", "gopher://r/g", 1),
		"bad sha256":       strings.Replace(good, "sha256: 4a5c", "sha256: 4A5C", 1),
		"metadata no name": strings.Replace(good, "{name: g, namespace: n}", "{namespace: n}", 1),
	} {
		t.Run(name, func(t *testing.T) { assert.Error(t, s.ValidateYAML([]byte(doc))) })
	}
}

func TestLoadErrors(t *testing.T) {
	_, err := Load("/nonexistent.yaml")
	assert.Error(t, err)
}

func FuzzValidateYAML(f *testing.F) {
	s := load(f)
	f.Add([]byte(good))
	f.Add([]byte("apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nspec: {url: 1}\n"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		_ = s.ValidateYAML(doc) // must never panic
	})
}
