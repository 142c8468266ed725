package main

import (
	"fmt"

	"github.com/spf13/pflag"
)

// Key flags follow one scheme across verbs:
//
//	--signing-key FILE   the private JWK that signs bundles (policy bundle)
//	--verify-keys FILE   the public JWK Set that verifies them (serve, policy verify/eval, render)
//	--tls-cert/--tls-key/--tls-ca   TLS client certificate, key and CA (distributor clients)
//
// aliasFlag keeps an older name working (hidden, with a deprecation notice)
// by binding it to the same value as the new one.
func aliasFlag(f *pflag.FlagSet, name, old string) {
	fl := f.Lookup(name)
	if fl == nil {
		panic("aliasFlag: no flag --" + name)
	}
	f.Var(fl.Value, old, fl.Usage)
	_ = f.MarkDeprecated(old, fmt.Sprintf("use --%s", name))
}
