package main

import (
	"bufio"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// docCommands returns the meshguard command lines in a Markdown file's code
// blocks, continuation lines joined.
func docCommands(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var out []string
	inCode, cur := false, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			inCode = !inCode
			continue
		}
		if !inCode {
			continue
		}
		if cur != "" {
			cur += " " + strings.TrimSpace(strings.TrimSuffix(l, "\\"))
		} else if i := strings.Index(l, "meshguard "); i >= 0 && (i == 0 || strings.HasSuffix(l[:i], " ") || strings.HasSuffix(l[:i], "$(")) &&
			!strings.Contains(l[:i], "#") {
			cur = strings.TrimSpace(strings.TrimSuffix(l[i:], "\\"))
		} else {
			continue
		}
		if !strings.HasSuffix(l, "\\") {
			out = append(out, cur)
			cur = ""
		}
	}
	require.NoError(t, sc.Err())
	return out
}

// splitArgs splits a command line on spaces, honouring single and double
// quotes, and stops at a pipe, redirection, & or comment.
func splitArgs(line string) []string {
	var args []string
	var b strings.Builder
	quote := byte(0)
	in := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
			b.WriteByte(c)
		case c == '\'' || c == '"':
			quote, in = c, true
		case c == ' ':
			if in {
				args = append(args, b.String())
				b.Reset()
				in = false
			}
		case c == '|' || c == '>' || c == '&' || c == '#' || c == '<':
			if in {
				args = append(args, b.String())
			}
			return args
		default:
			b.WriteByte(c)
			in = true
		}
	}
	if in {
		args = append(args, b.String())
	}
	return args
}

// TestInstallGuidesUseRealFlags parses every meshguard command in the
// install guides against the CLI: the verb exists and every flag parses.
func TestInstallGuidesUseRealFlags(t *testing.T) {
	for _, doc := range []string{"../../istio/README.md", "../../kuma/README.md"} {
		cmds := docCommands(t, doc)
		require.GreaterOrEqual(t, len(cmds), 6, doc)
		for _, line := range cmds {
			args := splitArgs(line)[1:]
			c, rest, err := rootCmd.Find(args)
			require.NoError(t, err, "%s: %s", doc, line)
			assert.True(t, c != rootCmd && c.Runnable(), "%s: %s names no verb", doc, line)
			// A copy of the verb's flags with inert values: parsing checks
			// names, shorthands and arity without touching the real command.
			fs := pflag.NewFlagSet(c.Name(), pflag.ContinueOnError)
			fs.SetOutput(io.Discard)
			deprecated := map[string]bool{}
			copyFlag := func(f *pflag.Flag) {
				if fs.Lookup(f.Name) != nil {
					return
				}
				nf := fs.VarPF(inert(f.Value.Type()), f.Name, f.Shorthand, "")
				nf.NoOptDefVal = f.NoOptDefVal
				deprecated[f.Name] = f.Deprecated != ""
			}
			c.Flags().VisitAll(copyFlag)
			c.InheritedFlags().VisitAll(copyFlag)
			assert.NoError(t, fs.Parse(rest), "%s: %s", doc, line)
			fs.Visit(func(f *pflag.Flag) {
				assert.False(t, deprecated[f.Name], "%s: %s uses the deprecated --%s", doc, line, f.Name)
			})
		}
	}
}

// inert is a flag value that accepts anything and keeps nothing.
type inert string

func (v inert) String() string   { return "" }
func (v inert) Set(string) error { return nil }
func (v inert) Type() string     { return string(v) }
