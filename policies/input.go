//go:build !wasip1

package policies

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ParseInput reads the JSON form of a request (`meshguard policy eval
// --input`) strictly, so one input has one meaning: exactly one JSON
// object; member names are exact (case-sensitive) and appear once; every
// value has its documented type; method and path are required and the path
// starts with "/"; header names are case-insensitive, so two that differ
// only in case are refused.
func ParseInput(data []byte) (*Input, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	in := &Input{}
	seen := map[string]bool{}
	err := readObject(dec, "request", func(k string) error {
		if seen[k] {
			return fmt.Errorf("member %q given twice", k)
		}
		seen[k] = true
		switch k {
		case "spiffeID":
			return readString(dec, k, &in.SPIFFEID)
		case "peerID":
			return readString(dec, k, &in.PeerID)
		case "forwarded":
			return readBool(dec, k, &in.Forwarded)
		case "trustDomain":
			return readString(dec, k, &in.TrustDomain)
		case "jti":
			return readString(dec, k, &in.JTI)
		case "claims":
			m, err := readStrings(dec, k, false)
			in.Claims = m
			return err
		case "device":
			in.Device = &InputDevice{}
			return readDevice(dec, in.Device)
		case "targetDevice":
			return readString(dec, k, &in.Target)
		case "peerVersion":
			return readString(dec, k, &in.PeerVersion)
		case "method":
			return readString(dec, k, &in.Method)
		case "path":
			return readString(dec, k, &in.Path)
		case "headers":
			m, err := readStrings(dec, k, true)
			in.Headers = m
			return err
		case "user":
			v, err := readValue(dec, 0)
			if err != nil {
				return fmt.Errorf("user: %w", err)
			}
			m, ok := v.(map[string]any)
			if !ok {
				return errors.New("user must be an object (the end-user token's claims)")
			}
			if err := CheckUserClaims(m); err != nil {
				return fmt.Errorf("user: %w", err)
			}
			in.User = m
			return nil
		case "now":
			return readNow(dec, &in.Now)
		}
		return fmt.Errorf("unknown member %q (allowed: spiffeID, peerID, forwarded, trustDomain, jti, claims, device, targetDevice, peerVersion, method, path, headers, user, now)", k)
	})
	if err := endRequest(dec, err, seen, in.Path); err != nil {
		return nil, err
	}
	return in, nil
}

// readNow reads the "now" member: an RFC 3339 instant (ParseInstant).
func readNow(dec *json.Decoder, dst *string) error {
	if err := readString(dec, "now", dst); err != nil {
		return err
	}
	if _, err := ParseInstant(*dst); err != nil {
		return fmt.Errorf("now %q: %w", *dst, err)
	}
	return nil
}

// endRequest finishes a strict request object read by readObject (err is
// readObject's): nothing may follow it, and method and a path starting
// with "/" are required.
func endRequest(dec *json.Decoder, err error, seen map[string]bool, path string) error {
	if err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON object")
	}
	switch {
	case !seen["method"]:
		return errors.New("missing member \"method\"")
	case !seen["path"]:
		return errors.New("missing member \"path\"")
	case !strings.HasPrefix(path, "/"):
		return fmt.Errorf("path %q must start with /", path)
	}
	return nil
}

// readObject reads a JSON object, calling member for each member name; the
// member function reads the value.
func readObject(dec *json.Decoder, what string, member func(string) error) error {
	t, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%s: %w", what, jsonErr(err))
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("%s must be a JSON object", what)
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%s: %w", what, jsonErr(err))
		}
		if err := member(t.(string)); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("%s: %w", what, jsonErr(err))
	}
	return nil
}

func jsonErr(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func readString(dec *json.Decoder, what string, dst *string) error {
	t, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%s: %w", what, jsonErr(err))
	}
	s, ok := t.(string)
	if !ok {
		return fmt.Errorf("%s must be a string", what)
	}
	*dst = s
	return nil
}

func readBool(dec *json.Decoder, what string, dst *bool) error {
	t, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%s: %w", what, jsonErr(err))
	}
	b, ok := t.(bool)
	if !ok {
		return fmt.Errorf("%s must be true or false", what)
	}
	*dst = b
	return nil
}

// readStrings reads an object of strings; with fold, names equal but for
// ASCII case count as the same name.
func readStrings(dec *json.Decoder, what string, fold bool) (map[string]string, error) {
	m := map[string]string{}
	seen := map[string]string{}
	err := readObject(dec, what, func(k string) error {
		key := k
		if fold {
			key = strings.ToLower(k)
		}
		if prev, dup := seen[key]; dup {
			if prev == k {
				return fmt.Errorf("%s: %q given twice", what, k)
			}
			return fmt.Errorf("%s: %q and %q differ only in case", what, prev, k)
		}
		seen[key] = k
		var v string
		if err := readString(dec, what+"."+k, &v); err != nil {
			return err
		}
		m[k] = v
		return nil
	})
	return m, err
}

func readDevice(dec *json.Decoder, d *InputDevice) error {
	seen := map[string]bool{}
	return readObject(dec, "device", func(k string) error {
		if seen[k] {
			return fmt.Errorf("device: member %q given twice", k)
		}
		seen[k] = true
		var dst *string
		switch k {
		case "id":
			dst = &d.ID
		case "class":
			dst = &d.Class
		case "vendor":
			dst = &d.Vendor
		case "model":
			dst = &d.Model
		case "firmware":
			dst = &d.Firmware
		default:
			return fmt.Errorf("device: unknown member %q (allowed: id, class, vendor, model, firmware)", k)
		}
		return readString(dec, "device."+k, dst)
	})
}

// maxValueDepth bounds the nesting of an input's user claims.
const maxValueDepth = 32

// readValue reads one JSON value, refusing duplicate object members at
// any depth (numbers stay json.Number).
func readValue(dec *json.Decoder, depth int) (any, error) {
	if depth > maxValueDepth {
		return nil, errors.New("nested too deeply")
	}
	t, err := dec.Token()
	if err != nil {
		return nil, jsonErr(err)
	}
	switch t {
	case json.Delim('{'):
		m := map[string]any{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, jsonErr(err)
			}
			k := kt.(string)
			if _, dup := m[k]; dup {
				return nil, fmt.Errorf("member %q given twice", k)
			}
			if m[k], err = readValue(dec, depth+1); err != nil {
				return nil, err
			}
		}
		_, err := dec.Token()
		return m, jsonErr(err)
	case json.Delim('['):
		l := []any{}
		for dec.More() {
			v, err := readValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
		_, err := dec.Token()
		return l, jsonErr(err)
	}
	return t, nil
}
