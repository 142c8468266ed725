package server

import (
	"errors"
	"fmt"
	"net/http"
	"path/filepath"

	"github.com/meshguard/meshguard/distributor/auth"
	"github.com/meshguard/meshguard/distributor/registry"
)

// registryOrg is an organisation and the allowlist of its members.
type registryOrg struct {
	name    string
	members *auth.Policy
}

// openRegistry opens the registry store under <data>/registry and the
// organisations' member lists.
func (s *Server) openRegistry(tokens map[string]string) error {
	st, err := registry.OpenFS(filepath.Join(s.cfg.Data, "registry"))
	if err != nil {
		return err
	}
	for _, o := range s.cfg.Registry.Organisations {
		p, err := auth.NewPolicy(map[auth.Action][]string{auth.ActionRegistry: o.Members}, tokens)
		if err != nil {
			return fmt.Errorf("config: registry organisation %s members: %w", o.Name, err)
		}
		s.regOrgs = append(s.regOrgs, registryOrg{name: o.Name, members: p})
	}
	s.registry, err = registry.New(st, registry.Options{Organisations: s.cfg.Registry.Organisations, OnChange: s.registryChanged})
	return err
}

// registryCaller is the organisation a registry request acts for: the one
// whose members include the caller. A caller in several is refused, so
// no configuration mistake lets one act across organisations silently.
func (s *Server) registryCaller(r *http.Request) (registry.Caller, error) {
	id := identityOf(r)
	var found []string
	for _, o := range s.regOrgs {
		if o.members.Allowed(auth.ActionRegistry, id) {
			found = append(found, o.name)
		}
	}
	switch len(found) {
	case 0:
		return registry.Caller{}, fmt.Errorf("%s is a member of no registry organisation", id)
	case 1:
		return registry.Caller{Org: found[0], Who: id.Principal()}, nil
	}
	return registry.Caller{}, errors.New(id.String() + " is a member of several registry organisations " + fmt.Sprint(found) + ": fix registry.organisations")
}

// registryChanged is the registry's change hook.
func (s *Server) registryChanged(ch registry.Change) {
	s.log.Info("registry change", "op", ch.Op, "kind", ch.Kind, "id", ch.ID, "organisation", ch.Org, "by", ch.Who)
}

func (s *Server) registryRoutes() {
	max := int64(s.cfg.Registry.MaxEntryBytes)
	if max == 0 {
		max = 64 << 10
	}
	h := registry.Handler(s.registry, registry.HandlerOptions{Caller: s.registryCaller, MaxBody: max, Logger: s.log})
	s.handle(registry.Path+"/", "registry", fixed(auth.ActionRegistry), max, h.ServeHTTP)
}
