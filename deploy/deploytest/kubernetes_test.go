package deploytest

import (
	"maps"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/netpulse/netpulse/services/detector/detect"
	_ "github.com/netpulse/netpulse/services/detector/detectors/all"
)

const namespace = "netpulse"

// metricsPort is each service's metrics.addr port (config/<service>.yaml,
// README "Metrics, health and version").
var metricsPort = map[string]int32{"probe": 9431, "detector": 9432, "sink": 9433}

// Seconds a stopping service may still need (README): the probe's flush
// grace for outstanding acks, and the sink's last INSERT.
const (
	probeFlushGrace = 10
	sinkFinalFlush  = 15
)

// The kustomizations below deploy/kubernetes that are rendered and checked.
var kustomizations = []string{"base", "overlays/example"}

func TestKustomize(t *testing.T) {
	probeCaps := probeUnitCapabilities(t)
	for _, rel := range kustomizations {
		t.Run(strings.ReplaceAll(rel, "/", "_"), func(t *testing.T) {
			r := render(t, rel)
			overlay := rel != "base"
			checkNamespace(t, r)
			for _, w := range r.workloads() {
				checkWorkload(t, r, w, overlay)
			}
			checkProbe(t, r, probeCaps)
			checkDetectors(t, r)
			checkSink(t, r, overlay)
			checkImages(t, r, overlay)
		})
	}
}

func checkNamespace(t *testing.T, r *rendering) {
	if len(r.Namespaces) != 1 || r.Namespaces[0].Name != namespace {
		t.Errorf("want exactly the Namespace %s, got %d namespaces", namespace, len(r.Namespaces))
	}
	for _, w := range r.workloads() {
		if ns := w.Pod.Namespace; ns != "" {
			t.Errorf("%s %s: the pod template names namespace %s", w.Kind, w.Name, ns)
		}
	}
	for _, ds := range r.DaemonSets {
		if ds.Namespace != namespace {
			t.Errorf("DaemonSet %s in namespace %q", ds.Name, ds.Namespace)
		}
	}
	for _, d := range r.Deployments {
		if d.Namespace != namespace {
			t.Errorf("Deployment %s in namespace %q", d.Name, d.Namespace)
		}
	}
	for name, s := range r.Secrets {
		if s.Namespace != namespace {
			t.Errorf("Secret %s in namespace %q", name, s.Namespace)
		}
	}
	for name, c := range r.ConfigMaps {
		if c.Namespace != namespace {
			t.Errorf("ConfigMap %s in namespace %q", name, c.Namespace)
		}
	}
}

// checkWorkload: what every pod must have. One container running the
// service, requests and limits, metrics on 0.0.0.0:<its port> with
// readiness on /readyz and liveness on /healthz there, a scrape annotation,
// configuration keys the service knows, secrets only from files, and every
// file it is given present in the Secret or ConfigMap mounted there.
func checkWorkload(t *testing.T, r *rendering, w workload, overlay bool) {
	t.Helper()
	port, ok := metricsPort[w.Service]
	if !ok {
		t.Errorf("%s %s: component label %q is not a netpulse service", w.Kind, w.Name, w.Service)
		return
	}
	spec := &w.Pod.Spec
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 0 {
		t.Errorf("%s %s: want one container, got %d (+%d init)", w.Kind, w.Name, len(spec.Containers), len(spec.InitContainers))
		return
	}
	c := &spec.Containers[0]
	where := w.Kind + " " + w.Name
	if !strings.Contains(c.Image, "netpulse-"+w.Service) {
		t.Errorf("%s: image %s is not netpulse-%s", where, c.Image, w.Service)
	}
	if w.Pod.Labels["app.kubernetes.io/part-of"] != "netpulse" {
		t.Errorf("%s: pods are not labelled app.kubernetes.io/part-of=netpulse", where)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken is not false (no service uses the Kubernetes API)", where)
	}
	checkResources(t, where, c)

	// Metrics and health.
	env := envMap(c)
	if got, want := env["NETPULSE_METRICS_ADDR"], "0.0.0.0:"+strconv.Itoa(int(port)); got != want {
		t.Errorf("%s: NETPULSE_METRICS_ADDR = %q, want %q", where, got, want)
	}
	var named int32
	for _, p := range c.Ports {
		if p.Name == "metrics" {
			named = p.ContainerPort
		}
	}
	if named != port {
		t.Errorf("%s: container port \"metrics\" = %d, want %d", where, named, port)
	}
	checkHTTPProbe(t, where+" readinessProbe", c.ReadinessProbe, "/readyz", c, port)
	checkHTTPProbe(t, where+" livenessProbe", c.LivenessProbe, "/healthz", c, port)
	if a := w.Pod.Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(int(port)) || a["prometheus.io/path"] != "/metrics" {
		t.Errorf("%s: scrape annotations %v, want port %d, path /metrics", where, a, port)
	}

	// Configuration: every NETPULSE_* variable is a key of this service;
	// $(VAR) references an earlier variable; secrets come from files.
	keys := configKeys(t, w.Service)
	envNames := map[string]bool{}
	for k := range keys {
		envNames[envName(k)] = true
	}
	defined := map[string]bool{}
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for _, e := range c.Env {
		for _, m := range ref.FindAllStringSubmatch(e.Value, -1) {
			if !defined[m[1]] {
				t.Errorf("%s: %s refers to $(%s), which no earlier variable defines", where, e.Name, m[1])
			}
		}
		defined[e.Name] = true
		if strings.HasPrefix(e.Name, "NETPULSE_") && !envNames[e.Name] {
			t.Errorf("%s: %s is not a key of netpulse-%s (config/%s.yaml)", where, e.Name, w.Service, w.Service)
		}
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			t.Errorf("%s: %s takes a secret as a variable; use the key's *_file and a mounted Secret", where, e.Name)
		}
		switch e.Name {
		case "NETPULSE_NATS_PASSWORD", "NETPULSE_NATS_TOKEN", "NETPULSE_CLICKHOUSE_PASSWORD":
			t.Errorf("%s: %s set in the manifest; use %s_FILE", where, e.Name, e.Name)
		}
	}
	for i := 0; i < len(c.Args); i++ {
		a := c.Args[i]
		key, _, withValue := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !keys[key] {
			t.Errorf("%s: argument %q is not a --key of netpulse-%s", where, a, w.Service)
		}
		if !withValue {
			i++ // --key value
		}
	}
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "NETPULSE_") && strings.HasSuffix(e.Name, "_FILE") && e.Value != "" {
			checkFile(t, r, where, spec, c, e.Name, e.Value)
		}
	}
	if !overlay {
		return
	}
	// Every Secret and ConfigMap a volume names is rendered too.
	for _, v := range spec.Volumes {
		if v.Secret != nil && r.Secrets[v.Secret.SecretName] == nil {
			t.Errorf("%s: volume %s: no Secret %s in the rendering", where, v.Name, v.Secret.SecretName)
		}
		if v.ConfigMap != nil && r.ConfigMaps[v.ConfigMap.Name] == nil {
			t.Errorf("%s: volume %s: no ConfigMap %s in the rendering", where, v.Name, v.ConfigMap.Name)
		}
	}
}

func checkResources(t *testing.T, where string, c *corev1.Container) {
	t.Helper()
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := c.Resources.Requests[res]
		lim, okLim := c.Resources.Limits[res]
		if !okReq || !okLim {
			t.Errorf("%s: %s request and limit both needed, got %v / %v", where, res, c.Resources.Requests, c.Resources.Limits)
			continue
		}
		if req.Cmp(lim) > 0 {
			t.Errorf("%s: %s request %s above its limit %s", where, res, req.String(), lim.String())
		}
	}
}

func checkHTTPProbe(t *testing.T, where string, p *corev1.Probe, path string, c *corev1.Container, port int32) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s: want an HTTP GET of %s", where, path)
		return
	}
	if p.HTTPGet.Path != path {
		t.Errorf("%s: path %s, want %s", where, p.HTTPGet.Path, path)
	}
	if got := resolvePort(c, p.HTTPGet.Port); got != port {
		t.Errorf("%s: port %s is %d, want the metrics port %d", where, p.HTTPGet.Port.String(), got, port)
	}
}

func resolvePort(c *corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return 0
}

// checkFile: the file a *_FILE variable names is in a mounted Secret or
// ConfigMap, and (when that object is rendered: the overlay) holds the key.
// A $(VAR) in the path (the probe's $(NODE_NAME)) matches any key.
func checkFile(t *testing.T, r *rendering, where string, spec *corev1.PodSpec, c *corev1.Container, name, file string) {
	t.Helper()
	var mount *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		if strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/") {
			mount = &c.VolumeMounts[i]
		}
	}
	if mount == nil {
		t.Errorf("%s: %s=%s is under no volume mount", where, name, file)
		return
	}
	rel := strings.TrimPrefix(file, strings.TrimSuffix(mount.MountPath, "/")+"/")
	pattern := regexp.MustCompile(`\$\([A-Za-z0-9_]+\)`).ReplaceAllString(rel, "*")
	var vol *corev1.Volume
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == mount.Name {
			vol = &spec.Volumes[i]
		}
	}
	var keys []string
	var items []corev1.KeyToPath
	switch {
	case vol == nil:
		t.Errorf("%s: %s: no volume %s", where, name, mount.Name)
		return
	case vol.Secret != nil:
		s := r.Secrets[vol.Secret.SecretName]
		if s == nil {
			t.Errorf("%s: %s=%s: Secret %s is not in the rendering", where, name, file, vol.Secret.SecretName)
			return
		}
		keys = slices.Collect(maps.Keys(s.Data))
		keys = slices.AppendSeq(keys, maps.Keys(s.StringData))
		items = vol.Secret.Items
	case vol.ConfigMap != nil:
		cm := r.ConfigMaps[vol.ConfigMap.Name]
		if cm == nil {
			t.Errorf("%s: %s=%s: ConfigMap %s is not in the rendering", where, name, file, vol.ConfigMap.Name)
			return
		}
		keys = slices.Collect(maps.Keys(cm.Data))
		items = vol.ConfigMap.Items
	default:
		t.Errorf("%s: %s=%s: volume %s is neither a Secret nor a ConfigMap", where, name, file, vol.Name)
		return
	}
	if len(items) > 0 { // only the listed keys, at their paths
		keys = keys[:0]
		for _, it := range items {
			keys = append(keys, it.Path)
		}
	}
	for _, k := range keys {
		if ok, _ := path.Match(pattern, k); ok {
			return
		}
	}
	t.Errorf("%s: %s=%s: no key %s in volume %s (keys %v)", where, name, file, pattern, vol.Name, keys)
}

// checkProbe: the DaemonSet runs in the host's PID and network namespaces
// as UID 0 with exactly the probe's capabilities (the unit's set, which
// services/probe/internal/caps checks against the code) and every other
// one dropped, tracefs and BTF from the host, and stops within its grace.
func checkProbe(t *testing.T, r *rendering, want []string) {
	t.Helper()
	if len(r.DaemonSets) != 1 {
		t.Errorf("want one DaemonSet, got %d", len(r.DaemonSets))
	}
	ds := r.daemonSet(t, "netpulse-probe")
	spec := &ds.Spec.Template.Spec
	if !spec.HostPID || !spec.HostNetwork {
		t.Errorf("probe: hostPID %v, hostNetwork %v: both needed (/proc of other processes; the host's sockets through sock_diag)", spec.HostPID, spec.HostNetwork)
	}
	if spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("probe: dnsPolicy %q, want ClusterFirstWithHostNet (Service names with hostNetwork)", spec.DNSPolicy)
	}
	if g := spec.TerminationGracePeriodSeconds; g == nil || *g <= probeFlushGrace {
		t.Errorf("probe: terminationGracePeriodSeconds must exceed the %d s flush grace", probeFlushGrace)
	}
	c := &spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("probe: no securityContext.capabilities")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("probe: privileged")
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Error("probe: runAsUser is not 0 (non-root gets no ambient capabilities in Kubernetes)")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("probe: allowPrivilegeEscalation is not false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("probe: readOnlyRootFilesystem is not true")
	}
	if got := capNames(sc.Capabilities.Drop); !slices.Equal(got, []string{"ALL"}) {
		t.Errorf("probe: capabilities dropped %v, want [ALL]", got)
	}
	wantK8s := make([]string, len(want))
	for i, c := range want {
		wantK8s[i] = strings.TrimPrefix(c, "CAP_")
	}
	slices.Sort(wantK8s)
	if got := capNames(sc.Capabilities.Add); !slices.Equal(got, wantK8s) {
		t.Errorf("probe: capabilities added %v, want exactly %v (deploy/systemd/netpulse-probe.service, package caps)", got, wantK8s)
	}
	mounts := map[string]string{} // mount path -> host path
	for _, m := range c.VolumeMounts {
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.HostPath != nil {
				mounts[m.MountPath] = v.HostPath.Path
				if !m.ReadOnly {
					t.Errorf("probe: host path %s mounted writable", v.HostPath.Path)
				}
			}
		}
	}
	for _, p := range []string{"/sys/kernel/tracing", "/sys/kernel/btf"} {
		if mounts[p] != p {
			t.Errorf("probe: host %s not mounted at %s (mounts %v)", p, p, mounts)
		}
	}
}

func capNames(cs []corev1.Capability) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = string(c)
	}
	slices.Sort(out)
	return out
}

// checkDetectors: one Deployment per built-in detector, each running that
// one (--detectors <name>) with replicas; every detector pod is non-root.
func checkDetectors(t *testing.T, r *rendering) {
	t.Helper()
	known := detect.Default.Names()
	seen := map[string]string{}
	for _, d := range r.Deployments {
		if d.Spec.Template.Labels["app.kubernetes.io/component"] != "detector" {
			continue
		}
		names := detectorsArg(d.Spec.Template.Spec.Containers[0].Args)
		if len(names) != 1 {
			t.Errorf("%s: --detectors names %v, want one detector", d.Name, names)
			continue
		}
		n := names[0]
		if !slices.Contains(known, n) {
			t.Errorf("%s: --detectors %s is not a detector (there are %v)", d.Name, n, known)
		}
		if prev, dup := seen[n]; dup {
			t.Errorf("%s and %s both run %s", prev, d.Name, n)
		}
		seen[n] = d.Name
		if d.Spec.Replicas == nil || *d.Spec.Replicas < 1 {
			t.Errorf("%s: no replicas", d.Name)
		}
		if want := "netpulse-detector-" + strings.ReplaceAll(n, "_", "-"); d.Name != want {
			t.Errorf("Deployment %s runs %s: call it %s", d.Name, n, want)
		}
		checkUnprivileged(t, "Deployment "+d.Name, &d.Spec.Template.Spec)
	}
	for _, n := range known {
		if seen[n] == "" {
			t.Errorf("no Deployment runs detector %s", n)
		}
	}
}

// detectorsArg is the list --detectors gives (--detectors=a,b or
// --detectors a,b).
func detectorsArg(args []string) []string {
	for i, a := range args {
		v, ok := strings.CutPrefix(a, "--detectors=")
		if !ok && a == "--detectors" && i+1 < len(args) {
			v, ok = args[i+1], true
		}
		if ok {
			return strings.Split(v, ",")
		}
	}
	return nil
}

func checkSink(t *testing.T, r *rendering, overlay bool) {
	t.Helper()
	d := r.deployment(t, "netpulse-sink")
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("sink: replicas %v, want 2", d.Spec.Replicas)
	}
	spec := &d.Spec.Template.Spec
	if g := spec.TerminationGracePeriodSeconds; g == nil || *g <= sinkFinalFlush {
		t.Errorf("sink: terminationGracePeriodSeconds must exceed the %d s of its last INSERT", sinkFinalFlush)
	}
	checkUnprivileged(t, "Deployment "+d.Name, spec)
	env := envMap(&spec.Containers[0])
	if overlay {
		for _, k := range []string{"NETPULSE_CLICKHOUSE_CLUSTER", "NETPULSE_CLICKHOUSE_PASSWORD_FILE", "NETPULSE_NATS_PASSWORD_FILE"} {
			if env[k] == "" {
				t.Errorf("sink: the overlay sets no %s", k)
			}
		}
	} else if env["NETPULSE_CLICKHOUSE_CLUSTER"] != "" {
		t.Error("sink: the base names a ClickHouse cluster; that is the overlay's")
	}
}

// checkUnprivileged: what Pod Security "restricted" asks of a pod.
func checkUnprivileged(t *testing.T, where string, spec *corev1.PodSpec) {
	t.Helper()
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("%s: runAsNonRoot is not true", where)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: seccompProfile is not RuntimeDefault", where)
	}
	if spec.HostPID || spec.HostNetwork || spec.HostIPC {
		t.Errorf("%s: uses a host namespace", where)
	}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			t.Errorf("%s: mounts host path %s", where, v.HostPath.Path)
		}
	}
	c := &spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation is not false", where)
	}
	if sc == nil || sc.Capabilities == nil || !slices.Equal(capNames(sc.Capabilities.Drop), []string{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("%s: capabilities are not drop [ALL], add none", where)
	}
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: readOnlyRootFilesystem is not true", where)
	}
}

// checkImages: the base carries the placeholder tag, which an overlay must
// replace.
func checkImages(t *testing.T, r *rendering, overlay bool) {
	t.Helper()
	for _, w := range r.workloads() {
		img := w.Pod.Spec.Containers[0].Image
		placeholder := strings.HasSuffix(img, ":VERSION")
		if overlay && placeholder {
			t.Errorf("%s %s: image %s still has the placeholder tag", w.Kind, w.Name, img)
		}
		if !overlay && !placeholder {
			t.Errorf("%s %s: base image %s: want the :VERSION placeholder", w.Kind, w.Name, img)
		}
	}
}

func envMap(c *corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		m[e.Name] = e.Value
	}
	return m
}
