// Package crdcheck validates Kubernetes custom resources offline against the
// OpenAPI v3 schemas of their CustomResourceDefinitions, the way the API server
// does on create: structural schema checks, unknown-field detection (the server
// would prune them silently), list-type invariants and CEL
// x-kubernetes-validations rules.
package crdcheck

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

// Set holds the schemas of every served version of the loaded CRDs, keyed by
// "group/version, Kind".
type Set struct {
	schemas map[string]*versionSchema
}

type versionSchema struct {
	structural *structuralschema.Structural
	validator  validation.SchemaValidator
	cel        *cel.Validator
}

// Load reads CRDs from multi-document YAML files.
func Load(paths ...string) (*Set, error) {
	s := &Set{schemas: map[string]*versionSchema{}}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("crdcheck: %w", err)
		}
		if err := s.add(p, data); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *Set) add(name string, data []byte) error {
	r := utilyaml.NewYAMLReader(bufioReader(data))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("crdcheck: %s: %w", name, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.Unmarshal(doc, &crd); err != nil {
			return fmt.Errorf("crdcheck: %s: %w", name, err)
		}
		if crd.Kind != "CustomResourceDefinition" {
			continue
		}
		for _, v := range crd.Spec.Versions {
			if !v.Served || v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
				continue
			}
			var internal apiextensions.JSONSchemaProps
			if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(v.Schema.OpenAPIV3Schema, &internal, nil); err != nil {
				return fmt.Errorf("crdcheck: %s %s: %w", crd.Name, v.Name, err)
			}
			st, err := structuralschema.NewStructural(&internal)
			if err != nil {
				return fmt.Errorf("crdcheck: %s %s: schema is not structural: %w", crd.Name, v.Name, err)
			}
			sv, _, err := validation.NewSchemaValidator(&internal)
			if err != nil {
				return fmt.Errorf("crdcheck: %s %s: %w", crd.Name, v.Name, err)
			}
			key := crd.Spec.Group + "/" + v.Name + ", " + crd.Spec.Names.Kind
			s.schemas[key] = &versionSchema{
				structural: st,
				validator:  sv,
				cel:        cel.NewValidator(st, true, celconfig.PerCallLimit),
			}
		}
	}
}

// Kinds lists the loaded "group/version, Kind" keys.
func (s *Set) Kinds() []string {
	out := make([]string, 0, len(s.schemas))
	for k := range s.schemas {
		out = append(out, k)
	}
	return out
}

// ValidateYAML validates one YAML or JSON object.
func (s *Set) ValidateYAML(doc []byte) error {
	var obj map[string]any
	if err := yaml.Unmarshal(doc, &obj); err != nil {
		return fmt.Errorf("crdcheck: %w", err)
	}
	return s.Validate(obj)
}

// Validate checks an object (as decoded from JSON) against the schema of its
// apiVersion and kind. Every problem is reported; unknown fields are errors.
func (s *Set) Validate(obj map[string]any) error {
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	vs, ok := s.schemas[apiVersion+", "+kind]
	if !ok {
		return fmt.Errorf("crdcheck: no CRD schema for apiVersion %q kind %q", apiVersion, kind)
	}
	// Validate a JSON-normalised deep copy: numbers as int64/float64 like the server sees them.
	obj = runtime.DeepCopyJSON(normalise(obj).(map[string]any))
	var errs field.ErrorList
	if md, _ := obj["metadata"].(map[string]any); md == nil || md["name"] == nil || md["name"] == "" {
		errs = append(errs, field.Required(field.NewPath("metadata", "name"), "every object needs a name"))
	}
	pruned := runtime.DeepCopyJSON(obj)
	unknown := pruning.PruneWithOptions(pruned, vs.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	for _, p := range unknown {
		errs = append(errs, field.Forbidden(field.NewPath(p), "unknown field (the API server would drop it silently)"))
	}
	errs = append(errs, validation.ValidateCustomResource(nil, obj, vs.validator)...)
	errs = append(errs, listtype.ValidateListSetsAndMaps(nil, vs.structural, obj)...)
	celErrs, _ := vs.cel.Validate(context.Background(), nil, vs.structural, obj, nil, celconfig.RuntimeCELCostBudget)
	errs = append(errs, celErrs...)
	if len(errs) > 0 {
		name := ""
		if md, _ := obj["metadata"].(map[string]any); md != nil {
			name, _ = md["name"].(string)
		}
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = e.Error()
		}
		return fmt.Errorf("%s %q: %s", kind, name, strings.Join(msgs, "; "))
	}
	return nil
}

// normalise turns integral numbers into int64 and other floats into float64 so
// that objects built in Go validate like objects decoded from JSON.
func normalise(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[k] = normalise(x)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = normalise(x)
		}
		return out
	case int:
		return int64(t)
	case int32:
		return int64(t)
	case uint32:
		return int64(t)
	case float32:
		return normalise(float64(t))
	case float64:
		// JSON decoders in Go yield float64; the API server keeps integral
		// numbers as int64, which CEL rules on integer fields rely on.
		if t == math.Trunc(t) && math.Abs(t) < 1<<53 {
			return int64(t)
		}
		return t
	default:
		return v
	}
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }
