package main

// Built-in ("native") resources served next to the CRDs: a handful of
// k8s.io/api types stored in the same etcd through the generic registry.
//
// The packaged sources do not include kube-apiserver's registries
// (k8s.io/kubernetes is not packaged), so each type gets a small strategy
// here: name validation, a few of the defaults kube-apiserver applies, and a
// status subresource where the type has one. There is no internal version:
// the versioned Go type is registered as its own internal type, which makes
// every conversion a no-op.

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/storage/names"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

// nativeResource describes one served built-in resource.
type nativeResource struct {
	set        string // value of --native that enables it
	gv         schema.GroupVersion
	resource   string
	singular   string
	kind       string
	namespaced bool
	shortNames []string
	newObj     func() runtime.Object
	newList    func() runtime.Object
	// Hooks; all optional.
	prepareCreate func(obj runtime.Object)
	prepareUpdate func(obj, old runtime.Object) // main resource: keep status
	statusUpdate  func(obj, old runtime.Object) // status subresource: keep everything but status
	validate      func(obj runtime.Object) field.ErrorList
	// Checks of an update only (e.g. immutable fields), after validate.
	validateUpdate func(obj, old runtime.Object) field.ErrorList
	// More subresources, e.g. scale or token: path ("deployments/scale")
	// to storage.
	subresources func(store *genericregistry.Store, env *nativeEnv) map[string]rest.Storage
	// A storage of its own instead of the generic store (e.g. create-only
	// reviews); newList is then nil.
	storage func(env *nativeEnv) rest.Storage
}

// nativeEnv is what custom storages share: the generic stores, by resource,
// and the service-account token issuer (tokens.go).
type nativeEnv struct {
	stores map[schema.GroupResource]*genericregistry.Store
	tokens *tokenIssuer
}

// Kinds served by subresources, registered beside the natives' own.
var subresourceKinds = []struct {
	gv  schema.GroupVersion
	obj runtime.Object
}{
	{autoscalingv1.SchemeGroupVersion, &autoscalingv1.Scale{}},
	{authenticationv1.SchemeGroupVersion, &authenticationv1.TokenRequest{}},
	{corev1.SchemeGroupVersion, &corev1.PodProxyOptions{}},
}

var nativeResources = []nativeResource{
	{
		set: "core", gv: corev1.SchemeGroupVersion, resource: "namespaces", singular: "namespace", kind: "Namespace",
		shortNames: []string{"ns"},
		newObj:     func() runtime.Object { return &corev1.Namespace{} },
		newList:    func() runtime.Object { return &corev1.NamespaceList{} },
		prepareCreate: func(obj runtime.Object) {
			ns := obj.(*corev1.Namespace)
			ns.Status = corev1.NamespaceStatus{Phase: corev1.NamespaceActive}
			if ns.Labels == nil {
				ns.Labels = map[string]string{}
			}
			ns.Labels[corev1.LabelMetadataName] = ns.Name
		},
		prepareUpdate: func(obj, old runtime.Object) {
			ns := obj.(*corev1.Namespace)
			ns.Status = old.(*corev1.Namespace).Status
			if ns.Labels == nil {
				ns.Labels = map[string]string{}
			}
			ns.Labels[corev1.LabelMetadataName] = ns.Name
		},
		statusUpdate: func(obj, old runtime.Object) {
			ns, o := obj.(*corev1.Namespace), old.(*corev1.Namespace)
			ns.Spec = o.Spec
			ns.Labels, ns.Annotations = o.Labels, o.Annotations
		},
		validate: func(obj runtime.Object) field.ErrorList {
			return dnsLabelName(obj.(*corev1.Namespace).Name)
		},
	},
	{
		set: "core", gv: corev1.SchemeGroupVersion, resource: "services", singular: "service", kind: "Service",
		namespaced: true, shortNames: []string{"svc"},
		newObj:  func() runtime.Object { return &corev1.Service{} },
		newList: func() runtime.Object { return &corev1.ServiceList{} },
		prepareCreate: func(obj runtime.Object) {
			svc := obj.(*corev1.Service)
			svc.Status = corev1.ServiceStatus{}
			defaultService(svc, nil)
		},
		prepareUpdate: func(obj, old runtime.Object) {
			svc, o := obj.(*corev1.Service), old.(*corev1.Service)
			svc.Status = o.Status
			defaultService(svc, o)
		},
		statusUpdate: func(obj, old runtime.Object) {
			svc, o := obj.(*corev1.Service), old.(*corev1.Service)
			svc.Spec = o.Spec
			svc.Labels, svc.Annotations = o.Labels, o.Annotations
		},
		validate: func(obj runtime.Object) field.ErrorList { return validateService(obj.(*corev1.Service)) },
	},
	{
		// Pods: stored only (no scheduler or kubelet runs them); tests set
		// their status through the status subresource, and pods/proxy
		// reaches whatever serves on the status.podIP they set.
		set: "core", gv: corev1.SchemeGroupVersion, resource: "pods", singular: "pod", kind: "Pod",
		namespaced: true, shortNames: []string{"po"},
		newObj:  func() runtime.Object { return &corev1.Pod{} },
		newList: func() runtime.Object { return &corev1.PodList{} },
		prepareCreate: func(obj runtime.Object) {
			pod := obj.(*corev1.Pod)
			pod.Status = corev1.PodStatus{Phase: corev1.PodPending}
			if pod.Spec.ServiceAccountName == "" {
				pod.Spec.ServiceAccountName = "default"
			}
		},
		prepareUpdate: func(obj, old runtime.Object) {
			obj.(*corev1.Pod).Status = old.(*corev1.Pod).Status
		},
		statusUpdate: func(obj, old runtime.Object) {
			pod, o := obj.(*corev1.Pod), old.(*corev1.Pod)
			pod.Spec = o.Spec
			pod.Labels, pod.Annotations = o.Labels, o.Annotations
		},
		// pods/proxy to the pod's IP (podproxy.go).
		subresources: func(store *genericregistry.Store, env *nativeEnv) map[string]rest.Storage {
			return map[string]rest.Storage{"pods/proxy": newPodProxyREST(store)}
		},
		validate: func(obj runtime.Object) field.ErrorList {
			pod := obj.(*corev1.Pod)
			errs := dnsLabelName(pod.Name)
			if len(pod.Spec.Containers) == 0 {
				errs = append(errs, field.Required(field.NewPath("spec", "containers"), "must have at least one container"))
			}
			return errs
		},
	},
	{
		set: "core", gv: corev1.SchemeGroupVersion, resource: "endpoints", singular: "endpoints", kind: "Endpoints",
		namespaced: true, shortNames: []string{"ep"},
		newObj:  func() runtime.Object { return &corev1.Endpoints{} },
		newList: func() runtime.Object { return &corev1.EndpointsList{} },
	},
	{
		set: "core", gv: corev1.SchemeGroupVersion, resource: "configmaps", singular: "configmap", kind: "ConfigMap",
		namespaced: true, shortNames: []string{"cm"},
		newObj:  func() runtime.Object { return &corev1.ConfigMap{} },
		newList: func() runtime.Object { return &corev1.ConfigMapList{} },
	},
	{
		set: "core", gv: corev1.SchemeGroupVersion, resource: "secrets", singular: "secret", kind: "Secret",
		namespaced: true,
		newObj:     func() runtime.Object { return &corev1.Secret{} },
		newList:    func() runtime.Object { return &corev1.SecretList{} },
		prepareCreate: func(obj runtime.Object) {
			s := obj.(*corev1.Secret)
			if s.Type == "" {
				s.Type = corev1.SecretTypeOpaque
			}
			for k, v := range s.StringData {
				if s.Data == nil {
					s.Data = map[string][]byte{}
				}
				s.Data[k] = []byte(v)
			}
			s.StringData = nil
		},
		prepareUpdate: func(obj, old runtime.Object) {
			s := obj.(*corev1.Secret)
			if s.Type == "" {
				s.Type = old.(*corev1.Secret).Type
			}
			for k, v := range s.StringData {
				if s.Data == nil {
					s.Data = map[string][]byte{}
				}
				s.Data[k] = []byte(v)
			}
			s.StringData = nil
		},
	},
	{
		set: "core", gv: corev1.SchemeGroupVersion, resource: "serviceaccounts", singular: "serviceaccount", kind: "ServiceAccount",
		namespaced: true, shortNames: []string{"sa"},
		newObj:  func() runtime.Object { return &corev1.ServiceAccount{} },
		newList: func() runtime.Object { return &corev1.ServiceAccountList{} },
		// TokenRequest (tokens.go).
		subresources: func(_ *genericregistry.Store, env *nativeEnv) map[string]rest.Storage {
			return map[string]rest.Storage{"serviceaccounts/token": &tokenRequestREST{issuer: env.tokens}}
		},
	},
	{
		set: "core", gv: corev1.SchemeGroupVersion, resource: "events", singular: "event", kind: "Event",
		namespaced: true, shortNames: []string{"ev"},
		newObj:  func() runtime.Object { return &corev1.Event{} },
		newList: func() runtime.Object { return &corev1.EventList{} },
	},
	{
		set: "events", gv: eventsv1.SchemeGroupVersion, resource: "events", singular: "event", kind: "Event",
		namespaced: true, shortNames: []string{"ev"},
		newObj:  func() runtime.Object { return &eventsv1.Event{} },
		newList: func() runtime.Object { return &eventsv1.EventList{} },
	},
	{
		set: "discovery", gv: discoveryv1.SchemeGroupVersion, resource: "endpointslices", singular: "endpointslice", kind: "EndpointSlice",
		namespaced: true,
		newObj:     func() runtime.Object { return &discoveryv1.EndpointSlice{} },
		newList:    func() runtime.Object { return &discoveryv1.EndpointSliceList{} },
		validate: func(obj runtime.Object) field.ErrorList {
			s := obj.(*discoveryv1.EndpointSlice)
			var errs field.ErrorList
			switch s.AddressType {
			case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN:
			default:
				errs = append(errs, field.NotSupported(field.NewPath("addressType"), s.AddressType,
					[]string{string(discoveryv1.AddressTypeIPv4), string(discoveryv1.AddressTypeIPv6), string(discoveryv1.AddressTypeFQDN)}))
			}
			for i, ep := range s.Endpoints {
				if len(ep.Addresses) == 0 {
					errs = append(errs, field.Required(field.NewPath("endpoints").Index(i).Child("addresses"), "must contain at least 1 address"))
				}
			}
			return errs
		},
	},
	{
		set: "coordination", gv: coordinationv1.SchemeGroupVersion, resource: "leases", singular: "lease", kind: "Lease",
		namespaced: true,
		newObj:     func() runtime.Object { return &coordinationv1.Lease{} },
		newList:    func() runtime.Object { return &coordinationv1.LeaseList{} },
	},
	{
		// Webhook configurations, read by the admission plugins (admission.go).
		set: "admissionregistration", gv: admissionregistrationv1.SchemeGroupVersion,
		resource: "mutatingwebhookconfigurations", singular: "mutatingwebhookconfiguration", kind: "MutatingWebhookConfiguration",
		newObj:        func() runtime.Object { return &admissionregistrationv1.MutatingWebhookConfiguration{} },
		newList:       func() runtime.Object { return &admissionregistrationv1.MutatingWebhookConfigurationList{} },
		prepareCreate: defaultMutatingWebhooks,
		prepareUpdate: func(obj, old runtime.Object) { defaultMutatingWebhooks(obj) },
		validate:      validateMutatingWebhooks,
	},
	{
		set: "admissionregistration", gv: admissionregistrationv1.SchemeGroupVersion,
		resource: "validatingwebhookconfigurations", singular: "validatingwebhookconfiguration", kind: "ValidatingWebhookConfiguration",
		newObj:        func() runtime.Object { return &admissionregistrationv1.ValidatingWebhookConfiguration{} },
		newList:       func() runtime.Object { return &admissionregistrationv1.ValidatingWebhookConfigurationList{} },
		prepareCreate: defaultValidatingWebhooks,
		prepareUpdate: func(obj, old runtime.Object) { defaultValidatingWebhooks(obj) },
		validate:      validateValidatingWebhooks,
	},
	{
		// TokenReview (tokens.go): create only, nothing stored.
		set: "authentication", gv: authenticationv1.SchemeGroupVersion, resource: "tokenreviews", singular: "tokenreview", kind: "TokenReview",
		newObj:  func() runtime.Object { return &authenticationv1.TokenReview{} },
		storage: func(env *nativeEnv) rest.Storage { return &tokenReviewREST{issuer: env.tokens} },
	},
	{
		set: "authentication", gv: authenticationv1.SchemeGroupVersion, resource: "selfsubjectreviews", singular: "selfsubjectreview", kind: "SelfSubjectReview",
		newObj:  func() runtime.Object { return &authenticationv1.SelfSubjectReview{} },
		storage: func(*nativeEnv) rest.Storage { return &selfSubjectReviewREST{} },
	},
}

var allNativeSets = []string{"core", "events", "discovery", "coordination", "admissionregistration", "authentication", "apps", "batch", "policy", "rbac"}

func enabledNatives(sets sets.Set[string]) []nativeResource {
	var out []nativeResource
	for _, r := range append(append([]nativeResource{}, nativeResources...), workloadResources...) {
		if sets.Has(r.set) {
			out = append(out, r)
		}
	}
	return out
}

// groupVersions lists the distinct group versions, for the storage codec.
func groupVersions(rs []nativeResource) []schema.GroupVersion {
	var out []schema.GroupVersion
	seen := map[schema.GroupVersion]bool{}
	for _, r := range rs {
		if !seen[r.gv] {
			seen[r.gv] = true
			out = append(out, r.gv)
		}
	}
	return out
}

// nativeRoots lists the top-level objects, for the OpenAPI definitions.
func nativeRoots(rs []nativeResource) []runtime.Object {
	var out []runtime.Object
	for _, r := range rs {
		out = append(out, r.newObj())
		if r.newList != nil {
			out = append(out, r.newList())
		}
	}
	for _, k := range subresourceKinds {
		out = append(out, k.obj)
	}
	return out
}

// newNativeScheme registers every served type both as its versioned and as
// its internal type.
func newNativeScheme(rs []nativeResource) *runtime.Scheme {
	s := runtime.NewScheme()
	seen := map[schema.GroupVersion]bool{}
	add := func(gv schema.GroupVersion, objs ...runtime.Object) {
		internal := schema.GroupVersion{Group: gv.Group, Version: runtime.APIVersionInternal}
		for _, o := range objs {
			s.AddKnownTypes(gv, o)
			s.AddKnownTypes(internal, o)
			identityConversion(s, o)
		}
		if !seen[gv] {
			seen[gv] = true
			metav1.AddToGroupVersion(s, gv)
			if err := s.SetVersionPriority(gv); err != nil {
				panic(err)
			}
		}
	}
	for _, r := range rs {
		add(r.gv, r.newObj())
		if r.newList != nil {
			add(r.gv, r.newList())
		}
	}
	for _, k := range subresourceKinds {
		add(k.gv, k.obj)
	}
	podProxyConversions(s)
	unversioned := schema.GroupVersion{Group: "", Version: "v1"}
	s.AddUnversionedTypes(unversioned, &metav1.Status{}, &metav1.APIVersions{}, &metav1.APIGroupList{}, &metav1.APIGroup{}, &metav1.APIResourceList{})
	return s
}

// strategy is the create/update/delete strategy shared by all native resources.
type strategy struct {
	runtime.ObjectTyper
	names.NameGenerator
	r      nativeResource
	status bool // strategy of the status subresource
}

func (s strategy) NamespaceScoped() bool { return s.r.namespaced }

func (s strategy) PrepareForCreate(ctx context.Context, obj runtime.Object) {
	if s.r.prepareCreate != nil {
		s.r.prepareCreate(obj)
	}
}

func (s strategy) PrepareForUpdate(ctx context.Context, obj, old runtime.Object) {
	if s.status {
		if s.r.statusUpdate != nil {
			s.r.statusUpdate(obj, old)
		}
		return
	}
	if s.r.prepareUpdate != nil {
		s.r.prepareUpdate(obj, old)
	}
}

func (s strategy) Validate(ctx context.Context, obj runtime.Object) field.ErrorList {
	if s.r.validate != nil {
		return s.r.validate(obj)
	}
	return nil
}

func (s strategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	errs := s.Validate(ctx, obj)
	if s.r.validateUpdate != nil {
		errs = append(errs, s.r.validateUpdate(obj, old)...)
	}
	return errs
}

func (strategy) WarningsOnCreate(ctx context.Context, obj runtime.Object) []string { return nil }
func (strategy) WarningsOnUpdate(ctx context.Context, obj, old runtime.Object) []string {
	return nil
}
func (strategy) Canonicalize(obj runtime.Object) {}
func (strategy) AllowCreateOnUpdate() bool       { return false }
func (strategy) AllowUnconditionalUpdate() bool  { return true }

// GetResetFields: the main resource does not own status, the status
// subresource owns nothing but status.
func (s strategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	if s.r.statusUpdate == nil {
		return nil
	}
	set := fieldpath.NewSet(fieldpath.MakePathOrDie("status"))
	if s.status {
		set = fieldpath.NewSet(fieldpath.MakePathOrDie("spec"), fieldpath.MakePathOrDie("metadata", "labels"), fieldpath.MakePathOrDie("metadata", "annotations"))
	}
	return map[fieldpath.APIVersion]*fieldpath.Set{fieldpath.APIVersion(s.r.gv.String()): set}
}

// nativeStore adds discovery details to the generic store.
type nativeStore struct {
	*genericregistry.Store
	shortNames []string
}

func (n *nativeStore) ShortNames() []string { return n.shortNames }

// statusREST serves the status subresource from a copy of the store that
// uses the status strategy.
type statusREST struct{ store *genericregistry.Store }

func (r *statusREST) New() runtime.Object { return r.store.New() }
func (r *statusREST) Destroy()            {}
func (r *statusREST) Get(ctx context.Context, name string, options *metav1.GetOptions) (runtime.Object, error) {
	return r.store.Get(ctx, name, options)
}
func (r *statusREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, forceAllowCreate bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	return r.store.Update(ctx, name, objInfo, createValidation, updateValidation, false, options)
}
func (r *statusREST) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return r.store.GetResetFields()
}

func newNativeStorage(r nativeResource, scheme *runtime.Scheme, optsGetter generic.RESTOptionsGetter, env *nativeEnv) (map[string]rest.Storage, error) {
	gr := schema.GroupResource{Group: r.gv.Group, Resource: r.resource}
	if r.storage != nil {
		return map[string]rest.Storage{r.resource: r.storage(env)}, nil
	}
	main := strategy{ObjectTyper: scheme, NameGenerator: names.SimpleNameGenerator, r: r}
	store := &genericregistry.Store{
		NewFunc:                   r.newObj,
		NewListFunc:               r.newList,
		DefaultQualifiedResource:  gr,
		SingularQualifiedResource: schema.GroupResource{Group: r.gv.Group, Resource: r.singular},
		CreateStrategy:            main,
		UpdateStrategy:            main,
		DeleteStrategy:            main,
		ResetFieldsStrategy:       main,
		TableConvertor:            rest.NewDefaultTableConvertor(gr),
	}
	if err := store.CompleteWithOptions(&generic.StoreOptions{RESTOptions: optsGetter}); err != nil {
		return nil, fmt.Errorf("%s: %w", gr, err)
	}
	out := map[string]rest.Storage{r.resource: &nativeStore{Store: store, shortNames: r.shortNames}}
	if r.statusUpdate != nil {
		st := strategy{ObjectTyper: scheme, NameGenerator: names.SimpleNameGenerator, r: r, status: true}
		statusStore := *store
		statusStore.CreateStrategy = nil
		statusStore.DeleteStrategy = nil
		statusStore.UpdateStrategy = st
		statusStore.ResetFieldsStrategy = st
		out[r.resource+"/status"] = &statusREST{store: &statusStore}
	}
	if r.subresources != nil {
		for k, v := range r.subresources(store, env) {
			out[k] = v
		}
	}
	env.stores[gr] = store
	return out, nil
}

// installNatives installs the enabled native resources on the server.
func installNatives(s *genericapiserver.GenericAPIServer, rs []nativeResource, scheme *runtime.Scheme, optsGetter generic.RESTOptionsGetter, env *nativeEnv) error {
	codecs := serializer.NewCodecFactory(scheme)
	paramCodec := runtime.NewParameterCodec(scheme)
	byGroup := map[string]*genericapiserver.APIGroupInfo{}
	var groups []string
	for _, r := range rs {
		info, ok := byGroup[r.gv.Group]
		if !ok {
			i := genericapiserver.NewDefaultAPIGroupInfo(r.gv.Group, scheme, paramCodec, codecs)
			info = &i
			byGroup[r.gv.Group] = info
			groups = append(groups, r.gv.Group)
		}
		storage, err := newNativeStorage(r, scheme, optsGetter, env)
		if err != nil {
			return err
		}
		if info.VersionedResourcesStorageMap[r.gv.Version] == nil {
			info.VersionedResourcesStorageMap[r.gv.Version] = map[string]rest.Storage{}
		}
		for k, v := range storage {
			info.VersionedResourcesStorageMap[r.gv.Version][k] = v
		}
	}
	sort.Strings(groups)
	var named []*genericapiserver.APIGroupInfo
	for _, g := range groups {
		if g == "" {
			if err := s.InstallLegacyAPIGroup(genericapiserver.DefaultLegacyAPIPrefix, byGroup[g]); err != nil {
				return fmt.Errorf("install /api: %w", err)
			}
			continue
		}
		named = append(named, byGroup[g])
	}
	if len(named) > 0 {
		if err := s.InstallAPIGroups(named...); err != nil {
			return fmt.Errorf("install native groups: %w", err)
		}
	}
	return nil
}

func dnsLabelName(name string) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range utilvalidation.IsDNS1123Label(name) {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), name, msg))
	}
	return errs
}

// Service defaults (a subset of what kube-apiserver does). Cluster IPs are
// allocated from 10.96.0.0/16 in memory (from 10.96.0.10; 10.96.0.1 is the
// `kubernetes` Service's); the server routes none of them.
const kubernetesServiceIP = "10.96.0.1"

var clusterIPs = struct {
	sync.Mutex
	next uint32
}{next: 10}

func allocateClusterIP() string {
	clusterIPs.Lock()
	defer clusterIPs.Unlock()
	n := clusterIPs.next
	clusterIPs.next++
	return netip.AddrFrom4([4]byte{10, 96, byte(n >> 8), byte(n)}).String()
}

func defaultService(svc *corev1.Service, old *corev1.Service) {
	sp := &svc.Spec
	if sp.Type == "" {
		sp.Type = corev1.ServiceTypeClusterIP
	}
	if sp.SessionAffinity == "" {
		sp.SessionAffinity = corev1.ServiceAffinityNone
	}
	for i := range sp.Ports {
		p := &sp.Ports[i]
		if p.Protocol == "" {
			p.Protocol = corev1.ProtocolTCP
		}
		if p.TargetPort == (intstr.IntOrString{}) {
			p.TargetPort = intstr.FromInt32(p.Port)
		}
	}
	if sp.Type == corev1.ServiceTypeExternalName {
		return
	}
	if sp.InternalTrafficPolicy == nil {
		c := corev1.ServiceInternalTrafficPolicyCluster
		sp.InternalTrafficPolicy = &c
	}
	if sp.ClusterIP == "" && old != nil {
		sp.ClusterIP, sp.ClusterIPs = old.Spec.ClusterIP, old.Spec.ClusterIPs
	}
	if sp.ClusterIP == "" && svc.Namespace == metav1.NamespaceDefault && svc.Name == "kubernetes" {
		// Reserved, as kube-apiserver reserves the first address of the
		// range: the serving certificate names it (certs.go).
		sp.ClusterIP = kubernetesServiceIP
	}
	if sp.ClusterIP == "" {
		sp.ClusterIP = allocateClusterIP()
	}
	if len(sp.ClusterIPs) == 0 {
		sp.ClusterIPs = []string{sp.ClusterIP}
	}
	if sp.ClusterIP != corev1.ClusterIPNone {
		if len(sp.IPFamilies) == 0 {
			sp.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
		}
		if sp.IPFamilyPolicy == nil {
			p := corev1.IPFamilyPolicySingleStack
			sp.IPFamilyPolicy = &p
		}
	}
}

func validateService(svc *corev1.Service) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range utilvalidation.IsDNS1035Label(svc.Name) {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), svc.Name, msg))
	}
	ports := field.NewPath("spec", "ports")
	if len(svc.Spec.Ports) == 0 && svc.Spec.Type != corev1.ServiceTypeExternalName && svc.Spec.ClusterIP != corev1.ClusterIPNone {
		errs = append(errs, field.Required(ports, ""))
	}
	names := sets.New[string]()
	keys := sets.New[string]()
	for i, p := range svc.Spec.Ports {
		pp := ports.Index(i)
		if len(svc.Spec.Ports) > 1 && p.Name == "" {
			errs = append(errs, field.Required(pp.Child("name"), "must be specified when there is more than one port"))
		}
		if p.Name != "" {
			for _, msg := range utilvalidation.IsValidPortName(p.Name) {
				errs = append(errs, field.Invalid(pp.Child("name"), p.Name, msg))
			}
			if names.Has(p.Name) {
				errs = append(errs, field.Duplicate(pp.Child("name"), p.Name))
			}
			names.Insert(p.Name)
		}
		for _, msg := range utilvalidation.IsValidPortNum(int(p.Port)) {
			errs = append(errs, field.Invalid(pp.Child("port"), p.Port, msg))
		}
		switch p.Protocol {
		case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
		default:
			errs = append(errs, field.NotSupported(pp.Child("protocol"), p.Protocol, []string{"TCP", "UDP", "SCTP"}))
		}
		key := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if keys.Has(key) {
			errs = append(errs, field.Duplicate(pp, key))
		}
		keys.Insert(key)
		if p.TargetPort.Type == intstr.String {
			for _, msg := range utilvalidation.IsValidPortName(p.TargetPort.StrVal) {
				errs = append(errs, field.Invalid(pp.Child("targetPort"), p.TargetPort.StrVal, msg))
			}
		}
	}
	switch svc.Spec.Type {
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeExternalName:
	default:
		errs = append(errs, field.NotSupported(field.NewPath("spec", "type"), svc.Spec.Type, []string{"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"}))
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName && strings.TrimSpace(svc.Spec.ExternalName) == "" {
		errs = append(errs, field.Required(field.NewPath("spec", "externalName"), ""))
	}
	return errs
}
