package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ipsecca/ipsecca/sidecar"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Print configuration that matches ipsecca's certificates"}

	var c sidecar.ConnConfig
	var peers []string
	var mtu int
	var lsOut, mtuOut *outputFlags
	ls := &cobra.Command{
		Use:   "libreswan",
		Short: "Print libreswan conns for pod-to-pod transport mode between nodes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, p := range peers {
				name, addr, ok := strings.Cut(p, "=")
				if !ok {
					return usageError("--peer %q: want NAME=ADDRESS", p)
				}
				c.Peers = append(c.Peers, sidecar.Peer{Name: name, Address: addr})
			}
			c.Encapsulation = strings.ToLower(c.Encapsulation)
			out, err := sidecar.RenderConns(c)
			if err != nil {
				return usageError("%v", err)
			}
			pod, err := sidecar.PodMTU(mtu)
			if err != nil {
				return usageError("%v", err)
			}
			v := struct {
				Conns   string `json:"conns"`
				NodeMTU int    `json:"nodeMTU"`
				PodMTU  int    `json:"podMTU"`
			}{out, mtu, pod}
			return lsOut.print(cmd, v, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "%s\n# MTU: node %d -> pod %d\n", out, mtu, pod)
				return err
			})
		},
	}
	ls.Flags().StringVarP(&c.Node, "node", "n", "", "this node's certificate name (CN)")
	ls.Flags().StringVar(&c.Address, "node-address", "", "this node's IP address")
	ls.Flags().StringArrayVar(&peers, "peer", nil, "a peer as NAME=ADDRESS (repeatable)")
	ls.Flags().
		StringVar(&c.Encapsulation, "encapsulation", sidecar.EncapAuto,
			"auto (NAT-T only behind NAT) or always (encapsulation=yes)")
	ls.Flags().
		StringVar(&c.Nickname, "nickname", "", "NSS nickname of the node certificate (default ovs_certkey_<node>)")
	alias(ls.Flags(), "nss-nickname", "nickname")
	ls.Flags().IntVar(&mtu, "mtu", 1500, "the node's MTU (to print the pod MTU)")
	ls.Flags().
		StringVar(&c.Auto, "auto", "start", "libreswan auto= for the conns: start, add (wait for the peer) or ondemand")

	var m int
	mtuCmd := &cobra.Command{
		Use:   "mtu",
		Short: fmt.Sprintf("Print the pod MTU for a node MTU (%d bytes of ESP overhead)", sidecar.ESPOverhead),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pod, err := sidecar.PodMTU(m)
			if err != nil {
				return usageError("%v", err)
			}
			v := struct {
				NodeMTU int `json:"nodeMTU"`
				PodMTU  int `json:"podMTU"`
			}{m, pod}
			return mtuOut.print(cmd, v, func(w io.Writer) error {
				_, err := fmt.Fprintln(w, pod)
				return err
			})
		},
	}
	mtuCmd.Flags().IntVar(&m, "mtu", 1500, "the node's MTU")
	lsOut, mtuOut = addOutput(ls, false), addOutput(mtuCmd, false)
	cmd.AddCommand(ls, mtuCmd)
	return cmd
}
