package main

// Admission webhooks, the way kube-apiserver runs them.
//
// With the "admissionregistration" native set, the server stores
// MutatingWebhookConfigurations and ValidatingWebhookConfigurations and runs
// k8s.io/apiserver's own MutatingAdmissionWebhook and
// ValidatingAdmissionWebhook plugins on every request: the configurations are
// read from informers on the loopback client, namespaceSelector from the
// Namespace informer, and the plugins call the webhooks over HTTPS, checking
// the certificate against the configuration's caBundle, applying the
// returned JSON patch and honouring failurePolicy, matchPolicy,
// objectSelector, reinvocationPolicy, timeoutSeconds and sideEffects (dry
// runs). None of that logic is written here: this file only wires the
// library plugins and supplies what kube-apiserver's registry would (the
// defaults and a subset of the validation of the two configuration types).
//
// What is simulated: how a `clientConfig.service` is reached. kube-apiserver
// by default dials the Service's ClusterIP and lets kube-proxy route it; here
// ClusterIPs are data only (nothing routes 10.96.0.0/16), so the server
// resolves the Service to one of its ready EndpointSlice endpoints instead —
// what kube-apiserver itself does with --enable-aggregator-routing, with the
// same library function (k8s.io/apiserver/pkg/util/proxy.ResolveEndpoint:
// the Service port is matched to the slice port of the same name). The TLS
// server name stays <service>.<namespace>.svc, so the caBundle and the
// webhook's certificate are checked as in a cluster. Tests write the
// EndpointSlices themselves (no controllers run), e.g. pointing at a webhook
// on 127.0.0.1. `clientConfig.url` is dialled as given.

import (
	"fmt"
	"net/url"
	"reflect"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/sets"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/admission"
	admissionmetrics "k8s.io/apiserver/pkg/admission/metrics"
	webhookinit "k8s.io/apiserver/pkg/admission/plugin/webhook/initializer"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/mutating"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/validating"
	genericapiserver "k8s.io/apiserver/pkg/server"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	"k8s.io/apiserver/pkg/util/proxy"
	"k8s.io/apiserver/pkg/util/webhook"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/component-base/featuregate"

	noopoteltrace "go.opentelemetry.io/otel/trace/noop"
)

// enableWebhookAdmission installs the admission chain MutatingAdmissionWebhook,
// ValidatingAdmissionWebhook (in that order, as kube-apiserver runs them) on
// the server configuration, through the library's own AdmissionOptions.
func enableWebhookAdmission(c *genericapiserver.RecommendedConfig, client kubernetes.Interface, resolver webhook.ServiceResolver, features featuregate.FeatureGate) error {
	dyn, err := dynamic.NewForConfig(c.LoopbackClientConfig)
	if err != nil {
		return err
	}
	plugins := admission.NewPlugins()
	mutating.Register(plugins)
	validating.Register(plugins)
	opts := &genericoptions.AdmissionOptions{
		Plugins:                plugins,
		RecommendedPluginOrder: []string{mutating.PluginName, validating.PluginName},
		DefaultOffPlugins:      sets.Set[string]{},
		Decorators:             admission.Decorators{admission.DecoratorFunc(admissionmetrics.WithControllerMetrics)},
	}
	// Webhook calls carry no client credentials (no kubeconfig for them),
	// as in kube-apiserver without --admission-control-config-file.
	auth := webhook.NewDefaultAuthenticationInfoResolverWrapper(nil, nil, c.LoopbackClientConfig, noopoteltrace.NewTracerProvider())
	return opts.ApplyTo(&c.Config, c.SharedInformerFactory, client, dyn, features, c.EffectiveVersion,
		webhookinit.NewPluginInitializer(auth, resolver))
}

// endpointResolver resolves a Service to a ready endpoint of its
// EndpointSlices (see the comment at the top of this file).
type endpointResolver struct {
	services corelisters.ServiceLister
	slices   proxy.EndpointSliceGetter
}

func newEndpointResolver(f informers.SharedInformerFactory) (endpointResolver, error) {
	slices, err := proxy.NewEndpointSliceListerGetter(f.Discovery().V1().EndpointSlices().Lister())
	if err != nil {
		return endpointResolver{}, err
	}
	return endpointResolver{services: f.Core().V1().Services().Lister(), slices: slices}, nil
}

func (r endpointResolver) ResolveEndpoint(namespace, name string, port int32) (*url.URL, error) {
	return proxy.ResolveEndpoint(r.services, r.slices, namespace, name, port)
}

// identityConversion lets the admission plugins "convert" a native object
// between its internal and its v1 registration (the same Go type here, see
// native.go): they convert with Scheme.Convert, which knows no conversion
// from a type to itself.
func identityConversion(s *runtime.Scheme, obj runtime.Object) {
	err := s.AddConversionFunc(obj, obj, func(a, b interface{}, _ conversion.Scope) error {
		in, ok := a.(runtime.Object)
		if !ok {
			return fmt.Errorf("identity conversion of %T", a)
		}
		reflect.ValueOf(b).Elem().Set(reflect.ValueOf(in.DeepCopyObject()).Elem())
		return nil
	})
	if err != nil {
		panic(err)
	}
}

// Defaults of admissionregistration.k8s.io/v1 webhooks, as kube-apiserver
// applies them.
func defaultWebhook(cc *admissionregistrationv1.WebhookClientConfig, rules []admissionregistrationv1.RuleWithOperations,
	failurePolicy **admissionregistrationv1.FailurePolicyType, matchPolicy **admissionregistrationv1.MatchPolicyType,
	namespaceSelector, objectSelector **metav1.LabelSelector, timeoutSeconds **int32) {
	if *failurePolicy == nil {
		p := admissionregistrationv1.Fail
		*failurePolicy = &p
	}
	if *matchPolicy == nil {
		p := admissionregistrationv1.Equivalent
		*matchPolicy = &p
	}
	if *namespaceSelector == nil {
		*namespaceSelector = &metav1.LabelSelector{}
	}
	if *objectSelector == nil {
		*objectSelector = &metav1.LabelSelector{}
	}
	if *timeoutSeconds == nil {
		t := int32(10)
		*timeoutSeconds = &t
	}
	if cc.Service != nil && cc.Service.Port == nil {
		p := int32(443)
		cc.Service.Port = &p
	}
	for i := range rules {
		if rules[i].Scope == nil {
			s := admissionregistrationv1.AllScopes
			rules[i].Scope = &s
		}
	}
}

func defaultMutatingWebhooks(obj runtime.Object) {
	for i := range obj.(*admissionregistrationv1.MutatingWebhookConfiguration).Webhooks {
		h := &obj.(*admissionregistrationv1.MutatingWebhookConfiguration).Webhooks[i]
		defaultWebhook(&h.ClientConfig, h.Rules, &h.FailurePolicy, &h.MatchPolicy, &h.NamespaceSelector, &h.ObjectSelector, &h.TimeoutSeconds)
		if h.ReinvocationPolicy == nil {
			p := admissionregistrationv1.NeverReinvocationPolicy
			h.ReinvocationPolicy = &p
		}
	}
}

func defaultValidatingWebhooks(obj runtime.Object) {
	for i := range obj.(*admissionregistrationv1.ValidatingWebhookConfiguration).Webhooks {
		h := &obj.(*admissionregistrationv1.ValidatingWebhookConfiguration).Webhooks[i]
		defaultWebhook(&h.ClientConfig, h.Rules, &h.FailurePolicy, &h.MatchPolicy, &h.NamespaceSelector, &h.ObjectSelector, &h.TimeoutSeconds)
	}
}

func validateMutatingWebhooks(obj runtime.Object) field.ErrorList {
	c := obj.(*admissionregistrationv1.MutatingWebhookConfiguration)
	errs := dnsSubdomainName(c.Name)
	names := sets.New[string]()
	for i, h := range c.Webhooks {
		p := field.NewPath("webhooks").Index(i)
		errs = append(errs, validateWebhook(p, names, asValidating(h))...)
		if h.ReinvocationPolicy != nil {
			switch *h.ReinvocationPolicy {
			case admissionregistrationv1.NeverReinvocationPolicy, admissionregistrationv1.IfNeededReinvocationPolicy:
			default:
				errs = append(errs, field.NotSupported(p.Child("reinvocationPolicy"), *h.ReinvocationPolicy, []string{"Never", "IfNeeded"}))
			}
		}
	}
	return errs
}

func validateValidatingWebhooks(obj runtime.Object) field.ErrorList {
	c := obj.(*admissionregistrationv1.ValidatingWebhookConfiguration)
	errs := dnsSubdomainName(c.Name)
	names := sets.New[string]()
	for i, h := range c.Webhooks {
		errs = append(errs, validateWebhook(field.NewPath("webhooks").Index(i), names, h)...)
	}
	return errs
}

// asValidating: the fields a mutating webhook shares with a validating one.
func asValidating(h admissionregistrationv1.MutatingWebhook) admissionregistrationv1.ValidatingWebhook {
	return admissionregistrationv1.ValidatingWebhook{
		Name: h.Name, ClientConfig: h.ClientConfig, Rules: h.Rules, FailurePolicy: h.FailurePolicy,
		MatchPolicy: h.MatchPolicy, NamespaceSelector: h.NamespaceSelector, ObjectSelector: h.ObjectSelector,
		SideEffects: h.SideEffects, TimeoutSeconds: h.TimeoutSeconds, AdmissionReviewVersions: h.AdmissionReviewVersions,
		MatchConditions: h.MatchConditions,
	}
}

// validateWebhook: the checks of kube-apiserver's validation that a
// configuration written by hand is likeliest to fail.
func validateWebhook(p *field.Path, names sets.Set[string], h admissionregistrationv1.ValidatingWebhook) field.ErrorList {
	var errs field.ErrorList
	if h.Name == "" {
		errs = append(errs, field.Required(p.Child("name"), ""))
	} else {
		errs = append(errs, utilvalidation.IsFullyQualifiedName(p.Child("name"), h.Name)...)
		if names.Has(h.Name) {
			errs = append(errs, field.Duplicate(p.Child("name"), h.Name))
		}
		names.Insert(h.Name)
	}
	cc := p.Child("clientConfig")
	switch {
	case h.ClientConfig.URL == nil && h.ClientConfig.Service == nil:
		errs = append(errs, field.Required(cc, "exactly one of url or service is required"))
	case h.ClientConfig.URL != nil && h.ClientConfig.Service != nil:
		errs = append(errs, field.Invalid(cc, "", "exactly one of url or service is required"))
	case h.ClientConfig.URL != nil:
		errs = append(errs, webhook.ValidateWebhookURL(cc.Child("url"), *h.ClientConfig.URL, true)...)
	default:
		s := h.ClientConfig.Service
		port := int32(443)
		if s.Port != nil {
			port = *s.Port
		}
		errs = append(errs, webhook.ValidateWebhookService(cc.Child("service"), s.Namespace, s.Name, s.Path, port)...)
	}
	if len(h.ClientConfig.CABundle) > 0 {
		errs = append(errs, webhook.ValidateCABundle(cc.Child("caBundle"), h.ClientConfig.CABundle)...)
	}
	if len(h.AdmissionReviewVersions) == 0 {
		errs = append(errs, field.Required(p.Child("admissionReviewVersions"), "must specify one of v1, v1beta1"))
	} else if !sets.New(h.AdmissionReviewVersions...).HasAny("v1", "v1beta1") {
		errs = append(errs, field.Invalid(p.Child("admissionReviewVersions"), h.AdmissionReviewVersions, "must include at least one of v1, v1beta1"))
	}
	if h.SideEffects == nil {
		errs = append(errs, field.Required(p.Child("sideEffects"), "must specify one of None, NoneOnDryRun"))
	} else if *h.SideEffects != admissionregistrationv1.SideEffectClassNone && *h.SideEffects != admissionregistrationv1.SideEffectClassNoneOnDryRun {
		errs = append(errs, field.NotSupported(p.Child("sideEffects"), *h.SideEffects, []string{"None", "NoneOnDryRun"}))
	}
	if h.FailurePolicy != nil && *h.FailurePolicy != admissionregistrationv1.Ignore && *h.FailurePolicy != admissionregistrationv1.Fail {
		errs = append(errs, field.NotSupported(p.Child("failurePolicy"), *h.FailurePolicy, []string{"Ignore", "Fail"}))
	}
	if h.MatchPolicy != nil && *h.MatchPolicy != admissionregistrationv1.Exact && *h.MatchPolicy != admissionregistrationv1.Equivalent {
		errs = append(errs, field.NotSupported(p.Child("matchPolicy"), *h.MatchPolicy, []string{"Exact", "Equivalent"}))
	}
	if h.TimeoutSeconds != nil && (*h.TimeoutSeconds < 1 || *h.TimeoutSeconds > 30) {
		errs = append(errs, field.Invalid(p.Child("timeoutSeconds"), *h.TimeoutSeconds, "the timeout value must be between 1 and 30 seconds"))
	}
	opts := metav1validation.LabelSelectorValidationOptions{}
	if h.NamespaceSelector != nil {
		errs = append(errs, metav1validation.ValidateLabelSelector(h.NamespaceSelector, opts, p.Child("namespaceSelector"))...)
	}
	if h.ObjectSelector != nil {
		errs = append(errs, metav1validation.ValidateLabelSelector(h.ObjectSelector, opts, p.Child("objectSelector"))...)
	}
	for i, r := range h.Rules {
		rp := p.Child("rules").Index(i)
		if len(r.Operations) == 0 {
			errs = append(errs, field.Required(rp.Child("operations"), ""))
		}
		for j, op := range r.Operations {
			switch op {
			case admissionregistrationv1.OperationAll, admissionregistrationv1.Create, admissionregistrationv1.Update, admissionregistrationv1.Delete, admissionregistrationv1.Connect:
			default:
				errs = append(errs, field.NotSupported(rp.Child("operations").Index(j), op, []string{"*", "CREATE", "UPDATE", "DELETE", "CONNECT"}))
			}
		}
		if len(r.APIGroups) == 0 {
			errs = append(errs, field.Required(rp.Child("apiGroups"), ""))
		}
		if len(r.APIVersions) == 0 {
			errs = append(errs, field.Required(rp.Child("apiVersions"), ""))
		}
		if len(r.Resources) == 0 {
			errs = append(errs, field.Required(rp.Child("resources"), ""))
		}
		for j, res := range r.Resources {
			if res == "" || strings.Count(res, "/") > 1 {
				errs = append(errs, field.Invalid(rp.Child("resources").Index(j), res, "must be a resource, resource/subresource or */*"))
			}
		}
		if r.Scope != nil {
			switch *r.Scope {
			case admissionregistrationv1.ClusterScope, admissionregistrationv1.NamespacedScope, admissionregistrationv1.AllScopes:
			default:
				errs = append(errs, field.NotSupported(rp.Child("scope"), *r.Scope, []string{"Cluster", "Namespaced", "*"}))
			}
		}
	}
	return errs
}

func dnsSubdomainName(name string) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range utilvalidation.IsDNS1123Subdomain(name) {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), name, msg))
	}
	return errs
}
