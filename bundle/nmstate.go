package bundle

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"sigs.k8s.io/yaml"
)

// The NodeNetworkConfigurationPolicy shape (nmstate.io/v1) for a libreswan
// host-to-host connection, as OpenShift documents it.
type (
	// Policy is a NodeNetworkConfigurationPolicy.
	Policy struct {
		APIVersion string     `json:"apiVersion"`
		Kind       string     `json:"kind"`
		Metadata   ObjectMeta `json:"metadata"`
		Spec       PolicySpec `json:"spec"`
	}
	// ObjectMeta is the subset of Kubernetes metadata used here.
	ObjectMeta struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels,omitempty"`
	}
	// PolicySpec is the policy's spec.
	PolicySpec struct {
		NodeSelector map[string]string `json:"nodeSelector,omitempty"`
		DesiredState DesiredState      `json:"desiredState"`
	}
	// DesiredState holds the interfaces.
	DesiredState struct {
		Interfaces []Interface `json:"interfaces"`
	}
	// Interface is one ipsec interface.
	Interface struct {
		Name      string     `json:"name"`
		Type      string     `json:"type"`
		State     string     `json:"state,omitempty"`
		Libreswan *Libreswan `json:"libreswan,omitempty"`
	}
	// Libreswan is NMState's libreswan section.
	Libreswan struct {
		Left              string `json:"left,omitempty"`
		LeftID            string `json:"leftid,omitempty"`
		LeftRSASigKey     string `json:"leftrsasigkey,omitempty"`
		LeftCert          string `json:"leftcert,omitempty"`
		LeftModeCfgClient *bool  `json:"leftmodecfgclient,omitempty"`
		Right             string `json:"right,omitempty"`
		RightID           string `json:"rightid,omitempty"`
		RightRSASigKey    string `json:"rightrsasigkey,omitempty"`
		RightSubnet       string `json:"rightsubnet,omitempty"`
		IKEv2             string `json:"ikev2,omitempty"`
		Type              string `json:"type,omitempty"`
	}
)

// MaxPolicyBytes bounds a policy file.
const MaxPolicyBytes = 1 << 20

// ParsePolicy reads a NodeNetworkConfigurationPolicy and fills left, right,
// leftcert, rightsubnet and type of in from its first ipsec interface.
func ParsePolicy(data []byte, in *Input) error {
	if len(data) > MaxPolicyBytes {
		return errors.New("bundle: the policy file is larger than 1 MiB")
	}
	var p Policy
	if err := yaml.Unmarshal(data, &p); err != nil {
		return fmt.Errorf("bundle: the policy does not parse as YAML: %v", err)
	}
	if p.Kind != "NodeNetworkConfigurationPolicy" {
		return fmt.Errorf("bundle: kind %q is not NodeNetworkConfigurationPolicy", p.Kind)
	}
	for _, i := range p.Spec.DesiredState.Interfaces {
		if i.Type != "ipsec" || i.Libreswan == nil {
			continue
		}
		l := i.Libreswan
		in.Left, in.Right, in.LeftCert, in.RightSubnet, in.Type = l.Left, l.Right, l.LeftCert, l.RightSubnet, l.Type
		return nil
	}
	return errors.New("bundle: the policy has no interface of type ipsec with a libreswan section")
}

// RenderInput is what Render needs besides the validated Input.
type RenderInput struct {
	Input
	Name string // the connection/interface name; "<right>_conn" by default
}

// File is one rendered file.
type File struct {
	Name    string
	Content []byte
	Mode    uint32
}

func connName(r RenderInput) string {
	if r.Name != "" {
		return r.Name
	}
	n := strings.NewReplacer(".", "_", "-", "_", ":", "_").Replace(r.Right)
	return n + "_conn"
}

// Render writes the NodeNetworkConfigurationPolicy (transport or tunnel),
// its removal policy, and the Butane machine configs for masters and
// workers that install ca.pem and the PKCS#12 and import them into the
// node's NSS database before ipsec.service starts. The PKCS#12 must have
// an empty password (the import runs pk12util -W "").
func Render(r RenderInput) ([]File, error) {
	if r.Password != "" {
		return nil, errors.New("bundle: render needs a PKCS#12 with an empty password " +
			"(the node imports it with pk12util -W \"\"); re-export it: openssl pkcs12 -in left_server.p12 -nodes | " +
			"openssl pkcs12 -export -name left_server -passout pass: -out left_server-nopass.p12")
	}
	if r.LeftCert == "" {
		r.LeftCert = DefaultLeftCert
	}
	if r.Type == "" {
		r.Type = DefaultType
	}
	name := connName(r)
	no := false
	ls := &Libreswan{
		Left: r.Left, LeftID: "%fromcert", LeftRSASigKey: "%cert", LeftCert: r.LeftCert, LeftModeCfgClient: &no,
		Right: r.Right, RightID: "%fromcert", RightRSASigKey: "%cert", RightSubnet: r.RightSubnet,
		IKEv2: "insist", Type: r.Type,
	}
	pol := Policy{APIVersion: "nmstate.io/v1", Kind: "NodeNetworkConfigurationPolicy",
		Metadata: ObjectMeta{Name: "ipsec-policy-" + strings.ReplaceAll(name, "_", "-")},
		Spec: PolicySpec{NodeSelector: map[string]string{"kubernetes.io/hostname": r.Left},
			DesiredState: DesiredState{Interfaces: []Interface{{Name: name, Type: "ipsec", Libreswan: ls}}}}}
	policy, err := yaml.Marshal(pol)
	if err != nil {
		return nil, err
	}
	removal := pol
	removal.Spec.DesiredState = DesiredState{Interfaces: []Interface{{Name: name, Type: "ipsec", State: "absent"}}}
	removalYAML, err := yaml.Marshal(removal)
	if err != nil {
		return nil, err
	}
	files := []File{
		{Name: "ipsec-" + r.Type + "-policy.yaml", Content: policy, Mode: 0o644},
		{Name: "remove-ipsec-policy.yaml", Content: removalYAML, Mode: 0o644},
	}
	for _, role := range []string{"master", "worker"} {
		bu, err := butane(role, r)
		if err != nil {
			return nil, err
		}
		files = append(files, File{Name: "99-ipsec-" + role + "-endpoint-config.bu", Content: bu, Mode: 0o600})
	}
	return files, nil
}

// importScript runs before ipsec.service: a fresh NSS DB if there is none,
// the CA with trust CT,C,C, the PKCS#12 (empty password), and user trust
// on the endpoint's certificate.
const importScript = `set -e
[ -f /var/lib/ipsec/nss/cert9.db ] || ipsec initnss
certutil -A -n "CA" -t "CT,C,C" -d /var/lib/ipsec/nss/ -i /etc/pki/certs/ca.pem
pk12util -W "" -i /etc/pki/certs/left_server.p12 -d /var/lib/ipsec/nss/
certutil -M -n "%s" -t "u,u,u" -d /var/lib/ipsec/nss/
`

func butane(role string, r RenderInput) ([]byte, error) {
	type source struct {
		Source string `json:"source"`
	}
	type file struct {
		Path      string `json:"path"`
		Mode      int    `json:"mode"`
		Overwrite bool   `json:"overwrite"`
		Contents  source `json:"contents"`
	}
	type unit struct {
		Name     string `json:"name"`
		Enabled  bool   `json:"enabled"`
		Contents string `json:"contents"`
	}
	script := fmt.Sprintf(importScript, r.LeftCert)
	cfg := map[string]any{
		"variant": "openshift",
		"version": "4.17.0",
		"metadata": map[string]any{"name": "99-ipsec-" + role + "-endpoint-config",
			"labels": map[string]string{"machineconfiguration.openshift.io/role": role}},
		"storage": map[string]any{"files": []file{
			{Path: "/etc/pki/certs/ca.pem", Mode: 0o400, Overwrite: true,
				Contents: source{"data:," + url.PathEscape(string(r.CAPEM))}},
			{Path: "/etc/pki/certs/left_server.p12", Mode: 0o400, Overwrite: true,
				Contents: source{"data:;base64," + base64.StdEncoding.EncodeToString(r.P12)}},
			{Path: "/usr/local/bin/ipsec-endpoint-import.sh", Mode: 0o700, Overwrite: true,
				Contents: source{"data:," + url.PathEscape(script)}},
		}},
		"systemd": map[string]any{"units": []unit{{Name: "ipsec-endpoint-import.service", Enabled: true, Contents: `[Unit]
Description=Import external IPsec endpoint certificates into the NSS database
Before=ipsec.service
After=network-online.target

[Service]
Type=oneshot
ExecStart=/usr/local/bin/ipsec-endpoint-import.sh
RemainAfterExit=true

[Install]
WantedBy=multi-user.target
`}}},
	}
	return yaml.Marshal(cfg)
}
