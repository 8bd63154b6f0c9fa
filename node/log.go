package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/gologshim"
)

// NewLogger returns the node's logger on w: level debug, info, warn or
// error; format text (key=value lines) or json (one object per line, for
// log collectors), as --log-level and --log-format take them.
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

var (
	libp2pLogs     atomic.Pointer[slog.Handler]
	libp2pLogsOnce sync.Once
)

// RouteLibraryLogs sends go-libp2p's own log lines through logger (as
// component=libp2p, in its format and no lower than its level), instead of
// go-libp2p's stderr lines with source paths. Their levels per subsystem
// stay go-libp2p's (GOLOG_LOG_LEVEL, default error). The lines of fx, the
// dependency injection go-libp2p builds its host with, are dropped: at
// error level they repeat the error libp2p.New returns (a busy listen port
// printed three times before ringmesh's own message), below it they trace
// the wiring. Call it before the first host is built; a later call
// re-targets the lines.
func RouteLibraryLogs(logger *slog.Logger) {
	h := logger.Handler().WithAttrs([]slog.Attr{slog.String("component", "libp2p")})
	libp2pLogs.Store(&h)
	libp2pLogsOnce.Do(func() { gologshim.SetDefaultHandler(libp2pHandler{levels: gologshim.ConfigFromEnv()}) })
}

// libp2pHandler is the handler go-libp2p's loggers get: it keeps their
// attributes and groups, and hands each record to the current target.
type libp2pHandler struct {
	levels *gologshim.Config
	system string // the "logger" attribute: the go-libp2p subsystem
	fx     bool   // fx's events (system=fx)
	ops    []func(slog.Handler) slog.Handler
}

func (h libp2pHandler) target() slog.Handler {
	t := *libp2pLogs.Load()
	for _, op := range h.ops {
		t = op(t)
	}
	return t
}

func (h libp2pHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return !h.fx && l >= h.levels.LevelForSystem(h.system) && (*libp2pLogs.Load()).Enabled(ctx, l)
}

func (h libp2pHandler) Handle(ctx context.Context, r slog.Record) error {
	if h.fx {
		return nil
	}
	return h.target().Handle(ctx, r)
}

func (h libp2pHandler) WithAttrs(as []slog.Attr) slog.Handler {
	for _, a := range as {
		switch {
		case a.Key == "logger":
			h.system = a.Value.String()
		case a.Key == "system" && a.Value.String() == "fx":
			h.fx = true
		}
	}
	as = slices.Clone(as)
	h.ops = append(slices.Clip(h.ops), func(t slog.Handler) slog.Handler { return t.WithAttrs(as) })
	return h
}

func (h libp2pHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h.ops = append(slices.Clip(h.ops), func(t slog.Handler) slog.Handler { return t.WithGroup(name) })
	return h
}
