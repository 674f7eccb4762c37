// Package clijson reads what "ipsecca ... -o json" prints back into the
// API's messages, for the tests of the CLI and of the built binary.
package clijson

import (
	"encoding/base64"
	"encoding/json"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Unmarshal reads the CLI's JSON of an API message (-o json) back into m:
// the CLI writes PEM fields as text, which protojson wants as base64.
func Unmarshal(b []byte, m proto.Message) error {
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	pemToBase64(v, m.ProtoReflect().Descriptor())
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return protojson.Unmarshal(b, m)
}

func pemToBase64(v map[string]any, md protoreflect.MessageDescriptor) {
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		x, ok := v[fd.JSONName()]
		if !ok || x == nil {
			continue
		}
		switch {
		case fd.Kind() == protoreflect.BytesKind && strings.Contains(string(fd.Name()), "pem") && !fd.IsList():
			v[fd.JSONName()] = base64.StdEncoding.EncodeToString([]byte(x.(string)))
		case fd.Message() != nil && fd.Message().FullName().Parent() != "google.protobuf" && !fd.IsMap():
			items, ok := x.([]any)
			if !ok {
				items = []any{x}
			}
			for _, it := range items {
				if sub, ok := it.(map[string]any); ok {
					pemToBase64(sub, fd.Message())
				}
			}
		}
	}
}
