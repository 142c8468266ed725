package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestExitCodeTableInREADME: the README's exit-code table is the one
// exitCode uses, row for row, and --help prints it.
func TestExitCodeTableInREADME(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	var rows []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "| ") && len(l) > 4 && l[2] >= '0' && l[2] <= '9' && l[3] == ' ' {
			rows = append(rows, l)
		}
	}
	var want []string
	for _, e := range exitCodes {
		want = append(want, fmt.Sprintf("| %d | %s |", e.code, e.meaning))
	}
	assert.Equal(t, want, rows, "README.md exit-code table")
	help := runCLI(t, "--help").ok(t).stdout
	for _, e := range exitCodes {
		assert.Contains(t, help, fmt.Sprintf("  %d  %s\n", e.code, e.meaning))
	}
}

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

// guides are the documents whose code blocks quote meshguard commands, and
// how many each quotes at least (so a broken extraction cannot pass).
var guides = map[string]int{
	"../../istio/README.md":                     6,
	"../../kuma/README.md":                      6,
	"../../README.md":                           0,
	"../../policies/README.md":                  0,
	"../../distributor/deploy/README.md":        0,
	"../../examples/grid/README.md":             0,
	"../../distributor/decisionlog/AUDITORS.md": 6,
}

// TestGuidesUseRealFlags parses every meshguard command in the guides'
// code blocks against the CLI: the verb exists and every flag parses.
func TestGuidesUseRealFlags(t *testing.T) {
	for doc, least := range guides {
		cmds := docCommands(t, doc)
		require.GreaterOrEqual(t, len(cmds), least, doc)
		root := newRootCmd()
		for _, line := range cmds {
			args := splitArgs(line)[1:]
			c, rest, err := root.Find(args)
			require.NoError(t, err, "%s: %s", doc, line)
			assert.True(t, c != root && c.Runnable() && c.HasSubCommands() == false, "%s: %s names no verb", doc, line)
			// A copy of the verb's flags with inert values: parsing checks
			// names, shorthands and arity without touching the real command.
			fs := pflag.NewFlagSet(c.Name(), pflag.ContinueOnError)
			fs.SetOutput(io.Discard)
			deprecated := map[string]bool{}
			copyFlag := func(f *pflag.Flag) {
				if fs.Lookup(f.Name) != nil {
					return
				}
				var v pflag.Value = inert(f.Value.Type())
				if ev, ok := f.Value.(enumValue); ok {
					v = inertEnum{inert(f.Value.Type()), ev.Values()}
				}
				nf := fs.VarPF(v, f.Name, f.Shorthand, "")
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

// inertEnum accepts the words of an enum flag (a guide's -o FILE fails).
type inertEnum struct {
	inert
	words []string
}

func (v inertEnum) Set(s string) error {
	if !slices.Contains(v.words, s) {
		return fmt.Errorf("%q is not one of %v", s, v.words)
	}
	return nil
}

// inert is a flag value that accepts anything and keeps nothing.
type inert string

func (v inert) String() string   { return "" }
func (v inert) Set(string) error { return nil }
func (v inert) Type() string     { return string(v) }
