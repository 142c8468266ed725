package main

import (
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/distributor/modules"
	"github.com/meshguard/meshguard/internal/enumflag"
	"github.com/meshguard/meshguard/internal/ociref"
	"github.com/meshguard/meshguard/internal/output"
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

// moduleResult is what push module and pull module print; the table form
// is the manifest digest alone, which is what a WasmPlugin's sha256 pins.
type moduleResult struct {
	Reference string `json:"reference"`
	Digest    string `json:"digest"`
	Size      int    `json:"size"`
}

// Text is the digest.
func (r moduleResult) Text(w io.Writer) error {
	_, err := fmt.Fprintln(w, r.Digest)
	return err
}

// Rows is one row.
func (r moduleResult) Rows() ([]string, [][]string) {
	return []string{"reference", "digest", "size"}, [][]string{{r.Reference, r.Digest, strconv.Itoa(r.Size)}}
}

// moduleFormats are the layouts of push module --format.
var moduleFormats = []string{"oci-image", "docker", "oci-artifact"}

func newPushModuleCmd() *cobra.Command {
	var rf moduleRemoteFlags
	var layout string
	var format *outputFormat
	push := &cobra.Command{
		Use:   "module FILE.wasm|- [oci://]REGISTRY/REPO:TAG",
		Short: "Publish a Wasm module to an OCI registry in a layout Istio accepts",
		Long: `Publish a Wasm module to an OCI registry (this distributor or any other).

Formats: oci-image (default; OCI image, one tar+gzip layer holding plugin.wasm,
standard media types every registry accepts), docker (the same as a Docker
image) and oci-artifact (Wasm artifact: config layer + raw module layer).
Packaging is deterministic. Prints the manifest digest, which is the
WasmPlugin spec.sha256 for an oci:// URL.

The reference names its registry: REGISTRY/REPO:TAG, optionally oci://; a
registry without a repository (HOST:PORT) or a repository without a registry
is refused rather than sent to Docker Hub (docker.io/... names Docker Hub).`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := ociref.Parse(args[1])
			if err != nil {
				return err
			}
			wasm, err := newInputs(cmd).read("module", args[0])
			if err != nil {
				return err
			}
			f, err := modules.ParseFormat(layout)
			if err != nil {
				return usage(err)
			}
			p, err := modules.Build(wasm, f)
			if err != nil {
				return usagef("%s: %w", args[0], err)
			}
			d, err := modules.Push(cmd.Context(), p, ref, rf.options())
			if err != nil {
				return err
			}
			return format.print(cmd, moduleResult{Reference: ref, Digest: d.String(), Size: len(wasm)})
		},
	}
	enumflag.Var(push.Flags(), &layout, "format", "", "oci-image", moduleFormats, "layout")
	rf.register(push)
	format = addOutputFlag(push, output.All...)
	return push
}

// newPullCmd is the pull verb group.
func newPullCmd() *cobra.Command {
	return newGroup("pull", "Fetch filter modules", newPullModuleCmd())
}

func newPullModuleCmd() *cobra.Command {
	var pf moduleRemoteFlags
	var out string
	var format *outputFormat
	pull := &cobra.Command{
		Use:   "module [oci://]REGISTRY/REPO:TAG|[oci://]REGISTRY/REPO@DIGEST --output-file FILE.wasm|-",
		Short: "Fetch a Wasm module from an OCI registry (any of the three Istio layouts)",
		Long: `Fetch a Wasm module from an OCI registry (any of the three Istio layouts) and
write it to --output-file (- for stdout; the digest then goes to stderr).
Prints the manifest digest (-o for the reference, digest and size as data).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := ociref.Parse(args[0])
			if err != nil {
				return err
			}
			wasm, d, err := modules.Pull(cmd.Context(), ref, pf.options())
			if err != nil {
				return err
			}
			if err := writeOutputFile(cmd, out, wasm, 0o644); err != nil {
				return err
			}
			return format.printTo(summaryOut(cmd, out), moduleResult{Reference: ref, Digest: d.String(), Size: len(wasm)})
		},
	}
	pull.Flags().StringVar(&out, "output-file", "", "file to write the module to, or - for stdout")
	_ = pull.MarkFlagRequired("output-file")
	pf.register(pull)
	format = addOutputFlag(pull, output.All...)
	return pull
}
