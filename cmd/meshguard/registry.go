package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/meshguard/meshguard/distributor/registry"
	"github.com/meshguard/meshguard/distributor/server"
	"github.com/meshguard/meshguard/internal/output"
)

// newRegistryCmd is the registry verb group: the distributor's registry
// of workloads and devices (/v1/registry/).
func newRegistryCmd() *cobra.Command {
	g := newGroup("registry", "Register, inspect, update and deregister workloads and devices on a distributor",
		newGroup("register", "Register a workload or a device", newRegisterCmd(registry.KindDevice), newRegisterCmd(registry.KindWorkload)),
		newRegistryGetCmd(), newRegistryListCmd(), newRegistryUpdateCmd(), newRegistryDeregisterCmd(), newRegistryAttestCmd())
	g.Long = `Register, inspect, update and deregister workloads and devices in a distributor's
registry (GET/POST/PUT/DELETE /v1/registry/, which needs the registry action).
Each caller acts for one organisation and sees and changes only its entries.

Entries are JSON or YAML files in the API's shape (GET /v1/registry/openapi.json):

  device:   {id, class, vendor, firmware: RANGE, credential: {jwk: {...}} | {x509: PEM},
             readers: [SPIFFE ID patterns], writers: [...], write_limit: {per_second, burst}, labels}
  workload: {spiffe_id, versions: {range, denied: [versions], source}, labels}

An update replaces the entry and needs the ETag its get printed (--if-match):
another change in between makes it fail with 412 (exit code 3).`
	return g
}

// registryKind parses the KIND argument.
func registryKind(s string) (registry.Kind, error) {
	switch s {
	case "device", "devices":
		return registry.KindDevice, nil
	case "workload", "workloads":
		return registry.KindWorkload, nil
	}
	return "", usagef("kind %q: want device or workload", s)
}

// registryBody reads an entry file (JSON or YAML) as JSON.
func registryBody(cmd *cobra.Command, path string) ([]byte, error) {
	b, err := newInputs(cmd).read("entry", path)
	if err != nil {
		return nil, err
	}
	j, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		return nil, usagef("entry %s: not JSON or YAML: %w", path, err)
	}
	return j, nil
}

// recordView prints registry records: the API's JSON, or a table.
type recordView []registry.Record

// MarshalJSON prints one record as itself, several as an array.
func (v recordView) MarshalJSON() ([]byte, error) {
	if len(v) == 1 {
		return json.Marshal(v[0])
	}
	return json.Marshal([]registry.Record(v))
}

// Rows is the table and csv form.
func (v recordView) Rows() ([]string, [][]string) {
	cols := []string{"kind", "id", "organisation", "etag", "updated", "summary"}
	rows := make([][]string, 0, len(v))
	for _, r := range v {
		rows = append(rows, []string{strings.TrimSuffix(string(r.Kind), "s"), output.Clean(r.ID), output.Clean(r.Organisation), r.ETag(),
			r.Updated.UTC().Format(time.RFC3339), output.Clean(summary(r))})
	}
	return cols, rows
}

// summary is what a table shows of an entry's spec.
func summary(r registry.Record) string {
	if r.Kind == registry.KindDevice {
		var d registry.Device
		if json.Unmarshal(r.Spec, &d) != nil {
			return ""
		}
		cred := "jwk"
		if d.Credential.X509 != "" {
			cred = "x509"
		}
		s := fmt.Sprintf("class=%s vendor=%s firmware=%q credential=%s writers=%d readers=%d", d.Class, d.Vendor, d.Firmware, cred, len(d.Writers), len(d.Readers))
		return s
	}
	var w registry.Workload
	if json.Unmarshal(r.Spec, &w) != nil || w.Versions == nil {
		return ""
	}
	return fmt.Sprintf("versions=%q denied=%d", w.Versions.Range, len(w.Versions.Denied))
}

func newRegisterCmd(kind registry.Kind) *cobra.Command {
	var flags distClientFlags
	name := strings.TrimSuffix(string(kind), "s")
	cmd := &cobra.Command{
		Use:   name + " FILE|-",
		Short: "Register a " + name + " from a JSON or YAML file",
		Long: `Register a ` + name + ` (POST /v1/registry/` + string(kind) + `) from a JSON or YAML file (- is stdin).
An entry that exists already is refused with 409 (exit code 3); invalid fields
are listed with 400 (exit code 2).`,
		Example: `  meshguard registry register ` + name + ` ` + name + `.yaml --server http://127.0.0.1:8443 --token $REGISTRY_TOKEN`,
		Args:    cobra.ExactArgs(1),
	}
	out := addOutputFlag(cmd, output.All...)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		body, err := registryBody(cmd, args[0])
		if err != nil {
			return err
		}
		c, closer, err := flags.client(cmd.Context())
		if err != nil {
			return err
		}
		defer closer()
		rec, err := c.RegistryCreate(cmd.Context(), kind, body)
		if err != nil {
			return registryErr(fmt.Errorf("register %s: %w", name, err))
		}
		return out.print(cmd, recordView{rec})
	}
	flags.register(cmd, true)
	return cmd
}

func newRegistryGetCmd() *cobra.Command {
	var flags distClientFlags
	cmd := &cobra.Command{
		Use:       "get device|workload ID",
		Short:     "Show a registered device or workload",
		Example:   `  meshguard registry get device inv-0001 --server http://127.0.0.1:8443 -o json`,
		Args:      cobra.ExactArgs(2),
		ValidArgs: []string{"device", "workload"},
	}
	out := addOutputFlag(cmd, output.All...)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		kind, err := registryKind(args[0])
		if err != nil {
			return err
		}
		c, closer, err := flags.client(cmd.Context())
		if err != nil {
			return err
		}
		defer closer()
		rec, err := c.RegistryGet(cmd.Context(), kind, args[1])
		if err != nil {
			return registryErr(fmt.Errorf("get %s %s: %w", args[0], args[1], err))
		}
		return out.print(cmd, recordView{rec})
	}
	flags.register(cmd, true)
	return cmd
}

func newRegistryListCmd() *cobra.Command {
	var flags distClientFlags
	var prefix, class, vendor string
	var labels []string
	var limit int
	cmd := &cobra.Command{
		Use:   "list device|workload",
		Short: "List the caller's organisation's devices or workloads",
		Long: `List the caller's organisation's devices or workloads, sorted by id, every page
(or the first --limit entries), filtered by id prefix, class, vendor and labels.`,
		Example:   `  meshguard registry list device --class inverter --label site=north --server http://127.0.0.1:8443`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"device", "workload"},
	}
	out := addOutputFlag(cmd, output.All...)
	f := cmd.Flags()
	f.StringVar(&prefix, "prefix", "", "only ids starting with this")
	f.StringVar(&class, "class", "", "only devices of this class")
	f.StringVar(&vendor, "vendor", "", "only devices of this vendor")
	f.StringArrayVar(&labels, "label", nil, "only entries with this label (key=value; repeatable, all must match)")
	f.IntVar(&limit, "limit", 0, "at most this many entries (0: all)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		kind, err := registryKind(args[0])
		if err != nil {
			return err
		}
		if limit < 0 {
			return usagef("--limit %d: want 0 (all) or more", limit)
		}
		c, closer, err := flags.client(cmd.Context())
		if err != nil {
			return err
		}
		defer closer()
		q := url.Values{}
		for k, v := range map[string]string{"prefix": prefix, "class": class, "vendor": vendor} {
			if v != "" {
				q.Set(k, v)
			}
		}
		for _, l := range labels {
			q.Add("label", l)
		}
		var all recordView
		for {
			page := registry.MaxPageSize
			if limit > 0 {
				page = min(page, limit-len(all))
			}
			q.Set("limit", strconv.Itoa(page))
			p, err := c.RegistryList(cmd.Context(), kind, q)
			if err != nil {
				return registryErr(fmt.Errorf("list %s: %w", args[0], err))
			}
			all = append(all, p.Items...)
			if p.Next == "" || (limit > 0 && len(all) >= limit) {
				break
			}
			q.Set("page_token", p.Next)
		}
		if all == nil {
			all = recordView{}
		}
		return out.print(cmd, listView{all})
	}
	flags.register(cmd, true)
	return cmd
}

// listView is a list: always an array in json and yaml.
type listView struct{ recordView }

// MarshalJSON is the array of records.
func (v listView) MarshalJSON() ([]byte, error) { return json.Marshal([]registry.Record(v.recordView)) }

func newRegistryUpdateCmd() *cobra.Command {
	var flags distClientFlags
	var ifMatch string
	cmd := &cobra.Command{
		Use:   "update device|workload ID FILE|-",
		Short: "Replace a registered device or workload (optimistic concurrency)",
		Long: `Replace a registered device or workload with the entry in FILE (JSON or YAML,
- is stdin). --if-match is the ETag get printed: if the entry changed since, the
distributor refuses with 412 (exit code 3) and nothing changes.`,
		Example:   `  meshguard registry update device inv-0001 inv-0001.yaml --if-match '"3"' --server http://127.0.0.1:8443`,
		Args:      cobra.ExactArgs(3),
		ValidArgs: []string{"device", "workload"},
	}
	out := addOutputFlag(cmd, output.All...)
	cmd.Flags().StringVar(&ifMatch, "if-match", "", `the entry's ETag as get printed ("3" or 3)`)
	_ = cmd.MarkFlagRequired("if-match")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		kind, err := registryKind(args[0])
		if err != nil {
			return err
		}
		etag, err := etagArg(ifMatch)
		if err != nil {
			return err
		}
		body, err := registryBody(cmd, args[2])
		if err != nil {
			return err
		}
		c, closer, err := flags.client(cmd.Context())
		if err != nil {
			return err
		}
		defer closer()
		rec, err := c.RegistryUpdate(cmd.Context(), kind, args[1], etag, body)
		if err != nil {
			return registryErr(fmt.Errorf("update %s %s: %w", args[0], args[1], err))
		}
		return out.print(cmd, recordView{rec})
	}
	flags.register(cmd, true)
	return cmd
}

// etagArg accepts an ETag with or without its quotes.
func etagArg(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	n, err := strconv.ParseUint(strings.Trim(s, `"`), 10, 64)
	if err != nil || n == 0 {
		return "", usagef("--if-match %q: want the ETag get printed (\"N\")", s)
	}
	return `"` + strconv.FormatUint(n, 10) + `"`, nil
}

// deregistered is what deregister prints.
type deregistered struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
}

// Rows is one row.
func (d deregistered) Rows() ([]string, [][]string) {
	return []string{"deregistered", "id"}, [][]string{{d.Kind, output.Clean(d.ID)}}
}

// Text is the summary line.
func (d deregistered) Text(w io.Writer) error {
	_, err := fmt.Fprintf(w, "deregistered %s %s\n", d.Kind, output.Clean(d.ID))
	return err
}

func newRegistryDeregisterCmd() *cobra.Command {
	var flags distClientFlags
	var ifMatch string
	cmd := &cobra.Command{
		Use:       "deregister device|workload ID",
		Short:     "Deregister a device or workload",
		Example:   `  meshguard registry deregister device inv-0001 --server http://127.0.0.1:8443`,
		Args:      cobra.ExactArgs(2),
		ValidArgs: []string{"device", "workload"},
	}
	out := addOutputFlag(cmd, output.All...)
	cmd.Flags().StringVar(&ifMatch, "if-match", "", "only if the entry's ETag is still this one")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		kind, err := registryKind(args[0])
		if err != nil {
			return err
		}
		etag, err := etagArg(ifMatch)
		if err != nil {
			return err
		}
		c, closer, err := flags.client(cmd.Context())
		if err != nil {
			return err
		}
		defer closer()
		if err := c.RegistryDelete(cmd.Context(), kind, args[1], etag); err != nil {
			return registryErr(fmt.Errorf("deregister %s %s: %w", args[0], args[1], err))
		}
		return out.print(cmd, deregistered{Kind: strings.TrimSuffix(string(kind), "s"), ID: args[1]})
	}
	flags.register(cmd, true)
	return cmd
}

// registryErr makes the registry's refusals of what was sent usage errors
// (exit 2): invalid fields (400), an update without If-Match (428), an
// entry over the size limit (413).
func registryErr(err error) error {
	var api *server.APIError
	if errors.As(err, &api) {
		switch api.Code {
		case http.StatusBadRequest, http.StatusPreconditionRequired, http.StatusRequestEntityTooLarge:
			return usage(err)
		}
	}
	return err
}

// attested is what attest prints.
type attested struct {
	Device  string    `json:"device_id"`
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// Rows is one row.
func (a attested) Rows() ([]string, [][]string) {
	return []string{"device_id", "expires", "token"}, [][]string{{output.Clean(a.Device), a.Expires.UTC().Format(time.RFC3339), a.Token}}
}

func newRegistryAttestCmd() *cobra.Command {
	var flags distClientFlags
	var keyFile, firmware string
	cmd := &cobra.Command{
		Use:   "attest DEVICE-ID",
		Short: "Attest a registered device with its private key and print the device token (for testing)",
		Long: `Do what a registered device does to get a device token: ask for a single-use
nonce (POST /v1/registry/attest/nonce), sign {device_id, nonce, firmware} as a
JWS (typ ` + registry.AttestTyp + `) with the device's private JWK (--device-key; ES256 or
Ed25519, the pair of the registered public key) and send it (POST /v1/registry/attest).
The token carries the device's id, class and vendor as registered and --firmware,
which must be in the registered approved range. Needs the attest action.`,
		Example: `  meshguard registry attest inv-0001 --device-key inv-0001.jwk --firmware 3.2.0 --server http://127.0.0.1:8443 -o json`,
		Args:    cobra.ExactArgs(1),
	}
	out := addOutputFlag(cmd, output.All...)
	cmd.Flags().StringVar(&keyFile, "device-key", "", "the device's private JWK file")
	cmd.Flags().StringVar(&firmware, "firmware", "", "the firmware version the device runs")
	_ = cmd.MarkFlagRequired("device-key")
	_ = cmd.MarkFlagRequired("firmware")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		kb, err := newInputs(cmd).read("--device-key", keyFile)
		if err != nil {
			return err
		}
		key, err := jwk.ParseKey(kb)
		if err != nil {
			return usagef("--device-key %s: %w", keyFile, err)
		}
		alg := jwa.ES256
		switch key.(type) {
		case jwk.ECDSAPrivateKey:
		case jwk.OKPPrivateKey:
			alg = jwa.EdDSA
		default:
			return usagef("--device-key %s: want the device's private EC P-256 or Ed25519 JWK", keyFile)
		}
		c, closer, err := flags.client(cmd.Context())
		if err != nil {
			return err
		}
		defer closer()
		n, err := c.AttestNonce(cmd.Context(), args[0])
		if err != nil {
			return fmt.Errorf("attest %s: nonce: %w", args[0], err)
		}
		payload, _ := json.Marshal(registry.AttestPayload{DeviceID: args[0], Nonce: n.Nonce, Firmware: firmware})
		hdr := jws.NewHeaders()
		_ = hdr.Set(jws.TypeKey, registry.AttestTyp)
		signed, err := jws.Sign(payload, jws.WithKey(alg, key, jws.WithProtectedHeaders(hdr)))
		if err != nil {
			return usagef("--device-key %s: signing: %w", keyFile, err)
		}
		tok, err := c.Attest(cmd.Context(), signed)
		if err != nil {
			return fmt.Errorf("attest %s: %w", args[0], err)
		}
		return out.print(cmd, attested{Device: args[0], Token: tok.Token, Expires: tok.Expires})
	}
	flags.register(cmd, true)
	return cmd
}
