package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/ipsecca/ipsecca/internal/flagnames"
	"github.com/ipsecca/ipsecca/kube"
	"github.com/ipsecca/ipsecca/kube/deploy"
)

// Every command line the deployment manifests run (the CA, the sidecar,
// the probes) is one these commands accept: the command exists, every
// flag parses, the arguments and required flags validate. The manifests
// take the names from internal/flagnames, as the commands do.
func TestManifestCommandLines(t *testing.T) {
	endpoints := []string{"https://e1:2379", "https://e2:2379"}
	seen := map[string]bool{}
	for _, o := range []deploy.ManifestOptions{
		{},
		{Mode: kube.ModeExternal},
		{Store: deploy.StoreEtcd, EtcdEndpoints: endpoints},
		{Store: deploy.StoreEtcd, EtcdEndpoints: endpoints, EtcdTLSSecret: "etcd-client", Mode: kube.ModeExternal},
	} {
		objs, err := deploy.Manifests(o)
		if err != nil {
			t.Fatal(err)
		}
		for _, obj := range objs {
			var pod *corev1.PodSpec
			switch obj := obj.(type) {
			case *appsv1.StatefulSet:
				pod = &obj.Spec.Template.Spec
			case *appsv1.Deployment:
				pod = &obj.Spec.Template.Spec
			case *appsv1.DaemonSet:
				pod = &obj.Spec.Template.Spec
			default:
				continue
			}
			for _, c := range pod.Containers {
				lines := [][]string{c.Args}
				for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
					if p != nil && p.Exec != nil {
						lines = append(lines, p.Exec.Command[1:]) // after the binary's path
					}
				}
				for _, args := range lines {
					seen[args[0]] = true
					checkCommandLine(t, args)
				}
			}
		}
	}
	for _, name := range []string{flagnames.CmdServe, flagnames.CmdSidecar, flagnames.CmdHealth} {
		if !seen[name] {
			t.Errorf("no manifest runs %s", name)
		}
	}
}

// checkCommandLine parses args as the binary would, without running it.
func checkCommandLine(t *testing.T, args []string) {
	t.Helper()
	root := newRootCmd()
	cmd, rest, err := root.Find(args)
	if err != nil || cmd == root || cmd.Name() != args[0] {
		t.Errorf("%s: no such command (%v)", strings.Join(args, " "), err)
		return
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Errorf("%s: %v", strings.Join(args, " "), err)
		return
	}
	for _, check := range []error{cmd.ValidateArgs(cmd.Flags().Args()), cmd.ValidateRequiredFlags(),
		cmd.ValidateFlagGroups()} {
		if check != nil {
			t.Errorf("%s: %v", strings.Join(args, " "), check)
		}
	}
	for _, a := range rest {
		if name, ok := strings.CutPrefix(a, "--"); ok && !cmd.Flags().Changed(name) {
			t.Errorf("%s: %s not taken", strings.Join(args, " "), a)
		}
	}
	if slices.Contains(rest, "--") {
		t.Errorf("%s: a bare --", strings.Join(args, " "))
	}
}

// manifests -o json prints the same objects as the YAML, as one v1 List
// (what kubectl get -o json prints and kubectl apply -f takes); the notes
// for the operator go to stderr, so stdout stays JSON.
func TestManifestsJSON(t *testing.T) {
	for _, args := range [][]string{
		{"manifests"},
		{"manifests", "--store", "etcd", "--etcd-endpoints", "https://e1:2379", "--monitoring"},
	} {
		code, yamlOut, _ := runCLI(append(args, "-o", "yaml")...)
		if code != 0 {
			t.Fatalf("%v -o yaml: exit %d", args, code)
		}
		code, jsonOut, errOut := runCLI(append(args, "-o", "json")...)
		var list struct {
			APIVersion, Kind string
			Items            []struct{ Kind string }
		}
		if err := json.Unmarshal([]byte(jsonOut), &list); code != 0 || err != nil {
			t.Fatalf("%v -o json: exit %d, %v\n%s", args, code, err, jsonOut)
		}
		if list.APIVersion != "v1" || list.Kind != "List" || len(list.Items) == 0 ||
			len(list.Items) != strings.Count(yamlOut, "\n---\n") {
			t.Errorf("%v -o json: %s/%s with %d items; the YAML has %d documents", args, list.APIVersion, list.Kind,
				len(list.Items), strings.Count(yamlOut, "\n---\n"))
		}
		if !strings.Contains(errOut, "kubectl apply -f -") {
			t.Errorf("%v -o json: the notes are not on stderr: %q", args, errOut)
		}
	}
	if code, _, errOut := runCLI("manifests", "-o", "wide"); code != 2 ||
		!strings.Contains(errOut, "want one of yaml, json") {
		t.Errorf("manifests -o wide: exit %d %s", code, errOut)
	}
}

func runCLI(args ...string) (int, string, string) {
	var out, errb strings.Builder
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}
