package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/yaml"
)

// Output formats of -o, as kubectl spells them.
var outputFormats = []string{"table", "wide", "json", "yaml"}

// outputFlags is -o/--output and --no-headers, on every command that
// prints a listing or a result.
type outputFlags struct {
	format    string
	noHeaders bool
	json      bool // --json, deprecated: -o json
}

// addOutput registers -o and --no-headers on cmd (and, when the command
// had it, --json as a deprecated alias of -o json).
func addOutput(cmd *cobra.Command, jsonAlias bool) *outputFlags {
	o := new(outputFlags)
	o.register(cmd, jsonAlias)
	return o
}

// register adds o's flags to cmd; commands of which only one runs may
// share one outputFlags.
func (o *outputFlags) register(cmd *cobra.Command, jsonAlias bool) {
	fs := cmd.Flags()
	fs.StringVarP(&o.format, "output", "o", "table", "output format: "+strings.Join(outputFormats, ", "))
	fs.BoolVar(&o.noHeaders, "no-headers", false, "with table or wide output, print no column headers")
	if jsonAlias {
		fs.BoolVar(&o.json, "json", false, "same as -o json")
		deprecate(fs, "json", "use -o json")
	}
	_ = cmd.RegisterFlagCompletionFunc(
		"output",
		cobra.FixedCompletions(outputFormats, cobra.ShellCompDirectiveNoFileComp),
	)
}

// outputFormatsAnnotation on a command's own -o flag lists the formats it
// takes, when not those of addOutput.
const outputFormatsAnnotation = "ipsecca/output-formats"

// checkOutput refuses an unknown -o value before the command does anything.
func checkOutput(cmd *cobra.Command) error {
	f := cmd.Flags().Lookup("output")
	if f == nil {
		return nil
	}
	formats := outputFormats
	if own, ok := f.Annotations[outputFormatsAnnotation]; ok {
		formats = own
	}
	if slices.Contains(formats, f.Value.String()) {
		return nil
	}
	return usageError("-o %s: want one of %s", f.Value.String(), strings.Join(formats, ", "))
}

// structured reports whether data, not a table or text, is asked for.
func (o *outputFlags) structured() bool {
	return o.json || o.format == "json" || o.format == "yaml"
}

// data prints v (a proto message, or any value encoding/json takes) as JSON
// or YAML.
func (o *outputFlags) data(cmd *cobra.Command, v any) error {
	if m, ok := v.(proto.Message); ok {
		v = plain(m.ProtoReflect())
	}
	var b []byte
	var err error
	if o.json || o.format == "json" {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false) // "a -> b" stays readable
		enc.SetIndent("", "  ")
		err, b = enc.Encode(v), buf.Bytes()
	} else {
		b, err = yaml.Marshal(v)
	}
	if err != nil {
		return err
	}
	_, err = cmd.OutOrStdout().Write(b)
	return err
}

// print prints v as data when -o asks for it, else what text writes: a
// sentence or a few lines a person reads (a result, not a listing).
func (o *outputFlags) print(cmd *cobra.Command, v any, text func(w io.Writer) error) error {
	if o.structured() {
		return o.data(cmd, v)
	}
	return text(cmd.OutOrStdout())
}

// table is a listing: columns, the wide ones (name ending in "*") shown
// only with -o wide, as kubectl's Priority 1 columns.
type table struct{ metav1.Table }

func newTable(columns ...string) *table {
	t := new(table)
	for _, c := range columns {
		def := metav1.TableColumnDefinition{Name: c, Type: "string"}
		if name, ok := strings.CutSuffix(c, "*"); ok {
			def.Name, def.Priority = name, 1
		}
		t.ColumnDefinitions = append(t.ColumnDefinitions, def)
	}
	return t
}

func (t *table) row(cells ...any) {
	for i, c := range cells {
		if s, ok := c.(string); ok && s == "" {
			cells[i] = "-" // an empty cell would shift the columns for awk and cut
		}
	}
	t.Rows = append(t.Rows, metav1.TableRow{Cells: cells})
}

// list prints v as data, or t as a table (cli-runtime's, kubectl's).
func (o *outputFlags) list(cmd *cobra.Command, v any, t *table) error {
	if o.structured() {
		return o.data(cmd, v)
	}
	if len(t.Rows) == 0 && !o.noHeaders { // the table printer prints no headers over no rows
		_, err := fmt.Fprintln(cmd.ErrOrStderr(), "No resources found.")
		return err
	}
	return o.table(cmd.OutOrStdout(), t)
}

// table prints t alone, whatever -o says (for a command whose text output
// holds more than one table).
func (o *outputFlags) table(w io.Writer, t *table) error {
	p := printers.NewTablePrinter(printers.PrintOptions{NoHeaders: o.noHeaders, Wide: o.format == "wide"})
	return p.PrintObj(&t.Table, w)
}

// plain turns an API message into what encoding/json prints as people
// expect: JSON (lowerCamelCase) names as protojson, every field even when
// empty, PEM fields as PEM text (not base64), 64-bit integers as numbers
// (not strings), enums by name, timestamps and durations as protojson has
// them.
func plain(m protoreflect.Message) map[string]any {
	out := map[string]any{}
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.ContainingOneof() != nil && !m.Has(fd) {
			continue
		}
		v := m.Get(fd)
		switch {
		case fd.IsList():
			l := v.List()
			arr := make([]any, l.Len())
			for j := range arr {
				arr[j] = plainValue(fd, l.Get(j))
			}
			out[fd.JSONName()] = arr
		case fd.IsMap():
			mm := map[string]any{}
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				mm[k.String()] = plainValue(fd.MapValue(), mv)
				return true
			})
			out[fd.JSONName()] = mm
		case fd.Message() != nil && !m.Has(fd):
			out[fd.JSONName()] = nil
		default:
			out[fd.JSONName()] = plainValue(fd, v)
		}
	}
	return out
}

func plainValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if fd.Message().FullName().Parent() == "google.protobuf" { // well-known types: protojson's form
			b, err := protojson.Marshal(v.Message().Interface())
			var x any
			if err == nil && json.Unmarshal(b, &x) == nil {
				return x
			}
			return nil
		}
		return plain(v.Message())
	case protoreflect.BytesKind:
		if strings.Contains(string(fd.Name()), "pem") {
			return string(v.Bytes())
		}
		return v.Bytes()
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return string(ev.Name())
		}
		return int32(v.Enum())
	}
	return v.Interface()
}

// printJSON prints an API message as JSON (see plain).
func printJSON(cmd *cobra.Command, m proto.Message) error {
	return (&outputFlags{format: "json"}).data(cmd, m)
}

// fmtCount is a count for a table cell.
func fmtCount(n int) string { return fmt.Sprint(n) }
