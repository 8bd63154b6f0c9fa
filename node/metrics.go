package node

import (
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"

	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/checkpoint"
	"github.com/ringmesh/ringmesh/mesh"
	"github.com/ringmesh/ringmesh/node/localapi"
	"github.com/ringmesh/ringmesh/node/roundrun"
)

// metrics is the node's Prometheus registry and what goes into it: the
// ringmesh_* series, fed through the Metrics interfaces of mesh, allreduce
// and checkpoint (one value implements all three) and by the driver;
// libp2p's own series (the host registers them, see mesh.Config.Registerer);
// and the Go and process collectors. status reads the round counters
// (count).
type metrics struct {
	reg *prometheus.Registry

	roundsApplied prometheus.Counter
	roundRetries  prometheus.Counter
	roundSeconds  prometheus.Histogram
	attempts      *prometheus.CounterVec // result
	attemptSecs   prometheus.Histogram
	busbw         prometheus.Gauge
	bytesSent     *prometheus.CounterVec // lane
	bytesReceived *prometheus.CounterVec // lane
	samples       prometheus.Gauge

	invalid     *prometheus.CounterVec // reason
	transitions *prometheus.CounterVec // to
	failures    prometheus.Counter
	probes      *prometheus.CounterVec // result
	probeRTT    prometheus.Histogram

	ckServed   prometheus.Counter
	ckFetched  prometheus.Counter
	ckBad      prometheus.Counter
	ckRejected *prometheus.CounterVec // reason
	ckRepl     prometheus.Counter
	ckRefused  *prometheus.CounterVec // reason

	stateChecks   *prometheus.CounterVec // result
	stateDiverged prometheus.Gauge
	stateResyncs  prometheus.Counter
	syncEvery     prometheus.Gauge
	wireBytes     prometheus.Gauge
	sentBytes     prometheus.Gauge

	lastApply time.Time // driver goroutine only
}

var (
	_ mesh.Metrics       = (*metrics)(nil)
	_ allreduce.Metrics  = (*metrics)(nil)
	_ checkpoint.Metrics = (*metrics)(nil)
	_ roundrun.Metrics   = (*metrics)(nil)
)

// durationBuckets span a fast loopback round (1 ms) to a slow WAN one
// (about 1 min).
var durationBuckets = prometheus.ExponentialBuckets(0.001, 2, 17)

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	f := factory{m.reg}
	m.roundsApplied = f.counter("ringmesh_rounds_applied_total", "Rounds this node applied (committed steps).")
	m.roundRetries = f.counter("ringmesh_round_retries_total", "Extra all-reduce attempts of applied rounds (a round that needed 3 attempts adds 2).")
	m.roundSeconds = f.histogram("ringmesh_round_duration_seconds", "From the trainer's all-reduce call to the applied result, retries included.")
	m.attempts = f.counterVec("ringmesh_allreduce_attempts_total", "All-reduce attempts by result (ok, error).", "result")
	m.attemptSecs = f.histogram("ringmesh_allreduce_duration_seconds", "Duration of one all-reduce attempt over the ring.")
	m.busbw = f.gauge("ringmesh_allreduce_busbw_bytes_per_second", "Bus bandwidth of the last successful all-reduce: 2(n-1)/n x float32 bytes / time.")
	m.bytesSent = f.counterVec("ringmesh_allreduce_sent_bytes_total", "All-reduce payload bytes sent to the next member, per lane.", "lane")
	m.bytesReceived = f.counterVec("ringmesh_allreduce_received_bytes_total", "All-reduce payload bytes received from the previous member, per lane.", "lane")
	m.samples = f.gauge("ringmesh_trainer_samples_per_second", "The local trainer's samples (all-reduce weights) per second between its last two applied rounds; 0 until it sends weights.")
	m.invalid = f.counterVec("ringmesh_mesh_invalid_messages_total", "Mesh messages dropped because they do not fit the sender's role, by reason.", "reason")
	m.transitions = f.counterVec("ringmesh_member_transitions_total", "Members changing state in this node's view, by new state.", "to")
	m.failures = f.counter("ringmesh_failures_detected_total", "Members this node's view declared dead.")
	m.probes = f.counterVec("ringmesh_probes_total", "Direct probes of members under suspicion, by result (ok, failed).", "result")
	m.probeRTT = f.histogram("ringmesh_probe_rtt_seconds", "Round-trip time of successful direct probes.")
	m.ckServed = f.counter("ringmesh_checkpoint_served_bytes_total", "Checkpoint chunk bytes served to other nodes.")
	m.ckFetched = f.counter("ringmesh_checkpoint_fetched_bytes_total", "Verified checkpoint chunk bytes fetched from other nodes.")
	m.ckBad = f.counter("ringmesh_checkpoint_bad_chunks_total", "Checkpoint chunks that failed verification.")
	m.ckRejected = f.counterVec("ringmesh_checkpoint_announcements_rejected_total", "Checkpoint announcements dropped, by reason.", "reason")
	m.ckRepl = f.counter("ringmesh_checkpoint_replications_total", "Background checkpoint replications started.")
	m.ckRefused = f.counterVec("ringmesh_checkpoint_refused_total", "Checkpoints not fetched or replicated, by reason (no_space, untrusted).", "reason")
	m.stateChecks = f.counterVec("ringmesh_state_checks_total", "Comparisons of the trainer's model state hash with the other members', by result (agree, diverged, unchecked: no other member reported the step).", "result")
	m.stateDiverged = f.gauge("ringmesh_state_diverged", "1 when the last state check with a verdict found the trainer's model state diverged from the mesh's majority, else 0.")
	m.stateResyncs = f.counter("ringmesh_state_resyncs_total", "Joins of the trainer to re-sync its model state from the mesh after a state check found it diverged.")
	m.syncEvery = f.gauge("ringmesh_trainer_sync_every", "Inner steps per round of the trainer's last applied all-reduce: H for DiLoCo, 0 for a round every step.")
	m.wireBytes = f.gauge("ringmesh_round_wire_bytes", "The last applied round's buffer on the wire, in bytes (its wire format's size).")
	m.sentBytes = f.gauge("ringmesh_round_sent_bytes", "What a ring member sent for the last applied round, in bytes: 2(n-1)/n of the buffer on the wire.")
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Every known label value from the start, so a dashboard shows 0, not
	// "no data", for what has not happened yet.
	for vec, values := range map[*prometheus.CounterVec][]string{
		m.attempts:    {"ok", "error"},
		m.invalid:     mesh.InvalidReasons,
		m.transitions: {mesh.Alive.String(), mesh.Suspect.String(), mesh.Dead.String(), mesh.Left.String()},
		m.probes:      {"ok", "failed"},
		m.ckRejected:  checkpoint.AnnouncementRejections,
		m.ckRefused:   checkpoint.Refusals,
		m.stateChecks: stateResults,
	} {
		for _, v := range values {
			vec.WithLabelValues(v)
		}
	}
	return m
}

// factory makes and registers the node's collectors.
type factory struct{ reg *prometheus.Registry }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help, label string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label})
	f.reg.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f factory) histogram(name, help string) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: durationBuckets})
	f.reg.MustRegister(h)
	return h
}

// laneCollector exports the all-reduce transport's LaneStats: lanes sent
// by how they ran, refused lane connections, lane dials out of local
// ports, and the lane mode.
type laneCollector struct {
	stats   func() allreduce.LaneStats
	lanes   *prometheus.Desc
	refused *prometheus.Desc
	ports   *prometheus.Desc
	mode    *prometheus.Desc
}

func newLaneCollector(stats func() allreduce.LaneStats) *laneCollector {
	return &laneCollector{
		stats:   stats,
		lanes:   prometheus.NewDesc("ringmesh_allreduce_lanes_total", "All-reduce lanes this node sent, by how they ran: direct (own TCP connection), fallback (a direct connection failed; libp2p stream), stream (small lane or direct lanes off).", []string{"path"}, nil),
		refused: prometheus.NewDesc("ringmesh_allreduce_lane_conns_refused_total", "Inbound lane connections dropped: no valid token, failed handshake, over the limits.", nil, nil),
		ports:   prometheus.NewDesc("ringmesh_allreduce_lane_ports_exhausted_total", "Direct lane dials that failed because this host had no local port left (lane connections in TIME_WAIT); those lanes fell back to libp2p streams.", nil, nil),
		mode:    prometheus.NewDesc("ringmesh_allreduce_lane_mode", "1 for the lane mode this node runs: tls, plaintext (--trusted-network) or off.", []string{"mode"}, nil),
	}
}

func (c *laneCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.lanes
	ch <- c.refused
	ch <- c.ports
	ch <- c.mode
}

func (c *laneCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	ch <- prometheus.MustNewConstMetric(c.lanes, prometheus.CounterValue, float64(st.Direct), "direct")
	ch <- prometheus.MustNewConstMetric(c.lanes, prometheus.CounterValue, float64(st.Fallback), "fallback")
	ch <- prometheus.MustNewConstMetric(c.lanes, prometheus.CounterValue, float64(st.Stream), "stream")
	ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(st.Refused))
	ch <- prometheus.MustNewConstMetric(c.ports, prometheus.CounterValue, float64(st.PortsExhausted))
	ch <- prometheus.MustNewConstMetric(c.mode, prometheus.GaugeValue, 1, st.Mode)
}

// count reads a counter's value (status shows the round counters; the
// counter is the one record of them).
func count(c prometheus.Counter) uint64 {
	var m dto.Metric
	if c.Write(&m) != nil {
		return 0
	}
	return uint64(m.GetCounter().GetValue())
}

// RoundApplied implements roundrun.Metrics: a round the driver applied,
// the attempts it took, the time since the trainer's call, and the
// trainer's weight (its samples).
func (m *metrics) RoundApplied(attempts int, since time.Time, weight float64) {
	m.roundsApplied.Inc()
	m.roundRetries.Add(float64(attempts - 1))
	now := time.Now()
	if !since.IsZero() {
		m.roundSeconds.Observe(now.Sub(since).Seconds())
	}
	if weight > 0 && !m.lastApply.IsZero() {
		m.samples.Set(weight / now.Sub(m.lastApply).Seconds())
	}
	m.lastApply = now
}

// InvalidMessage implements mesh.Metrics.
func (m *metrics) InvalidMessage(reason string) { m.invalid.WithLabelValues(reason).Inc() }

// Transition implements mesh.Metrics.
func (m *metrics) Transition(_, to mesh.State) {
	m.transitions.WithLabelValues(to.String()).Inc()
	if to == mesh.Dead {
		m.failures.Inc()
	}
}

// Probe implements mesh.Metrics.
func (m *metrics) Probe(ok bool, rtt time.Duration) {
	if !ok {
		m.probes.WithLabelValues("failed").Inc()
		return
	}
	m.probes.WithLabelValues("ok").Inc()
	m.probeRTT.Observe(rtt.Seconds())
}

// BytesSent implements allreduce.Metrics.
func (m *metrics) BytesSent(lane, n int) {
	m.bytesSent.WithLabelValues(strconv.Itoa(lane)).Add(float64(n))
}

// BytesReceived implements allreduce.Metrics.
func (m *metrics) BytesReceived(lane, n int) {
	m.bytesReceived.WithLabelValues(strconv.Itoa(lane)).Add(float64(n))
}

// RoundDone implements allreduce.Metrics.
func (m *metrics) RoundDone(d time.Duration, elems, members int, err error) {
	if err != nil {
		m.attempts.WithLabelValues("error").Inc()
		return
	}
	m.attempts.WithLabelValues("ok").Inc()
	m.attemptSecs.Observe(d.Seconds())
	if members > 1 && d > 0 {
		m.busbw.Set(2 * float64(members-1) / float64(members) * float64(4*elems) / d.Seconds())
	}
}

// ChunkServed implements checkpoint.Metrics.
func (m *metrics) ChunkServed(n int) { m.ckServed.Add(float64(n)) }

// ChunkFetched implements checkpoint.Metrics.
func (m *metrics) ChunkFetched(_ peer.ID, n int) { m.ckFetched.Add(float64(n)) }

// BadChunk implements checkpoint.Metrics.
func (m *metrics) BadChunk(peer.ID) { m.ckBad.Inc() }

// AnnouncementRejected implements checkpoint.Metrics.
func (m *metrics) AnnouncementRejected(reason string) { m.ckRejected.WithLabelValues(reason).Inc() }

// ReplicationStarted implements checkpoint.Metrics.
func (m *metrics) ReplicationStarted() { m.ckRepl.Inc() }

// CheckpointRefused implements checkpoint.Metrics.
func (m *metrics) CheckpointRefused(reason string) { m.ckRefused.WithLabelValues(reason).Inc() }

// stateCollector reports the node's current view on each scrape: members
// by state, and the round state (step, epoch, agreed list size, state).
type stateCollector struct {
	n                                      *Node
	members, step, epoch, listSize, rstate *prometheus.Desc
	dropped, private, info                 *prometheus.Desc
}

func newStateCollector(n *Node) *stateCollector {
	return &stateCollector{n: n,
		members:  prometheus.NewDesc("ringmesh_members", "Members in this node's view, by state, this node included (as ringmesh status lists them).", []string{"state"}, nil),
		step:     prometheus.NewDesc("ringmesh_round_next_step", "The next step this node's rounds will decide.", nil, nil),
		epoch:    prometheus.NewDesc("ringmesh_round_epoch", "The epoch of the agreed member list.", nil, nil),
		listSize: prometheus.NewDesc("ringmesh_round_list_members", "Members of the agreed list (the ring).", nil, nil),
		rstate:   prometheus.NewDesc("ringmesh_round_state", "1 for the node's round state (idle, forming, joining, member, waiting, ...).", []string{"state"}, nil),
		dropped:  prometheus.NewDesc("ringmesh_round_messages_dropped_total", "Round-protocol messages dropped: malformed, or not fitting the sender's role.", nil, nil),
		private:  prometheus.NewDesc("ringmesh_mesh_private", "1 if peers need the mesh secret to connect, 0 for --insecure-open-mesh.", nil, nil),
		info:     prometheus.NewDesc("ringmesh_build_info", "Always 1; the labels name the build and the mesh.", []string{"agent", "mesh", "peer"}, nil),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.members, c.step, c.epoch, c.listSize, c.rstate, c.dropped, c.private, c.info} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	byState := map[string]int{}
	for _, s := range []mesh.State{mesh.Alive, mesh.Suspect, mesh.Dead, mesh.Left} {
		byState[s.String()] = 0
	}
	self := false
	for _, m := range c.n.mesh.View().Members {
		byState[m.State.String()]++
		self = self || m.ID == c.n.host.ID()
	}
	if !self {
		byState[mesh.Alive.String()]++ // a running node is alive to itself
	}
	for s, k := range byState {
		ch <- prometheus.MustNewConstMetric(c.members, prometheus.GaugeValue, float64(k), s)
	}
	sn := c.n.drv.Snapshot()
	ch <- prometheus.MustNewConstMetric(c.step, prometheus.GaugeValue, float64(sn.Step))
	ch <- prometheus.MustNewConstMetric(c.epoch, prometheus.GaugeValue, float64(sn.Epoch))
	ch <- prometheus.MustNewConstMetric(c.listSize, prometheus.GaugeValue, float64(len(sn.List)))
	ch <- prometheus.MustNewConstMetric(c.rstate, prometheus.GaugeValue, 1, sn.State)
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(sn.Dropped))
	private := 0.0
	if c.n.cfg.Mesh.PSKFile != "" {
		private = 1
	}
	ch <- prometheus.MustNewConstMetric(c.private, prometheus.GaugeValue, private)
	ch <- prometheus.MustNewConstMetric(c.info, prometheus.GaugeValue, 1, c.n.cfg.Mesh.UserAgent, c.n.cfg.Mesh.Mesh, c.n.host.ID().String())
}

// trained records the trainer's mode from its last applied all-reduce.
func (m *metrics) trained(t localapi.TrainingStatus) {
	m.syncEvery.Set(float64(t.SyncEvery))
	m.wireBytes.Set(float64(t.WireBytes))
	m.sentBytes.Set(float64(t.SentBytes))
}
