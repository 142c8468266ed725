package main

import (
	"fmt"
	"os"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/distributor/modules"
)

// moduleRemoteFlags are shared by push module and pull module.
type moduleRemoteFlags struct {
	insecure bool
	token    string
}

func (m *moduleRemoteFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&m.insecure, "insecure", false, "allow plain HTTP / unverified TLS to the registry (127.0.0.1 and localhost always use HTTP)")
	cmd.Flags().StringVar(&m.token, "token", "", "registry bearer token (default $MESHGUARD_TOKEN, else Docker credentials, else anonymous)")
}

func (m *moduleRemoteFlags) options() modules.RemoteOptions {
	o := modules.RemoteOptions{Insecure: m.insecure}
	tok := m.token
	if tok == "" {
		tok = os.Getenv("MESHGUARD_TOKEN")
	}
	if tok != "" {
		o.Auth = authn.FromConfig(authn.AuthConfig{RegistryToken: tok})
	}
	return o
}

func init() {
	var rf moduleRemoteFlags
	var format string
	push := &cobra.Command{
		Use:   "module FILE.wasm REGISTRY/REPO:TAG",
		Short: "Publish a Wasm module to an OCI registry in a layout Istio accepts",
		Long: `Publish a Wasm module to an OCI registry (this distributor or any other).

Formats: oci-image (default; OCI image, one tar+gzip layer holding plugin.wasm,
standard media types every registry accepts), docker (the same as a Docker
image) and oci-artifact (Wasm artifact: config layer + raw module layer).
Packaging is deterministic. Prints the manifest digest, which is the
WasmPlugin spec.sha256 for an oci:// URL.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := modules.ParseFormat(format)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			wasm, err := os.ReadFile(args[0])
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			p, err := modules.Build(wasm, f)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("%s: %w", args[0], err)}
			}
			d, err := modules.Push(cmd.Context(), p, args[1], rf.options())
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			fmt.Fprintln(cmd.OutOrStdout(), d)
			return nil
		},
	}
	push.Flags().StringVar(&format, "format", "oci-image", "layout: oci-image, docker or oci-artifact")
	rf.register(push)
	pushCmd.AddCommand(push)

	var pf moduleRemoteFlags
	var out string
	pull := &cobra.Command{
		Use:   "module REGISTRY/REPO:TAG|REGISTRY/REPO@DIGEST -o FILE.wasm",
		Short: "Fetch a Wasm module from an OCI registry (any of the three Istio layouts)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			wasm, d, err := modules.Pull(cmd.Context(), args[0], pf.options())
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			if err := os.WriteFile(out, wasm, 0o644); err != nil {
				return &exitError{code: 1, err: err}
			}
			fmt.Fprintln(cmd.OutOrStdout(), d)
			return nil
		},
	}
	pull.Flags().StringVarP(&out, "output", "o", "", "file to write the module to")
	_ = pull.MarkFlagRequired("output")
	pf.register(pull)
	pullCmd.AddCommand(pull)
}
