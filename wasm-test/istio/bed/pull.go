package bed

import (
	"os"
	"time"

	"google.golang.org/protobuf/types/known/anypb"

	"istio.io/istio/pkg/util/sets"
	"istio.io/istio/pkg/wasm"
)

// Agent is istio-agent's Wasm side: its module file cache and the ECDS rewrite it applies to
// every extension config istiod sends before Envoy sees it (pkg/istio-agent/xds_proxy.go).
type Agent struct {
	cache *wasm.LocalFileCache
}

// NewAgent makes the agent's cache in dir (created if missing, as the agent's data directory
// is) with the agent's defaults; insecure lists the registries reached over plain HTTP (the
// agent's WASM_INSECURE_REGISTRIES).
func NewAgent(dir string, insecure []string) (*Agent, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return &Agent{cache: wasm.NewLocalFileCache(dir, wasm.Options{
		PurgeInterval:         wasm.DefaultPurgeInterval,
		ModuleExpiry:          wasm.DefaultModuleExpiry,
		InsecureRegistries:    sets.New(insecure...),
		HTTPRequestTimeout:    wasm.DefaultHTTPRequestTimeout,
		HTTPRequestMaxRetries: wasm.DefaultHTTPRequestMaxRetries,
	})}, nil
}

// Convert rewrites the resources in place as the agent does: a remote (oci:// or http) module is
// pulled into the cache and the config points at the local file; a pull that fails becomes
// Istio's RBAC stand-in (deny under FAIL_CLOSE, allow under FAIL_OPEN), logged by Istio's
// "wasm" scope. An error is what the agent would NACK.
func (a *Agent) Convert(resources []*anypb.Any) error {
	return wasm.MaybeConvertWasmExtensionConfig(resources, a.cache)
}

// Get pulls one module as the cache does for a rewrite, returning the local file's path.
func (a *Agent) Get(url, checksum string) (string, error) {
	return a.cache.Get(url, wasm.GetOptions{
		Checksum:       checksum,
		ResourceName:   "gatehouse-pull",
		RequestTimeout: 30 * time.Second,
		PullPolicy:     wasm.IfNotPresent,
	})
}

// Close stops the cache's purge routine.
func (a *Agent) Close() { a.cache.Cleanup() }
