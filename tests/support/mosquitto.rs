//! A real mosquitto on a free localhost port, and a QoS 1 subscriber to watch it.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tokio::sync::mpsc;

/// One broker process; killed on drop. `stop`/`start` reuse the port to simulate an outage.
pub struct Mosquitto {
    pub port: u16,
    config: PathBuf,
    _dir: tempfile::TempDir,
    child: Option<Child>,
}

/// A port nobody listens on right now (the OS picks it).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

impl Mosquitto {
    /// Started and accepting connections.
    pub fn start() -> Mosquitto {
        let mut m = Mosquitto::configured(free_port());
        m.start_process();
        m
    }

    /// Configured on a free port but not started: a broker that is down.
    pub fn down() -> Mosquitto {
        Mosquitto::configured(free_port())
    }

    fn configured(port: u16) -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        // mosquitto started as root drops to its own user: let it write its session database here.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .expect("chmod broker dir");
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
                 max_inflight_messages 0\nmax_queued_messages 100000\nlog_dest stderr\nlog_type error\n",
                dir.path().display()
            ),
        )
        .expect("write mosquitto.conf");
        Mosquitto {
            port,
            config,
            _dir: dir,
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Starts the process (again) on the same port and waits until it accepts connections.
    pub fn start_process(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .or_else(|_| {
                Command::new("/usr/sbin/mosquitto")
                    .arg("-c")
                    .arg(&self.config)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .spawn()
            })
            .expect("start mosquitto");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < until,
                "mosquitto did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker (an outage) with SIGTERM, so it saves its sessions; `start_process` brings
    /// it back with them.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let child = self.child.as_ref().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("signal mosquitto");
    }

    /// Freezes the broker: TCP stays up, but nothing is read or acknowledged.
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    pub fn unpause(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A message seen by the subscriber.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// A QoS 1 subscriber whose messages arrive on `rx`.
pub struct Subscriber {
    pub rx: mpsc::UnboundedReceiver<Received>,
    _client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Connected and subscribed (SUBACK received) to `filter`.
    pub async fn connect(port: u16, filter: &str) -> Subscriber {
        Subscriber::connect_with(port, filter, &format!("sub-{}", free_port()), true).await
    }

    /// With a session the broker keeps (and saves on SIGTERM) while this subscriber or the broker is
    /// away: it gets the QoS 1 messages published meanwhile. Reconnects by itself.
    pub async fn connect_persistent(port: u16, filter: &str, client_id: &str) -> Subscriber {
        Subscriber::connect_with(port, filter, client_id, false).await
    }

    async fn connect_with(port: u16, filter: &str, client_id: &str, clean: bool) -> Subscriber {
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_clean_session(clean);
        opts.set_max_packet_size(4 << 20, 4 << 20);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("queue subscribe");
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let _ = tx.send(Received {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("SUBACK in time")
            .expect("subscriber task alive");
        Subscriber {
            rx,
            _client: client,
            task,
        }
    }

    /// The next message, or None after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Received> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Messages until `n` arrived or `timeout` passed.
    pub async fn collect(&mut self, n: usize, timeout: Duration) -> Vec<Received> {
        let until = tokio::time::Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n {
            match tokio::time::timeout_at(until, self.rx.recv()).await {
                Ok(Some(m)) => out.push(m),
                _ => break,
            }
        }
        out
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}
