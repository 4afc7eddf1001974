// Package bed runs Istio's own Go code on gatehouse's artifacts, without a cluster: istiod's
// config generation (pilot/test/xds, the fake discovery server Istio's tests use) on the
// manifests of istio/, and istio-agent's Wasm pull and ECDS rewrite (pkg/wasm) on the images
// `make push` puts in a registry.
package bed

import (
	"fmt"
	"sort"
	"strings"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"sigs.k8s.io/yaml"

	"istio.io/istio/pilot/pkg/features"
	"istio.io/istio/pilot/pkg/model"
	v3 "istio.io/istio/pilot/pkg/xds/v3"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config/constants"
	"istio.io/istio/pkg/test"
)

// Gateway names the ingress gateway pod the translation is for: its namespace, its labels (what
// WasmPlugin/TrafficExtension selectors and Gateway selectors match) and its pod name.
type Gateway struct {
	Namespace string
	Labels    map[string]string
	Pod       string
}

// IngressGateway is the pod istioctl's default profile (and the gateway Helm chart) runs.
var IngressGateway = Gateway{
	Namespace: "istio-system",
	Labels:    map[string]string{"istio": "ingressgateway", "app": "istio-ingressgateway"},
	Pod:       "istio-ingressgateway-5d8f7c9b6-x2x7q",
}

// Options of a translation.
type Options struct {
	// FilterGatewayClusters turns on istiod's PILOT_FILTER_GATEWAY_CLUSTER_CONFIG.
	FilterGatewayClusters bool
}

// Translation is what a gateway receives from istiod: its listeners' HTTP filter chains, the
// ECDS resources those name, and the names of the clusters it gets.
type Translation struct {
	// Listener name -> HTTP filter names in order, for every HTTP connection manager.
	HTTPFilters map[string][]string
	// The HTTP filters themselves, by listener, for checks on how a filter is configured.
	Filters map[string][]*hcm.HttpFilter
	// ECDS resources named by the listeners' ConfigDiscovery filters, as istiod sends them.
	Extensions []*core.TypedExtensionConfig
	// Cluster names (CDS).
	Clusters []string
}

// Split separates a rendered kustomization into Istio configuration (what istiod reads from its
// config store) and the Kubernetes objects (Services, Deployments...) its service registry reads.
func Split(rendered string) (istioConfig string, kubeObjects string, err error) {
	var cfg, kube []string
	for _, doc := range strings.Split(rendered, "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			return "", "", fmt.Errorf("a rendered document is not YAML: %w", err)
		}
		group, _, _ := strings.Cut(head.APIVersion, "/")
		// Gateway API objects are read from Kubernetes by istiod's gateway controller.
		if strings.HasSuffix(group, ".istio.io") {
			cfg = append(cfg, doc)
		} else {
			kube = append(kube, doc)
		}
	}
	return strings.Join(cfg, "\n---\n"), strings.Join(kube, "\n---\n"), nil
}

// Translate starts Istio's fake discovery server on the given configuration and Kubernetes
// objects, connects to it over ADS as the gateway's Envoy does, and returns what it is sent.
func Translate(t test.Failer, istioConfig, kubeObjects string, gw Gateway, opts Options) Translation {
	t.Helper()
	if opts.FilterGatewayClusters {
		test.SetForTest(t, &features.FilterGatewayClusterConfig, true)
	}
	s := xds.NewFakeDiscoveryServer(t, xds.FakeOptions{
		ConfigString:           istioConfig,
		KubernetesObjectString: kubeObjects,
	})
	id := fmt.Sprintf("router~10.1.2.3~%s.%s~%s.svc.cluster.local", gw.Pod, gw.Namespace, gw.Namespace)
	md := model.NodeMetadata{
		ClusterID:    constants.DefaultClusterName,
		Namespace:    gw.Namespace,
		Labels:       gw.Labels,
		IstioVersion: "1.30.0",
	}
	ask := func(typeURL string, names []string) *discovery.DiscoveryResponse {
		ads := s.ConnectADS().WithType(typeURL).WithID(id).WithMetadata(md).WithTimeout(10 * time.Second)
		return ads.RequestResponseAck(t, &discovery.DiscoveryRequest{ResourceNames: names})
	}

	out := Translation{HTTPFilters: map[string][]string{}, Filters: map[string][]*hcm.HttpFilter{}}
	ecdsNames := map[string]bool{}
	for _, r := range ask(v3.ListenerType, nil).Resources {
		l := &listener.Listener{}
		if err := r.UnmarshalTo(l); err != nil {
			t.Fatalf("listener: %v", err)
		}
		for _, fc := range l.FilterChains {
			for _, f := range fc.Filters {
				if f.GetTypedConfig().GetTypeUrl() != "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager" {
					continue
				}
				h := &hcm.HttpConnectionManager{}
				if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
					t.Fatalf("listener %s: http_connection_manager: %v", l.Name, err)
				}
				for _, hf := range h.HttpFilters {
					out.HTTPFilters[l.Name] = append(out.HTTPFilters[l.Name], hf.Name)
					out.Filters[l.Name] = append(out.Filters[l.Name], hf)
					if hf.GetConfigDiscovery() != nil {
						ecdsNames[hf.Name] = true
					}
				}
			}
		}
	}
	if len(ecdsNames) > 0 {
		names := make([]string, 0, len(ecdsNames))
		for n := range ecdsNames {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, r := range ask(v3.ExtensionConfigurationType, names).Resources {
			ec := &core.TypedExtensionConfig{}
			if err := r.UnmarshalTo(ec); err != nil {
				t.Fatalf("extension config: %v", err)
			}
			out.Extensions = append(out.Extensions, ec)
		}
	}
	for _, r := range ask(v3.ClusterType, nil).Resources {
		c := &cluster.Cluster{}
		if err := r.UnmarshalTo(c); err != nil {
			t.Fatalf("cluster: %v", err)
		}
		out.Clusters = append(out.Clusters, c.Name)
	}
	sort.Strings(out.Clusters)
	return out
}
