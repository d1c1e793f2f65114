package deploytest

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/netpulse/netpulse/lib/testutil/repofile"
)

// rendering is what one kustomization renders to, decoded.
type rendering struct {
	Namespaces  []*corev1.Namespace
	DaemonSets  []*appsv1.DaemonSet
	Deployments []*appsv1.Deployment
	Secrets     map[string]*corev1.Secret    // by name
	ConfigMaps  map[string]*corev1.ConfigMap // by name
}

// repoPath is rel (from the repository root) on disk.
func repoPath(t *testing.T, rel string) string {
	t.Helper()
	p, err := repofile.Find(rel)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// render copies the YAML files of deploy/kubernetes into a temporary
// directory, writes a placeholder for every file a generator of the
// kustomization at rel (below deploy/kubernetes) reads (the example
// overlay's secrets/ is git-ignored, and what a checkout holds there is
// never copied), renders it with kustomize and decodes every object
// strictly.
func render(t *testing.T, rel string) *rendering {
	t.Helper()
	src := repoPath(t, "deploy/kubernetes")
	dir := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || (filepath.Ext(p) != ".yaml" && filepath.Ext(p) != ".yml") {
			return err
		}
		r, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		to := filepath.Join(dir, r)
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, rel)
	if err := stubGeneratorFiles(root); err != nil {
		t.Fatal(err)
	}
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), root)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", rel, err)
	}
	r := &rendering{Secrets: map[string]*corev1.Secret{}, ConfigMaps: map[string]*corev1.ConfigMap{}}
	for _, res := range rm.Resources() {
		y, err := res.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		if err := r.add(y); err != nil {
			t.Errorf("%s: %s %s: %v", rel, res.GetKind(), res.GetName(), err)
		}
	}
	return r
}

// stubGeneratorFiles writes a placeholder for every file the secret and
// config map generators of the kustomization in dir name.
func stubGeneratorFiles(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return err
	}
	var k types.Kustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		return fmt.Errorf("kustomization.yaml: %w", err)
	}
	var sources []string
	for _, g := range k.SecretGenerator {
		sources = append(sources, g.FileSources...)
	}
	for _, g := range k.ConfigMapGenerator {
		sources = append(sources, g.FileSources...)
	}
	for _, s := range sources {
		_, file, ok := strings.Cut(s, "=")
		if !ok {
			file = s
		}
		p := filepath.Join(dir, filepath.FromSlash(file))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte("placeholder of "+path.Base(file)+"\n"), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// add decodes one rendered object into its API type: an unknown field, a
// field in the wrong case or a duplicate one is an error, as is a kind this
// package does not expect.
func (r *rendering) add(y []byte) error {
	j, err := yaml.YAMLToJSONStrict(y)
	if err != nil {
		return err
	}
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(j, &tm); err != nil {
		return err
	}
	var obj any
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 Namespace":
		ns := &corev1.Namespace{}
		r.Namespaces, obj = append(r.Namespaces, ns), ns
	case "apps/v1 DaemonSet":
		ds := &appsv1.DaemonSet{}
		r.DaemonSets, obj = append(r.DaemonSets, ds), ds
	case "apps/v1 Deployment":
		d := &appsv1.Deployment{}
		r.Deployments, obj = append(r.Deployments, d), d
	case "v1 Secret":
		obj = &corev1.Secret{}
	case "v1 ConfigMap":
		obj = &corev1.ConfigMap{}
	default:
		return fmt.Errorf("unexpected object %s %s", tm.APIVersion, tm.Kind)
	}
	strict, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	if len(strict) > 0 {
		return fmt.Errorf("strict decoding: %v", strict)
	}
	switch o := obj.(type) {
	case *corev1.Secret:
		r.Secrets[o.Name] = o
	case *corev1.ConfigMap:
		r.ConfigMaps[o.Name] = o
	}
	return nil
}

// workload is a pod template with its owner's name, for checks that apply
// to the DaemonSet and the Deployments alike.
type workload struct {
	Kind, Name string
	Service    string // probe, sink or detector
	Pod        *corev1.PodTemplateSpec
}

func (r *rendering) workloads() []workload {
	var out []workload
	for _, ds := range r.DaemonSets {
		out = append(out, workload{"DaemonSet", ds.Name, ds.Spec.Template.Labels["app.kubernetes.io/component"], &ds.Spec.Template})
	}
	for _, d := range r.Deployments {
		out = append(out, workload{"Deployment", d.Name, d.Spec.Template.Labels["app.kubernetes.io/component"], &d.Spec.Template})
	}
	return out
}

func (r *rendering) daemonSet(t *testing.T, name string) *appsv1.DaemonSet {
	t.Helper()
	for _, ds := range r.DaemonSets {
		if ds.Name == name {
			return ds
		}
	}
	t.Fatalf("no DaemonSet %s", name)
	return nil
}

func (r *rendering) deployment(t *testing.T, name string) *appsv1.Deployment {
	t.Helper()
	for _, d := range r.Deployments {
		if d.Name == name {
			return d
		}
	}
	t.Fatalf("no Deployment %s", name)
	return nil
}

// configKeys are the keys config/<service>.yaml documents (every key a
// service has, dotted: nats.tls.ca_file).
func configKeys(t *testing.T, service string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(repoPath(t, "config/"+service+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatalf("config/%s.yaml: %v", service, err)
	}
	keys := map[string]bool{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		sub, ok := v.(map[string]any)
		if !ok || len(sub) == 0 {
			keys[prefix] = true
			return
		}
		for k, v := range sub {
			if prefix != "" {
				k = prefix + "." + k
			}
			walk(k, v)
		}
	}
	walk("", m)
	return keys
}

// envName is lib/config's NETPULSE_<KEY>.
func envName(key string) string {
	return "NETPULSE_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}
