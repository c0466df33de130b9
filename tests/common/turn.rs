//! Debian's coturn (`turnserver`) as a test's TURN server: loopback only, one static long-term
//! user, no TLS, no CLI, killed on drop.

use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "ringsfu";
pub const PASSWORD: &str = "relay-secret";

pub struct Turn {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Turn {
    /// Starts `turnserver` on `127.0.0.1:port` (UDP and TCP), relaying from 127.0.0.1 (so it may
    /// relay to ringsfu on loopback); returns once it answers a STUN binding request over UDP
    /// and accepts TCP.
    pub fn start(port: u16) -> Turn {
        assert!(
            Command::new("turnserver").arg("--version").output().is_ok_and(|o| o.status.success()),
            "turnserver is missing: run `make test-deps` (Debian's coturn)"
        );
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("turn-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("turnserver.conf");
        let log = dir.join("turnserver.log");
        // Loopback peers are refused by default (a relay must not reach its own host's services);
        // here ringsfu is that peer.
        let settings = [
            "listening-ip=127.0.0.1".to_string(),
            "relay-ip=127.0.0.1".to_string(),
            format!("listening-port={port}"),
            "lt-cred-mech".to_string(),
            format!("user={USER}:{PASSWORD}"),
            "realm=ringsfu.test".to_string(),
            "allow-loopback-peers".to_string(),
            "no-tls".to_string(),
            "no-dtls".to_string(),
            "no-cli".to_string(),
            "no-software-attribute".to_string(),
            "log-file=stdout".to_string(),
            "simple-log".to_string(),
            format!("pidfile={}", dir.join("turnserver.pid").display()),
            format!("userdb={}", dir.join("turndb").display()),
        ];
        std::fs::write(&config, settings.join("\n") + "\n").unwrap();
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("turnserver")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting turnserver");
        let mut turn = Turn { child, addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)), log };
        turn.wait_ready();
        turn
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("turnserver exited ({status}):\n{}", self.log());
            }
            if self.answers_stun() && TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("turnserver did not answer on {} within 10 s:\n{}", self.addr, self.log());
    }

    /// Sends a STUN binding request (RFC 5389) over UDP; true on a binding success response.
    fn answers_stun(&self) -> bool {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        request.extend_from_slice(b"ringsfu-test");
        if socket.send_to(&request, self.addr).is_err() {
            return false;
        }
        let mut reply = [0u8; 512];
        matches!(socket.recv_from(&mut reply), Ok((n, _)) if n >= 20 && reply[..2] == [0x01, 0x01] && reply[8..20] == request[8..20])
    }

    /// The `iceServers` entry a page gets, Odoo's shape: `transport` is `udp` or `tcp` (the
    /// browser's leg to coturn; the relayed leg to ringsfu is UDP either way).
    pub fn ice_server(&self, transport: &str) -> serde_json::Value {
        serde_json::json!({"urls": format!("turn:{}?transport={transport}", self.addr), "username": USER, "credential": PASSWORD})
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
