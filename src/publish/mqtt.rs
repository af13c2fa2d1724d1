//! The publisher task: connection lifecycle, window filling, acks, health and the shutdown drain.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, MqttOptions, NetworkOptions,
    Outgoing, QoS, StateError,
};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::connect::{mqtt_options, offline_payload, request_capacity};
use super::health::HealthSampler;
use super::ledger::{Ledger, Written};
use super::{PublishError, PublishReport, PublishSettings, Topics};
use crate::outbox::disk_free;
use crate::outbox::{Outbox, StoredRead};
use crate::privacy::policy::HourlyCounts;
use crate::privacy::sign::Signer;
use crate::telemetry::Metrics;
use crate::wire::{rfc3339_ms, ReadMessage, StatusMessage};

/// How often the outbox is re-scanned even without a `new_reads` notification (a notification can
/// be missed when the producer uses `notify_waiters` while we are busy).
const RESCAN: Duration = Duration::from_secs(1);
/// Events buffered between the event-loop task and the publisher.
const EVENT_BUFFER: usize = 256;
/// Events handled before the acked records are removed and the window refilled.
const EVENT_BATCH: usize = 64;
/// After the drain, how long the retained offline status and the DISCONNECT may take at least.
const GOODBYE_MIN: Duration = Duration::from_secs(1);
/// Attempts at an outbox call before the publisher gives up (and the process ends).
const OUTBOX_ATTEMPTS: u32 = 3;
/// A full disk is waited out instead: the first wait, doubled up to the last.
const DISK_FULL_WAIT: Duration = Duration::from_secs(1);
const DISK_FULL_WAIT_MAX: Duration = Duration::from_secs(60);

/// Delivers the outbox to the broker until `shutdown` is cancelled; see the module doc of `publish`.
///
/// Returns an error only for bad settings (at start) and for outbox failures that persist over
/// `OUTBOX_ATTEMPTS` tries, except a full disk, which is waited out (logged, with backoff): a
/// restart would not free space. Broker and network errors are logged and retried forever. The caller
/// (`pipeline::run`) ends the process on such an error: a unit that reads but cannot deliver
/// must be restarted, not left running.
pub async fn run(
    settings: PublishSettings,
    outbox: Arc<Outbox>,
    new_reads: Arc<Notify>,
    metrics: Arc<Metrics>,
    logs: Option<mpsc::Receiver<Vec<u8>>>,
    shutdown: CancellationToken,
) -> Result<PublishReport, PublishError> {
    run_with(
        settings,
        outbox,
        new_reads,
        metrics,
        logs,
        shutdown,
        PrivacyLinks::default(),
    )
    .await
}

/// What the publisher does for the privacy policy (docs/privacy.md).
#[derive(Debug, Default)]
pub struct PrivacyLinks {
    /// Signs every read and alert; its public key is published retained on `identity`.
    pub signer: Option<Arc<Signer>>,
    /// Hotlist hits (stored reads), published on `alerts` ahead of any backlog.
    pub alerts: Option<mpsc::Receiver<ReadMessage>>,
    /// Reads per hour, published on `counts` at each health tick (mode "hotlist-only").
    pub counts: Option<Arc<HourlyCounts>>,
}

/// [`run`] with the privacy policy's parts: signing, alerts and hourly counts.
pub async fn run_with(
    settings: PublishSettings,
    outbox: Arc<Outbox>,
    new_reads: Arc<Notify>,
    metrics: Arc<Metrics>,
    logs: Option<mpsc::Receiver<Vec<u8>>>,
    shutdown: CancellationToken,
    privacy: PrivacyLinks,
) -> Result<PublishReport, PublishError> {
    // rumqttc's own rustls paths (and any other TLS user in the process) need a process default; an
    // Err only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let topics = Topics::new(&settings.mqtt.prefix, &settings.device_id)?;
    let options = mqtt_options(&settings, Some(&topics.status))?;
    let online = serde_json::to_vec(&StatusMessage {
        state: "online".into(),
        version: Some(settings.version.clone()),
        started_at: Some(rfc3339_ms(SystemTime::now())),
    })
    .map_err(|source| PublishError::Encode {
        seq: 0,
        topic: topics.status.clone(),
        source,
    })?;
    let mut health_tick = tokio::time::interval_at(
        Instant::now() + settings.mqtt.health_interval,
        settings.mqtt.health_interval,
    );
    health_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut publisher = Publisher {
        health: HealthSampler::new(&metrics),
        settings,
        outbox,
        new_reads,
        metrics,
        shutdown,
        topics,
        online,
        ledger: Ledger::default(),
        report: PublishReport::default(),
        more: true,
        desync: false,
        completed: Vec::new(),
        waiting_since: Instant::now(),
        health_tick,
        logs,
        privacy,
        audit: crate::privacy::audit::subscribe(),
    };
    let mut backoff = Backoff::new(publisher.settings.mqtt.reconnect_max);
    let mut takeovers = Takeovers::default();
    loop {
        let conn = Conn::open(options.clone(), &publisher.settings);
        match publisher.session(conn).await? {
            SessionEnd::Shutdown => break,
            SessionEnd::Lost {
                error,
                connected,
                closed_by_broker,
            } => {
                publisher.report.connection_errors += 1;
                if connected {
                    backoff.reset();
                }
                let mut delay = backoff.next_delay();
                if closed_by_broker {
                    let verdict = takeovers.on_closed(Instant::now());
                    if verdict.takeover {
                        publisher
                            .metrics
                            .session_takeovers
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            client_id = %publisher.settings.client_id,
                            device = %publisher.settings.device_id,
                            in_a_row = verdict.in_a_row,
                            "the broker keeps closing our session: another client is probably \
                             connected with our client id (a cloned unit?); set device.id"
                        );
                    }
                    if let Some(long) = verdict.back_off {
                        delay = delay.max(long);
                    }
                }
                warn!(
                    broker = %publisher.settings.mqtt.url,
                    error = %error,
                    retry_in_ms = delay.as_millis() as u64,
                    "MQTT connection failed"
                );
                if !publisher.sleep_alive(delay).await {
                    break;
                }
            }
        }
    }
    info!(report = ?publisher.report, "publisher stopped");
    Ok(publisher.report)
}

/// One client + event loop pair. The event loop runs in its own task so that `poll()` is never
/// cancelled mid-write; dropping the `Conn` aborts it (which closes the socket without DISCONNECT,
/// so the broker sends the last will).
struct Conn {
    client: AsyncClient,
    events: mpsc::Receiver<Result<Event, ConnectionError>>,
    task: JoinHandle<()>,
}

impl Conn {
    fn open(options: MqttOptions, settings: &PublishSettings) -> Conn {
        let (client, mut eventloop) =
            AsyncClient::new(options, request_capacity(settings.mqtt.inflight));
        // Publishes and acks are small and latency-bound: do not let Nagle hold them back.
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let (tx, events) = mpsc::channel(EVENT_BUFFER);
        let task = tokio::spawn(forward_events(eventloop, tx));
        Conn {
            client,
            events,
            task,
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls until the first error (the pair is then discarded) or until the publisher goes away.
async fn forward_events(
    mut eventloop: EventLoop,
    tx: mpsc::Sender<Result<Event, ConnectionError>>,
) {
    loop {
        let event = eventloop.poll().await;
        let failed = event.is_err();
        if tx.send(event).await.is_err() || failed {
            return;
        }
    }
}

enum SessionEnd {
    Shutdown,
    /// `connected`: a ConnAck came on this connection. `closed_by_broker`: the broker closed a
    /// connected session (in MQTT 3.1.1 the only sign of another client taking our id over).
    Lost {
        error: String,
        connected: bool,
        closed_by_broker: bool,
    },
}

struct Publisher {
    settings: PublishSettings,
    outbox: Arc<Outbox>,
    new_reads: Arc<Notify>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    topics: Topics,
    /// The retained `online` status payload (its `started_at` is the publisher's start).
    online: Vec<u8>,
    ledger: Ledger,
    report: PublishReport,
    health: HealthSampler,
    /// The outbox may hold reads after `ledger.last_handed()`: scan when the window has room.
    more: bool,
    /// A publish was written that nobody handed: the FIFO can no longer be trusted.
    desync: bool,
    /// Records whose every publish was acked, not yet removed from the outbox.
    completed: Vec<u64>,
    /// Since when the open reads have waited without any PUBACK (meaningful while reads are
    /// open): past `mqtt.ack_timeout` the session is given up.
    waiting_since: Instant,
    health_tick: tokio::time::Interval,
    /// Log events to forward on `logs` (QoS 0): only while connected; the queue drops the excess.
    logs: Option<mpsc::Receiver<Vec<u8>>>,
    privacy: PrivacyLinks,
    /// Audit log entries to publish on `audit` (QoS 1).
    audit: Option<mpsc::Receiver<Vec<u8>>>,
}

/// The next hotlist hit; never resolves when there is no queue.
async fn next_alert(alerts: &mut Option<mpsc::Receiver<ReadMessage>>) -> Option<ReadMessage> {
    match alerts {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next queued log event; never resolves when there is no queue.
async fn next_log(logs: &mut Option<mpsc::Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match logs {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Publisher {
    /// Runs one connection until it fails or shutdown is requested (then drains it).
    async fn session(&mut self, mut conn: Conn) -> Result<SessionEnd, PublishError> {
        // Whatever the previous client held is gone with it.
        self.ledger.reset();
        self.desync = false;
        let mut connected = false;
        let mut rescan = tokio::time::interval(RESCAN);
        rescan.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            self.metrics
                .publish_progress
                .fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    if connected {
                        self.drain(&mut conn).await?;
                    }
                    return Ok(SessionEnd::Shutdown);
                }
                event = conn.events.recv() => {
                    // Take whatever else is already waiting too, so the acked records are removed
                    // in one outbox call rather than one per PUBACK.
                    let mut next = event;
                    let mut lost = None;
                    let mut closed_by_broker = false;
                    for handled in 1.. {
                        match next {
                            Some(Ok(event)) => {
                                if let Event::Incoming(Incoming::ConnAck(ack)) = &event {
                                    connected = true;
                                    self.on_connack(&conn, ack.session_present);
                                }
                                self.on_event(&event);
                            }
                            Some(Err(e)) => {
                                closed_by_broker = connected
                                    && matches!(e, ConnectionError::MqttState(StateError::ConnectionAborted));
                                lost = Some(e.to_string());
                                break;
                            }
                            None => {
                                lost = Some("event loop stopped".to_string());
                                break;
                            }
                        }
                        if handled == EVENT_BATCH {
                            break;
                        }
                        match conn.events.try_recv() {
                            Ok(event) => next = Some(event),
                            Err(_) => break,
                        }
                    }
                    // PUBACKs received before a failure are still valid.
                    self.remove_completed().await?;
                    if let Some(error) = lost {
                        return Ok(SessionEnd::Lost { error, connected, closed_by_broker });
                    }
                    if self.desync {
                        // Start over on a fresh connection rather than remove the wrong record.
                        return Ok(SessionEnd::Lost {
                            error: "publish/PUBACK correlation lost".into(),
                            connected,
                            closed_by_broker: false,
                        });
                    }
                }
                _ = self.new_reads.notified() => self.more = true,
                _ = rescan.tick() => self.more = true,
                _ = self.health_tick.tick(), if connected => {
                    let payload = self.health_payload().await?;
                    // Retained, so a fleet view sees every unit's latest health at once. QoS 0: a
                    // full request queue skips this one (the next tick sends a fresh one) rather
                    // than tear down a working connection.
                    if self.hand_control(&conn, &self.topics.health.clone(), QoS::AtMostOnce, true, payload).is_err() {
                        debug!("request queue full; health message skipped");
                    }
                    self.hand_counts(&conn);
                }
                log = next_log(&mut self.logs), if connected => match log {
                    Some(payload) => {
                        // A burst of log events (say, while a big crop is being written) can fill
                        // the request queue: drop and count the event, keep the connection.
                        if self.hand_control(&conn, &self.topics.logs.clone(), QoS::AtMostOnce, false, payload).is_err() {
                            self.metrics.logs_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => self.logs = None,
                },
                alert = next_alert(&mut self.privacy.alerts), if connected => match alert {
                    Some(read) => self.hand_alert(&conn, read)?,
                    None => self.privacy.alerts = None,
                },
                entry = next_log(&mut self.audit), if connected => match entry {
                    Some(payload) => {
                        if self.hand_control(&conn, &self.topics.audit.clone(), QoS::AtLeastOnce, false, payload).is_err() {
                            warn!("request queue full; audit entry not published (it is in the unit's audit log)");
                        }
                    }
                    None => self.audit = None,
                },
            }
            if connected
                && self.ledger.open_reads() > 0
                && self.waiting_since.elapsed() >= self.settings.mqtt.ack_timeout
            {
                return Ok(SessionEnd::Lost {
                    error: format!(
                        "no PUBACK for {:?} with {} reads open (mqtt.ack_timeout)",
                        self.settings.mqtt.ack_timeout,
                        self.ledger.open_reads()
                    ),
                    connected,
                    closed_by_broker: false,
                });
            }
            if connected {
                // Hits go ahead of the backlog, also right after a (re)connect.
                while let Some(read) = self
                    .privacy
                    .alerts
                    .as_mut()
                    .and_then(|rx| rx.try_recv().ok())
                {
                    self.hand_alert(&conn, read)?;
                }
                if let Err(e) = self.fill_window(&conn).await? {
                    return Ok(SessionEnd::Lost {
                        error: e,
                        connected,
                        closed_by_broker: false,
                    });
                }
            }
        }
    }

    fn on_connack(&mut self, conn: &Conn, session_present: bool) {
        self.report.connects += 1;
        info!(broker = %self.settings.mqtt.url, session_present, "MQTT connected");
        // With a clean session rumqttc has just dropped everything it held: start over from the
        // oldest stored read. (Were a session present, rumqttc would re-send its unacked publishes
        // and the ledger's retransmit rule would match them to their pkids, so nothing is reset.)
        if !session_present {
            self.ledger.reset();
        }
        self.waiting_since = Instant::now();
        self.more = true;
        let online = self.online.clone();
        let status = self.topics.status.clone();
        // A full queue here means the client is wedged; the next event reports it.
        if let Err(e) = self.hand_control(conn, &status, QoS::AtLeastOnce, true, online) {
            warn!(broker = %self.settings.mqtt.url, topic = %status, error = %e, "cannot queue the online status");
        }
        if let Some(signer) = &self.privacy.signer {
            let identity = self.topics.identity.clone();
            match serde_json::to_vec(&signer.identity()) {
                Ok(payload) => {
                    if let Err(e) =
                        self.hand_control(conn, &identity, QoS::AtLeastOnce, true, payload)
                    {
                        warn!(topic = %identity, error = %e, "cannot queue the identity");
                    }
                }
                Err(e) => warn!(topic = %identity, error = %e, "cannot encode the identity"),
            }
        }
    }

    /// Publishes a stored hotlist hit on `alerts` at once (QoS 1). The read itself stays in the
    /// outbox and goes out on `reads` in turn: an alert lost with the connection is not a read lost.
    fn hand_alert(&mut self, conn: &Conn, mut read: ReadMessage) -> Result<(), PublishError> {
        self.sign(&mut read)?;
        let json = serde_json::to_vec(&read).map_err(|source| PublishError::Encode {
            seq: read.seq,
            topic: self.topics.alerts.clone(),
            source,
        })?;
        let topic = self.topics.alerts.clone();
        if let Err(e) = self.hand_control(conn, &topic, QoS::AtLeastOnce, false, json) {
            warn!(seq = read.seq, id = %read.id, error = %e, "cannot queue a hotlist alert; the read follows on reads");
        }
        Ok(())
    }

    /// The hourly counts (retained), when the mode publishes them.
    fn hand_counts(&mut self, conn: &Conn) {
        let Some(counts) = self.privacy.counts.clone() else {
            return;
        };
        let topic = self.topics.counts.clone();
        for msg in counts.take(SystemTime::now()) {
            let sent = serde_json::to_vec(&msg)
                .map_err(|e| e.to_string())
                .and_then(|payload| {
                    self.hand_control(conn, &topic, QoS::AtLeastOnce, true, payload)
                });
            if let Err(e) = sent {
                warn!(hour = %msg.hour, error = %e, "hourly counts not published");
            }
        }
    }

    fn sign(&self, read: &mut ReadMessage) -> Result<(), PublishError> {
        match &self.privacy.signer {
            Some(signer) => signer.sign(read).map_err(|source| PublishError::Sign {
                seq: read.seq,
                source,
            }),
            None => Ok(()),
        }
    }

    /// Feeds the ledger; records whose last PUBACK came are queued in `completed`.
    fn on_event(&mut self, event: &Event) {
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => match self.ledger.on_written(*pkid) {
                Written::Read => self.report.published += 1,
                Written::Control | Written::Retransmit => {}
                Written::Unexpected => {
                    warn!(
                        pkid,
                        "a publish was written that the publisher did not hand over"
                    );
                    self.desync = true;
                }
            },
            Event::Incoming(Incoming::PubAck(ack)) => {
                self.waiting_since = Instant::now();
                if let Some(seq) = self.ledger.on_puback(ack.pkid) {
                    self.completed.push(seq);
                }
            }
            _ => {}
        }
    }

    /// Removes the fully acknowledged records from the outbox.
    async fn remove_completed(&mut self) -> Result<(), PublishError> {
        if self.completed.is_empty() {
            return Ok(());
        }
        let seqs = std::mem::take(&mut self.completed);
        let outbox = self.outbox.clone();
        let removed = self
            .blocking("remove", move || {
                let mut removed = 0u64;
                for &seq in &seqs {
                    // `false`: evicted meanwhile, acked twice after a re-send, or removed by an
                    // earlier attempt of this call: gone either way.
                    removed += u64::from(outbox.remove(seq)?);
                }
                Ok(removed)
            })
            .await?;
        self.report.acked += removed;
        Ok(())
    }

    /// Hands stored reads to the client while the window has room. `Ok(Err(_))`: the client refused
    /// a request, so the connection is to be rebuilt.
    async fn fill_window(&mut self, conn: &Conn) -> Result<Result<(), String>, PublishError> {
        let window = usize::from(self.settings.mqtt.inflight);
        // Refilled after every batch of events, not at a low-water mark: a window that waits for
        // several PUBACKs stalls ~40 ms per round on brokers that Nagle their small PUBACKs
        // (mosquitto's default) against our delayed TCP ACKs.
        while self.more && self.ledger.open_reads() < window {
            let room = window - self.ledger.open_reads();
            let after = self.ledger.last_handed();
            let outbox = self.outbox.clone();
            let batch = self
                .blocking("pending", move || outbox.pending(after, room))
                .await?;
            if batch.len() < room {
                self.more = false;
            }
            for record in batch {
                if let Err(e) = self.hand_read(conn, record)? {
                    return Ok(Err(e));
                }
            }
        }
        Ok(Ok(()))
    }

    fn hand_read(
        &mut self,
        conn: &Conn,
        mut record: StoredRead,
    ) -> Result<Result<(), String>, PublishError> {
        let crop_topic = self.topics.crop(&record.message.id);
        // Topic, length fields and packet id: generous, the limit is a MiB or more.
        let overhead = crop_topic.len() + 16;
        let limit =
            usize::try_from(self.settings.mqtt.max_packet_size.as_u64()).unwrap_or(usize::MAX);
        let crop = match record.crop {
            Some(crop) if crop.len() + overhead > limit => {
                // rumqttc would fail the whole connection on it, again after every reconnect.
                warn!(
                    seq = record.seq,
                    id = %record.message.id,
                    crop_bytes = crop.len(),
                    max_packet_size = limit,
                    "crop exceeds mqtt.max_packet_size; sending the read without it"
                );
                // The read must not advertise a crop that will never be published.
                record.message.crop = None;
                None
            }
            other => other,
        };
        self.sign(&mut record.message)?;
        let json = serde_json::to_vec(&record.message).map_err(|source| PublishError::Encode {
            seq: record.seq,
            topic: self.topics.reads.clone(),
            source,
        })?;
        if self.ledger.open_reads() == 0 {
            // The ack timeout counts from the first read handed into an empty window.
            self.waiting_since = Instant::now();
        }
        let parts = if crop.is_some() { 2 } else { 1 };
        if let Err(e) =
            conn.client
                .try_publish(self.topics.reads.clone(), QoS::AtLeastOnce, false, json)
        {
            return Ok(Err(format!("queueing read seq {}: {e}", record.seq)));
        }
        // Recorded before the second request so that a failure of it still leaves the FIFO in step.
        self.ledger.hand_read(record.seq, 1);
        if let Some(crop) = crop {
            if let Err(e) = conn
                .client
                .try_publish(crop_topic, QoS::AtLeastOnce, false, crop)
            {
                return Ok(Err(format!("queueing crop of seq {}: {e}", record.seq)));
            }
            self.ledger.hand_read(record.seq, parts - 1);
        }
        Ok(Ok(()))
    }

    fn hand_control(
        &mut self,
        conn: &Conn,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), String> {
        conn.client
            .try_publish(topic, qos, retain, payload)
            .map_err(|e| format!("queueing a publish on {topic}: {e}"))?;
        self.ledger.hand_control();
        Ok(())
    }

    async fn health_payload(&mut self) -> Result<Vec<u8>, PublishError> {
        let outbox = self.outbox.clone();
        let dir = self.settings.storage_dir.clone();
        let (stats, free) = self
            .blocking("stats", move || Ok((outbox.stats(), disk_free(&dir))))
            .await?;
        let msg = self.health.sample(&self.metrics, &stats, free);
        serde_json::to_vec(&msg).map_err(|source| PublishError::Encode {
            seq: 0,
            topic: self.topics.health.clone(),
            source,
        })
    }

    /// Shutdown on a live connection: hand what is stored and wait for the acks, up to
    /// `drain_timeout`, then the retained offline status and a clean DISCONNECT.
    async fn drain(&mut self, conn: &mut Conn) -> Result<(), PublishError> {
        let deadline = Instant::now() + self.settings.mqtt.drain_timeout;
        // The passes flushed at shutdown were stored just before the stop (the pipeline stores
        // them first): hand whatever is stored too, not only what was in flight, until the
        // outbox is empty or the drain time is up.
        self.more = true;
        let alive = loop {
            if let Err(e) = self.fill_window(conn).await? {
                debug!(error = %e, "cannot hand more reads while draining");
                break false;
            }
            let open = self.ledger.open_reads();
            if open == 0 || Instant::now() >= deadline {
                break true;
            }
            if !self.wait(conn, deadline, |l| l.open_reads() < open).await? {
                break false;
            }
        };
        self.report.unacked_at_shutdown = self.ledger.open_reads() as u64;
        if !alive {
            return Ok(());
        }
        let status = self.topics.status.clone();
        if self
            .hand_control(conn, &status, QoS::AtLeastOnce, true, offline_payload())
            .is_err()
        {
            return Ok(());
        }
        let goodbye = deadline.max(Instant::now() + GOODBYE_MIN);
        if !self.wait(conn, goodbye, Ledger::is_idle).await? {
            return Ok(());
        }
        if conn.client.try_disconnect().is_err() {
            return Ok(());
        }
        // The event loop reports the DISCONNECT once it is written; the socket closes after it.
        let until = tokio::time::sleep_until(goodbye);
        tokio::pin!(until);
        loop {
            tokio::select! {
                _ = &mut until => return Ok(()),
                event = conn.events.recv() => match event {
                    Some(Ok(Event::Outgoing(Outgoing::Disconnect))) | Some(Err(_)) | None => return Ok(()),
                    Some(Ok(event)) => {
                        self.on_event(&event);
                        self.remove_completed().await?;
                    }
                }
            }
        }
    }

    /// Processes events until `done(ledger)` or the deadline. Returns false if the connection died.
    async fn wait(
        &mut self,
        conn: &mut Conn,
        deadline: Instant,
        done: impl Fn(&Ledger) -> bool,
    ) -> Result<bool, PublishError> {
        let until = tokio::time::sleep_until(deadline);
        tokio::pin!(until);
        while !done(&self.ledger) {
            tokio::select! {
                _ = &mut until => {
                    debug!(open_reads = self.ledger.open_reads(), "drain timeout");
                    return Ok(true);
                }
                event = conn.events.recv() => match event {
                    Some(Ok(event)) => {
                        self.on_event(&event);
                        self.remove_completed().await?;
                    }
                    Some(Err(e)) => {
                        warn!(broker = %self.settings.mqtt.url, error = %e, "MQTT connection lost while draining");
                        return Ok(false);
                    }
                    None => return Ok(false),
                }
            }
        }
        Ok(true)
    }

    /// Outbox calls touch the disk (sled): run them off the runtime's worker threads. A failure
    /// is retried (a moment of I/O trouble must not end delivery); a full disk is waited out
    /// with backoff for as long as it lasts; any other failure that persists is returned.
    async fn blocking<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl Fn() -> Result<T, crate::outbox::OutboxError> + Send + Sync + 'static,
    ) -> Result<T, PublishError> {
        let f = Arc::new(f);
        let mut attempt = 1;
        let mut full_wait = DISK_FULL_WAIT;
        loop {
            let call = f.clone();
            match tokio::task::spawn_blocking(move || call()).await {
                Ok(Ok(v)) => {
                    if full_wait > DISK_FULL_WAIT {
                        info!(op, "outbox storage writable again; delivery resumes");
                    }
                    return Ok(v);
                }
                Ok(Err(e)) if attempt < OUTBOX_ATTEMPTS => {
                    warn!(op, attempt, error = %e, "outbox call failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Ok(Err(e)) if e.is_disk_full() && !self.shutdown.is_cancelled() => {
                    tracing::error!(
                        op,
                        error = %e,
                        retry_in_s = full_wait.as_secs(),
                        "outbox storage is full: delivery waits until space is freed"
                    );
                    if !self.sleep_alive(full_wait).await {
                        return Err(self.outbox_error(op, e));
                    }
                    full_wait = (full_wait * 2).min(DISK_FULL_WAIT_MAX);
                }
                Ok(Err(source)) => return Err(self.outbox_error(op, source)),
                Err(e) => {
                    return Err(PublishError::Worker {
                        op,
                        reason: e.to_string(),
                    })
                }
            }
        }
    }

    fn outbox_error(&self, op: &'static str, source: crate::outbox::OutboxError) -> PublishError {
        PublishError::Outbox {
            op,
            url: self.settings.mqtt.url.clone(),
            source,
        }
    }

    /// Waits `delay` (a reconnect backoff) while still showing the watchdog that the publisher is
    /// alive. Returns false when shutdown was requested meanwhile.
    async fn sleep_alive(&self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        while Instant::now() < until {
            self.metrics
                .publish_progress
                .fetch_add(1, Ordering::Relaxed);
            let step = until.saturating_duration_since(Instant::now()).min(RESCAN);
            tokio::select! {
                _ = tokio::time::sleep(step) => {}
                _ = self.shutdown.cancelled() => return false,
            }
        }
        true
    }
}

/// Two closes by the broker this close together look like another client fighting for our id.
const TAKEOVER_GAP: Duration = Duration::from_secs(60);
/// After this many takeovers in a row, wait `TAKEOVER_BACKOFF` instead of fighting on.
const TAKEOVER_LIMIT: u32 = 3;
const TAKEOVER_BACKOFF: Duration = Duration::from_secs(300);

/// Tells session takeovers (another client with our id: the broker closes us each time it
/// connects) from a broker that closed us once (a restart).
#[derive(Debug, Default)]
struct Takeovers {
    last_close: Option<Instant>,
    in_a_row: u32,
}

#[derive(Debug, PartialEq, Eq)]
struct TakeoverVerdict {
    takeover: bool,
    in_a_row: u32,
    /// A longer wait before reconnecting, instead of kicking the other client off again.
    back_off: Option<Duration>,
}

impl Takeovers {
    /// The broker closed a connected session at `now`.
    fn on_closed(&mut self, now: Instant) -> TakeoverVerdict {
        let takeover = self
            .last_close
            .is_some_and(|t| now.duration_since(t) < TAKEOVER_GAP);
        self.last_close = Some(now);
        self.in_a_row = if takeover { self.in_a_row + 1 } else { 0 };
        TakeoverVerdict {
            takeover,
            in_a_row: self.in_a_row,
            back_off: (self.in_a_row >= TAKEOVER_LIMIT).then_some(TAKEOVER_BACKOFF),
        }
    }
}

/// Capped exponential backoff with jitter, so a fleet does not reconnect in lock-step.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    first: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Backoff {
        // A zero cap would make the reconnect loop spin.
        let max = max.max(Duration::from_millis(100));
        let first = Duration::from_secs(1).min(max);
        Backoff {
            next: first,
            first,
            max,
        }
    }

    fn reset(&mut self) {
        self.next = self.first;
    }

    /// Between half and all of the current step; the step then doubles up to the cap.
    fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(self.max);
        step.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_closes_by_the_broker_are_takeovers_and_end_in_a_long_back_off() {
        let mut t = Takeovers::default();
        let start = Instant::now();
        // One close (a broker restart) is not a takeover.
        assert!(!t.on_closed(start).takeover);
        let second = t.on_closed(start + Duration::from_secs(2));
        assert_eq!((second.takeover, second.back_off), (true, None));
        assert!(t
            .on_closed(start + Duration::from_secs(4))
            .back_off
            .is_none());
        let fourth = t.on_closed(start + Duration::from_secs(6));
        assert_eq!(fourth.in_a_row, TAKEOVER_LIMIT);
        assert_eq!(fourth.back_off, Some(TAKEOVER_BACKOFF));
        // Long after: a single close again.
        let later = t.on_closed(start + Duration::from_secs(600));
        assert_eq!(
            (later.takeover, later.in_a_row, later.back_off),
            (false, 0, None)
        );
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_secs(8));
        let steps: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        for (d, step) in steps.iter().zip([1u64, 2, 4, 8, 8, 8]) {
            let step = Duration::from_secs(step);
            assert!(*d >= step / 2 && *d <= step, "{d:?} vs {step:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
        let mut tiny = Backoff::new(Duration::ZERO);
        assert!(tiny.next_delay() >= Duration::from_millis(50));
    }
}
