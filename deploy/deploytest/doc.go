// Package deploytest checks what deploy/ ships for installing netpulse: the
// Kubernetes manifests (deploy/kubernetes, rendered with kustomize and
// decoded strictly into the Kubernetes API types) and the systemd units
// (deploy/systemd, through systemd-analyze verify). It has tests only; it is
// a module of its own so that kustomize and the Kubernetes API stay out of
// the services' modules.
package deploytest
