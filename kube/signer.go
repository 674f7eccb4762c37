package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	certificatesv1 "k8s.io/api/certificates/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/util/workqueue"

	"github.com/ipsecca/ipsecca/ca"
)

// Queue keys: one per node (its CSRs are decided together, one worker at
// a time), one per CSR of a requester that is not a node, and the bundle.
const (
	bundleKey  = "bundle"
	nodePrefix = "node/"
	csrPrefix  = "csr/"

	requesterIndex = "requester"
	cnIndex        = "cn"
)

// informerResync re-delivers every cached object this often, so nothing
// waits for an event that was missed.
const informerResync = 5 * time.Minute

// Signer signs the CSRs of one signer name with the Authority and keeps
// the CA bundle ConfigMap current. Run it in every replica: one leads.
type Signer struct {
	cfg     Config
	log     *slog.Logger
	cmNS    string
	cmName  string
	metrics *metrics

	leadMu sync.Mutex           // held while leading: a new term waits for the old one's workers
	active atomic.Pointer[term] // the current term once its caches synced

	limMu    sync.Mutex
	limiters map[string]*rate.Limiter

	nonNodeLog ca.Sampler // logs of non-node requesters' denials, sampled

	published sync.Map // UIDs of CSRs seen carrying a certificate (types.UID → struct{}): see wasPublished

	notReady atomic.Pointer[error] // why this replica cannot campaign (its Lease cannot be made)
}

// term is one leadership term: its queue and caches.
type term struct {
	queue   workqueue.TypedRateLimitingInterface[string]
	csrs    cache.Indexer
	nodes   cache.Indexer
	configs cache.Indexer
}

// New returns a Signer; it does nothing until Run.
func New(cfg Config) (*Signer, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	ns, name, _ := SplitNamespacedName(cfg.CABundleConfigMap)
	s := &Signer{cfg: cfg, log: cfg.Logger.With("component", "kube-signer", "signer", cfg.SignerName),
		cmNS: ns, cmName: name,
		metrics: newMetrics(), limiters: map[string]*rate.Limiter{}, nonNodeLog: ca.Sampler{Every: time.Minute}}
	if cfg.Metrics != nil {
		if err := s.metrics.register(cfg.Metrics); err != nil {
			return nil, err
		}
		if err := cfg.Metrics.Register(pendingCollector{s}); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Ready returns nil while this replica can take part in the election (and
// sign when it leads), else why not: a readiness probe reports it.
func (s *Signer) Ready() error {
	if p := s.notReady.Load(); p != nil {
		return *p
	}
	return nil
}

// Identity is this replica's name in the leader election and in the
// approval messages.
func (s *Signer) Identity() string { return s.cfg.LeaderElection.Identity }

// Leading reports whether this replica leads now, its caches synced.
func (s *Signer) Leading() bool { return s.active.Load() != nil }

// CABundleChanged makes the leader republish the CA bundle now (after a
// root renewal). The bundle published is always the Authority's current
// one (Root().BundlePEM: the newest root first, then the previous ones).
func (s *Signer) CABundleChanged([]byte) {
	if t := s.active.Load(); t != nil {
		t.queue.Add(bundleKey)
	}
}

// Revoked makes the leader publish the new CRL now and look again at the
// node's pending CSRs (they are denied from now on). Tell it of every
// revocation, through any door or replica; a periodic check (Resync)
// catches what it is not told.
func (s *Signer) Revoked(node, _ string) {
	t := s.active.Load()
	if t == nil {
		return
	}
	t.queue.Add(bundleKey)
	if node != "" {
		t.queue.Add(nodePrefix + node)
	}
}

// Run takes part in the leader election until ctx ends; while leading it
// signs and publishes. Outside ModeFull it leaves every CSR alone (for
// another signer) and returns when ctx ends.
func (s *Signer) Run(ctx context.Context) error {
	if s.cfg.Mode != ModeFull {
		s.log.Info("not signing: the cluster's IPsec mode is "+string(s.cfg.Mode)+"; CSRs are left for another signer",
			"mode", s.cfg.Mode)
		<-ctx.Done()
		return nil
	}
	le := s.cfg.LeaderElection
	if le.Disabled {
		s.lead(ctx)
		return nil
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: le.Namespace, Name: le.Name},
		Client:     s.cfg.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: le.Identity},
	}
	for ctx.Err() == nil {
		if !s.awaitLease(ctx) {
			break
		}
		elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   le.LeaseDuration,
			RenewDeadline:   le.RenewDeadline,
			RetryPeriod:     le.RetryPeriod,
			ReleaseOnCancel: true,
			Name:            le.Name,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: s.lead,
				OnStoppedLeading: func() {},
				OnNewLeader: func(id string) {
					if id != le.Identity {
						s.log.Info("following", "leader", id, "identity", le.Identity)
					}
				},
			},
		})
		if err != nil {
			return fmt.Errorf("kube: leader election: %w", err)
		}
		s.log.Info("campaigning for leadership", "lease", le.Namespace+"/"+le.Name, "identity", le.Identity)
		elector.Run(ctx)
		if ctx.Err() == nil {
			s.log.Warn("lost leadership; campaigning again", "identity", le.Identity)
		}
	}
	// Wait for the last term's workers.
	s.leadMu.Lock()
	s.leadMu.Unlock() //nolint:staticcheck // a barrier
	return nil
}

// awaitLease returns true once this replica may make its Lease, false
// when ctx ends first. client-go's elector would log a missing namespace
// (or a missing permission) every RetryPeriod forever and never lead: this
// says it once, reports the replica not ready, checks again quietly (the
// namespace may be created later) and says when it is resolved. The check
// is a dry-run create, which needs no permission beyond the elector's own.
func (s *Signer) awaitLease(ctx context.Context) bool {
	le := s.cfg.LeaderElection
	lease := le.Namespace + "/" + le.Name
	leases := s.cfg.Client.CoordinationV1().Leases(le.Namespace)
	probe := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: le.Namespace, Name: le.Name}}
	said := ""
	for {
		_, err := leases.Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if ctx.Err() != nil {
			return false
		}
		var msg string
		switch {
		case apierrors.IsNotFound(err): // a Lease create is NotFound only when its namespace is
			msg = fmt.Sprintf("the leader-election Lease's namespace %q does not exist: create it "+
				"(kubectl create namespace %s) or choose an existing one with --lease-namespace; no CSR is signed "+
				"until then", le.Namespace, le.Namespace)
		case apierrors.IsForbidden(err):
			msg = fmt.Sprintf("this replica may not create the leader-election Lease in namespace %q: grant it "+
				"leases there (get, create, update) or choose its own namespace with --lease-namespace; no CSR is "+
				"signed until then", le.Namespace)
		default: // present or made at once (AlreadyExists, nil), or an error the elector reports itself
			if said != "" {
				s.log.Info("the leader-election Lease can be made now: campaigning", "lease", lease)
			}
			s.notReady.Store(nil)
			return true
		}
		if msg != said {
			said = msg
			why := errors.New("kube: " + msg)
			s.notReady.Store(&why)
			s.log.Error(msg, "lease", lease, "err", err)
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(le.RetryPeriod):
		}
	}
}

// lead runs one leadership term until ctx ends, in three steps: watch (the
// informers and their handlers), sync (start them, wait for their caches)
// and work (the workers and the housekeeping).
func (s *Signer) lead(ctx context.Context) {
	s.leadMu.Lock()
	defer s.leadMu.Unlock()
	if ctx.Err() != nil {
		return
	}
	s.log.Info("leading: signing CSRs", "identity", s.Identity(), "ca_bundle_configmap", s.cmNS+"/"+s.cmName)
	s.metrics.leader.Set(1)
	defer s.metrics.leader.Set(0)
	s.published.Clear() // bounded by the CSRs of one term

	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	w, err := s.watch(q)
	if err != nil {
		s.log.Error("informers", "err", err)
		return
	}
	ictx, stopInformers := context.WithCancel(ctx)
	defer w.shutdown(stopInformers)
	if !w.sync(ictx) {
		q.ShutDown()
		return
	}
	t := &term{queue: q, csrs: w.csrs.GetIndexer(), nodes: w.nodes.GetIndexer(), configs: w.configs.GetIndexer()}
	s.active.Store(t)
	defer s.active.Store(nil)
	s.work(ctx, t)
	s.log.Info("stopped leading", "identity", s.Identity())
}

// watchers are a leader's informers: CSRs of its signer (indexed by
// requester), Nodes (indexed by the CN they may hold) and the bundle
// ConfigMap, all feeding one queue.
type watchers struct {
	factories            []informers.SharedInformerFactory
	csrs, nodes, configs cache.SharedIndexInformer
}

// watch builds the informers, their indexes and their handlers.
func (s *Signer) watch(q workqueue.TypedRateLimitingInterface[string]) (*watchers, error) {
	client := s.cfg.Client
	csrFactory := informers.NewSharedInformerFactoryWithOptions(client, informerResync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.signerName", s.cfg.SignerName).String()
		}))
	nodeFactory := informers.NewSharedInformerFactory(client, informerResync)
	cmFactory := informers.NewSharedInformerFactoryWithOptions(client, informerResync, informers.WithNamespace(s.cmNS),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", s.cmName).String()
		}))
	w := &watchers{
		factories: []informers.SharedInformerFactory{csrFactory, nodeFactory, cmFactory},
		csrs:      csrFactory.Certificates().V1().CertificateSigningRequests().Informer(),
		nodes:     nodeFactory.Core().V1().Nodes().Informer(),
		configs:   cmFactory.Core().V1().ConfigMaps().Informer(),
	}
	// The caches hold what the signer reads, not whole objects: a real
	// cluster's Node carries its status (images, conditions, addresses:
	// kilobytes each) and every object its managedFields.
	if err := w.nodes.SetTransform(slimNode); err != nil {
		return nil, fmt.Errorf("node informer: %w", err)
	}
	if err := w.csrs.SetTransform(slimCSR); err != nil {
		return nil, fmt.Errorf("CSR informer: %w", err)
	}
	if err := w.csrs.AddIndexers(cache.Indexers{requesterIndex: func(obj any) ([]string, error) {
		if c, ok := obj.(*certificatesv1.CertificateSigningRequest); ok {
			return []string{c.Spec.Username}, nil
		}
		return nil, nil
	}}); err != nil {
		return nil, fmt.Errorf("CSR informer: %w", err)
	}
	if err := w.nodes.AddIndexers(cache.Indexers{cnIndex: func(obj any) ([]string, error) {
		if n, ok := obj.(*corev1.Node); ok {
			if cn := NodeCN(n, s.cfg.CNFrom); cn != "" {
				return []string{cn}, nil
			}
		}
		return nil, nil
	}}); err != nil {
		return nil, fmt.Errorf("node informer: %w", err)
	}
	handlers := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{w.csrs, cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { s.enqueueCSR(q, obj) },
			UpdateFunc: func(_, obj any) { s.enqueueCSR(q, obj) },
			DeleteFunc: s.forgetCSR,
		}},
		{w.nodes, cache.ResourceEventHandlerFuncs{
			// A node's chassis-id may arrive after its CSR.
			AddFunc: func(obj any) {
				if n, ok := obj.(*corev1.Node); ok {
					q.Add(nodePrefix + n.Name)
				}
			},
			UpdateFunc: func(old, obj any) {
				o, ok1 := old.(*corev1.Node)
				n, ok2 := obj.(*corev1.Node)
				if ok1 && ok2 && NodeCN(o, s.cfg.CNFrom) != NodeCN(n, s.cfg.CNFrom) {
					q.Add(nodePrefix + n.Name)
				}
			},
		}},
		{w.configs, cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { q.Add(bundleKey) },
			UpdateFunc: func(any, any) { q.Add(bundleKey) },
			DeleteFunc: func(any) { q.Add(bundleKey) },
		}},
	}
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(h.h); err != nil {
			return nil, fmt.Errorf("informer handler: %w", err)
		}
	}
	return w, nil
}

// slimNode keeps of a Node what the signer reads: its name and the
// chassis-id annotation (and the identity fields of any object).
func slimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	slim := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion,
		CreationTimestamp: n.CreationTimestamp, DeletionTimestamp: n.DeletionTimestamp}}
	if id, ok := n.Annotations[AnnotationChassisID]; ok {
		slim.Annotations = map[string]string{AnnotationChassisID: id}
	}
	return slim, nil
}

// slimCSR drops a CSR's managedFields: the signer writes CSRs back as
// cached, and a write without managedFields leaves them as they are.
func slimCSR(obj any) (any, error) {
	if c, ok := obj.(*certificatesv1.CertificateSigningRequest); ok {
		c.ManagedFields = nil
	}
	return obj, nil
}

// sync starts the informers and waits for their caches (false when ctx
// ended first).
func (w *watchers) sync(ctx context.Context) bool {
	for _, f := range w.factories {
		f.Start(ctx.Done())
	}
	return cache.WaitForCacheSync(ctx.Done(), w.csrs.HasSynced, w.nodes.HasSynced, w.configs.HasSynced)
}

// shutdown stops the informers and waits for them.
func (w *watchers) shutdown(stop context.CancelFunc) {
	stop()
	for _, f := range w.factories {
		f.Shutdown()
	}
}

// work runs the workers and the housekeeping until ctx ends.
func (s *Signer) work(ctx context.Context, t *term) {
	t.queue.Add(bundleKey)
	var wg sync.WaitGroup
	for range s.cfg.Workers {
		wg.Go(func() {
			for s.processNext(ctx, t) {
			}
		})
	}
	wg.Go(func() { s.housekeeping(ctx, t) })
	<-ctx.Done()
	t.queue.ShutDown()
	wg.Wait()
}

// housekeeping re-checks the bundle and deletes old CSRs every Resync.
func (s *Signer) housekeeping(ctx context.Context, t *term) {
	tick := time.NewTicker(s.cfg.Resync)
	defer tick.Stop()
	for {
		s.collectGarbage(ctx, t)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.queue.Add(bundleKey)
		}
	}
}

func (s *Signer) enqueueCSR(q workqueue.TypedRateLimitingInterface[string], obj any) {
	c, ok := obj.(*certificatesv1.CertificateSigningRequest)
	if !ok {
		return
	}
	q.Add(s.keyFor(c))
}

// forgetCSR drops a deleted CSR from the published set.
func (s *Signer) forgetCSR(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if c, ok := obj.(*certificatesv1.CertificateSigningRequest); ok {
		s.published.Delete(c.UID)
	}
}

func (s *Signer) keyFor(c *certificatesv1.CertificateSigningRequest) string {
	if node := RequesterNode(c.Spec.Username, s.cfg.RequesterPrefix); node != "" {
		return nodePrefix + node
	}
	return csrPrefix + c.Name
}

// requeueAfter asks for the key to be looked at again later (not a failure).
type requeueAfter time.Duration

func (r requeueAfter) Error() string { return fmt.Sprintf("requeue after %s", time.Duration(r)) }

func (s *Signer) processNext(ctx context.Context, t *term) bool {
	key, quit := t.queue.Get()
	if quit {
		return false
	}
	defer t.queue.Done(key)
	err := s.sync(ctx, t, key)
	var after requeueAfter
	switch {
	case err == nil:
		t.queue.Forget(key)
	case errors.As(err, &after):
		t.queue.Forget(key)
		t.queue.AddAfter(key, time.Duration(after))
	case ctx.Err() != nil:
	default:
		s.log.Warn("will retry", "key", key, "err", err)
		t.queue.AddRateLimited(key)
	}
	return true
}

func (s *Signer) sync(ctx context.Context, t *term, key string) error {
	switch {
	case key == bundleKey:
		return s.syncBundle(ctx, t)
	case len(key) > len(nodePrefix) && key[:len(nodePrefix)] == nodePrefix:
		return s.syncNode(ctx, t, key[len(nodePrefix):])
	case len(key) > len(csrPrefix) && key[:len(csrPrefix)] == csrPrefix:
		obj, ok, err := t.csrs.GetByKey(key[len(csrPrefix):])
		if err != nil || !ok {
			return err
		}
		return s.syncCSRs(ctx, t, "",
			[]*certificatesv1.CertificateSigningRequest{obj.(*certificatesv1.CertificateSigningRequest)}, false)
	}
	return nil
}

// limit reserves a decision for node under the per-node rate; it returns
// how long to wait when the node is over it.
func (s *Signer) limit(node string) time.Duration {
	s.limMu.Lock()
	l := s.limiters[node]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(s.cfg.PerNodeRate), s.cfg.PerNodeBurst)
		s.limiters[node] = l
	}
	s.limMu.Unlock()
	r := l.Reserve()
	if d := r.Delay(); d > 0 {
		r.Cancel()
		return d
	}
	return 0
}
