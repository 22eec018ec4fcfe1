package main

// Service-account tokens, the way kube-apiserver issues and checks them
// (kube-apiserver's own code for this lives in k8s.io/kubernetes, which is
// not packaged; this is a small equivalent):
//
//   - POST .../serviceaccounts/NAME/token (TokenRequest, what `kubectl create
//     token` and kubelets call) returns a JWT signed with ES256 by a key the
//     server keeps in --data-dir (sa.key), with iss, sub
//     system:serviceaccount:NS:NAME, aud (the requested audiences, default
//     the server's own), exp (expirationSeconds: default 3600, at least 600),
//     iat, nbf, jti and the "kubernetes.io" claim: namespace, serviceaccount
//     {name, uid} and, for a token bound to a Pod or Secret, that object's
//     {name, uid}.
//   - POST /apis/authentication.k8s.io/v1/tokenreviews checks a token:
//     signature and issuer, expiry, that its audiences intersect the ones
//     asked for (default the server's), that the service account still
//     exists with the same uid and a bound object too (a pod deleted, or
//     deleted and recreated under the same name, ends its tokens). The answer
//     is the user kube-apiserver would report.
//   - The same check authenticates API requests that carry such a token as a
//     bearer token (audience: the server's), so a pod's in-cluster client
//     reaches the API as its service account.
//
// Not done: the legacy, secret-based tokens, token expiry extension
// ("warnafter"), Node-bound tokens, and key rotation.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/apiserver/pkg/authentication/user"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
)

// The issuer, and the server's own audience, as in a default cluster.
const defaultIssuer = "https://kubernetes.default.svc.cluster.local"

const (
	defaultTokenSeconds = 3600
	minTokenSeconds     = 600
	maxTokenSeconds     = 1 << 32
	// Clock skew allowed on nbf and iat.
	tokenLeeway = 60 * time.Second
)

// tokenIssuer signs and checks service-account tokens. Objects are looked
// up in the server's own stores (env), filled when the natives are installed.
type tokenIssuer struct {
	issuer string
	key    *ecdsa.PrivateKey
	kid    string
	env    *nativeEnv
}

// newTokenIssuer loads the signing key from dir/sa.key, creating it once.
func newTokenIssuer(dir, issuer string, env *nativeEnv) (*tokenIssuer, error) {
	path := filepath.Join(dir, "sa.key")
	var key *ecdsa.PrivateKey
	if data, err := os.ReadFile(path); err == nil {
		if block, _ := pem.Decode(data); block != nil {
			key, _ = x509.ParseECPrivateKey(block.Bytes)
		}
	}
	if key == nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, err
		}
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return nil, err
		}
		if err := writeFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})); err != nil {
			return nil, err
		}
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(pub)
	return &tokenIssuer{issuer: issuer, key: key, kid: base64.RawURLEncoding.EncodeToString(sum[:]), env: env}, nil
}

type tokenClaims struct {
	Issuer     string     `json:"iss"`
	Subject    string     `json:"sub"`
	Audience   []string   `json:"aud"`
	Expiry     int64      `json:"exp"`
	IssuedAt   int64      `json:"iat"`
	NotBefore  int64      `json:"nbf"`
	ID         string     `json:"jti,omitempty"`
	Kubernetes kubeClaims `json:"kubernetes.io"`
}

type kubeClaims struct {
	Namespace      string     `json:"namespace"`
	ServiceAccount objectRef  `json:"serviceaccount"`
	Pod            *objectRef `json:"pod,omitempty"`
	Secret         *objectRef `json:"secret,omitempty"`
}

type objectRef struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

var b64 = base64.RawURLEncoding

func (t *tokenIssuer) sign(c *tokenClaims) (string, error) {
	header, err := json.Marshal(map[string]string{"alg": "ES256", "kid": t.kid})
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signed := b64.EncodeToString(header) + "." + b64.EncodeToString(payload)
	digest := sha256.Sum256([]byte(signed))
	r, s, err := ecdsa.Sign(rand.Reader, t.key, digest[:])
	if err != nil {
		return "", err
	}
	// JWS ES256: r and s as two 32-byte big-endian integers.
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signed + "." + b64.EncodeToString(sig), nil
}

var errNotOurs = errors.New("not a service account token of this server")

// parse checks the signature and the issuer; nothing else.
func (t *tokenIssuer) parse(token string) (*tokenClaims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errNotOurs
	}
	var header struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	raw, err := b64.DecodeString(parts[0])
	if err != nil || json.Unmarshal(raw, &header) != nil || header.Alg != "ES256" || header.Kid != t.kid {
		return nil, errNotOurs
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return nil, errors.New("invalid token signature")
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if !ecdsa.Verify(&t.key.PublicKey, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		return nil, errors.New("invalid token signature")
	}
	var c tokenClaims
	raw, err = b64.DecodeString(parts[1])
	if err != nil || json.Unmarshal(raw, &c) != nil {
		return nil, errors.New("malformed token claims")
	}
	if c.Issuer != t.issuer {
		return nil, errNotOurs
	}
	return &c, nil
}

// get fetches an object from the server's store of that resource.
func (t *tokenIssuer) get(ctx context.Context, gr schema.GroupResource, namespace, name string) (runtime.Object, error) {
	store := t.env.stores[gr]
	if store == nil {
		return nil, fmt.Errorf("%s are not served", gr)
	}
	return store.Get(genericapirequest.WithNamespace(ctx, namespace), name, &metav1.GetOptions{})
}

var (
	serviceAccountsResource = schema.GroupResource{Resource: "serviceaccounts"}
	podsResource            = schema.GroupResource{Resource: "pods"}
	secretsResource         = schema.GroupResource{Resource: "secrets"}
)

// review validates a token for the given audiences (default: the server's)
// and returns the user it stands for and the audiences it is valid for.
func (t *tokenIssuer) review(ctx context.Context, token string, audiences []string) (*user.DefaultInfo, []string, error) {
	c, err := t.parse(token)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	if now.Unix() >= c.Expiry {
		return nil, nil, errors.New("service account token has expired")
	}
	if time.Unix(c.NotBefore, 0).After(now.Add(tokenLeeway)) || time.Unix(c.IssuedAt, 0).After(now.Add(tokenLeeway)) {
		return nil, nil, errors.New("service account token is not valid yet")
	}
	if len(audiences) == 0 {
		audiences = []string{t.issuer}
	}
	var matched []string
	for _, a := range audiences {
		if contains(c.Audience, a) {
			matched = append(matched, a)
		}
	}
	if len(matched) == 0 {
		return nil, nil, fmt.Errorf("token audiences %q is invalid for the target audiences %q", c.Audience, audiences)
	}
	k := c.Kubernetes
	if c.Subject != serviceaccount.MakeUsername(k.Namespace, k.ServiceAccount.Name) {
		return nil, nil, errors.New("token subject does not match its service account")
	}
	obj, err := t.get(ctx, serviceAccountsResource, k.Namespace, k.ServiceAccount.Name)
	if err != nil {
		return nil, nil, fmt.Errorf("service account %s/%s: %w", k.Namespace, k.ServiceAccount.Name, notFound(err))
	}
	if sa := obj.(*corev1.ServiceAccount); string(sa.UID) != k.ServiceAccount.UID {
		return nil, nil, fmt.Errorf("service account UID (%s) does not match claim (%s)", sa.UID, k.ServiceAccount.UID)
	}
	extra := map[string][]string{}
	if k.Pod != nil {
		obj, err := t.get(ctx, podsResource, k.Namespace, k.Pod.Name)
		if err != nil {
			return nil, nil, fmt.Errorf("pod %s/%s: %w", k.Namespace, k.Pod.Name, notFound(err))
		}
		pod := obj.(*corev1.Pod)
		if string(pod.UID) != k.Pod.UID {
			return nil, nil, fmt.Errorf("pod UID (%s) does not match claim (%s)", pod.UID, k.Pod.UID)
		}
		if pod.DeletionTimestamp != nil && pod.DeletionTimestamp.Time.Before(now.Add(-tokenLeeway)) {
			return nil, nil, fmt.Errorf("pod %s/%s is being deleted", k.Namespace, k.Pod.Name)
		}
		extra[serviceaccount.PodNameKey] = []string{k.Pod.Name}
		extra[serviceaccount.PodUIDKey] = []string{k.Pod.UID}
	}
	if k.Secret != nil {
		obj, err := t.get(ctx, secretsResource, k.Namespace, k.Secret.Name)
		if err != nil {
			return nil, nil, fmt.Errorf("secret %s/%s: %w", k.Namespace, k.Secret.Name, notFound(err))
		}
		if s := obj.(*corev1.Secret); string(s.UID) != k.Secret.UID {
			return nil, nil, fmt.Errorf("secret UID (%s) does not match claim (%s)", s.UID, k.Secret.UID)
		}
	}
	if c.ID != "" {
		extra[user.CredentialIDKey] = []string{"JTI=" + c.ID}
	}
	info := &user.DefaultInfo{
		Name: c.Subject,
		UID:  k.ServiceAccount.UID,
		Groups: []string{serviceaccount.AllServiceAccountsGroup, serviceaccount.MakeNamespaceGroupName(k.Namespace),
			user.AllAuthenticated},
		Extra: extra,
	}
	return info, matched, nil
}

func notFound(err error) error {
	if apierrors.IsNotFound(err) {
		return errors.New("not found")
	}
	return err
}

// authenticator: bearer tokens of this issuer, for the server's audience.
// Other bearer tokens are not ours to judge (the request then fails with 401).
func (t *tokenIssuer) authenticator() authenticator.Token {
	return authenticator.TokenFunc(func(ctx context.Context, token string) (*authenticator.Response, bool, error) {
		info, auds, err := t.review(ctx, token, nil)
		if errors.Is(err, errNotOurs) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		return &authenticator.Response{User: info, Audiences: auds}, true, nil
	})
}

// tokenRequestREST serves serviceaccounts/token.
type tokenRequestREST struct{ issuer *tokenIssuer }

func (r *tokenRequestREST) New() runtime.Object { return &authenticationv1.TokenRequest{} }
func (r *tokenRequestREST) Destroy()            {}
func (r *tokenRequestREST) GroupVersionKind(schema.GroupVersion) schema.GroupVersionKind {
	return authenticationv1.SchemeGroupVersion.WithKind("TokenRequest")
}

func (r *tokenRequestREST) Create(ctx context.Context, name string, obj runtime.Object, createValidation rest.ValidateObjectFunc, options *metav1.CreateOptions) (runtime.Object, error) {
	req, ok := obj.(*authenticationv1.TokenRequest)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("expected a TokenRequest, got %T", obj))
	}
	gk := authenticationv1.SchemeGroupVersion.WithKind("TokenRequest").GroupKind()
	if req.Name != "" && req.Name != name {
		return nil, apierrors.NewBadRequest("metadata.name must match the service account's name")
	}
	ns, _ := genericapirequest.NamespaceFrom(ctx)
	saObj, err := r.issuer.get(ctx, serviceAccountsResource, ns, name)
	if err != nil {
		return nil, err
	}
	sa := saObj.(*corev1.ServiceAccount)
	out := req.DeepCopy()
	out.Name, out.Namespace = name, ns
	sp := &out.Spec
	if len(sp.Audiences) == 0 {
		sp.Audiences = []string{r.issuer.issuer}
	}
	if sp.ExpirationSeconds == nil {
		v := int64(defaultTokenSeconds)
		sp.ExpirationSeconds = &v
	}
	if s := *sp.ExpirationSeconds; s < minTokenSeconds || s > maxTokenSeconds {
		msg := "may not specify a duration less than 10 minutes"
		if s > maxTokenSeconds {
			msg = "may not specify a duration larger than 2^32 seconds"
		}
		return nil, apierrors.NewInvalid(gk, name, field.ErrorList{field.Invalid(field.NewPath("spec", "expirationSeconds"), s, msg)})
	}
	if createValidation != nil {
		if err := createValidation(ctx, out.DeepCopy()); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	exp := now.Add(time.Duration(*sp.ExpirationSeconds) * time.Second)
	c := &tokenClaims{
		Issuer: r.issuer.issuer, Subject: serviceaccount.MakeUsername(ns, name), Audience: sp.Audiences,
		Expiry: exp.Unix(), IssuedAt: now.Unix(), NotBefore: now.Unix(), ID: string(uuid.NewUUID()),
		Kubernetes: kubeClaims{Namespace: ns, ServiceAccount: objectRef{Name: name, UID: string(sa.UID)}},
	}
	if ref := sp.BoundObjectRef; ref != nil {
		bp := field.NewPath("spec", "boundObjectRef")
		if ref.APIVersion != "" && ref.APIVersion != "v1" {
			return nil, apierrors.NewInvalid(gk, name, field.ErrorList{field.NotSupported(bp.Child("apiVersion"), ref.APIVersion, []string{"v1"})})
		}
		var gr schema.GroupResource
		switch ref.Kind {
		case "Pod":
			gr = podsResource
		case "Secret":
			gr = secretsResource
		default:
			return nil, apierrors.NewInvalid(gk, name, field.ErrorList{field.NotSupported(bp.Child("kind"), ref.Kind, []string{"Pod", "Secret"})})
		}
		bound, err := r.issuer.get(ctx, gr, ns, ref.Name)
		if err != nil {
			return nil, err
		}
		var uid types.UID
		switch o := bound.(type) {
		case *corev1.Pod:
			uid = o.UID
			if o.Spec.ServiceAccountName != name {
				return nil, apierrors.NewBadRequest(fmt.Sprintf("cannot bind token for serviceaccount %q to pod running with different serviceaccount name", name))
			}
			c.Kubernetes.Pod = &objectRef{Name: o.Name, UID: string(uid)}
		case *corev1.Secret:
			uid = o.UID
			c.Kubernetes.Secret = &objectRef{Name: o.Name, UID: string(uid)}
		}
		if ref.UID != "" && ref.UID != uid {
			return nil, apierrors.NewConflict(gr, ref.Name, fmt.Errorf("the UID in the bound object reference (%s) does not match the UID in record (%s); the object might have been deleted and then recreated", ref.UID, uid))
		}
		ref.UID = uid
	}
	token, err := r.issuer.sign(c)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	out.Status = authenticationv1.TokenRequestStatus{Token: token, ExpirationTimestamp: metav1.NewTime(exp)}
	return out, nil
}

// tokenReviewREST serves tokenreviews: create only, nothing stored.
type tokenReviewREST struct{ issuer *tokenIssuer }

func (r *tokenReviewREST) New() runtime.Object     { return &authenticationv1.TokenReview{} }
func (r *tokenReviewREST) Destroy()                {}
func (r *tokenReviewREST) NamespaceScoped() bool   { return false }
func (r *tokenReviewREST) GetSingularName() string { return "tokenreview" }

func (r *tokenReviewREST) Create(ctx context.Context, obj runtime.Object, createValidation rest.ValidateObjectFunc, options *metav1.CreateOptions) (runtime.Object, error) {
	review, ok := obj.(*authenticationv1.TokenReview)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("expected a TokenReview, got %T", obj))
	}
	if review.Spec.Token == "" {
		return nil, apierrors.NewBadRequest("token is required for TokenReview in authentication")
	}
	if createValidation != nil {
		if err := createValidation(ctx, review.DeepCopy()); err != nil {
			return nil, err
		}
	}
	out := review.DeepCopy()
	info, auds, err := r.issuer.review(ctx, review.Spec.Token, review.Spec.Audiences)
	if err != nil {
		out.Status = authenticationv1.TokenReviewStatus{Authenticated: false, Error: err.Error()}
		return out, nil
	}
	extra := map[string]authenticationv1.ExtraValue{}
	for k, v := range info.Extra {
		extra[k] = v
	}
	out.Status = authenticationv1.TokenReviewStatus{
		Authenticated: true,
		User:          authenticationv1.UserInfo{Username: info.Name, UID: info.UID, Groups: info.Groups, Extra: extra},
		Audiences:     auds,
	}
	return out, nil
}

// selfSubjectReviewREST serves selfsubjectreviews (`kubectl auth whoami`):
// the caller's own user, as authenticated.
type selfSubjectReviewREST struct{}

func (r *selfSubjectReviewREST) New() runtime.Object     { return &authenticationv1.SelfSubjectReview{} }
func (r *selfSubjectReviewREST) Destroy()                {}
func (r *selfSubjectReviewREST) NamespaceScoped() bool   { return false }
func (r *selfSubjectReviewREST) GetSingularName() string { return "selfsubjectreview" }

func (r *selfSubjectReviewREST) Create(ctx context.Context, obj runtime.Object, createValidation rest.ValidateObjectFunc, options *metav1.CreateOptions) (runtime.Object, error) {
	u, ok := genericapirequest.UserFrom(ctx)
	if !ok {
		return nil, apierrors.NewBadRequest("no user in the request")
	}
	extra := map[string]authenticationv1.ExtraValue{}
	for k, v := range u.GetExtra() {
		extra[k] = v
	}
	return &authenticationv1.SelfSubjectReview{Status: authenticationv1.SelfSubjectReviewStatus{
		UserInfo: authenticationv1.UserInfo{Username: u.GetName(), UID: u.GetUID(), Groups: u.GetGroups(), Extra: extra},
	}}, nil
}
