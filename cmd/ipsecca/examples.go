package main

import (
	"strings"

	"github.com/spf13/cobra"
)

// examples are the Example sections of the commands, by command path
// without "ipsecca ". A command that sets its own keeps it.
var examples = map[string]string{
	"serve": `  ipsecca serve --data-dir /var/lib/ipsecca --listen 0.0.0.0:8443 --server-name ca.example.com
  ipsecca serve --store etcd --etcd-endpoints https://e1:2379 --kek-file /etc/ipsecca/kek --advertise 10.0.0.5:8443`,
	"init": `  ipsecca init --data-dir /var/lib/ipsecca --org "Example Corp"
  ipsecca init --subordinate --data-dir /var/lib/ipsecca   # then have ca.csr signed, then ipsecca ca import`,
	"status": `  ipsecca status
  ipsecca status --server ca-0:8443,ca-1:8443 -o json`,
	"health": `  ipsecca health --server 127.0.0.1:8443 --ca-file /var/lib/ipsecca/ca.pem
  ipsecca health --service ipsecca.v1.NodeService`,
	"store check":   `  ipsecca store check --data-dir /var/lib/ipsecca   # stop the server first`,
	"store migrate": `  ipsecca store migrate --from bolt:/var/lib/ipsecca --to etcd:https://e1:2379 --kek-file kek`,
	"enroll": `  openssl req -new -newkey rsa:2048 -nodes -keyout node.key -subj /CN=node-a -out node.csr
  ipsecca enroll --server ca.example.com:8443 --ca-file ca.pem --token-file token --csr node.csr --out node.pem`,
	"renew": `  ipsecca renew --server ca.example.com:8443 --ca-file ca.pem --cert node.pem --key node.key --csr new.csr \
    --out node.pem`,
	"sidecar": `  ipsecca sidecar --server ca.example.com:8443 --ca-file ca.pem --node node-a --token-file /run/token
  ipsecca sidecar --node node-a --once   # one pass: exit 0 when the NSS database is right`,
	"token create": `  ipsecca token create --node node-a > token
  ipsecca token create --node node-a --cn 8f5f0e2c-system-id --ttl 24h`,
	"certs list": `  ipsecca certs list
  ipsecca certs list --node node-a --state active -o wide
  ipsecca certs list --due-before 2031-01-01 -o json`,
	"certs show": `  ipsecca certs show 5f3a9c
  ipsecca certs show 5f3a9c --pem | openssl x509 -noout -text`,
	"nodes list": `  ipsecca nodes list
  ipsecca nodes list --no-headers | awk '{print $1}'`,
	"nodes show":    `  ipsecca nodes show node-a`,
	"nodes revoke":  `  ipsecca nodes revoke node-a --reason "disk stolen"`,
	"nodes readmit": `  ipsecca nodes readmit node-a && ipsecca token create --node node-a`,
	"nodes forget":  `  ipsecca nodes forget node-a`,
	"audit list": `  ipsecca audit list --node node-a
  ipsecca audit list --type rotation. --since 2031-05-01 --limit 20`,
	"audit verify": `  ipsecca audit verify`,
	"rotate": `  ipsecca rotate --node node-a --wait 10m
  ipsecca rotate --all --spread 24h`,
	"schedule":       `  ipsecca schedule --limit 50`,
	"rotations list": `  ipsecca rotations list --node node-a --since 2031-01-01`,
	"ca show": `  ipsecca ca show
  ipsecca ca show -o yaml`,
	"ca renew": `  ipsecca ca renew --wait 10m`,
	"ca crl": `  ipsecca ca crl --out crl.pem
  ipsecca ca crl -o json   # what it lists`,
	"ca import": `  ipsecca ca import --cert subordinate.pem --chain root.pem
  ipsecca ca import --offline --data-dir /var/lib/ipsecca --cert subordinate.pem --chain root.pem`,
	"ca rollover status": `  ipsecca ca rollover status`,
	"ca rollover finish": `  ipsecca ca rollover finish --wait 1h`,
	"ca rollover abort":  `  ipsecca ca rollover abort`,
	"admin rotate":       `  ipsecca admin rotate`,
	"admin revoke":       `  ipsecca admin revoke 7c01d2 --reason "laptop lost"`,
	"mesh status": `  ipsecca mesh status
  ipsecca mesh status --wait 5m`,
	"bundle validate": `  ipsecca bundle validate --p12 left_server.p12 --password-file pw --ca-file ca.pem \
    --left worker-0 --right ext.example.com --right-subnet 192.0.2.10/32`,
	"bundle render": `  ipsecca bundle render --p12 left_server.p12 --password-file pw --ca-file ca.pem \
    --policy nncp.yaml --out ./out`,
	"config libreswan": `  ipsecca config libreswan --node node-a --node-address 10.0.0.1 --peer node-b=10.0.0.2`,
	"config mtu":       `  ipsecca config mtu --mtu 9000`,
	"manifests":        `  ipsecca manifests --namespace ipsecca | kubectl apply -f -`,
	"completion": `  source <(ipsecca completion bash)
  ipsecca completion zsh > "${fpath[1]}/_ipsecca"`,
}

// setExamples gives every command its example.
func setExamples(c *cobra.Command) {
	for _, sub := range c.Commands() {
		setExamples(sub)
	}
	path := c.CommandPath()
	if len(path) > len("ipsecca ") {
		path = path[len("ipsecca "):]
	}
	if ex, ok := examples[path]; ok && c.Example == "" {
		c.Example = ex
	}
	if c.Example == "" && c.HasParent() && c.HasSubCommands() { // a group: its commands' first examples
		var lines []string
		for _, sub := range c.Commands() {
			if first, _, _ := strings.Cut(sub.Example, "\n"); first != "" && sub.IsAvailableCommand() {
				lines = append(lines, first)
			}
		}
		c.Example = strings.Join(lines, "\n")
	}
}
