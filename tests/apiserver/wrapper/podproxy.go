package main

// pods/proxy: `GET /api/v1/namespaces/NS/pods/[SCHEME:]NAME[:PORT]/proxy/PATH`
// forwarded to the pod's IP, as kube-apiserver's pod registry does (that
// code is in k8s.io/kubernetes, which is not packaged; this is the same
// behaviour in a few lines). Nothing runs pods here: a test sets a pod's
// status.podIP(s) to an address it serves on, which, as in kube-apiserver,
// must be proxyable: not loopback, not link-local. The tests put such
// addresses in network namespaces of their own.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/proxy"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
)

// The methods kube-apiserver proxies.
var proxyMethods = []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}

// errAddressNotAllowed is kube-apiserver's answer (a 400) for a pod with no
// IP or one it refuses to proxy to.
var errAddressNotAllowed = errors.New("address not allowed")

// podProxyConversions lets the connect handler decode the query (the
// subpath travels as ?path=) into PodProxyOptions, as the conversion
// kube-apiserver generates for it does.
func podProxyConversions(s *runtime.Scheme) {
	err := s.AddConversionFunc((*url.Values)(nil), (*corev1.PodProxyOptions)(nil), func(a, b interface{}, _ conversion.Scope) error {
		b.(*corev1.PodProxyOptions).Path = a.(*url.Values).Get("path")
		return nil
	})
	if err != nil {
		panic(err)
	}
}

// podProxyREST serves pods/proxy from the pods' store.
type podProxyREST struct {
	store     *genericregistry.Store
	transport http.RoundTripper
}

func newPodProxyREST(store *genericregistry.Store) *podProxyREST {
	return &podProxyREST{
		store: store,
		// Short dial timeout: an unreachable pod is an error at once.
		transport: utilnet.SetTransportDefaults(&http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			TLSHandshakeTimeout: 5 * time.Second,
		}),
	}
}

func (r *podProxyREST) New() runtime.Object { return &corev1.PodProxyOptions{} }
func (r *podProxyREST) Destroy()            {}
func (r *podProxyREST) ConnectMethods() []string {
	return proxyMethods
}
func (r *podProxyREST) NewConnectOptions() (runtime.Object, bool, string) {
	return &corev1.PodProxyOptions{}, true, "path"
}

func (r *podProxyREST) Connect(ctx context.Context, id string, opts runtime.Object, responder rest.Responder) (http.Handler, error) {
	options, ok := opts.(*corev1.PodProxyOptions)
	if !ok {
		return nil, fmt.Errorf("invalid options object: %#v", opts)
	}
	location, err := r.location(ctx, id)
	if err != nil {
		return nil, err
	}
	location.Path = utilnet.JoinPreservingTrailingSlash(location.Path, options.Path)
	return proxy.NewUpgradeAwareHandler(location, r.transport, true, false, proxy.NewErrorResponder(responder)), nil
}

// location: the pod's URL for `[scheme:]name[:port]`.
func (r *podProxyREST) location(ctx context.Context, id string) (*url.URL, error) {
	scheme, name, port, valid := utilnet.SplitSchemeNamePort(id)
	if !valid {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid pod request %q", id))
	}
	obj, err := r.store.Get(ctx, name, &metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	pod := obj.(*corev1.Pod)
	// Without a port, the first container port (kube-apiserver does so too).
	if port == "" {
		for _, c := range pod.Spec.Containers {
			if len(c.Ports) > 0 {
				port = fmt.Sprint(c.Ports[0].ContainerPort)
				break
			}
		}
	}
	ip := podIP(pod)
	if err := proxyable(ip); err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	host := ip
	if port != "" {
		host = net.JoinHostPort(ip, port)
	}
	if scheme == "" {
		scheme = "http"
	}
	return &url.URL{Scheme: scheme, Host: host}, nil
}

// podIP: the first of status.podIPs, else status.podIP.
func podIP(pod *corev1.Pod) string {
	if len(pod.Status.PodIPs) > 0 {
		return pod.Status.PodIPs[0].IP
	}
	return pod.Status.PodIP
}

// proxyable: the rule of kube-apiserver's IsProxyableIP (the API server
// never proxies to itself or to its node's link-local services).
func proxyable(ip string) error {
	parsed := net.ParseIP(ip)
	if parsed == nil || parsed.IsLoopback() || parsed.IsLinkLocalUnicast() ||
		parsed.IsLinkLocalMulticast() || parsed.IsInterfaceLocalMulticast() {
		return errAddressNotAllowed
	}
	return nil
}
