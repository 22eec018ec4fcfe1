package main

// Legacy (unaggregated) discovery of CRD groups on /apis.
//
// In kube-apiserver the aggregator lists CRD groups on /apis (it registers an
// APIService per CRD group). This server has no aggregator, so this
// controller keeps the server's group list in step with the CRDs. The
// aggregated discovery document (apidiscovery.k8s.io/v2) is maintained by the
// apiextensions server itself.

import (
	"sort"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsinformers "k8s.io/apiextensions-apiserver/pkg/client/informers/externalversions/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/apiserver/pkg/endpoints/discovery"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

type crdGroupDiscovery struct {
	informer  apiextensionsinformers.CustomResourceDefinitionInformer
	groups    discovery.GroupManager
	reserved  sets.Set[string] // groups served natively: never touched
	published map[string]metav1.APIGroup
	kick      chan struct{}
}

func newCRDGroupDiscovery(informer apiextensionsinformers.CustomResourceDefinitionInformer, groups discovery.GroupManager, reserved sets.Set[string]) *crdGroupDiscovery {
	c := &crdGroupDiscovery{
		informer:  informer,
		groups:    groups,
		reserved:  reserved,
		published: map[string]metav1.APIGroup{},
		kick:      make(chan struct{}, 1),
	}
	kick := func() {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	_, _ = informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(interface{}) { kick() },
		UpdateFunc: func(interface{}, interface{}) { kick() },
		DeleteFunc: func(interface{}) { kick() },
	})
	return c
}

func (c *crdGroupDiscovery) run(stop <-chan struct{}) {
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-c.kick:
		case <-tick.C:
		}
		if c.informer.Informer().HasSynced() {
			c.sync()
		}
	}
}

func (c *crdGroupDiscovery) sync() {
	crds, err := c.informer.Lister().List(labels.Everything())
	if err != nil {
		klog.Errorf("crd discovery: %v", err)
		return
	}
	versions := map[string]sets.Set[string]{}
	for _, crd := range crds {
		g := crd.Spec.Group
		if c.reserved.Has(g) {
			continue
		}
		if !established(crd) {
			continue
		}
		for _, v := range crd.Spec.Versions {
			if !v.Served {
				continue
			}
			if versions[g] == nil {
				versions[g] = sets.New[string]()
			}
			versions[g].Insert(v.Name)
		}
	}
	want := map[string]metav1.APIGroup{}
	for g, vs := range versions {
		list := sets.List(vs)
		sort.Slice(list, func(i, j int) bool { return version.CompareKubeAwareVersionStrings(list[i], list[j]) > 0 })
		apiGroup := metav1.APIGroup{Name: g}
		for _, v := range list {
			apiGroup.Versions = append(apiGroup.Versions, metav1.GroupVersionForDiscovery{GroupVersion: g + "/" + v, Version: v})
		}
		apiGroup.PreferredVersion = apiGroup.Versions[0]
		want[g] = apiGroup
	}
	for g := range c.published {
		if _, ok := want[g]; !ok {
			c.groups.RemoveGroup(g)
			delete(c.published, g)
		}
	}
	for g, apiGroup := range want {
		if old, ok := c.published[g]; ok && equalGroups(old, apiGroup) {
			continue
		}
		c.groups.AddGroup(apiGroup)
		c.published[g] = apiGroup
	}
}

func established(crd *apiextensionsv1.CustomResourceDefinition) bool {
	for _, cond := range crd.Status.Conditions {
		if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
			return true
		}
	}
	return false
}

func equalGroups(a, b metav1.APIGroup) bool {
	if len(a.Versions) != len(b.Versions) || a.PreferredVersion != b.PreferredVersion {
		return false
	}
	for i := range a.Versions {
		if a.Versions[i] != b.Versions[i] {
			return false
		}
	}
	return true
}
