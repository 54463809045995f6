// Command dm-kubevirt-manifests prints, as one JSON List, the objects KubeVirt's own virt-operator
// would install: its CRDs (with the KubeVirt CRD), ServiceAccounts, RBAC, and virt-api's admission
// webhook configurations. It calls KubeVirt's own generator code
// (pkg/virt-operator/resource/generate), so the e2e tier tests against KubeVirt's real schema,
// permissions and webhooks, not a copy of them. The test harness points the webhooks at virt-api
// on loopback.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	v1 "kubevirt.io/api/core/v1"
	"kubevirt.io/kubevirt/pkg/virt-operator/resource/generate/components"
	"kubevirt.io/kubevirt/pkg/virt-operator/resource/generate/install"
	operatorutil "kubevirt.io/kubevirt/pkg/virt-operator/util"
)

func typed(obj runtime.Object, apiVersion, kind string) runtime.Object {
	obj.GetObjectKind().SetGroupVersionKind(schema.FromAPIVersionAndKind(apiVersion, kind))
	return obj
}

func main() {
	namespace := "kubevirt"
	if len(os.Args) > 1 {
		namespace = os.Args[1]
	}
	kv := &v1.KubeVirt{ObjectMeta: metav1.ObjectMeta{Name: "kubevirt", Namespace: namespace}}
	strategy, err := install.GenerateCurrentInstallStrategy(operatorutil.GetTargetConfigFromKV(kv), "monitoring", namespace)
	if err != nil {
		fmt.Fprintln(os.Stderr, "generating KubeVirt's install strategy:", err)
		os.Exit(1)
	}
	kvCrd, err := components.NewKubeVirtCrd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "generating the KubeVirt CRD:", err)
		os.Exit(1)
	}
	var items []runtime.Object
	const crd = "apiextensions.k8s.io/v1"
	items = append(items, typed(kvCrd, crd, "CustomResourceDefinition"))
	for _, o := range strategy.CRDs() {
		items = append(items, typed(o, crd, "CustomResourceDefinition"))
	}
	for _, o := range strategy.ServiceAccounts() {
		items = append(items, typed(o, "v1", "ServiceAccount"))
	}
	const rbac = "rbac.authorization.k8s.io/v1"
	for _, o := range strategy.ClusterRoles() {
		items = append(items, typed(o, rbac, "ClusterRole"))
	}
	for _, o := range strategy.ClusterRoleBindings() {
		items = append(items, typed(o, rbac, "ClusterRoleBinding"))
	}
	for _, o := range strategy.Roles() {
		items = append(items, typed(o, rbac, "Role"))
	}
	for _, o := range strategy.RoleBindings() {
		items = append(items, typed(o, rbac, "RoleBinding"))
	}
	const admission = "admissionregistration.k8s.io/v1"
	for _, o := range strategy.ValidatingWebhookConfigurations() {
		items = append(items, typed(o, admission, "ValidatingWebhookConfiguration"))
	}
	for _, o := range strategy.MutatingWebhookConfigurations() {
		items = append(items, typed(o, admission, "MutatingWebhookConfiguration"))
	}
	out, err := json.MarshalIndent(map[string]interface{}{"apiVersion": "v1", "kind": "List", "items": items}, "", " ")
	if err != nil {
		fmt.Fprintln(os.Stderr, "encoding:", err)
		os.Exit(1)
	}
	os.Stdout.Write(append(out, '\n'))
}
