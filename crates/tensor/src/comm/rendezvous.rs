//! The rendezvous of a run over several machines: the node of rank 0
//! serves a TCP port (`--rendezvous HOST:PORT`), every other node connects
//! and sends its node rank, and rank 0 answers each with the payload (NCCL's
//! unique id). Rank 0 waits until every node has come or the timeout
//! passes, then names the nodes that did not; a node that cannot reach rank
//! 0 in time says so. The same flags on every node, as with torchrun.
//!
//! Wire format (big-endian): a node sends the magic `DFRZ`, its node rank
//! (u32) and the node count (u32); rank 0 answers `DFRZ`, the payload
//! length (u32) and the payload, or closes the connection when the node
//! rank is out of range, a duplicate, or the counts disagree.

use super::{CommError, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

const MAGIC: &[u8; 4] = b"DFRZ";

fn err(msg: impl Into<String>) -> CommError {
    CommError::Rendezvous(msg.into())
}

fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| err(format!("{addr}: {e}")))?
        .next()
        .ok_or_else(|| err(format!("{addr} resolves to no address")))
}

/// Rank 0's side: listens on `addr`, hands `payload` to nodes 1..nodes and
/// returns once all have it. Errors naming the missing nodes at `timeout`.
pub fn serve(addr: &str, nodes: usize, payload: &[u8], timeout: Duration) -> Result<()> {
    let listener = TcpListener::bind(resolve(addr)?).map_err(|e| err(format!("cannot listen on {addr}: {e}")))?;
    serve_on(listener, nodes, payload, timeout)
}

/// [`serve`] on a bound listener (tests bind port 0).
pub fn serve_on(listener: TcpListener, nodes: usize, payload: &[u8], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    listener.set_nonblocking(true).map_err(|e| err(e.to_string()))?;
    let mut served = vec![false; nodes];
    if let Some(s) = served.first_mut() {
        *s = true;
    }
    while served.iter().any(|s| !s) {
        match listener.accept() {
            Ok((stream, peer)) => {
                // A stranger or a bad hello is dropped; keep waiting for the nodes.
                if let Ok(node) = answer(stream, nodes, payload, &served, deadline) {
                    served[node] = true;
                } else {
                    let _ = peer;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let missing: Vec<String> = (0..nodes).filter(|&n| !served[n]).map(|n| n.to_string()).collect();
                    return Err(err(format!(
                        "node(s) {} of {nodes} did not come within {} s (same --nodes and --rendezvous on every node?)",
                        missing.join(", "),
                        timeout.as_secs()
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(err(format!("accept: {e}"))),
        }
    }
    Ok(())
}

fn answer(mut s: TcpStream, nodes: usize, payload: &[u8], served: &[bool], deadline: Instant) -> Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
    s.set_nonblocking(false).map_err(|e| err(e.to_string()))?;
    s.set_read_timeout(Some(left)).map_err(|e| err(e.to_string()))?;
    s.set_write_timeout(Some(left)).map_err(|e| err(e.to_string()))?;
    let mut hello = [0u8; 12];
    s.read_exact(&mut hello).map_err(|e| err(e.to_string()))?;
    let node = u32::from_be_bytes([hello[4], hello[5], hello[6], hello[7]]) as usize;
    let count = u32::from_be_bytes([hello[8], hello[9], hello[10], hello[11]]) as usize;
    if &hello[..4] != MAGIC || count != nodes || node == 0 || node >= nodes || served[node] {
        return Err(err("a bad hello"));
    }
    let len = u32::try_from(payload.len()).map_err(|_| err("payload too long"))?;
    let mut msg = MAGIC.to_vec();
    msg.extend(len.to_be_bytes());
    msg.extend(payload);
    s.write_all(&msg).map_err(|e| err(e.to_string()))?;
    Ok(node)
}

/// A node's side: connects to rank 0 at `addr` (retrying until `timeout`,
/// since rank 0 may start later) and returns the payload.
pub fn join(addr: &str, node: usize, nodes: usize, timeout: Duration) -> Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let target = resolve(addr)?;
    let mut last = String::new();
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        match TcpStream::connect_timeout(&target, left.min(Duration::from_secs(2)).max(Duration::from_millis(10))) {
            Ok(s) => match fetch(s, node, nodes, deadline) {
                Ok(p) => return Ok(p),
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(err(format!("node {node}: rank 0 at {addr} did not answer within {} s ({last})", timeout.as_secs())))
}

fn fetch(mut s: TcpStream, node: usize, nodes: usize, deadline: Instant) -> Result<Vec<u8>> {
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
    s.set_read_timeout(Some(left)).map_err(|e| err(e.to_string()))?;
    let mut hello = MAGIC.to_vec();
    hello.extend((node as u32).to_be_bytes());
    hello.extend((nodes as u32).to_be_bytes());
    s.write_all(&hello).map_err(|e| err(e.to_string()))?;
    let mut head = [0u8; 8];
    s.read_exact(&mut head)
        .map_err(|e| err(format!("rank 0 refused node {node} ({e}): duplicate node rank or different --nodes?")))?;
    if &head[..4] != MAGIC {
        return Err(err("rank 0 answered something else"));
    }
    let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if len > 1 << 20 {
        return Err(err("rank 0's payload is too long"));
    }
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).map_err(|e| err(e.to_string()))?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> (TcpListener, String) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        (l, addr)
    }

    #[test]
    fn every_node_gets_rank_zeros_bytes() {
        let (l, addr) = listener();
        let id: Vec<u8> = (0..128u32).map(|i| (i * 37 % 251) as u8).collect();
        let got = std::thread::scope(|s| {
            let server = s.spawn(|| serve_on(l, 3, &id, Duration::from_secs(20)));
            let nodes: Vec<_> = [2usize, 1]
                .iter()
                .map(|&n| {
                    s.spawn({
                        let a = addr.clone();
                        move || join(&a, n, 3, Duration::from_secs(20))
                    })
                })
                .collect();
            let got: Vec<_> = nodes.into_iter().map(|h| h.join().expect("node")).collect();
            server.join().expect("server").expect("serve");
            got
        });
        for g in got {
            assert_eq!(g.expect("join"), id);
        }
    }

    #[test]
    fn a_missing_node_is_named_within_the_timeout() {
        let (l, addr) = listener();
        let start = Instant::now();
        let r = std::thread::scope(|s| {
            let server = s.spawn(|| serve_on(l, 3, b"id", Duration::from_millis(600)));
            join(&addr, 1, 3, Duration::from_secs(5)).expect("node 1 joins");
            server.join().expect("server")
        });
        let msg = r.expect_err("node 2 never came").to_string();
        assert!(msg.contains("node(s) 2 of 3"), "{msg}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_node_without_rank_zero_times_out_with_a_clear_error() {
        let (l, addr) = listener();
        drop(l); // nobody serves this port now
        let start = Instant::now();
        let e = join(&addr, 1, 2, Duration::from_millis(500)).expect_err("no rank 0").to_string();
        assert!(e.contains("did not answer"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_duplicate_or_disagreeing_node_is_refused() {
        let (l, addr) = listener();
        let r = std::thread::scope(|s| {
            let server = s.spawn(|| serve_on(l, 2, b"id", Duration::from_millis(800)));
            // a node that thinks there are 3 nodes is refused and times out
            let bad = join(&addr, 1, 3, Duration::from_millis(400));
            (bad, server.join().expect("server"))
        });
        assert!(r.0.is_err());
        assert!(r.1.expect_err("node 1 never joined properly").to_string().contains("node(s) 1 of 2"));
    }
}
