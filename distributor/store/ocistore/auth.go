package ocistore

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
)

// Credentials are registry credentials given directly or in files. Files
// are read on every use, so a rotated secret (a re-mounted Kubernetes
// Secret, a refreshed cloud token) takes effect without a restart.
type Credentials struct {
	// Username with Password or PasswordFile is sent as Basic
	// credentials, or exchanged for a bearer token when the registry asks.
	Username     string
	Password     string
	PasswordFile string
	// TokenFile holds a registry bearer token, sent as is.
	TokenFile string
}

// Empty reports whether no credential is set.
func (c Credentials) Empty() bool { return c == Credentials{} }

// Validate rejects incomplete or conflicting combinations.
func (c Credentials) Validate() error {
	switch {
	case c.TokenFile != "" && (c.Username != "" || c.Password != "" || c.PasswordFile != ""):
		return errors.New("token_file excludes username, password and password_file")
	case c.Password != "" && c.PasswordFile != "":
		return errors.New("set password or password_file, not both")
	case c.Username != "" && c.Password == "" && c.PasswordFile == "":
		return errors.New("username needs password or password_file")
	case c.Username == "" && (c.Password != "" || c.PasswordFile != ""):
		return errors.New("password and password_file need a username")
	}
	return nil
}

// Authenticator returns the credentials as an authn.Authenticator, or nil
// when they are empty (the Store then asks its keychain).
func (c Credentials) Authenticator() (authn.Authenticator, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("ocistore: credentials: %w", err)
	}
	if c.Empty() {
		return nil, nil
	}
	a := fileAuth(c)
	// Fail at start-up rather than at the first request.
	if _, err := a.Authorization(); err != nil {
		return nil, err
	}
	return a, nil
}

// fileAuth implements authn.Authenticator over Credentials.
type fileAuth Credentials

func (a fileAuth) Authorization() (*authn.AuthConfig, error) {
	read := func(key, path string) (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("ocistore: %s: %w", key, err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("ocistore: %s %s is empty", key, path)
		}
		return v, nil
	}
	if a.TokenFile != "" {
		tok, err := read("token_file", a.TokenFile)
		if err != nil {
			return nil, err
		}
		return &authn.AuthConfig{RegistryToken: tok}, nil
	}
	pw := a.Password
	if a.PasswordFile != "" {
		var err error
		if pw, err = read("password_file", a.PasswordFile); err != nil {
			return nil, err
		}
	}
	return &authn.AuthConfig{Username: a.Username, Password: pw}, nil
}
