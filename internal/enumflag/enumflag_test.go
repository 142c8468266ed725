package enumflag

import (
	"io"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestValue(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    string
		wantErr string
	}{
		{"default", nil, "table", ""},
		{"long", []string{"--output", "json"}, "json", ""},
		{"short", []string{"-o", "yaml"}, "yaml", ""},
		{"case matters", []string{"-o", "JSON"}, "", `invalid argument "JSON" for "-o, --output" flag: "JSON" is not one of table, json, yaml; files go to --output-file`},
		{"a file name is not a format", []string{"-o", "out.yaml"}, "", `"out.yaml" is not one of table, json, yaml`},
		{"empty", []string{"-o", ""}, "", `"" is not one of`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var got string
			v := Var(fs, &got, "output", "o", "table", []string{"table", "json", "yaml"}, "output format")
			v.WithHint("files go to --output-file")
			err := fs.Parse(tc.args)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, []string{"table", "json", "yaml"}, v.Values())
			assert.Equal(t, "table|json|yaml", v.Type())
		})
	}
	// An unset optional enum stays empty; a default outside the set is a bug.
	var s string
	assert.Equal(t, "", New(&s, "", "a", "b").String())
	assert.Panics(t, func() { New(&s, "c", "a", "b") })
}
