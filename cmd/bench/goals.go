package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// goal is one of issue #23's targets as measured in this run: Measured
// against Target, both ratios (or values in Unit) taken in the same run.
type goal struct {
	ID       string  `json:"id"`   // the goal number and letter, e.g. "1a"
	Name     string  `json:"name"` // what is compared, e.g. "enrolment / ceiling, 64 in flight"
	Measured float64 `json:"measured"`
	Target   float64 `json:"target"`
	// AtMost is true when Measured must be ≤ Target (CPU, memory, time),
	// false when it must be ≥ Target (rates).
	AtMost bool   `json:"at_most,omitempty"`
	Unit   string `json:"unit,omitempty"` // "×" when empty
	Detail string `json:"detail,omitempty"`
}

func (g goal) pass() bool {
	if g.AtMost {
		return g.Measured <= g.Target
	}
	return g.Measured >= g.Target
}

func (g goal) verdict() string {
	if g.pass() {
		return "PASS"
	}
	return "MISS"
}

// phase is one part of the run registered by its own file (kube flood,
// sidecar footprint, watch storm): it returns table rows and goals.
// --phases selects phases by name; the core loads are the phase "core".
type phase struct {
	name string
	run  func(c config, base *baseline) ([]row, []goal)
}

var phases []phase

// register adds a phase; files call it from init. Phases run in name order
// after the core loads.
func register(name string, run func(c config, base *baseline) ([]row, []goal)) {
	phases = append(phases, phase{name, run})
	slices.SortFunc(phases, func(a, b phase) int { return strings.Compare(a.name, b.name) })
}

// baseline is what the core loads measured that later phases compare to.
type baseline struct {
	Limit   float64     // in-process signing limit, certs/s
	Ceiling map[int]row // the storage-free signer, by concurrency
	Enrol   map[int]row // ipsecca on bbolt, by concurrency
}

func printGoals(w io.Writer, goals []goal) {
	if len(goals) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "GOAL\tWHAT\tMEASURED\tTARGET\tVERDICT\tDETAIL\n")
	for _, g := range goals {
		unit := g.Unit
		if unit == "" {
			unit = "×"
		}
		op := "≥"
		if g.AtMost {
			op = "≤"
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f %s\t%s %.2f %s\t%s\t%s\n", g.ID, g.Name, g.Measured, unit, op, g.Target, unit,
			g.verdict(), g.Detail)
	}
	tw.Flush()
}
