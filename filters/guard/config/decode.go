package config

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/meshguard/meshguard/internal/jsonx"
)

// decode maps a configuration document onto Config without encoding/json's
// reflection (which would add about 1 MB to the guard's module). It reads
// what encoding/json with DisallowUnknownFields read, except that member
// names must match exactly (encoding/json folds case) and jsonx's refusals
// (duplicate members, invalid UTF-8, trailing data) apply. A null member
// leaves its field at the zero value, as encoding/json does.
func decode(data []byte) (Config, error) {
	var c Config
	v, err := jsonx.Parse(data)
	if err != nil {
		return c, err
	}
	err = object(&v, "", []field{
		{"mode", str(&c.Mode)},
		{"policy", func(v *jsonx.Value) error { return c.Policy.decode(v) }},
		{"identity", func(v *jsonx.Value) error { return c.Identity.decode(v) }},
		{"audit", func(v *jsonx.Value) error { return c.Audit.decode(v) }},
		{"decisionHeader", str(&c.DecisionHeader)},
		{"paths", str(&c.Paths)},
		{"direction", str(&c.Direction)},
	})
	return c, err
}

func (p *PolicySource) decode(v *jsonx.Value) error {
	return object(v, "policy.", []field{
		{"inline", str(&p.Inline)},
		{"distributor", func(v *jsonx.Value) error {
			if v.Kind == jsonx.Null {
				return nil
			}
			p.Distributor = new(Distributor)
			d := p.Distributor
			return object(v, "policy.distributor.", []field{
				{"cluster", str(&d.Cluster)},
				{"authority", str(&d.Authority)},
				{"channel", str(&d.Channel)},
				{"bundlePath", str(&d.BundlePath)},
				{"pollInterval", duration(&d.PollInterval)},
				{"timeout", duration(&d.Timeout)},
				{"token", str(&d.Token)},
			})
		}},
		{"verifyKeys", raw(&p.VerifyKeys)},
		{"registryKeys", raw(&p.RegistryKeys)},
		{"scope", str(&p.Scope)},
		{"minRevision", func(v *jsonx.Value) error {
			if v.Kind == jsonx.Null {
				return nil
			}
			n, err := v.Uint()
			p.MinRevision = n
			return err
		}},
		{"expiryGrace", duration(&p.ExpiryGrace)},
	})
}

func (id *Identity) decode(v *jsonx.Value) error {
	return object(v, "identity.", []field{
		{"peerCertificate", boolean(&id.PeerCertificate)},
		{"jwtSvid", func(v *jsonx.Value) error {
			if v.Kind == jsonx.Null {
				return nil
			}
			id.JWTSVID = new(JWTSVID)
			j := id.JWTSVID
			return object(v, "identity.jwtSvid.", []field{
				{"headers", strs(&j.Headers)},
				{"audiences", strs(&j.Audiences)},
				{"localAudience", boolean(&j.LocalAudience)},
				{"trustDomains", rawMap(&j.TrustDomains)},
				{"cacheSize", integer(&j.CacheSize)},
			})
		}},
		{"device", func(v *jsonx.Value) error {
			if v.Kind == jsonx.Null {
				return nil
			}
			id.Device = new(Device)
			d := id.Device
			return object(v, "identity.device.", []field{
				{"header", str(&d.Header)},
				{"issuers", rawMap(&d.Issuers)},
				{"claims", func(v *jsonx.Value) error {
					c := &d.Claims
					return object(v, "identity.device.claims.", []field{
						{"id", str(&c.ID)},
						{"class", str(&c.Class)},
						{"vendor", str(&c.Vendor)},
						{"model", str(&c.Model)},
						{"firmware", str(&c.Firmware)},
					})
				}},
				{"audiences", strs(&d.Audiences)},
			})
		}},
		{"istioPeerMetadata", boolean(&id.IstioPeerMetadata)},
		{"stripHeaders", strs(&id.StripHeaders)},
		{"trustedForwarders", strs(&id.TrustedForwarders)},
		{"keepCredentialHeaders", strs(&id.KeepCredentialHeaders)},
		{"endUser", func(v *jsonx.Value) error {
			if v.Kind == jsonx.Null {
				return nil
			}
			id.EndUser = new(EndUser)
			e := id.EndUser
			return object(v, "identity.endUser.", []field{
				{"jwtAuthn", strs(&e.JWTAuthn)},
				{"pseudonymKey", str(&e.PseudonymKey)},
				{"cacheSize", integer(&e.CacheSize)},
			})
		}},
	})
}

func (a *Audit) decode(v *jsonx.Value) error {
	return object(v, "audit.", []field{
		{"logAllows", boolean(&a.LogAllows)},
		{"sink", func(v *jsonx.Value) error {
			if v.Kind == jsonx.Null {
				return nil
			}
			a.Sink = new(AuditSink)
			s := a.Sink
			return object(v, "audit.sink.", []field{
				{"cluster", str(&s.Cluster)},
				{"authority", str(&s.Authority)},
				{"path", str(&s.Path)},
				{"token", str(&s.Token)},
				{"batchSize", integer(&s.BatchSize)},
				{"bufferSize", integer(&s.BufferSize)},
				{"bufferBytes", integer(&s.BufferBytes)},
				{"flushInterval", duration(&s.FlushInterval)},
				{"timeout", duration(&s.Timeout)},
				{"maxBackoff", duration(&s.MaxBackoff)},
			})
		}},
	})
}

// field is one known member of an object and how to store it.
type field struct {
	name string
	set  func(*jsonx.Value) error
}

// object stores v's members (null stores nothing); prefix names the
// object in errors.
func object(v *jsonx.Value, prefix string, fields []field) error {
	if v.Kind == jsonx.Null {
		return nil
	}
	if v.Kind != jsonx.Object {
		return fmt.Errorf("%swant an object, got %s", orTop(prefix), v.Kind)
	}
members:
	for i := range v.Members {
		m := &v.Members[i]
		for _, f := range fields {
			if f.name == m.Name {
				if err := f.set(&m.Value); err != nil {
					return fmt.Errorf("%s%s: %w", prefix, m.Name, err)
				}
				continue members
			}
		}
		return fmt.Errorf("unknown field %q", prefix+m.Name)
	}
	return nil
}

func orTop(prefix string) string {
	if prefix == "" {
		return "configuration: "
	}
	return prefix[:len(prefix)-1] + ": "
}

func str(dst *string) func(*jsonx.Value) error {
	return func(v *jsonx.Value) error {
		switch v.Kind {
		case jsonx.Null:
			return nil
		case jsonx.String:
			*dst = v.Str
			return nil
		}
		return fmt.Errorf("want a string, got %s", v.Kind)
	}
}

func boolean(dst *bool) func(*jsonx.Value) error {
	return func(v *jsonx.Value) error {
		switch v.Kind {
		case jsonx.Null:
			return nil
		case jsonx.Bool:
			*dst = v.True
			return nil
		}
		return fmt.Errorf("want true or false, got %s", v.Kind)
	}
}

func integer(dst *int) func(*jsonx.Value) error {
	return func(v *jsonx.Value) error {
		if v.Kind == jsonx.Null {
			return nil
		}
		n, err := v.Int()
		*dst = int(n)
		return err
	}
}

func strs(dst *[]string) func(*jsonx.Value) error {
	return func(v *jsonx.Value) error {
		switch v.Kind {
		case jsonx.Null:
			return nil
		case jsonx.Array:
		default:
			return fmt.Errorf("want an array of strings, got %s", v.Kind)
		}
		l := make([]string, len(v.Items))
		for i := range v.Items {
			if err := str(&l[i])(&v.Items[i]); err != nil {
				return fmt.Errorf("[%d]: %w", i, err)
			}
		}
		*dst = l
		return nil
	}
}

// raw keeps a value's text (null included, as json.RawMessage does).
func raw(dst *json.RawMessage) func(*jsonx.Value) error {
	return func(v *jsonx.Value) error {
		*dst = append(json.RawMessage(nil), v.Raw...)
		return nil
	}
}

func rawMap(dst *map[string]json.RawMessage) func(*jsonx.Value) error {
	return func(v *jsonx.Value) error {
		switch v.Kind {
		case jsonx.Null:
			return nil
		case jsonx.Object:
		default:
			return fmt.Errorf("want an object, got %s", v.Kind)
		}
		m := make(map[string]json.RawMessage, len(v.Members))
		for i := range v.Members {
			m[v.Members[i].Name] = append(json.RawMessage(nil), v.Members[i].Value.Raw...)
		}
		*dst = m
		return nil
	}
}

func duration(dst *Duration) func(*jsonx.Value) error {
	return func(v *jsonx.Value) error {
		if v.Kind != jsonx.String {
			return fmt.Errorf("duration must be a string such as \"10s\", got %s", v.Kind)
		}
		return dst.set(v.Str)
	}
}

// set reads a "10s"-style string.
func (d *Duration) set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", s)
	}
	d.Duration = v
	return nil
}
