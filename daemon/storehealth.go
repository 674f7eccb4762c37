package daemon

import (
	"context"
	"log/slog"
	"time"

	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// StoreHealth is a store that can lose the ability to commit while the
// process runs (etcd without quorum, or out of reach) and can tell.
type StoreHealth interface {
	// Healthy returns nil when the store can serve a linearizable read
	// now, else why not.
	Healthy(ctx context.Context) error
}

// DefaultHealthInterval is how often a replica of a shared store checks
// that the store answers.
const DefaultHealthInterval = 2 * time.Second

// healthProbeTimeout bounds one check (the store's own request timeout
// may bound it further).
const healthProbeTimeout = 2 * time.Second

// readinessServices are the health entries that follow the store: the
// services whose calls need it. The server's overall entry ("") stays
// SERVING while the process runs: it is the liveness probe, and
// restarting a replica does not bring etcd back (a replica cannot even
// start without it).
var readinessServices = []string{
	ipseccav1.NodeService_ServiceDesc.ServiceName,
	ipseccav1.AdminService_ServiceDesc.ServiceName,
}

// watchStoreHealth checks st at once and then every interval until ctx
// ends, and calls report with the result each time it changes (the store
// is taken to answer at first): nil when it answers again. Each change is
// logged once.
func watchStoreHealth(
	ctx context.Context,
	st StoreHealth,
	interval time.Duration,
	log *slog.Logger,
	report func(error),
) {
	if interval <= 0 {
		interval = DefaultHealthInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	serving := true
	for {
		pctx, cancel := context.WithTimeout(ctx, healthProbeTimeout)
		err := st.Healthy(pctx)
		cancel()
		if ctx.Err() != nil {
			return // stopping: the failed check says nothing about the store
		}
		if ok := err == nil; ok != serving {
			serving = ok
			if ok {
				log.Info("store answers again: health reports SERVING", "services", readinessServices)
			} else {
				log.Warn("store unavailable: health reports NOT_SERVING until it answers", "services",
					readinessServices, "err", err)
			}
			report(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
