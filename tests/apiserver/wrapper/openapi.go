package main

// OpenAPI definitions for the built-in (non-CRD) types this server serves.
//
// The generic API server needs an OpenAPI definition for every type reachable
// from an installed route: it publishes them on /openapi/v2 and /openapi/v3
// and derives the server-side-apply type converter from them. The packaged
// sources only carry generated definitions for the apiextensions and meta
// types, so the definitions of k8s.io/api types are built here at start-up by
// walking the Go types with reflection. The list/map semantics that
// server-side apply needs (x-kubernetes-list-type, list-map-keys, map-type,
// defaults of key fields) are taken from the structured-merge-diff schema
// that client-go ships for apply configurations, reached through its public
// type converter.

import (
	"fmt"
	"reflect"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/applyconfigurations"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/klog/v2"
	"k8s.io/kube-openapi/pkg/common"
	"k8s.io/kube-openapi/pkg/validation/spec"
	smdschema "sigs.k8s.io/structured-merge-diff/v6/schema"
)

type modelNamer interface{ OpenAPIModelName() string }
type schemaTyper interface{ OpenAPISchemaType() []string }
type schemaFormatter interface{ OpenAPISchemaFormat() string }

type defBuilder struct {
	ref  common.ReferenceCallback
	base map[string]common.OpenAPIDefinition
	out  map[string]common.OpenAPIDefinition
	smd  *smdschema.Schema
}

// smdSchema returns client-go's structured-merge-diff schema for the
// built-in types (nil if it cannot be obtained; list semantics then fall
// back to the patch-strategy struct tags).
func smdSchema(sample runtime.Object) *smdschema.Schema {
	gvks, _, err := clientgoscheme.Scheme.ObjectKinds(sample)
	if err != nil || len(gvks) == 0 {
		klog.Warningf("openapi: no kind for %T: %v", sample, err)
		return nil
	}
	obj := sample.DeepCopyObject()
	obj.GetObjectKind().SetGroupVersionKind(gvks[0])
	tc := applyconfigurations.NewTypeConverter(clientgoscheme.Scheme)
	tv, err := tc.ObjectToTyped(obj)
	if err != nil {
		klog.Warningf("openapi: no structured-merge-diff schema, list semantics fall back to struct tags: %v", err)
		return nil
	}
	return tv.Schema()
}

// withBuiltinDefinitions extends a GetOpenAPIDefinitions function with
// reflected definitions for the given root objects.
func withBuiltinDefinitions(base common.GetOpenAPIDefinitions, roots []runtime.Object) common.GetOpenAPIDefinitions {
	var smd *smdschema.Schema
	if len(roots) > 0 {
		smd = smdSchema(roots[0])
	}
	return func(ref common.ReferenceCallback) map[string]common.OpenAPIDefinition {
		b := &defBuilder{ref: ref, base: base(ref), out: map[string]common.OpenAPIDefinition{}, smd: smd}
		for _, r := range roots {
			b.structDef(reflect.TypeOf(r).Elem())
		}
		all := make(map[string]common.OpenAPIDefinition, len(b.base)+len(b.out))
		for k, v := range b.base {
			all[k] = v
		}
		for k, v := range b.out {
			all[k] = v
		}
		return all
	}
}

func modelName(t reflect.Type) string {
	if n, ok := reflect.New(t).Elem().Interface().(modelNamer); ok {
		return n.OpenAPIModelName()
	}
	if n, ok := reflect.New(t).Interface().(modelNamer); ok {
		return n.OpenAPIModelName()
	}
	// Same convention as the generated names: reversed domain of the package.
	path := t.PkgPath()
	parts := strings.Split(path, "/")
	host := strings.Split(parts[0], ".")
	for i, j := 0, len(host)-1; i < j; i, j = i+1, j-1 {
		host[i], host[j] = host[j], host[i]
	}
	return strings.Join(append(append(host, parts[1:]...), t.Name()), ".")
}

// structDef makes sure a definition for struct type t exists and returns its name.
func (b *defBuilder) structDef(t reflect.Type) string {
	name := modelName(t)
	if _, ok := b.base[name]; ok {
		return name
	}
	if _, ok := b.out[name]; ok {
		return name
	}
	// Reserve the name first: types can be recursive (JSONSchemaProps-like).
	b.out[name] = common.OpenAPIDefinition{}

	var smdMap *smdschema.Map
	if b.smd != nil {
		if td, ok := b.smd.FindNamedType(name); ok {
			smdMap = td.Atom.Map
		}
	}
	props := map[string]spec.Schema{}
	deps := map[string]bool{}
	b.fields(t, props, deps, smdMap)

	s := spec.Schema{SchemaProps: spec.SchemaProps{Type: []string{"object"}, Properties: props}}
	if smdMap != nil && smdMap.ElementRelationship == smdschema.Atomic {
		s.AddExtension("x-kubernetes-map-type", "atomic")
	}
	var depList []string
	for d := range deps {
		depList = append(depList, d)
	}
	b.out[name] = common.OpenAPIDefinition{Schema: s, Dependencies: depList}
	return name
}

func (b *defBuilder) fields(t reflect.Type, props map[string]spec.Schema, deps map[string]bool, smdMap *smdschema.Map) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		jsonName := strings.Split(tag, ",")[0]
		if jsonName == "-" {
			continue
		}
		inline := strings.Contains(tag, ",inline") || (f.Anonymous && jsonName == "")
		if inline {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				b.fields(ft, props, deps, smdMap)
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if jsonName == "" {
			jsonName = f.Name
		}
		var smdField *smdschema.StructField
		if smdMap != nil {
			if sf, ok := smdMap.FindField(jsonName); ok {
				smdField = &sf
			}
		}
		props[jsonName] = b.fieldSchema(f, smdField, deps)
	}
}

func (b *defBuilder) fieldSchema(f reflect.StructField, smdField *smdschema.StructField, deps map[string]bool) spec.Schema {
	s := b.typeSchema(f.Type, deps)
	var atom *smdschema.Atom
	var rel *smdschema.ElementRelationship
	if smdField != nil && b.smd != nil {
		if a, ok := b.smd.Resolve(smdField.Type); ok {
			atom = &a
		}
		rel = smdField.Type.ElementRelationship
		if smdField.Default != nil {
			s.Default = smdField.Default
		}
	}
	switch {
	case atom != nil && atom.List != nil && s.Type.Contains("array"):
		switch atom.List.ElementRelationship {
		case smdschema.Associative:
			if len(atom.List.Keys) > 0 {
				s.AddExtension("x-kubernetes-list-type", "map")
				keys := make([]interface{}, len(atom.List.Keys))
				for i, k := range atom.List.Keys {
					keys[i] = k
				}
				s.AddExtension("x-kubernetes-list-map-keys", keys)
			} else {
				s.AddExtension("x-kubernetes-list-type", "set")
			}
		default:
			s.AddExtension("x-kubernetes-list-type", "atomic")
		}
	case atom == nil && s.Type.Contains("array"):
		// No schema known: follow the strategic-merge tags, else atomic.
		if f.Tag.Get("patchStrategy") == "merge" && f.Tag.Get("patchMergeKey") != "" {
			s.AddExtension("x-kubernetes-list-type", "map")
			s.AddExtension("x-kubernetes-list-map-keys", []interface{}{f.Tag.Get("patchMergeKey")})
		} else {
			s.AddExtension("x-kubernetes-list-type", "atomic")
		}
	case atom != nil && atom.Map != nil && s.Type.Contains("object") && atom.Map.ElementRelationship == smdschema.Atomic:
		s.AddExtension("x-kubernetes-map-type", "atomic")
	}
	if rel != nil && *rel == smdschema.Atomic && s.Ref.String() != "" {
		// A field that overrides its struct type to atomic.
		s = spec.Schema{SchemaProps: spec.SchemaProps{AllOf: []spec.Schema{s}}}
		s.AddExtension("x-kubernetes-map-type", "atomic")
	}
	// Strategic merge patch, as in kube-apiserver's OpenAPI: kubectl's
	// client-side apply merges lists such as containers by these keys
	// (without them it replaces the whole list, and every re-apply of an
	// unchanged manifest reports "configured").
	if strategy := f.Tag.Get("patchStrategy"); strategy != "" {
		s.AddExtension("x-kubernetes-patch-strategy", strategy)
		if key := f.Tag.Get("patchMergeKey"); key != "" {
			s.AddExtension("x-kubernetes-patch-merge-key", key)
		}
	}
	return s
}

func (b *defBuilder) typeSchema(t reflect.Type, deps map[string]bool) spec.Schema {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	// Types with a definition (generated ones, e.g. meta/v1 and quantities).
	if t.Kind() == reflect.Struct || t.PkgPath() != "" {
		if t.Name() != "" && t.PkgPath() != "" {
			if name := modelName(t); hasKey(b.base, name) {
				deps[name] = true
				return spec.Schema{SchemaProps: spec.SchemaProps{Ref: b.ref(name)}}
			}
		}
		v := reflect.New(t).Elem().Interface()
		if st, ok := v.(schemaTyper); ok {
			s := spec.Schema{SchemaProps: spec.SchemaProps{Type: st.OpenAPISchemaType()}}
			if sf, ok := v.(schemaFormatter); ok {
				s.Format = sf.OpenAPISchemaFormat()
			}
			return s
		}
	}
	switch t.Kind() {
	case reflect.Struct:
		name := b.structDef(t)
		deps[name] = true
		return spec.Schema{SchemaProps: spec.SchemaProps{Ref: b.ref(name)}}
	case reflect.String:
		return primitive("string", "")
	case reflect.Bool:
		return primitive("boolean", "")
	case reflect.Int, reflect.Int32, reflect.Int16, reflect.Int8, reflect.Uint16, reflect.Uint8:
		return primitive("integer", "int32")
	case reflect.Int64, reflect.Uint32, reflect.Uint64, reflect.Uint:
		return primitive("integer", "int64")
	case reflect.Float32, reflect.Float64:
		return primitive("number", "double")
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return primitive("string", "byte")
		}
		items := b.typeSchema(t.Elem(), deps)
		return spec.Schema{SchemaProps: spec.SchemaProps{Type: []string{"array"}, Items: &spec.SchemaOrArray{Schema: &items}}}
	case reflect.Map:
		elem := b.typeSchema(t.Elem(), deps)
		return spec.Schema{SchemaProps: spec.SchemaProps{Type: []string{"object"}, AdditionalProperties: &spec.SchemaOrBool{Allows: true, Schema: &elem}}}
	case reflect.Interface:
		s := spec.Schema{SchemaProps: spec.SchemaProps{Type: []string{"object"}}}
		s.AddExtension("x-kubernetes-preserve-unknown-fields", true)
		return s
	}
	panic(fmt.Sprintf("openapi: unsupported Go type %v", t))
}

func primitive(typ, format string) spec.Schema {
	return spec.Schema{SchemaProps: spec.SchemaProps{Type: []string{typ}, Format: format}}
}

func hasKey(m map[string]common.OpenAPIDefinition, k string) bool {
	_, ok := m[k]
	return ok
}
