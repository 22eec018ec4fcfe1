package main

// Workload, disruption-budget and RBAC resources, stored like the other
// natives (see native.go): apps/v1 Deployments and ReplicaSets (status and
// scale subresources), batch/v1 Jobs (status), policy/v1
// PodDisruptionBudgets (status) and the four rbac.authorization.k8s.io/v1
// kinds.
//
// Stored only: no controller runs here (the test node runs Deployments and
// Jobs, see tests/node), and RBAC objects are not enforced (main.go: every
// authenticated user may do everything). What is done is what
// kube-apiserver's registries do before storing: the defaults of the v1
// types that show in `kubectl get -o yaml`, metadata.generation (1 on
// create, +1 on every change of spec; status and scale writes go through
// the spec's owner so a scale bumps it too, as in kube-apiserver), a Job's
// generated selector and template labels, and the validations a
// hand-written manifest most often fails.

import (
	"context"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
)

var workloadResources = []nativeResource{
	{
		set: "apps", gv: appsv1.SchemeGroupVersion, resource: "deployments", singular: "deployment", kind: "Deployment",
		namespaced: true, shortNames: []string{"deploy"},
		newObj:  func() runtime.Object { return &appsv1.Deployment{} },
		newList: func() runtime.Object { return &appsv1.DeploymentList{} },
		prepareCreate: func(obj runtime.Object) {
			d := obj.(*appsv1.Deployment)
			d.Status = appsv1.DeploymentStatus{}
			d.Generation = 1
			defaultDeployment(d)
		},
		prepareUpdate: func(obj, old runtime.Object) {
			d, o := obj.(*appsv1.Deployment), old.(*appsv1.Deployment)
			d.Status = o.Status
			defaultDeployment(d)
			bumpGeneration(&d.ObjectMeta, o.Generation, !equality.Semantic.DeepEqual(d.Spec, o.Spec))
		},
		statusUpdate: func(obj, old runtime.Object) {
			d, o := obj.(*appsv1.Deployment), old.(*appsv1.Deployment)
			d.Spec = o.Spec
			d.Labels, d.Annotations = o.Labels, o.Annotations
		},
		validate: func(obj runtime.Object) field.ErrorList {
			d := obj.(*appsv1.Deployment)
			errs := dnsSubdomainName(d.Name)
			errs = append(errs, validateReplicas(d.Spec.Replicas)...)
			errs = append(errs, validateSelectedTemplate(d.Spec.Selector, &d.Spec.Template)...)
			if s := d.Spec.Strategy; s.Type != appsv1.RollingUpdateDeploymentStrategyType && s.Type != appsv1.RecreateDeploymentStrategyType {
				errs = append(errs, field.NotSupported(field.NewPath("spec", "strategy", "type"), s.Type, []string{"RollingUpdate", "Recreate"}))
			} else if s.Type == appsv1.RollingUpdateDeploymentStrategyType && s.RollingUpdate != nil &&
				isZero(s.RollingUpdate.MaxSurge) && isZero(s.RollingUpdate.MaxUnavailable) {
				errs = append(errs, field.Invalid(field.NewPath("spec", "strategy", "rollingUpdate", "maxUnavailable"), s.RollingUpdate.MaxUnavailable, "may not be 0 when `maxSurge` is 0"))
			}
			return errs
		},
		validateUpdate: func(obj, old runtime.Object) field.ErrorList {
			return immutableSelector(obj.(*appsv1.Deployment).Spec.Selector, old.(*appsv1.Deployment).Spec.Selector)
		},
		subresources: func(store *genericregistry.Store, _ *nativeEnv) map[string]rest.Storage {
			return map[string]rest.Storage{"deployments/scale": &scaleREST{store: store,
				get: func(obj runtime.Object) (*int32, int32, *metav1.LabelSelector) {
					d := obj.(*appsv1.Deployment)
					return d.Spec.Replicas, d.Status.Replicas, d.Spec.Selector
				},
				set: func(obj runtime.Object, n int32) { obj.(*appsv1.Deployment).Spec.Replicas = &n },
			}}
		},
	},
	{
		set: "apps", gv: appsv1.SchemeGroupVersion, resource: "replicasets", singular: "replicaset", kind: "ReplicaSet",
		namespaced: true, shortNames: []string{"rs"},
		newObj:  func() runtime.Object { return &appsv1.ReplicaSet{} },
		newList: func() runtime.Object { return &appsv1.ReplicaSetList{} },
		prepareCreate: func(obj runtime.Object) {
			rs := obj.(*appsv1.ReplicaSet)
			rs.Status = appsv1.ReplicaSetStatus{}
			rs.Generation = 1
			defaultReplicas(&rs.Spec.Replicas)
			defaultPodTemplate(&rs.Spec.Template, corev1.RestartPolicyAlways)
		},
		prepareUpdate: func(obj, old runtime.Object) {
			rs, o := obj.(*appsv1.ReplicaSet), old.(*appsv1.ReplicaSet)
			rs.Status = o.Status
			defaultReplicas(&rs.Spec.Replicas)
			defaultPodTemplate(&rs.Spec.Template, corev1.RestartPolicyAlways)
			bumpGeneration(&rs.ObjectMeta, o.Generation, !equality.Semantic.DeepEqual(rs.Spec, o.Spec))
		},
		statusUpdate: func(obj, old runtime.Object) {
			rs, o := obj.(*appsv1.ReplicaSet), old.(*appsv1.ReplicaSet)
			rs.Spec = o.Spec
			rs.Labels, rs.Annotations = o.Labels, o.Annotations
		},
		validate: func(obj runtime.Object) field.ErrorList {
			rs := obj.(*appsv1.ReplicaSet)
			errs := dnsSubdomainName(rs.Name)
			errs = append(errs, validateReplicas(rs.Spec.Replicas)...)
			return append(errs, validateSelectedTemplate(rs.Spec.Selector, &rs.Spec.Template)...)
		},
		validateUpdate: func(obj, old runtime.Object) field.ErrorList {
			return immutableSelector(obj.(*appsv1.ReplicaSet).Spec.Selector, old.(*appsv1.ReplicaSet).Spec.Selector)
		},
		subresources: func(store *genericregistry.Store, _ *nativeEnv) map[string]rest.Storage {
			return map[string]rest.Storage{"replicasets/scale": &scaleREST{store: store,
				get: func(obj runtime.Object) (*int32, int32, *metav1.LabelSelector) {
					rs := obj.(*appsv1.ReplicaSet)
					return rs.Spec.Replicas, rs.Status.Replicas, rs.Spec.Selector
				},
				set: func(obj runtime.Object, n int32) { obj.(*appsv1.ReplicaSet).Spec.Replicas = &n },
			}}
		},
	},
	{
		set: "batch", gv: batchv1.SchemeGroupVersion, resource: "jobs", singular: "job", kind: "Job",
		namespaced: true,
		newObj:     func() runtime.Object { return &batchv1.Job{} },
		newList:    func() runtime.Object { return &batchv1.JobList{} },
		prepareCreate: func(obj runtime.Object) {
			j := obj.(*batchv1.Job)
			j.Status = batchv1.JobStatus{}
			j.Generation = 1
			defaultJob(j)
			if j.Spec.ManualSelector == nil || !*j.Spec.ManualSelector {
				generateJobSelector(j)
			}
		},
		prepareUpdate: func(obj, old runtime.Object) {
			j, o := obj.(*batchv1.Job), old.(*batchv1.Job)
			j.Status = o.Status
			defaultJob(j)
			bumpGeneration(&j.ObjectMeta, o.Generation, !equality.Semantic.DeepEqual(j.Spec, o.Spec))
		},
		statusUpdate: func(obj, old runtime.Object) {
			j, o := obj.(*batchv1.Job), old.(*batchv1.Job)
			j.Spec = o.Spec
			j.Labels, j.Annotations = o.Labels, o.Annotations
		},
		validate: func(obj runtime.Object) field.ErrorList {
			j := obj.(*batchv1.Job)
			errs := dnsSubdomainName(j.Name)
			errs = append(errs, validateSelectedTemplate(j.Spec.Selector, &j.Spec.Template)...)
			if p := j.Spec.Template.Spec.RestartPolicy; p != corev1.RestartPolicyOnFailure && p != corev1.RestartPolicyNever {
				errs = append(errs, field.NotSupported(field.NewPath("spec", "template", "spec", "restartPolicy"), p, []string{"OnFailure", "Never"}))
			}
			for _, f := range []struct {
				name string
				v    *int32
			}{{"parallelism", j.Spec.Parallelism}, {"completions", j.Spec.Completions}, {"backoffLimit", j.Spec.BackoffLimit}} {
				if f.v != nil && *f.v < 0 {
					errs = append(errs, field.Invalid(field.NewPath("spec", f.name), *f.v, "must be greater than or equal to 0"))
				}
			}
			return errs
		},
		validateUpdate: func(obj, old runtime.Object) field.ErrorList {
			j, o := obj.(*batchv1.Job), old.(*batchv1.Job)
			errs := immutableSelector(j.Spec.Selector, o.Spec.Selector)
			if !equality.Semantic.DeepEqual(j.Spec.Template, o.Spec.Template) {
				errs = append(errs, field.Invalid(field.NewPath("spec", "template"), "", "field is immutable"))
			}
			return errs
		},
	},
	{
		set: "policy", gv: policyv1.SchemeGroupVersion, resource: "poddisruptionbudgets", singular: "poddisruptionbudget", kind: "PodDisruptionBudget",
		namespaced: true, shortNames: []string{"pdb"},
		newObj:  func() runtime.Object { return &policyv1.PodDisruptionBudget{} },
		newList: func() runtime.Object { return &policyv1.PodDisruptionBudgetList{} },
		prepareCreate: func(obj runtime.Object) {
			p := obj.(*policyv1.PodDisruptionBudget)
			p.Status = policyv1.PodDisruptionBudgetStatus{}
			p.Generation = 1
		},
		prepareUpdate: func(obj, old runtime.Object) {
			p, o := obj.(*policyv1.PodDisruptionBudget), old.(*policyv1.PodDisruptionBudget)
			p.Status = o.Status
			bumpGeneration(&p.ObjectMeta, o.Generation, !equality.Semantic.DeepEqual(p.Spec, o.Spec))
		},
		statusUpdate: func(obj, old runtime.Object) {
			p, o := obj.(*policyv1.PodDisruptionBudget), old.(*policyv1.PodDisruptionBudget)
			p.Spec = o.Spec
			p.Labels, p.Annotations = o.Labels, o.Annotations
		},
		validate: func(obj runtime.Object) field.ErrorList {
			p := obj.(*policyv1.PodDisruptionBudget)
			errs := dnsSubdomainName(p.Name)
			if p.Spec.MinAvailable != nil && p.Spec.MaxUnavailable != nil {
				errs = append(errs, field.Invalid(field.NewPath("spec"), "", "minAvailable and maxUnavailable cannot be both set"))
			}
			if p.Spec.Selector != nil {
				errs = append(errs, metav1validation.ValidateLabelSelector(p.Spec.Selector, metav1validation.LabelSelectorValidationOptions{}, field.NewPath("spec", "selector"))...)
			}
			return errs
		},
	},
	{
		set: "rbac", gv: rbacv1.SchemeGroupVersion, resource: "roles", singular: "role", kind: "Role",
		namespaced: true,
		newObj:     func() runtime.Object { return &rbacv1.Role{} },
		newList:    func() runtime.Object { return &rbacv1.RoleList{} },
		validate: func(obj runtime.Object) field.ErrorList {
			r := obj.(*rbacv1.Role)
			return append(pathSegmentName(r.Name), validateRules(r.Rules, true)...)
		},
	},
	{
		set: "rbac", gv: rbacv1.SchemeGroupVersion, resource: "clusterroles", singular: "clusterrole", kind: "ClusterRole",
		newObj:  func() runtime.Object { return &rbacv1.ClusterRole{} },
		newList: func() runtime.Object { return &rbacv1.ClusterRoleList{} },
		validate: func(obj runtime.Object) field.ErrorList {
			r := obj.(*rbacv1.ClusterRole)
			return append(pathSegmentName(r.Name), validateRules(r.Rules, false)...)
		},
	},
	{
		set: "rbac", gv: rbacv1.SchemeGroupVersion, resource: "rolebindings", singular: "rolebinding", kind: "RoleBinding",
		namespaced: true,
		newObj:     func() runtime.Object { return &rbacv1.RoleBinding{} },
		newList:    func() runtime.Object { return &rbacv1.RoleBindingList{} },
		validate: func(obj runtime.Object) field.ErrorList {
			b := obj.(*rbacv1.RoleBinding)
			return append(pathSegmentName(b.Name), validateBinding(b.RoleRef, b.Subjects, true)...)
		},
		validateUpdate: func(obj, old runtime.Object) field.ErrorList {
			return immutableRoleRef(obj.(*rbacv1.RoleBinding).RoleRef, old.(*rbacv1.RoleBinding).RoleRef)
		},
	},
	{
		set: "rbac", gv: rbacv1.SchemeGroupVersion, resource: "clusterrolebindings", singular: "clusterrolebinding", kind: "ClusterRoleBinding",
		newObj:  func() runtime.Object { return &rbacv1.ClusterRoleBinding{} },
		newList: func() runtime.Object { return &rbacv1.ClusterRoleBindingList{} },
		validate: func(obj runtime.Object) field.ErrorList {
			b := obj.(*rbacv1.ClusterRoleBinding)
			return append(pathSegmentName(b.Name), validateBinding(b.RoleRef, b.Subjects, false)...)
		},
		validateUpdate: func(obj, old runtime.Object) field.ErrorList {
			return immutableRoleRef(obj.(*rbacv1.ClusterRoleBinding).RoleRef, old.(*rbacv1.ClusterRoleBinding).RoleRef)
		},
	},
}

// bumpGeneration: metadata.generation counts changes of spec (the generic
// registry copies the old value before the strategy runs).
func bumpGeneration(m *metav1.ObjectMeta, old int64, specChanged bool) {
	m.Generation = old
	if specChanged {
		m.Generation = old + 1
	}
}

func defaultReplicas(r **int32) {
	if *r == nil {
		one := int32(1)
		*r = &one
	}
}

// defaultDeployment: kube-apiserver's apps/v1 defaults.
func defaultDeployment(d *appsv1.Deployment) {
	sp := &d.Spec
	defaultReplicas(&sp.Replicas)
	if sp.Strategy.Type == "" {
		sp.Strategy.Type = appsv1.RollingUpdateDeploymentStrategyType
	}
	if sp.Strategy.Type == appsv1.RollingUpdateDeploymentStrategyType {
		if sp.Strategy.RollingUpdate == nil {
			sp.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{}
		}
		quarter := intstr.FromString("25%")
		if sp.Strategy.RollingUpdate.MaxUnavailable == nil {
			v := quarter
			sp.Strategy.RollingUpdate.MaxUnavailable = &v
		}
		if sp.Strategy.RollingUpdate.MaxSurge == nil {
			v := quarter
			sp.Strategy.RollingUpdate.MaxSurge = &v
		}
	}
	if sp.RevisionHistoryLimit == nil {
		v := int32(10)
		sp.RevisionHistoryLimit = &v
	}
	if sp.ProgressDeadlineSeconds == nil {
		v := int32(600)
		sp.ProgressDeadlineSeconds = &v
	}
	defaultPodTemplate(&sp.Template, corev1.RestartPolicyAlways)
}

// defaultJob: kube-apiserver's batch/v1 defaults.
func defaultJob(j *batchv1.Job) {
	sp := &j.Spec
	if sp.Completions == nil && sp.Parallelism == nil {
		one := int32(1)
		sp.Completions = &one
	}
	defaultReplicas(&sp.Parallelism)
	if sp.BackoffLimit == nil {
		v := int32(6)
		if sp.BackoffLimitPerIndex != nil {
			v = 1<<31 - 1
		}
		sp.BackoffLimit = &v
	}
	if sp.CompletionMode == nil {
		m := batchv1.NonIndexedCompletion
		sp.CompletionMode = &m
	}
	if sp.Suspend == nil {
		f := false
		sp.Suspend = &f
	}
	defaultPodTemplate(&sp.Template, "")
}

// generateJobSelector: the selector and template labels kube-apiserver
// gives a Job without spec.manualSelector, keyed by the Job's uid.
func generateJobSelector(j *batchv1.Job) {
	uid := string(j.UID)
	if j.Spec.Template.Labels == nil {
		j.Spec.Template.Labels = map[string]string{}
	}
	for k, v := range map[string]string{
		batchv1.ControllerUidLabel: uid, batchv1.JobNameLabel: j.Name,
		"controller-uid": uid, "job-name": j.Name, // the legacy pair kube-apiserver still sets
	} {
		if _, ok := j.Spec.Template.Labels[k]; !ok {
			j.Spec.Template.Labels[k] = v
		}
	}
	if j.Spec.Selector == nil {
		j.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{batchv1.ControllerUidLabel: uid}}
	}
}

// defaultPodTemplate: the pod defaults that show in a template (restartPolicy
// only where the kind has one default; a Job's must be given).
func defaultPodTemplate(t *corev1.PodTemplateSpec, restart corev1.RestartPolicy) {
	sp := &t.Spec
	if sp.RestartPolicy == "" {
		sp.RestartPolicy = restart
	}
	if sp.DNSPolicy == "" {
		sp.DNSPolicy = corev1.DNSClusterFirst
	}
	if sp.SchedulerName == "" {
		sp.SchedulerName = corev1.DefaultSchedulerName
	}
	if sp.TerminationGracePeriodSeconds == nil {
		v := int64(corev1.DefaultTerminationGracePeriodSeconds)
		sp.TerminationGracePeriodSeconds = &v
	}
	if sp.SecurityContext == nil {
		sp.SecurityContext = &corev1.PodSecurityContext{}
	}
	for _, cs := range [][]corev1.Container{sp.InitContainers, sp.Containers} {
		for i := range cs {
			c := &cs[i]
			if c.TerminationMessagePath == "" {
				c.TerminationMessagePath = corev1.TerminationMessagePathDefault
			}
			if c.TerminationMessagePolicy == "" {
				c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
			}
			if c.ImagePullPolicy == "" {
				c.ImagePullPolicy = corev1.PullIfNotPresent
				if img := c.Image[strings.LastIndex(c.Image, "/")+1:]; !strings.Contains(img, ":") || strings.HasSuffix(img, ":latest") {
					if !strings.Contains(c.Image, "@") {
						c.ImagePullPolicy = corev1.PullAlways
					}
				}
			}
			for j := range c.Ports {
				if c.Ports[j].Protocol == "" {
					c.Ports[j].Protocol = corev1.ProtocolTCP
				}
			}
		}
	}
}

func isZero(v *intstr.IntOrString) bool {
	return v == nil || v.String() == "0" || v.String() == "0%"
}

func validateReplicas(r *int32) field.ErrorList {
	if r != nil && *r < 0 {
		return field.ErrorList{field.Invalid(field.NewPath("spec", "replicas"), *r, "must be greater than or equal to 0")}
	}
	return nil
}

// validateSelectedTemplate: a selector is required, valid, non-empty and
// selects the template's labels; the template has containers.
func validateSelectedTemplate(sel *metav1.LabelSelector, t *corev1.PodTemplateSpec) field.ErrorList {
	var errs field.ErrorList
	sp := field.NewPath("spec", "selector")
	if sel == nil {
		return append(errs, field.Required(sp, ""))
	}
	errs = append(errs, metav1validation.ValidateLabelSelector(sel, metav1validation.LabelSelectorValidationOptions{}, sp)...)
	if len(sel.MatchLabels)+len(sel.MatchExpressions) == 0 {
		errs = append(errs, field.Invalid(sp, sel, "empty selector is invalid"))
	}
	if s, err := metav1.LabelSelectorAsSelector(sel); err == nil && !s.Matches(labels.Set(t.Labels)) {
		errs = append(errs, field.Invalid(field.NewPath("spec", "template", "metadata", "labels"), t.Labels, "`selector` does not match template `labels`"))
	}
	if len(t.Spec.Containers) == 0 {
		errs = append(errs, field.Required(field.NewPath("spec", "template", "spec", "containers"), "must have at least one container"))
	}
	return errs
}

func immutableSelector(sel, old *metav1.LabelSelector) field.ErrorList {
	if !equality.Semantic.DeepEqual(sel, old) {
		return field.ErrorList{field.Invalid(field.NewPath("spec", "selector"), sel, "field is immutable")}
	}
	return nil
}

func pathSegmentName(name string) field.ErrorList {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/%") {
		return field.ErrorList{field.Invalid(field.NewPath("metadata", "name"), name, "may not be '.', '..', or contain '/' or '%'")}
	}
	return nil
}

func validateRules(rules []rbacv1.PolicyRule, namespaced bool) field.ErrorList {
	var errs field.ErrorList
	for i, r := range rules {
		p := field.NewPath("rules").Index(i)
		if len(r.Verbs) == 0 {
			errs = append(errs, field.Required(p.Child("verbs"), "verbs must contain at least one value"))
		}
		if len(r.NonResourceURLs) > 0 {
			if namespaced {
				errs = append(errs, field.Invalid(p.Child("nonResourceURLs"), r.NonResourceURLs, "namespaced rules cannot apply to non-resource URLs"))
			}
			if len(r.APIGroups) > 0 || len(r.Resources) > 0 || len(r.ResourceNames) > 0 {
				errs = append(errs, field.Invalid(p.Child("nonResourceURLs"), r.NonResourceURLs, "rules cannot apply to both regular resources and non-resource URLs"))
			}
			continue
		}
		if len(r.APIGroups) == 0 {
			errs = append(errs, field.Required(p.Child("apiGroups"), "resource rules must supply at least one api group"))
		}
		if len(r.Resources) == 0 {
			errs = append(errs, field.Required(p.Child("resources"), "resource rules must supply at least one resource"))
		}
	}
	return errs
}

func validateBinding(ref rbacv1.RoleRef, subjects []rbacv1.Subject, namespaced bool) field.ErrorList {
	var errs field.ErrorList
	rp := field.NewPath("roleRef")
	if ref.APIGroup != rbacv1.GroupName {
		errs = append(errs, field.NotSupported(rp.Child("apiGroup"), ref.APIGroup, []string{rbacv1.GroupName}))
	}
	kinds := []string{"ClusterRole"}
	if namespaced {
		kinds = append(kinds, "Role")
	}
	if !contains(kinds, ref.Kind) {
		errs = append(errs, field.NotSupported(rp.Child("kind"), ref.Kind, kinds))
	}
	if ref.Name == "" {
		errs = append(errs, field.Required(rp.Child("name"), ""))
	}
	for i, s := range subjects {
		p := field.NewPath("subjects").Index(i)
		if s.Name == "" {
			errs = append(errs, field.Required(p.Child("name"), ""))
		}
		switch s.Kind {
		case rbacv1.ServiceAccountKind:
			if s.APIGroup != "" {
				errs = append(errs, field.NotSupported(p.Child("apiGroup"), s.APIGroup, []string{""}))
			}
			if !namespaced && s.Namespace == "" {
				errs = append(errs, field.Required(p.Child("namespace"), ""))
			}
		case rbacv1.UserKind, rbacv1.GroupKind:
			if s.APIGroup != rbacv1.GroupName {
				errs = append(errs, field.NotSupported(p.Child("apiGroup"), s.APIGroup, []string{rbacv1.GroupName}))
			}
		default:
			errs = append(errs, field.NotSupported(p.Child("kind"), s.Kind, []string{"ServiceAccount", "User", "Group"}))
		}
	}
	return errs
}

func immutableRoleRef(ref, old rbacv1.RoleRef) field.ErrorList {
	if ref != old {
		return field.ErrorList{field.Invalid(field.NewPath("roleRef"), ref, "cannot change roleRef")}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// scaleREST serves the scale subresource (autoscaling/v1 Scale) of a
// resource with spec.replicas: reads and writes go through the owner's
// store, so a scale is an update of the owner (generation and all).
type scaleREST struct {
	store *genericregistry.Store
	get   func(obj runtime.Object) (spec *int32, status int32, selector *metav1.LabelSelector)
	set   func(obj runtime.Object, replicas int32)
}

func (r *scaleREST) New() runtime.Object { return &autoscalingv1.Scale{} }
func (r *scaleREST) Destroy()            {}
func (r *scaleREST) GroupVersionKind(schema.GroupVersion) schema.GroupVersionKind {
	return autoscalingv1.SchemeGroupVersion.WithKind("Scale")
}

func (r *scaleREST) scaleOf(obj runtime.Object) (*autoscalingv1.Scale, error) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, err
	}
	spec, status, sel := r.get(obj)
	s := &autoscalingv1.Scale{
		ObjectMeta: metav1.ObjectMeta{Name: m.GetName(), Namespace: m.GetNamespace(), UID: m.GetUID(),
			ResourceVersion: m.GetResourceVersion(), CreationTimestamp: m.GetCreationTimestamp()},
		Status: autoscalingv1.ScaleStatus{Replicas: status},
	}
	if spec != nil {
		s.Spec.Replicas = *spec
	}
	if sel != nil {
		if ls, err := metav1.LabelSelectorAsSelector(sel); err == nil {
			s.Status.Selector = ls.String()
		}
	}
	return s, nil
}

func (r *scaleREST) Get(ctx context.Context, name string, options *metav1.GetOptions) (runtime.Object, error) {
	obj, err := r.store.Get(ctx, name, options)
	if err != nil {
		return nil, err
	}
	return r.scaleOf(obj)
}

func (r *scaleREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, forceAllowCreate bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	obj, err := r.store.Get(ctx, name, &metav1.GetOptions{})
	if err != nil {
		return nil, false, err
	}
	old, err := r.scaleOf(obj)
	if err != nil {
		return nil, false, err
	}
	newObj, err := objInfo.UpdatedObject(ctx, old)
	if err != nil {
		return nil, false, err
	}
	scale, ok := newObj.(*autoscalingv1.Scale)
	if !ok {
		return nil, false, apierrors.NewBadRequest(fmt.Sprintf("expected a Scale, got %T", newObj))
	}
	if scale.Spec.Replicas < 0 {
		return nil, false, apierrors.NewInvalid(autoscalingv1.SchemeGroupVersion.WithKind("Scale").GroupKind(), name,
			field.ErrorList{field.Invalid(field.NewPath("spec", "replicas"), scale.Spec.Replicas, "must be greater than or equal to 0")})
	}
	if scale.ResourceVersion != "" && scale.ResourceVersion != old.ResourceVersion {
		return nil, false, apierrors.NewConflict(r.store.DefaultQualifiedResource, name, fmt.Errorf("the object has been modified; please apply your changes to the latest version and try again"))
	}
	if updateValidation != nil {
		if err := updateValidation(ctx, scale, old); err != nil {
			return nil, false, err
		}
	}
	owner := obj.DeepCopyObject()
	r.set(owner, scale.Spec.Replicas)
	updated, _, err := r.store.Update(ctx, name, rest.DefaultUpdatedObjectInfo(owner), rest.ValidateAllObjectFunc, rest.ValidateAllObjectUpdateFunc, false, options)
	if err != nil {
		return nil, false, err
	}
	out, err := r.scaleOf(updated)
	return out, false, err
}
