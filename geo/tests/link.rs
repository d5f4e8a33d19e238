//! Real endpoints on 127.0.0.1: mutual TLS, RPC, timeouts, WAN emulation, reconnects.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use geo::{
    generate_ca_only, generate_certs, generate_node_cert, CertPaths, Endpoint, LinkConfig,
    LinkShape, PeerAddr, RpcError, RpcHandler, Topology, WanError,
};

const ECHO: u16 = 1;
const SLOW: u16 = 2;
const FAIL: u16 = 3;
const WHO: u16 = 4;
const PANIC: u16 = 5;

/// Echoes the body, sleeps for SLOW, fails for FAIL, names the caller for WHO.
#[derive(Default)]
struct TestHandler {
    calls: AtomicUsize,
}

impl RpcHandler for TestHandler {
    fn handle(
        &self,
        from: String,
        kind: u16,
        body: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, String>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            match kind {
                ECHO => Ok(body),
                SLOW => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    Ok(body)
                }
                FAIL => Err(format!("boom from handler ({} bytes)", body.len())),
                WHO => Ok(Bytes::from(from)),
                PANIC => panic!("handler panics on purpose"),
                other => Err(format!("unknown kind {other}")),
            }
        })
    }
}

fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    });
}

/// A topology with nodes `names` in one region, ports 0 (the file is only used for certs).
fn topology(names: &[&str]) -> Topology {
    let mut text = String::from("[cluster]\nname = \"t\"\n[[region]]\nname = \"r\"\n");
    for (i, n) in names.iter().enumerate() {
        text.push_str(&format!(
            "[[region.node]]\nname = \"{n}\"\nresp = \"127.0.0.1:{}\"\npeer = \"127.0.0.1:{}\"\n",
            20000 + i,
            21000 + i
        ));
    }
    Topology::parse(&text, None).expect("test topology")
}

struct Node {
    ep: Endpoint,
    handler: Arc<TestHandler>,
}

impl Node {
    fn peer(&self) -> PeerAddr {
        PeerAddr::new(self.ep.node_name(), self.ep.local_addr())
    }
}

async fn start_at(dir: &Path, name: &str, bind: SocketAddr, wan: bool) -> Node {
    let handler = Arc::new(TestHandler::default());
    let config = LinkConfig::new(name, bind, &CertPaths::in_dir(dir, name)).with_wan_emulation(wan);
    // A predecessor on the same port may still be draining its connections: retry a while.
    let started = Instant::now();
    loop {
        match Endpoint::start(config.clone(), handler.clone()).await {
            Ok(ep) => return Node { ep, handler },
            Err(geo::LinkError::Bind { .. }) if started.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("endpoint {name} does not start: {e:?}"),
        }
    }
}

async fn start(dir: &Path, name: &str, wan: bool) -> Node {
    start_at(dir, name, "127.0.0.1:0".parse().unwrap(), wan).await
}

fn certs_for(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    generate_certs(&topology(names), dir.path()).unwrap();
    dir
}

const T: Duration = Duration::from_secs(5);

/// Retries `f` until it returns true or `deadline` passes.
async fn eventually<F, Fut>(deadline: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {deadline:?} waiting for: {what}");
}

/// Certificates for "alpha" and "beta" and both endpoints started (WAN emulation as given).
async fn alpha_beta(wan_a: bool, wan_b: bool) -> (tempfile::TempDir, Node, Node) {
    let dir = certs_for(&["alpha", "beta"]);
    let a = start(dir.path(), "alpha", wan_a).await;
    let b = start(dir.path(), "beta", wan_b).await;
    (dir, a, b)
}

/// An empty ECHO call from `from` to `to` within `T`, which must succeed.
async fn echo_ok(from: &Node, to: &Node) {
    from.ep
        .call(&to.peer(), ECHO, Bytes::new(), T)
        .await
        .unwrap();
}

/// Shuts down the endpoints of `nodes`, one after the other.
async fn shutdown_all(nodes: &[&Node]) {
    for n in nodes {
        n.ep.shutdown().await;
    }
}

/// Retries an empty ECHO from `from` to `to` (each call bounded by `per_call`) until one succeeds.
async fn eventually_reaches(
    from: &Endpoint,
    to: &PeerAddr,
    per_call: Duration,
    deadline: Duration,
    what: &str,
) {
    eventually(deadline, what, move || async move {
        from.call(to, ECHO, Bytes::new(), per_call).await.is_ok()
    })
    .await;
}

/// Starts a successor "beta" at `addr` and waits until `from` reaches it (500 ms a try);
/// returns it and the instant the waiting began.
async fn restart_beta_and_reach(
    dir: &Path,
    from: &Endpoint,
    addr: SocketAddr,
    deadline: Duration,
    what: &str,
) -> (Node, Instant) {
    let b2 = start_at(dir, "beta", addr, false).await;
    let peer = PeerAddr::new("beta", addr);
    let started = Instant::now();
    eventually_reaches(from, &peer, Duration::from_millis(500), deadline, what).await;
    (b2, started)
}

/// Keeps echoing from `from` to `to` until `from`'s RTT estimate to `to` is at least `min`.
async fn eventually_rtt_at_least(
    from: &Endpoint,
    to: &PeerAddr,
    min: Duration,
    deadline: Duration,
    what: &str,
) {
    eventually(deadline, what, move || async move {
        let _ = from.call(to, ECHO, Bytes::new(), T).await;
        from.rtt(&to.name).is_some_and(|r| r >= min)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_endpoints_call_each_other() {
    init_tracing();
    let (_dir, a, b) = alpha_beta(false, false).await;

    let reply =
        a.ep.call(&b.peer(), ECHO, Bytes::from_static(b"ping"), T)
            .await
            .unwrap();
    assert_eq!(reply, Bytes::from_static(b"ping"));
    let reply =
        b.ep.call(&a.peer(), ECHO, Bytes::from_static(b"pong"), T)
            .await
            .unwrap();
    assert_eq!(reply, Bytes::from_static(b"pong"));

    // identity of the caller is its node name
    let who = a.ep.call(&b.peer(), WHO, Bytes::new(), T).await.unwrap();
    assert_eq!(who, Bytes::from_static(b"alpha"));
    let who = b.ep.call(&a.peer(), WHO, Bytes::new(), T).await.unwrap();
    assert_eq!(who, Bytes::from_static(b"beta"));

    assert!(a.ep.rtt("beta").is_some());
    assert!(b.ep.rtt("alpha").is_some());
    assert!(a.ep.rtt("nobody").is_none());

    // one connection serves both directions: b reused a's connection
    let states = a.ep.peer_states();
    assert_eq!(states.len(), 1);
    assert!(states[0].connected && states[0].rtt.is_some());
    assert_eq!(states[0].name, "beta");
    assert_eq!(states[0].addr, Some(b.ep.local_addr()));

    // handler errors travel back as text
    match a
        .ep
        .call(&b.peer(), FAIL, Bytes::from_static(b"xyz"), T)
        .await
    {
        Err(RpcError::Remote(text)) => assert_eq!(text, "boom from handler (3 bytes)"),
        other => panic!("expected a remote error, got {other:?}"),
    }
    // a panicking handler does not take the node down
    match a.ep.call(&b.peer(), PANIC, Bytes::new(), T).await {
        Err(e @ RpcError::Remote(_)) => assert!(!e.is_transport()),
        other => panic!("expected a remote error, got {other:?}"),
    }
    echo_ok(&a, &b).await;

    // a call to oneself runs the local handler
    let me = a.ep.call(&a.peer(), WHO, Bytes::new(), T).await.unwrap();
    assert_eq!(me, Bytes::from_static(b"alpha"));

    shutdown_all(&[&a, &b]).await;
    assert!(matches!(
        a.ep.call(&b.peer(), ECHO, Bytes::new(), T).await,
        Err(RpcError::Shutdown)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_and_large_calls() {
    init_tracing();
    let (_dir, a, b) = alpha_beta(false, false).await;
    let peer = b.peer();

    let calls = (0..200u32).map(|i| {
        let ep = a.ep.clone();
        let peer = peer.clone();
        async move {
            let body = Bytes::from(i.to_be_bytes().to_vec());
            let reply = ep.call(&peer, ECHO, body.clone(), T).await.unwrap();
            assert_eq!(reply, body);
        }
    });
    futures::future::join_all(calls).await;
    assert_eq!(b.handler.calls.load(Ordering::SeqCst), 200);

    let big = Bytes::from(vec![7u8; 12 << 20]);
    let reply =
        a.ep.call(&peer, ECHO, big.clone(), Duration::from_secs(30))
            .await
            .unwrap();
    assert_eq!(reply.len(), big.len());
    assert!(reply == big);

    let too_big = Bytes::from(vec![0u8; geo::MAX_FRAME_SIZE]);
    assert!(matches!(
        a.ep.call(&peer, ECHO, too_big, T).await,
        Err(RpcError::TooLarge { .. })
    ));
    shutdown_all(&[&a, &b]).await;
}

/// The datagrams `node` has sent on its live connection to `peer`.
fn datagrams_sent(node: &Node, peer: &str) -> u64 {
    let states = node.ep.peer_states();
    let state = states.iter().find(|s| s.name == peer).expect("peer known");
    assert!(state.connected, "no live connection to {peer}");
    state.datagrams_sent
}

/// A responder acknowledges requests of several packets with its response, not with an ACK of
/// its own before it (QUIC's ACK frequency extension, threshold 8): about one datagram back
/// per call where the default (an ACK for every second packet) sent about two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_carry_the_acknowledgements() {
    init_tracing();
    let (_dir, a, b) = alpha_beta(false, false).await;
    echo_ok(&a, &b).await;
    // Settle the handshake's and the first call's packets (and the ACK_FREQUENCY frame).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent_before = datagrams_sent(&b, "alpha");
    const CALLS: u64 = 200;
    // About 4 KB: three packets at QUIC's usual 1452-byte datagrams.
    let body = Bytes::from(vec![5u8; 4000]);
    for _ in 0..CALLS {
        let who = a.ep.call(&b.peer(), WHO, body.clone(), T).await.unwrap();
        assert_eq!(who, Bytes::from_static(b"alpha"));
    }
    let sent_after = datagrams_sent(&b, "alpha");
    let sent = sent_after - sent_before;
    // One response datagram per call, and slack for ACKs sent on their timer while a response
    // was late on a busy machine; the default's immediate ACKs would make it about 2 x CALLS.
    assert!(
        (CALLS..CALLS * 3 / 2).contains(&sent),
        "{sent} datagrams sent back for {CALLS} calls"
    );
    shutdown_all(&[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_ca_is_refused() {
    init_tracing();
    let dir = certs_for(&["alpha", "beta"]);
    // "mallory" has a perfectly good certificate, from another CA; "beta2" is even named
    // like a cluster node.
    let foreign = tempfile::tempdir().unwrap();
    generate_ca_only(foreign.path()).unwrap();
    generate_node_cert(foreign.path(), "mallory", foreign.path()).unwrap();
    generate_node_cert(foreign.path(), "beta", foreign.path()).unwrap();

    let a = start(dir.path(), "alpha", false).await;
    let m = start(foreign.path(), "mallory", false).await;
    let fake_beta = start(foreign.path(), "beta", false).await;

    // mallory calls alpha: alpha refuses the client certificate
    let r =
        m.ep.call(&a.peer(), ECHO, Bytes::from_static(b"hi"), T)
            .await;
    assert!(
        matches!(r, Err(RpcError::Unreachable { .. })),
        "expected refusal, got {r:?}"
    );
    assert!(r.unwrap_err().is_transport());
    // alpha calls the fake beta: alpha refuses the server certificate
    let r =
        a.ep.call(&fake_beta.peer(), ECHO, Bytes::from_static(b"hi"), T)
            .await;
    assert!(
        matches!(r, Err(RpcError::Unreachable { .. })),
        "expected refusal, got {r:?}"
    );
    // fake beta calls alpha claiming to be beta
    let r = fake_beta
        .ep
        .call(&a.peer(), ECHO, Bytes::from_static(b"hi"), T)
        .await;
    assert!(r.is_err(), "expected refusal, got {r:?}");

    assert_eq!(a.handler.calls.load(Ordering::SeqCst), 0);
    assert_eq!(m.handler.calls.load(Ordering::SeqCst), 0);
    assert_eq!(fake_beta.handler.calls.load(Ordering::SeqCst), 0);
    assert!(!a.ep.is_connected("mallory"));
    assert!(!a.ep.is_connected("beta"));
    let state =
        a.ep.peer_states()
            .into_iter()
            .find(|p| p.name == "beta")
            .unwrap();
    assert!(!state.connected);
    assert!(state.last_error.is_some());
    assert!(state.consecutive_failures >= 1);

    // the backoff answers at once while it lasts
    let r = a.ep.call(&fake_beta.peer(), ECHO, Bytes::new(), T).await;
    assert!(matches!(r, Err(RpcError::Unreachable { .. })), "{r:?}");

    shutdown_all(&[&a, &m, &fake_beta]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_node_at_address_is_refused() {
    init_tracing();
    let dir = certs_for(&["alpha", "beta", "gamma"]);
    let a = start(dir.path(), "alpha", false).await;
    let c = start(dir.path(), "gamma", false).await;
    // dial "beta" at gamma's address: gamma's certificate is not valid for "beta"
    let wrong = PeerAddr::new("beta", c.ep.local_addr());
    let r = a.ep.call(&wrong, ECHO, Bytes::new(), T).await;
    assert!(matches!(r, Err(RpcError::Unreachable { .. })), "{r:?}");
    assert_eq!(c.handler.calls.load(Ordering::SeqCst), 0);
    shutdown_all(&[&a, &c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handler_times_out() {
    init_tracing();
    let (_dir, a, b) = alpha_beta(false, false).await;
    let started = Instant::now();
    let r =
        a.ep.call(&b.peer(), SLOW, Bytes::new(), Duration::from_millis(300))
            .await;
    let took = started.elapsed();
    match r {
        Err(e @ RpcError::Timeout { .. }) => assert!(e.is_transport()),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    // the link is still fine afterwards
    echo_ok(&a, &b).await;

    // an unreachable address fails within the timeout too
    let nobody = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let ghost = PeerAddr::new("beta", nobody.local_addr().unwrap());
    let start = Instant::now();
    let r =
        b.ep.call(
            &PeerAddr::new("ghost", ghost.addr),
            ECHO,
            Bytes::new(),
            Duration::from_millis(300),
        )
        .await;
    assert!(r.as_ref().is_err_and(|e| e.is_transport()), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(2));
    shutdown_all(&[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wan_emulation_disabled_is_refused() {
    init_tracing();
    let dir = certs_for(&["alpha"]);
    let a = start(dir.path(), "alpha", false).await;
    assert!(!a.ep.wan().is_enabled());
    assert_eq!(
        a.ep.wan()
            .set_link("127.0.0.1:1".parse().unwrap(), LinkShape::partitioned()),
        Err(WanError::Disabled)
    );
    a.ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_times_out_and_healing_restores() {
    init_tracing();
    let (_dir, a, b) = alpha_beta(true, true).await;
    let short = Duration::from_millis(400);
    echo_ok(&a, &b).await;

    // cut a -> b: requests (a's datagrams) never arrive
    a.ep.wan()
        .set_link(b.ep.local_addr(), LinkShape::partitioned())
        .unwrap();
    let r = a.ep.call(&b.peer(), ECHO, Bytes::new(), short).await;
    assert!(matches!(r, Err(RpcError::Timeout { .. })), "{r:?}");
    // b -> a also fails: b's requests arrive, a's answers do not
    let r = b.ep.call(&a.peer(), ECHO, Bytes::new(), short).await;
    assert!(matches!(r, Err(RpcError::Timeout { .. })), "{r:?}");
    assert!(a.ep.wan().stats().partitioned > 0);

    a.ep.wan().clear(b.ep.local_addr()).unwrap();
    eventually_reaches(
        &a.ep,
        &b.peer(),
        short,
        Duration::from_secs(10),
        "calls succeed after healing",
    )
    .await;
    eventually_reaches(
        &b.ep,
        &a.peer(),
        short,
        Duration::from_secs(10),
        "reverse calls succeed after healing",
    )
    .await;
    shutdown_all(&[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulated_delay_shows_in_rtt() {
    init_tracing();
    let (_dir, a, b) = alpha_beta(true, true).await;
    echo_ok(&a, &b).await;
    assert!(a.ep.rtt("beta").is_some());

    a.ep.wan()
        .set_link(
            b.ep.local_addr(),
            LinkShape::delay(Duration::from_millis(40)),
        )
        .unwrap();
    let started = Instant::now();
    echo_ok(&a, &b).await;
    assert!(
        started.elapsed() >= Duration::from_millis(38),
        "{:?}",
        started.elapsed()
    );

    eventually_rtt_at_least(
        &a.ep,
        &b.peer(),
        Duration::from_millis(38),
        Duration::from_secs(10),
        "a's rtt to b reflects 40 ms",
    )
    .await;
    // b's view: its answers are fast but a's acknowledgements are delayed
    eventually_rtt_at_least(
        &b.ep,
        &a.peer(),
        Duration::from_millis(38),
        Duration::from_secs(10),
        "b's rtt to a reflects 40 ms",
    )
    .await;
    let rtt = a.ep.rtt("beta").unwrap();
    assert!(rtt < Duration::from_millis(200), "{rtt:?}");
    shutdown_all(&[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_peer_is_reached_again_quickly() {
    init_tracing();
    let (dir, a, b) = alpha_beta(false, false).await;
    let b_addr = b.ep.local_addr();
    echo_ok(&a, &b).await;

    // beta dies without a goodbye (drop without shutdown would still close; simulate a crash
    // by shutting down, then starting a new process on the same port)
    b.ep.shutdown().await;
    drop(b);
    let (b2, started) = restart_beta_and_reach(
        dir.path(),
        &a.ep,
        b_addr,
        Duration::from_secs(5),
        "alpha reaches the restarted beta",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(b2.handler.calls.load(Ordering::SeqCst) >= 1);
    shutdown_all(&[&a, &b2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_peer_is_reset_by_its_successor() {
    init_tracing();
    let (dir, a, b) = alpha_beta(false, true).await;
    let b_addr = b.ep.local_addr();
    echo_ok(&a, &b).await;

    // A crash: beta's goodbye never reaches alpha (its datagrams to alpha are dropped).
    b.ep.wan()
        .set_link(a.ep.local_addr(), LinkShape::partitioned())
        .unwrap();
    b.ep.shutdown().await;
    drop(b);
    assert!(a.ep.is_connected("beta"), "alpha has not noticed the crash");

    let (b2, started) = restart_beta_and_reach(
        dir.path(),
        &a.ep,
        b_addr,
        Duration::from_secs(8),
        "alpha reaches beta's successor",
    )
    .await;
    // well before the 10 s idle timeout: the successor's stateless reset closed the old link
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(b2.handler.calls.load(Ordering::SeqCst) >= 1);
    shutdown_all(&[&a, &b2]).await;
}

/// Not a pass/fail test: prints loopback RPC latency and throughput figures.
/// `cargo test --release -p geo --test link -- --ignored --nocapture rpc_figures`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn rpc_figures() {
    let (_dir, a, b) = alpha_beta(false, false).await;
    let peer = b.peer();
    let body = Bytes::from(vec![1u8; 128]);
    a.ep.call(&peer, ECHO, body.clone(), T).await.unwrap();

    let n = 5000;
    let mut lat = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let t0 = Instant::now();
        a.ep.call(&peer, ECHO, body.clone(), T).await.unwrap();
        lat.push(t0.elapsed());
    }
    let total = started.elapsed();
    lat.sort();
    println!(
        "sequential 128 B calls: {:.0}/s, p50 {:?}, p99 {:?}",
        n as f64 / total.as_secs_f64(),
        lat[n / 2],
        lat[n * 99 / 100]
    );

    for concurrency in [16usize, 64] {
        let per = 20_000 / concurrency;
        let started = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let ep = a.ep.clone();
                let peer = peer.clone();
                let body = body.clone();
                tokio::spawn(async move {
                    for _ in 0..per {
                        ep.call(&peer, ECHO, body.clone(), T).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let total = started.elapsed();
        println!(
            "{concurrency} concurrent callers: {:.0} calls/s",
            (per * concurrency) as f64 / total.as_secs_f64()
        );
    }

    let big = Bytes::from(vec![0u8; 16 << 20]);
    let started = Instant::now();
    a.ep.call(&peer, ECHO, big, Duration::from_secs(30))
        .await
        .unwrap();
    println!("16 MiB echo: {:?}", started.elapsed());
    shutdown_all(&[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_outlives_the_call_that_started_it() {
    init_tracing();
    let (_dir, a, b) = alpha_beta(true, true).await;
    // 40 ms each way from a: the handshake takes a few round trips, more than a call allows.
    a.ep.wan()
        .set_link(
            b.ep.local_addr(),
            LinkShape::delay(Duration::from_millis(40)),
        )
        .unwrap();
    let short = Duration::from_millis(30);
    let r = a.ep.call(&b.peer(), ECHO, Bytes::new(), short).await;
    assert!(matches!(r, Err(RpcError::Timeout { .. })), "{r:?}");
    // No further call: the attempt the timed-out call started finishes on its own (before,
    // it was dropped with the call, and every call on so short a deadline started another).
    eventually(T, "the link up without another call", || async {
        a.ep.is_connected("beta")
    })
    .await;
    assert_eq!(b.handler.calls.load(Ordering::SeqCst), 0);
    // A call with time for the delay then goes out on that connection.
    echo_ok(&a, &b).await;
    shutdown_all(&[&a, &b]).await;
}
