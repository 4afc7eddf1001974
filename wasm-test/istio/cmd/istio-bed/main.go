// istio-bed: Istio's own code on gatehouse's artifacts, for the end-to-end tests
// (wasm-test/e2e/istio.test.mjs).
//
//	istio-bed translate --manifests rendered.yaml [--extra more.yaml] --out translation.json
//	    istiod's config generation (the fake discovery server of pilot/test/xds) for the ingress
//	    gateway pod: its listeners' HTTP filters, the ECDS resources they name (as a
//	    DiscoveryResponse) and its clusters.
//	istio-bed pull --in ecds.json --out local.json --cache DIR [--insecure host:port]
//	    istio-agent's rewrite of an ECDS DiscoveryResponse (pkg/wasm): modules pulled into the
//	    agent's file cache, the configs pointed at the local files, failed pulls replaced as the
//	    agent replaces them. Istio's log (scope "wasm") goes to stderr.
//	istio-bed get --url oci://... [--sha256 HEX] --cache DIR [--insecure host:port]
//	    one pull through the agent's cache; prints the local file's path, or fails with Istio's
//	    error.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	"gatehouse.test/istiobed/bed"
	v3 "istio.io/istio/pilot/pkg/xds/v3"
	"istio.io/istio/pkg/log"
	"istio.io/istio/pkg/test"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if len(os.Args) < 2 {
		fail("usage: istio-bed translate|pull|get [flags]")
	}
	opts := log.DefaultOptions()
	opts.OutputPaths = []string{"stderr"}
	if err := log.Configure(opts); err != nil {
		fail("configuring Istio's log: %v", err)
	}
	var err error
	switch os.Args[1] {
	case "translate":
		err = translate(os.Args[2:])
	case "pull":
		err = pull(os.Args[2:])
	case "get":
		err = get(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (translate, pull, get)", os.Args[1])
	}
	if err != nil {
		fail("%v", err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "istio-bed: "+format+"\n", args...)
	os.Exit(1)
}

var marshal = protojson.MarshalOptions{Multiline: true, Indent: "  "}

func translate(args []string) error {
	fs := flag.NewFlagSet("translate", flag.ExitOnError)
	var manifests list
	fs.Var(&manifests, "manifests", "rendered YAML (repeatable)")
	out := fs.String("out", "", "where to write the translation (JSON)")
	filter := fs.Bool("filter-gateway-clusters", false, "PILOT_FILTER_GATEWAY_CLUSTER_CONFIG=true")
	_ = fs.Parse(args)
	if len(manifests) == 0 || *out == "" {
		return fmt.Errorf("translate needs --manifests and --out")
	}
	var docs []string
	for _, m := range manifests {
		b, err := os.ReadFile(m)
		if err != nil {
			return err
		}
		docs = append(docs, string(b))
	}
	cfg, kube, err := bed.Split(strings.Join(docs, "\n---\n"))
	if err != nil {
		return err
	}
	var tr bed.Translation
	if err := test.Wrap(func(t test.Failer) {
		tr = bed.Translate(t, cfg, kube, bed.IngressGateway, bed.Options{FilterGatewayClusters: *filter})
	}); err != nil {
		return fmt.Errorf("istiod's translation failed: %w", err)
	}
	resp := &discovery.DiscoveryResponse{VersionInfo: "1", TypeUrl: v3.ExtensionConfigurationType}
	for _, ec := range tr.Extensions {
		a, err := anypb.New(ec)
		if err != nil {
			return err
		}
		resp.Resources = append(resp.Resources, a)
	}
	ecds, err := marshal.Marshal(resp)
	if err != nil {
		return err
	}
	doc := map[string]any{
		"httpFilters": tr.HTTPFilters,
		"clusters":    tr.Clusters,
		"ecds":        json.RawMessage(ecds),
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(*out, append(b, '\n'), 0o644)
}

func pull(args []string) error {
	fs := flag.NewFlagSet("pull", flag.ExitOnError)
	in := fs.String("in", "", "ECDS DiscoveryResponse (JSON) as istiod sent it")
	out := fs.String("out", "", "where to write the rewritten DiscoveryResponse")
	newAgent := agentFlags(fs)
	_ = fs.Parse(args)
	if *in == "" || *out == "" {
		return fmt.Errorf("pull needs --in, --out and --cache")
	}
	b, err := os.ReadFile(*in)
	if err != nil {
		return err
	}
	resp := &discovery.DiscoveryResponse{}
	if err := protojson.Unmarshal(b, resp); err != nil {
		return fmt.Errorf("%s: %w", *in, err)
	}
	agent, err := newAgent()
	if err != nil {
		return err
	}
	defer agent.Close()
	if err := agent.Convert(resp.Resources); err != nil {
		return fmt.Errorf("the agent would NACK: %w", err)
	}
	for _, r := range resp.Resources {
		ec := &core.TypedExtensionConfig{}
		if err := r.UnmarshalTo(ec); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "istio-bed: %s -> %s\n", ec.Name, ec.GetTypedConfig().GetTypeUrl())
	}
	o, err := marshal.Marshal(resp)
	if err != nil {
		return err
	}
	return os.WriteFile(*out, append(o, '\n'), 0o644)
}

func get(args []string) error {
	fs := flag.NewFlagSet("get", flag.ExitOnError)
	url := fs.String("url", "", "oci://host/repo:tag or @sha256:...")
	sum := fs.String("sha256", "", "the expected checksum (WasmPlugin sha256)")
	newAgent := agentFlags(fs)
	_ = fs.Parse(args)
	if *url == "" {
		return fmt.Errorf("get needs --url and --cache")
	}
	agent, err := newAgent()
	if err != nil {
		return err
	}
	defer agent.Close()
	path, err := agent.Get(*url, *sum)
	if err != nil {
		return err
	}
	fmt.Println(path)
	return nil
}

// agentFlags declares the agent's flags (--cache, --insecure) on fs and returns the function that
// makes the agent from them once fs is parsed.
func agentFlags(fs *flag.FlagSet) func() (*bed.Agent, error) {
	cache := fs.String("cache", "", "the agent's module cache directory")
	var insecure list
	fs.Var(&insecure, "insecure", "a registry host:port reached over plain HTTP (repeatable)")
	return func() (*bed.Agent, error) {
		if *cache == "" {
			return nil, fmt.Errorf("--cache is required")
		}
		return bed.NewAgent(*cache, insecure)
	}
}
