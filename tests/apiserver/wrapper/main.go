// Command outrigger-apiserver is a test-only Kubernetes API server: the
// apiextensions-apiserver library (CRDs with validation, CEL rules, status and
// scale subresources, server-side apply, watches, OpenAPI for kubectl
// explain) plus a few built-in resources (see native.go), on loopback only,
// backed by an etcd given with --etcd-servers.
//
// Security model (tests only): TLS with a self-signed CA. Clients
// authenticate with a client certificate signed by that CA (the admin
// kubeconfig) or with a service-account token this server issued (bearer
// token, audience the server's own, see tokens.go: how a pod's in-cluster
// client authenticates); any other bearer token is refused (401). Anonymous
// requests may only read the health and version endpoints. Authorization is
// permissive: every authenticated user, service accounts included, may do
// everything. RBAC objects (Roles, ClusterRoles and their bindings) are
// stored and served, as the Helm chart needs, but not enforced. API priority
// and fairness is off. The only admission plugins are k8s.io/apiserver's
// MutatingAdmissionWebhook and ValidatingAdmissionWebhook (with the
// admissionregistration native set, see admission.go): the server then calls
// out, over HTTPS, to the webhooks that administrators configure — on
// loopback in tests, which is all this server accepts as a client anyway.
// A webhook's Service is reached through its EndpointSlices, not its
// ClusterIP (admission.go says why); calls carry no client credentials.
// pods/proxy forwards to the IP a test wrote in a pod's status, never to a
// loopback or link-local one, as kube-apiserver (podproxy.go).
package main

import (
	"context"
	goflag "flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
	noopoteltrace "go.opentelemetry.io/otel/trace/noop"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apiextensions-apiserver/pkg/apiserver"
	"k8s.io/apiextensions-apiserver/pkg/cmd/server/options"
	generatedopenapi "k8s.io/apiextensions-apiserver/pkg/generated/openapi"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/request/anonymous"
	"k8s.io/apiserver/pkg/authentication/request/bearertoken"
	authunion "k8s.io/apiserver/pkg/authentication/request/union"
	"k8s.io/apiserver/pkg/authentication/request/x509"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	utilopenapi "k8s.io/apiserver/pkg/util/openapi"
	"k8s.io/apiserver/pkg/util/proxy"
	"k8s.io/apiserver/pkg/util/webhook"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/klog/v2"
)

type flags struct {
	etcdServers   []string
	etcdPrefix    string
	bindAddress   string
	port          int
	dataDir       string
	kubeconfigOut string
	native        []string
}

func main() {
	var f flags
	fs := pflag.NewFlagSet("outrigger-apiserver", pflag.ContinueOnError)
	fs.StringSliceVar(&f.etcdServers, "etcd-servers", nil, "etcd client URLs (required), e.g. http://127.0.0.1:2379")
	fs.StringVar(&f.etcdPrefix, "etcd-prefix", "/registry", "etcd key prefix")
	fs.StringVar(&f.bindAddress, "bind-address", "127.0.0.1", "loopback address to listen on (127.0.0.0/8 or ::1)")
	fs.IntVar(&f.port, "secure-port", 0, "port to listen on; 0 picks a free one")
	fs.StringVar(&f.dataDir, "data-dir", "", "directory for certificates and the default kubeconfig (required)")
	fs.StringVar(&f.kubeconfigOut, "kubeconfig-out", "", "where to write the admin kubeconfig (default <data-dir>/kubeconfig)")
	fs.StringSliceVar(&f.native, "native", allNativeSets, "built-in API sets to serve: core (namespaces, pods, services, endpoints, configmaps, secrets, serviceaccounts, events), events (events.k8s.io), discovery (endpointslices), coordination (leases), admissionregistration (mutating and validating webhook configurations, and the admission webhooks they configure; needs core and discovery), authentication (tokenreviews, selfsubjectreviews; needs core), apps (deployments, replicasets), batch (jobs), policy (poddisruptionbudgets), rbac (roles, clusterroles and their bindings); empty for none")
	klogFlags := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(klogFlags)
	fs.AddGoFlagSet(klogFlags)
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == pflag.ErrHelp {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx := genericapiserver.SetupSignalContext()
	if err := run(ctx, f); err != nil {
		klog.Errorf("outrigger-apiserver: %v", err)
		klog.Flush()
		os.Exit(1)
	}
}

func run(ctx context.Context, f flags) error {
	if len(f.etcdServers) == 0 {
		return fmt.Errorf("--etcd-servers is required")
	}
	if f.dataDir == "" {
		return fmt.Errorf("--data-dir is required")
	}
	bind := net.ParseIP(f.bindAddress)
	if bind == nil || !bind.IsLoopback() {
		return fmt.Errorf("--bind-address must be a loopback address, got %q", f.bindAddress)
	}
	for _, s := range f.etcdServers {
		u, err := url.Parse(s)
		if err != nil {
			return fmt.Errorf("--etcd-servers: %v", err)
		}
		if ip := net.ParseIP(u.Hostname()); (ip == nil || !ip.IsLoopback()) && u.Hostname() != "localhost" {
			return fmt.Errorf("--etcd-servers must be on loopback, got %q", s)
		}
	}
	if f.kubeconfigOut == "" {
		f.kubeconfigOut = filepath.Join(f.dataDir, "kubeconfig")
	}
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		return err
	}
	certs := newPKI(f.dataDir)
	if err := certs.ensure(); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	for _, s := range f.native {
		if !sets.New(allNativeSets...).Has(s) {
			return fmt.Errorf("--native: unknown set %q (known: %s)", s, strings.Join(allNativeSets, ","))
		}
	}
	natives := enabledNatives(sets.New(f.native...))
	served := sets.New(f.native...)
	webhookAdmission := served.Has("admissionregistration")
	if webhookAdmission && !served.HasAll("core", "discovery") {
		return fmt.Errorf("--native admissionregistration needs core (namespaces, services) and discovery (endpointslices)")
	}

	ln, err := net.Listen("tcp", net.JoinHostPort(bind.String(), fmt.Sprint(f.port)))
	if err != nil {
		return err
	}
	port := ln.Addr().(*net.TCPAddr).Port

	// Options: those of apiextensions-apiserver, minus everything that would
	// need a real cluster (delegated authn/z, core API kubeconfig, admission,
	// priority and fairness). Webhook admission is added below, once the
	// loopback client exists.
	o := options.NewCustomResourceDefinitionsServerOptions(os.Stdout, os.Stderr)
	if err := o.ServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	ro := o.RecommendedOptions
	ro.SecureServing.Listener = ln
	ro.SecureServing.BindAddress = bind
	ro.SecureServing.BindPort = port
	ro.SecureServing.ServerCert.CertKey = genericoptions.CertKey{CertFile: certs.ServingCert, KeyFile: certs.ServingKey}
	ro.SecureServing.ServerCert.CertDirectory = ""
	ro.Authentication = nil
	ro.Authorization = nil
	ro.CoreAPI = nil
	ro.Admission = nil
	ro.Features.EnablePriorityAndFairness = false
	ro.Etcd.StorageConfig.Transport.ServerList = f.etcdServers
	ro.Etcd.StorageConfig.Prefix = strings.TrimSuffix(f.etcdPrefix, "/") + "/apiextensions.kubernetes.io"
	if err := o.Complete(); err != nil {
		return err
	}
	if err := o.Validate(); err != nil {
		return err
	}

	serverConfig := genericapiserver.NewRecommendedConfig(apiserver.Codecs)
	if err := o.ServerRunOptions.ApplyTo(&serverConfig.Config); err != nil {
		return err
	}
	if err := ro.ApplyTo(serverConfig); err != nil {
		return err
	}
	if err := o.APIEnablement.ApplyTo(&serverConfig.Config, apiserver.DefaultAPIResourceConfigSource(), apiserver.Scheme); err != nil {
		return err
	}
	serverConfig.ExternalAddress = net.JoinHostPort(bind.String(), fmt.Sprint(port))

	// Authentication: client certificates from our CA or service-account
	// tokens of this server, else anonymous; a bearer token that is not valid
	// fails the request (401), as in kube-apiserver.
	env := &nativeEnv{stores: map[schema.GroupResource]*genericregistry.Store{}}
	if env.tokens, err = newTokenIssuer(f.dataDir, defaultIssuer, env); err != nil {
		return fmt.Errorf("service-account token key: %w", err)
	}
	caPEM, err := os.ReadFile(certs.CAFile)
	if err != nil {
		return err
	}
	clientCA, err := dynamiccertificates.NewStaticCAContent("client-ca", caPEM)
	if err != nil {
		return err
	}
	if err := serverConfig.Authentication.ApplyClientCert(clientCA, serverConfig.SecureServing); err != nil {
		return err
	}
	serverConfig.Authentication.APIAudiences = authenticator.Audiences{defaultIssuer}
	serverConfig.Authentication.Authenticator = authunion.NewFailOnError(
		authunion.New(
			x509.NewDynamic(clientCA.VerifyOptions, x509.CommonNameUserConversion),
			bearertoken.New(env.tokens.authenticator()),
		),
		anonymous.NewAuthenticator(nil),
	)
	serverConfig.Authorization.Authorizer = authorizer.AuthorizerFunc(authorize)

	// OpenAPI v2 and v3, including the native types.
	defs := withBuiltinDefinitions(utilopenapi.GetOpenAPIDefinitionsWithoutDisabledFeatures(generatedopenapi.GetOpenAPIDefinitions), nativeRoots(natives))
	namer := openapinamer.NewDefinitionNamer(apiserver.Scheme, clientgoscheme.Scheme)
	serverConfig.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(defs, namer)
	serverConfig.OpenAPIConfig.Info.Title = "outrigger-apiserver"
	serverConfig.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(defs, namer)
	serverConfig.OpenAPIV3Config.Info.Title = "outrigger-apiserver"

	// Core informers, used to resolve webhook services (conversion and
	// admission): our own Services when we serve them, else an empty fake.
	var coreClient kubernetes.Interface = fake.NewSimpleClientset()
	servesServices := served.Has("core")
	if servesServices {
		coreClient, err = kubernetes.NewForConfig(serverConfig.LoopbackClientConfig)
		if err != nil {
			return err
		}
	}
	serverConfig.SharedInformerFactory = informers.NewSharedInformerFactory(coreClient, 10*time.Minute)
	// Through EndpointSlices when we serve them (admission.go says why),
	// else through the ClusterIP as before (which nothing routes).
	var resolver webhook.ServiceResolver = serviceResolver{serverConfig.SharedInformerFactory.Core().V1().Services().Lister()}
	if servesServices && served.Has("discovery") {
		if resolver, err = newEndpointResolver(serverConfig.SharedInformerFactory); err != nil {
			return err
		}
	}
	if webhookAdmission {
		if err := enableWebhookAdmission(serverConfig, coreClient, resolver, ro.FeatureGate); err != nil {
			return fmt.Errorf("admission: %w", err)
		}
	}

	config := &apiserver.Config{
		GenericConfig: serverConfig,
		ExtraConfig: apiserver.ExtraConfig{
			CRDRESTOptionsGetter: options.NewCRDRESTOptionsGetter(*ro.Etcd, serverConfig.ResourceTransformers, serverConfig.StorageObjectCountTracker),
			ServiceResolver:      resolver,
			AuthResolverWrapper:  webhook.NewDefaultAuthenticationInfoResolverWrapper(nil, nil, serverConfig.LoopbackClientConfig, noopoteltrace.NewTracerProvider()),
		},
	}
	completed := config.Complete()
	// apiextensions-apiserver normally runs delegated behind kube-apiserver,
	// which serves /api and /apis; here it is the top server.
	completed.GenericConfig.EnableDiscovery = true
	server, err := completed.New(genericapiserver.NewEmptyDelegate())
	if err != nil {
		return err
	}
	s := server.GenericAPIServer

	// Native resources, stored in the same etcd under --etcd-prefix.
	nativeGroups := sets.New[string]()
	if len(natives) > 0 {
		nativeScheme := newNativeScheme(natives)
		etcd := *ro.Etcd
		etcd.StorageConfig.Prefix = f.etcdPrefix
		seen := map[string]bool{}
		var versions []string
		for _, r := range natives {
			nativeGroups.Insert(r.gv.Group)
			if !seen[r.gv.String()] {
				seen[r.gv.String()] = true
				versions = append(versions, r.gv.String())
			}
		}
		etcd.StorageConfig.Codec = serializer.NewCodecFactory(nativeScheme).LegacyCodec(groupVersions(natives)...)
		getter := etcd.CreateRESTOptionsGetter(&genericoptions.SimpleStorageFactory{StorageConfig: etcd.StorageConfig}, serverConfig.ResourceTransformers)
		if err := installNatives(s, natives, nativeScheme, getter, env); err != nil {
			return err
		}
		klog.Infof("serving native resources: %s", strings.Join(versions, " "))
	}

	crdDiscovery := newCRDGroupDiscovery(server.Informers.Apiextensions().V1().CustomResourceDefinitions(), s.DiscoveryGroupManager, nativeGroups)
	s.AddPostStartHookOrDie("outrigger-crd-group-discovery", func(hc genericapiserver.PostStartHookContext) error {
		go crdDiscovery.run(hc.Done())
		return nil
	})
	if servesServices {
		s.AddPostStartHookOrDie("outrigger-default-namespaces", func(hc genericapiserver.PostStartHookContext) error {
			return createDefaultNamespaces(hc)
		})
	}

	if err := writeKubeconfig(f.kubeconfigOut, fmt.Sprintf("https://%s", net.JoinHostPort(bind.String(), fmt.Sprint(port))), certs); err != nil {
		return err
	}
	klog.Infof("listening on https://%s, kubeconfig %s", net.JoinHostPort(bind.String(), fmt.Sprint(port)), f.kubeconfigOut)
	return s.PrepareRun().RunWithContext(ctx)
}

// authorize: every authenticated user is an administrator; anonymous users
// may only read health and version endpoints.
func authorize(ctx context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
	if u := a.GetUser(); u != nil && u.GetName() != user.Anonymous {
		return authorizer.DecisionAllow, "", nil
	}
	if !a.IsResourceRequest() && a.IsReadOnly() {
		p := a.GetPath()
		for _, allowed := range []string{"/healthz", "/readyz", "/livez", "/version"} {
			if p == allowed || strings.HasPrefix(p, allowed+"/") {
				return authorizer.DecisionAllow, "", nil
			}
		}
	}
	return authorizer.DecisionNoOpinion, "anonymous requests may only read /healthz, /readyz, /livez and /version", nil
}

type serviceResolver struct{ services corelisters.ServiceLister }

func (r serviceResolver) ResolveEndpoint(namespace, name string, port int32) (*url.URL, error) {
	return proxy.ResolveCluster(r.services, namespace, name, port)
}

func createDefaultNamespaces(hc genericapiserver.PostStartHookContext) error {
	client, err := kubernetes.NewForConfig(hc.LoopbackClientConfig)
	if err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(hc, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		for _, name := range []string{metav1.NamespaceDefault, metav1.NamespaceSystem, metav1.NamespacePublic, corev1.NamespaceNodeLease} {
			_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				klog.V(2).Infof("creating namespace %s: %v", name, err)
				return false, nil
			}
		}
		return true, nil
	})
}

func writeKubeconfig(path, server string, certs *pki) error {
	ca, err := os.ReadFile(certs.CAFile)
	if err != nil {
		return err
	}
	crt, err := os.ReadFile(certs.ClientCert)
	if err != nil {
		return err
	}
	key, err := os.ReadFile(certs.ClientKey)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["outrigger"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos["outrigger-admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: crt, ClientKeyData: key}
	cfg.Contexts["outrigger"] = &clientcmdapi.Context{Cluster: "outrigger", AuthInfo: "outrigger-admin", Namespace: metav1.NamespaceDefault}
	cfg.CurrentContext = "outrigger"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return writeFile(path, data)
}
