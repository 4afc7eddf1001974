package bed

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	httpwasm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	wasmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/wasm/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"sigs.k8s.io/yaml"

	"istio.io/istio/pkg/log"
)

// What a cluster with Istio and Keycloak has besides istio/: the ingress gateway's Service
// (istioctl's: 80 -> 8080, 443 -> 8443), Keycloak's Service in its namespace, and seed 003's
// RequestAuthentication on the gateway (so that Istio's jwt_authn filter is there to be ordered
// against, with inline keys so that istiod fetches nothing).
const clusterObjects = `apiVersion: v1
kind: Service
metadata:
  name: istio-ingressgateway
  namespace: istio-system
spec:
  selector:
    istio: ingressgateway
  ports:
  - name: http2
    port: 80
    targetPort: 8080
  - name: https
    port: 443
    targetPort: 8443
---
apiVersion: v1
kind: Service
metadata:
  name: keycloak
  namespace: keycloak
spec:
  selector:
    app: keycloak
  ports:
  - name: http
    port: 8080
    targetPort: 8080
`

const requestAuthentication = `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: gateway-jwt
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  jwtRules:
  - issuer: https://sso.example.com/realms/demo
    # Inline keys: istiod would otherwise fetch them (seed 003 names the realm's certs URI).
    jwks: '{"keys":[{"kty":"RSA","n":"yxA0aLZaMvSYmR54_JQNFArWH9VYgxpzDNWzd8CcmTqcJ_P30-79PBK52eEa-37AT6BhmHk66XACfmQ8dzvEmqoe9BP1WBVX_2Mx5lmUWt7psxnLrGeWvVvgjZKtV6cSHHdM7426yQpPz5u0TEswVdzyZhqZQGiSJi9JNXHPJyOQQKUl9uKiayDnjQwe1ZiEvnaKgVA64pkgFgTp0b9AyF3WTKNB5-0KmwIHdRlGkVE2rLvzjZoCpdOKqRJUts_8KmEIbGgDz7aggmw7R8g8DkGcZrK7xbaWuisd696Mn2RpMZwfHwqPhUZcGy6n_jMjoM8dJsmjfsEOOBOMyNw_LQ","e":"AQAB","kid":"gateway-test","alg":"RS256","use":"sig"}]}'
`

const (
	wasmPluginFilter       = "extensions.istio.io/trafficextension/istio-system.gatehouse~istio-translated-wasmplugin"
	trafficExtensionFilter = "extensions.istio.io/trafficextension/istio-system.gatehouse"
	keycloakCluster        = "outbound|8080||keycloak.keycloak.svc.cluster.local"
)

var istioDir = filepath.Join("..", "..", "..", "istio")

// render runs `kubectl kustomize` on istio/base with the given components (or on istio/ itself
// when none are given), as validate-istio.mjs does.
func render(t *testing.T, components ...string) string {
	t.Helper()
	kubectl := os.Getenv("KUBECTL")
	if kubectl == "" {
		t.Fatal("KUBECTL is not set: run these tests with `make istio-go` (kubectl renders istio/)")
	}
	dir := istioDir
	if len(components) > 0 {
		dir = t.TempDir()
		abs, err := filepath.Abs(istioDir)
		if err != nil {
			t.Fatal(err)
		}
		rel, err := filepath.Rel(dir, abs) // kustomize takes relative paths only
		if err != nil {
			t.Fatal(err)
		}
		k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- " + filepath.Join(rel, "base") + "\ncomponents:\n"
		for _, c := range components {
			k += "- " + filepath.Join(rel, "components", c) + "\n"
		}
		if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var stderr bytes.Buffer
	cmd := exec.Command(kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", dir)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v: %s", dir, err, stderr.String())
	}
	return string(out)
}

func translate(t *testing.T, rendered string, gw Gateway, opts Options, extra ...string) Translation {
	t.Helper()
	cfg, kube, err := Split(strings.Join(append([]string{rendered}, extra...), "\n---\n"))
	if err != nil {
		t.Fatal(err)
	}
	return Translate(t, cfg, kube, gw, opts)
}

// listenersWith names the gateway's listeners that have HTTP filter `name`, sorted.
func listenersWith(tr Translation, name string) []string {
	var found []string
	for l, fs := range tr.HTTPFilters {
		if slices.Contains(fs, name) {
			found = append(found, l)
		}
	}
	slices.Sort(found)
	return found
}

// onEveryListener fails unless every HTTP listener of the gateway has filter `name`.
func onEveryListener(t *testing.T, tr Translation, name string) {
	t.Helper()
	if len(tr.HTTPFilters) == 0 || len(listenersWith(tr, name)) != len(tr.HTTPFilters) {
		t.Fatalf("%s is on %v, want every listener: %v", name, listenersWith(tr, name), tr.HTTPFilters)
	}
}

func wasmOf(t *testing.T, tr Translation, name string) *httpwasm.Wasm {
	t.Helper()
	if len(tr.Extensions) != 1 || tr.Extensions[0].Name != name {
		names := []string{}
		for _, e := range tr.Extensions {
			names = append(names, e.Name)
		}
		t.Fatalf("ECDS resources %v, want only %s", names, name)
	}
	w := &httpwasm.Wasm{}
	if err := tr.Extensions[0].GetTypedConfig().UnmarshalTo(w); err != nil {
		t.Fatalf("%s is not a Wasm HTTP filter: %v", name, err)
	}
	return w
}

// pluginConfigOf is spec.pluginConfig (or spec.wasm.pluginConfig) of the rendered `kind`.
func pluginConfigOf(t *testing.T, rendered, kind string) any {
	t.Helper()
	for _, doc := range strings.Split(rendered, "\n---\n") {
		var d struct {
			Kind string `json:"kind"`
			Spec struct {
				PluginConfig any `json:"pluginConfig"`
				Wasm         struct {
					PluginConfig any `json:"pluginConfig"`
				} `json:"wasm"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal([]byte(doc), &d); err != nil {
			t.Fatal(err)
		}
		if d.Kind == kind {
			if d.Spec.PluginConfig != nil {
				return d.Spec.PluginConfig
			}
			return d.Spec.Wasm.PluginConfig
		}
	}
	t.Fatalf("no %s in the rendered manifests", kind)
	return nil
}

// configString is the plugin configuration Envoy hands the filter, as istiod rendered it.
func configString(t *testing.T, w *httpwasm.Wasm) string {
	t.Helper()
	s := &wrapperspb.StringValue{}
	if err := w.GetConfig().GetConfiguration().UnmarshalTo(s); err != nil {
		t.Fatalf("configuration is not a StringValue: %v", err)
	}
	return s.Value
}

// Istio's scopes log at info to stdout; quiet unless -v.
func TestMain(m *testing.M) {
	flag.Parse()
	if !testing.Verbose() {
		for _, s := range log.Scopes() {
			s.SetOutputLevel(log.NoneLevel)
		}
	}
	os.Exit(m.Run())
}

func TestWasmPluginOnTheIngressGateway(t *testing.T) {
	rendered := render(t)
	tr := translate(t, rendered, IngressGateway, Options{}, clusterObjects, requestAuthentication)

	// The filter is on both of the gateway's listeners (the Service's target ports: HTTPS 8443
	// and the HTTP 8080 that only redirects), in the AUTHN position: before Istio's jwt_authn
	// (and so before its RBAC), long before the router.
	if got := listenersWith(tr, wasmPluginFilter); !slices.Equal(got, []string{"0.0.0.0_8080", "0.0.0.0_8443"}) {
		t.Fatalf("gatehouse is on listeners %v, want 0.0.0.0_8080 and 0.0.0.0_8443; all: %v", got, tr.HTTPFilters)
	}
	for _, l := range []string{"0.0.0.0_8080", "0.0.0.0_8443"} {
		fs := tr.HTTPFilters[l]
		at := slices.Index(fs, wasmPluginFilter)
		jwt := slices.Index(fs, "envoy.filters.http.jwt_authn")
		router := slices.Index(fs, "envoy.filters.http.router")
		if jwt < 0 || router < 0 || at > jwt || at > router {
			t.Errorf("%s: filter order %v: want %s before envoy.filters.http.jwt_authn and the router", l, fs, wasmPluginFilter)
		}
	}
	// Istio sends it by ECDS, from ADS, and blocks the listener until it has it.
	for _, f := range tr.Filters["0.0.0.0_8443"] {
		if f.Name != wasmPluginFilter {
			continue
		}
		cd := f.GetConfigDiscovery()
		if cd == nil || cd.GetConfigSource().GetAds() == nil {
			t.Errorf("%s is not an ECDS filter from ADS: %v", f.Name, f)
		}
		if got := cd.GetTypeUrls(); !slices.Equal(got, []string{
			"type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
			"type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
		}) {
			t.Errorf("ECDS type URLs %v", got)
		}
	}

	w := wasmOf(t, tr, wasmPluginFilter)
	vm := w.GetConfig().GetVmConfig()
	remote := vm.GetCode().GetRemote()
	if got := remote.GetHttpUri().GetUri(); got != "oci://registry.example.com/platform/gatehouse:0.1.0" {
		t.Errorf("module URL %q", got)
	}
	// No sha256 in base: none is sent, and the agent takes whatever the tag names.
	if remote.GetSha256() != "" {
		t.Errorf("sha256 %q, want none", remote.GetSha256())
	}
	if vm.GetRuntime() != "envoy.wasm.runtime.v8" {
		t.Errorf("runtime %q", vm.GetRuntime())
	}
	// vmConfig.env: HOST entries become Envoy's host_env_keys (read from the istio-proxy
	// container's environment); the image pull policy goes to the agent as an ISTIO_META_ entry,
	// which the agent strips before Envoy sees it.
	env := vm.GetEnvironmentVariables()
	if got := env.GetHostEnvKeys(); !slices.Equal(got, []string{"GATEHOUSE_CLIENT_SECRET", "GATEHOUSE_COOKIE_KEYS"}) {
		t.Errorf("host_env_keys %v", got)
	}
	if got := env.GetKeyValues()["ISTIO_META_WASM_IMAGE_PULL_POLICY"]; got != "IfNotPresent" {
		t.Errorf("pull policy %q", got)
	}
	for k := range env.GetKeyValues() {
		if !strings.HasPrefix(k, "ISTIO_META_") {
			t.Errorf("unexpected inline environment variable %s", k)
		}
	}
	// failStrategy FAIL_CLOSE: Envoy's failure policy is FAIL_CLOSED.
	if got := w.GetConfig().GetFailurePolicy(); got != wasmv3.FailurePolicy_FAIL_CLOSED {
		t.Errorf("failure policy %v, want FAIL_CLOSED", got)
	}

	// pluginConfig arrives as a JSON string: keys sorted, numbers as JSON doubles, the same
	// values as the manifest's.
	raw := configString(t, w)
	var got any
	if err := json.Unmarshal([]byte(raw), &got); err != nil {
		t.Fatalf("configuration is not JSON: %v: %s", err, raw)
	}
	if want := pluginConfigOf(t, rendered, "WasmPlugin"); !reflect.DeepEqual(got, want) {
		t.Errorf("configuration %s\ndiffers from the manifest's pluginConfig %v", raw, want)
	}
	canonical, err := json.Marshal(got) // Go sorts object keys
	if err != nil {
		t.Fatal(err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(raw)); err != nil {
		t.Fatal(err)
	}
	if compact.String() != string(canonical) {
		t.Errorf("configuration is not in sorted-key form:\n%s\n%s", compact.String(), canonical)
	}
	if out := os.Getenv("GATEHOUSE_PLUGIN_CONFIG_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(raw), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTrafficExtensionComponent(t *testing.T) {
	base := render(t)
	rendered := render(t, "traffic-extension")
	if strings.Contains(rendered, "kind: WasmPlugin") {
		t.Fatal("the component leaves the WasmPlugin in: the filter would run twice")
	}
	tr := translate(t, rendered, IngressGateway, Options{}, clusterObjects, requestAuthentication)
	onEveryListener(t, tr, trafficExtensionFilter)
	for l, fs := range tr.HTTPFilters {
		if slices.Index(fs, trafficExtensionFilter) > slices.Index(fs, "envoy.filters.http.jwt_authn") {
			t.Errorf("%s: filter order %v", l, fs)
		}
	}
	w := wasmOf(t, tr, trafficExtensionFilter)
	wp := wasmOf(t, translate(t, base, IngressGateway, Options{}, clusterObjects), wasmPluginFilter)
	if configString(t, w) != configString(t, wp) {
		t.Errorf("TrafficExtension's configuration differs from the WasmPlugin's:\n%s\n%s", configString(t, w), configString(t, wp))
	}
	if w.GetConfig().GetFailurePolicy() != wasmv3.FailurePolicy_FAIL_CLOSED {
		t.Errorf("failure policy %v", w.GetConfig().GetFailurePolicy())
	}
}

// What `match.mode` does on a gateway: istiod counts a gateway's listeners as CLIENT traffic, so
// SERVER alone leaves the gateway without the filter; CLIENT and CLIENT_AND_SERVER attach it.
func TestMatchModeOnAGateway(t *testing.T) {
	rendered := render(t)
	for mode, attached := range map[string]bool{"CLIENT_AND_SERVER": true, "CLIENT": true, "SERVER": false} {
		t.Run(mode, func(t *testing.T) {
			r := strings.Replace(rendered, "mode: CLIENT_AND_SERVER", "mode: "+mode, 1)
			tr := translate(t, r, IngressGateway, Options{}, clusterObjects)
			on := false
			for _, fs := range tr.HTTPFilters {
				on = on || slices.Contains(fs, wasmPluginFilter)
			}
			if on != attached {
				t.Errorf("mode %s: filter on the gateway = %v, want %v (%v)", mode, on, attached, tr.HTTPFilters)
			}
		})
	}
}

func TestFailStrategyAndInlineEnv(t *testing.T) {
	rendered := render(t)
	if !strings.Contains(rendered, "failStrategy: FAIL_CLOSE") || !strings.Contains(rendered, "valueFrom: HOST\n    - name: GATEHOUSE_COOKIE_KEYS\n      valueFrom: HOST\n") {
		t.Fatal("the rendered WasmPlugin changed: update this test's patches")
	}
	r := strings.Replace(rendered, "failStrategy: FAIL_CLOSE", "failStrategy: FAIL_OPEN", 1)
	r = strings.Replace(r, "    - name: GATEHOUSE_COOKIE_KEYS\n      valueFrom: HOST\n",
		"    - name: GATEHOUSE_COOKIE_KEYS\n      valueFrom: HOST\n    - name: GATEHOUSE_DEPLOYMENT\n      value: eu-west\n    - name: GATEHOUSE_TIER\n      valueFrom: INLINE\n      value: gold\n", 1)
	w := wasmOf(t, translate(t, r, IngressGateway, Options{}, clusterObjects), wasmPluginFilter)
	if got := w.GetConfig().GetFailurePolicy(); got != wasmv3.FailurePolicy_FAIL_OPEN {
		t.Errorf("FAIL_OPEN maps to %v", got)
	}
	env := w.GetConfig().GetVmConfig().GetEnvironmentVariables()
	if env.GetKeyValues()["GATEHOUSE_DEPLOYMENT"] != "eu-west" || env.GetKeyValues()["GATEHOUSE_TIER"] != "gold" {
		t.Errorf("INLINE entries (explicit and by default) are not in key_values: %v", env.GetKeyValues())
	}
	if got := env.GetHostEnvKeys(); !slices.Equal(got, []string{"GATEHOUSE_CLIENT_SECRET", "GATEHOUSE_COOKIE_KEYS"}) {
		t.Errorf("host_env_keys %v", got)
	}
}

// With PILOT_FILTER_GATEWAY_CLUSTER_CONFIG, istiod sends a gateway only the clusters its routes
// use: the callout cluster to Keycloak goes missing unless the gateway-callout-cluster
// component names it.
func TestFilteredGatewayClusters(t *testing.T) {
	has := func(tr Translation) bool { return slices.Contains(tr.Clusters, keycloakCluster) }
	if !has(translate(t, render(t), IngressGateway, Options{}, clusterObjects)) {
		t.Errorf("without filtering the gateway lacks %s", keycloakCluster)
	}
	if has(translate(t, render(t), IngressGateway, Options{FilterGatewayClusters: true}, clusterObjects)) {
		t.Errorf("filtering keeps %s even without the component: the component proves nothing", keycloakCluster)
	}
	tr := translate(t, render(t, "gateway-callout-cluster"), IngressGateway, Options{FilterGatewayClusters: true}, clusterObjects)
	if !has(tr) {
		t.Errorf("with filtering and the component the gateway lacks %s: %v", keycloakCluster, tr.Clusters)
	}
	onEveryListener(t, tr, wasmPluginFilter)
}

// The Gateway API variant: the gateway is a gateway.networking.k8s.io Gateway that Istio deploys,
// and the WasmPlugin attaches by targetRefs.
func TestGatewayAPIComponent(t *testing.T) {
	rendered := render(t, "gateway-api")
	if strings.Contains(rendered, "kind: VirtualService") {
		t.Error("the Gateway API variant keeps the VirtualService")
	}
	gw := Gateway{
		Namespace: "istio-system",
		Labels:    map[string]string{"gateway.networking.k8s.io/gateway-name": "gatehouse", "istio.io/gateway-name": "gatehouse"},
		Pod:       "gatehouse-istio-6c9d8d6f7b-abcde",
	}
	tr := translate(t, rendered, gw, Options{}, clusterObjects, gatewayClass, tlsSecret(t))
	onEveryListener(t, tr, wasmPluginFilter)
	w := wasmOf(t, tr, wasmPluginFilter)
	if w.GetConfig().GetFailurePolicy() != wasmv3.FailurePolicy_FAIL_CLOSED {
		t.Errorf("failure policy %v", w.GetConfig().GetFailurePolicy())
	}
	if got := listenersWith(tr, wasmPluginFilter); !slices.Equal(got, []string{"0.0.0.0_443", "0.0.0.0_80"}) {
		t.Errorf("gatehouse is on listeners %v, want 0.0.0.0_443 and 0.0.0.0_80", got)
	}
	// ... and not on another gateway of the mesh, which the targetRefs do not name: the classic
	// ingress gateway, given the base's Istio Gateway to serve.
	var istioGateway string
	for _, doc := range strings.Split(render(t), "\n---\n") {
		if strings.Contains(doc, "apiVersion: networking.istio.io/v1\nkind: Gateway\n") {
			istioGateway = doc
		}
	}
	other := translate(t, rendered, IngressGateway, Options{}, clusterObjects, gatewayClass, tlsSecret(t), istioGateway)
	if len(other.HTTPFilters) == 0 {
		t.Fatal("the classic ingress gateway got no listeners: the negative check proves nothing")
	}
	if got := listenersWith(other, wasmPluginFilter); len(got) != 0 {
		t.Errorf("the targetRefs WasmPlugin also lands on istio-ingressgateway: %v", got)
	}
}

// What Istio's gateway deployment controller makes for the Gateway on a cluster (it does not
// run here): Service and pod gatehouse-istio; istiod binds the Gateway to the pods behind that
// Service.
const gatewayClass = `apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: istio
spec:
  controllerName: istio.io/gateway-controller
---
apiVersion: v1
kind: Service
metadata:
  name: gatehouse-istio
  namespace: istio-system
  labels:
    gateway.networking.k8s.io/gateway-name: gatehouse
spec:
  selector:
    gateway.networking.k8s.io/gateway-name: gatehouse
  ports:
  - name: https
    port: 443
    targetPort: 443
  - name: http
    port: 80
    targetPort: 80
---
apiVersion: v1
kind: Pod
metadata:
  name: gatehouse-istio-6c9d8d6f7b-abcde
  namespace: istio-system
  labels:
    gateway.networking.k8s.io/gateway-name: gatehouse
    istio.io/gateway-name: gatehouse
spec:
  containers:
  - name: istio-proxy
    image: auto
status:
  phase: Running
  podIP: 10.1.2.3
  conditions:
  - type: Ready
    status: "True"
`

// tlsSecret is the Secret gatehouse-tls the gateways' HTTPS listeners name (istiod leaves out a
// listener whose certificate it cannot find): a throw-away self-signed certificate.
func tlsSecret(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "echo.example.com"},
		DNSNames:     []string{"echo.example.com"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	crt := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	k := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
	return fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata:\n  name: gatehouse-tls\n  namespace: istio-system\ntype: kubernetes.io/tls\ndata:\n  tls.crt: %s\n  tls.key: %s\n",
		base64.StdEncoding.EncodeToString(crt), base64.StdEncoding.EncodeToString(k))
}
