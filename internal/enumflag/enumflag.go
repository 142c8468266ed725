// Package enumflag is a command-line flag value restricted to a fixed set of
// words (an Envoy profile, a fail strategy, an output format). A wrong word
// fails when the flag is parsed, naming the words allowed, and the CLI offers
// the words as shell completions (it finds every flag whose value has
// Values).
package enumflag

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/pflag"
)

// Value holds one of a fixed set of words.
type Value struct {
	p       *string
	allowed []string
	hint    string
}

// New makes a Value storing into p, set to def (which may be "" for "not
// given", or must be one of allowed).
func New(p *string, def string, allowed ...string) *Value {
	if def != "" && !slices.Contains(allowed, def) {
		panic(fmt.Sprintf("enumflag: default %q is not one of %v", def, allowed))
	}
	*p = def
	return &Value{p: p, allowed: allowed}
}

// WithHint adds a sentence to the error for a word not allowed (say, where
// the value the user probably meant goes instead).
func (v *Value) WithHint(hint string) *Value {
	v.hint = hint
	return v
}

// Set accepts exactly one of the allowed words.
func (v *Value) Set(s string) error {
	if !slices.Contains(v.allowed, s) {
		msg := fmt.Sprintf("%q is not one of %s", s, strings.Join(v.allowed, ", "))
		if v.hint != "" {
			msg += "; " + v.hint
		}
		return fmt.Errorf("%s", msg)
	}
	*v.p = s
	return nil
}

// String is the current word.
func (v *Value) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

// Type names the allowed words in flag usage ("json|yaml|table").
func (v *Value) Type() string { return strings.Join(v.allowed, "|") }

// Values are the allowed words, for completion.
func (v *Value) Values() []string { return slices.Clone(v.allowed) }

// Var defines a flag --name (with an optional one-letter shorthand) on fs
// that takes one of allowed, default def.
func Var(fs *pflag.FlagSet, p *string, name, shorthand, def string, allowed []string, usage string) *Value {
	v := New(p, def, allowed...)
	fs.VarP(v, name, shorthand, usage)
	return v
}
