package etcd

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// The etcd client's zap lines reach the process's slog log: warnings and
// errors with their fields, nothing below warn.
func TestZapIntoSlog(t *testing.T) {
	var buf bytes.Buffer
	log := zapLogger(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	named := log.Named("retry").With(zap.String("target", "etcd-endpoints://x"))
	named.Info("balancer chatter")
	named.Debug("more chatter")
	named.Warn("retrying of unary invoker failed", zap.Error(errors.New("connection refused")), zap.Int("attempt", 2))
	log.Error("lost leader")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines; want the warning and the error only:\n%s", len(lines), buf.String())
	}
	var warn, errl map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &warn); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &errl); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"level": "WARN", "msg": "retrying of unary invoker failed",
		"component": "etcd-client", "logger": "retry", "target": "etcd-endpoints://x",
		"error": "connection refused", "attempt": float64(2)} {
		if warn[k] != want {
			t.Errorf("warning %s = %v; want %v (%s)", k, warn[k], want, lines[0])
		}
	}
	if errl["level"] != "ERROR" || errl["msg"] != "lost leader" {
		t.Errorf("error line %s", lines[1])
	}
	// A handler at error level drops the client's warnings.
	buf.Reset()
	quiet := zapLogger(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError})))
	quiet.Warn("dropped")
	if buf.Len() != 0 {
		t.Errorf("warning passed an error-level handler: %s", buf.String())
	}
}
