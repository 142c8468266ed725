package envoy

import (
	"fmt"

	xdscorev3 "github.com/cncf/xds/go/xds/core/v3"
	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	sslinputsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/matching/common_inputs/ssl/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Names of the one-URI-SAN filter.
const (
	// RBACFilterName is Envoy's HTTP RBAC filter.
	RBACFilterName = "envoy.filters.http.rbac"
	// OneURISANPolicy names the RBAC policy (Envoy reports a refusal as
	// rbac_access_denied_matched_policy[meshguard-one-uri-san]).
	OneURISANPolicy = "meshguard-one-uri-san"
	uriSANInput     = "envoy.matching.inputs.uri_san"
	rbacAction      = "envoy.filters.rbac.action"
)

// OneURISANFilter is the envoy.filters.http.rbac filter placed before the
// guard: it refuses (403) a request whose peer certificate carries more than
// one URI SAN. Envoy hands a filter only the first URI SAN
// (connection.uri_san_peer_certificate), and neither its default nor its
// SPIFFE certificate validator counts them (the SPIFFE validator picks the
// trust bundle by the first URI SAN and stops there), so the guard alone
// could not refuse a certificate that is no X509-SVID (exactly one URI SAN).
// The uri_san matching input joins every URI SAN with ","; a valid SPIFFE ID
// contains no comma, so a comma means two or more. Peers without a
// certificate, or without URI SANs, are left to the guard.
func OneURISANFilter() (*hcmv3.HttpFilter, error) {
	input, err := anypb.New(&sslinputsv3.UriSanInput{})
	if err != nil {
		return nil, fmt.Errorf("envoy: %w", err)
	}
	action := func(name string, a rbacv3.RBAC_Action) (*xdscorev3.TypedExtensionConfig, error) {
		tc, err := anypb.New(&rbacv3.Action{Name: name, Action: a})
		if err != nil {
			return nil, fmt.Errorf("envoy: %w", err)
		}
		return &xdscorev3.TypedExtensionConfig{Name: rbacAction, TypedConfig: tc}, nil
	}
	deny, err := action(OneURISANPolicy, rbacv3.RBAC_DENY)
	if err != nil {
		return nil, err
	}
	allow, err := action("meshguard-allow", rbacv3.RBAC_ALLOW)
	if err != nil {
		return nil, err
	}
	m := &xdsmatcherv3.Matcher{
		MatcherType: &xdsmatcherv3.Matcher_MatcherList_{MatcherList: &xdsmatcherv3.Matcher_MatcherList{
			Matchers: []*xdsmatcherv3.Matcher_MatcherList_FieldMatcher{{
				Predicate: &xdsmatcherv3.Matcher_MatcherList_Predicate{
					MatchType: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate_{SinglePredicate: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate{
						Input: &xdscorev3.TypedExtensionConfig{Name: uriSANInput, TypedConfig: input},
						Matcher: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate_ValueMatch{ValueMatch: &xdsmatcherv3.StringMatcher{
							MatchPattern: &xdsmatcherv3.StringMatcher_Contains{Contains: ","},
						}},
					}},
				},
				OnMatch: &xdsmatcherv3.Matcher_OnMatch{OnMatch: &xdsmatcherv3.Matcher_OnMatch_Action{Action: deny}},
			}},
		}},
		// Without a match the RBAC matcher denies: everything else is the
		// guard's to decide.
		OnNoMatch: &xdsmatcherv3.Matcher_OnMatch{OnMatch: &xdsmatcherv3.Matcher_OnMatch_Action{Action: allow}},
	}
	rbac := &rbacfilterv3.RBAC{Matcher: m}
	if err := rbac.ValidateAll(); err != nil {
		return nil, fmt.Errorf("envoy: rbac filter: %w", err)
	}
	return typedFilter(RBACFilterName, rbac)
}

// typedFilter wraps a filter config in a validated HttpFilter.
func typedFilter(name string, cfg proto.Message) (*hcmv3.HttpFilter, error) {
	tc, err := anypb.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("envoy: %w", err)
	}
	hf := &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: tc}}
	if err := hf.ValidateAll(); err != nil {
		return nil, fmt.Errorf("envoy: http filter: %w", err)
	}
	return hf, nil
}

// DecodeOneURISANFilter strictly decodes the one-URI-SAN RBAC filter and
// checks it is the one OneURISANFilter renders.
func DecodeOneURISANFilter(data []byte) (*hcmv3.HttpFilter, error) {
	var hf hcmv3.HttpFilter
	if err := Decode(data, &hf); err != nil {
		return nil, err
	}
	var rbac rbacfilterv3.RBAC
	if err := hf.GetTypedConfig().UnmarshalTo(&rbac); err != nil {
		return nil, fmt.Errorf("envoy: typed_config is not an RBAC filter: %w", err)
	}
	if err := rbac.ValidateAll(); err != nil {
		return nil, fmt.Errorf("envoy: %w", err)
	}
	want, err := OneURISANFilter()
	if err != nil {
		return nil, err
	}
	if !proto.Equal(&hf, want) {
		return nil, fmt.Errorf("envoy: %s is not the %s filter meshguard renders", hf.GetName(), OneURISANPolicy)
	}
	return &hf, nil
}
