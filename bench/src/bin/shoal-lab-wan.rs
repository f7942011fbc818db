//! `shoal-lab-wan`: the lab's stand-in for long, lossy access links, for
//! kernels without `sch_netem` (this one's).
//!
//! Every packet the kernel hands to NFQUEUE `--queue` is held for
//! `--delay-ms` and then let through, or dropped with probability `--loss`.
//! The lab queues what each host receives on `eth0` (iptables, mangle
//! PREROUTING) and holds it for both access links the packet crossed; see
//! `wan_links` in `bench/lab` for why at the receiver. Only the verdict
//! crosses to user space, never the payload (`NFQNL_COPY_META`); packets
//! leave in the order they came (one delay for all), so one batch verdict
//! releases every packet whose time has come. The `tc tbf` caps sit on the
//! sender's uplink and the bridge's side of the receiver's downlink, before
//! the hook, so they see every packet on time.
//!
//! `--stats FILE` is rewritten every second with the counts so far (JSON).
//! Linux only; needs CAP_NET_ADMIN in the namespace it runs in.

use anyhow::{Context as _, bail};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read as _};
use std::time::{Duration, Instant};

// Kernel constants (linux/netlink.h, linux/netfilter/nfnetlink_queue.h),
// spelled out rather than pulling in libc for a dozen numbers.
const AF_NETLINK: i32 = 16;
const SOCK_RAW: i32 = 3;
const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQNL_MSG_VERDICT_BATCH: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
/// Packets the kernel may hold for us: far above a 100 Mbit/s link's
/// 20 ms (about 170 full-size packets each way).
const QUEUE_MAXLEN: u32 = 65_536;

#[derive(Debug)]
struct Args {
    queue: u16,
    delay: Duration,
    loss: f64,
    seed: u64,
    stats: Option<std::path::PathBuf>,
}

fn usage() -> ! {
    eprintln!(
        "usage: shoal-lab-wan --delay-ms MS [--loss P] [--queue N] [--seed N] [--stats FILE]\n\
         Holds every packet of NFQUEUE N (default 0) for MS milliseconds, drops a\n\
         fraction P (0.001 = 0.1%) of them; see the source's header."
    );
    std::process::exit(2)
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        queue: 0,
        delay: Duration::ZERO,
        loss: 0.0,
        seed: 1,
        stats: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--queue" => args.queue = value()?.parse().context("--queue")?,
            "--delay-ms" => {
                args.delay =
                    Duration::from_secs_f64(value()?.parse::<f64>().context("--delay-ms")? / 1e3)
            }
            "--loss" => args.loss = value()?.parse().context("--loss")?,
            "--seed" => args.seed = value()?.parse().context("--seed")?,
            "--stats" => args.stats = Some(value()?.into()),
            "-h" | "--help" => usage(),
            other => bail!("unknown argument {other}"),
        }
    }
    if !(0.0..1.0).contains(&args.loss) {
        bail!("--loss must be in [0, 1)");
    }
    Ok(args)
}

/// One netlink message to the queue subsystem: header, nfgenmsg, attributes.
fn message(kind: u16, flags: u16, queue: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut out = vec![0u8; 16];
    out.extend_from_slice(&[0, 0]); // AF_UNSPEC, NFNETLINK_V0
    out.extend_from_slice(&queue.to_be_bytes());
    for (kind, body) in attrs {
        let len = 4 + body.len();
        out.extend_from_slice(&(len as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(body);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    let total = out.len() as u32;
    out[0..4].copy_from_slice(&total.to_ne_bytes());
    out[4..6].copy_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | kind).to_ne_bytes());
    out[6..8].copy_from_slice(&flags.to_ne_bytes());
    out
}

fn verdict(queue: u16, kind: u16, verdict: u32, id: u32) -> Vec<u8> {
    let mut hdr = verdict.to_be_bytes().to_vec();
    hdr.extend_from_slice(&id.to_be_bytes());
    message(kind, NLM_F_REQUEST, queue, &[(NFQA_VERDICT_HDR, &hdr)])
}

fn recv<'a>(sock: &Socket, buf: &'a mut [u8]) -> std::io::Result<&'a [u8]> {
    let n = (&*sock).read(buf)?;
    Ok(&buf[..n])
}

/// Sends a config message and waits for its acknowledgement.
fn configure(sock: &Socket, queue: u16, attrs: &[(u16, &[u8])]) -> anyhow::Result<()> {
    sock.send(&message(
        NFQNL_MSG_CONFIG,
        NLM_F_REQUEST | NLM_F_ACK,
        queue,
        attrs,
    ))?;
    let mut buf = [0u8; 4096];
    let got = recv(sock, &mut buf)?;
    if got.len() >= 20 && u16::from_ne_bytes([got[4], got[5]]) == NLMSG_ERROR {
        let code = i32::from_ne_bytes([got[16], got[17], got[18], got[19]]);
        if code != 0 {
            bail!(
                "the kernel refused the queue config: {}",
                std::io::Error::from_raw_os_error(-code)
            );
        }
    }
    Ok(())
}

/// The packet id of an NFQNL_MSG_PACKET message, if it is one.
fn packet_id(msg: &[u8]) -> Option<u32> {
    if msg.len() < 20
        || u16::from_ne_bytes([msg[4], msg[5]]) != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET
    {
        return None;
    }
    let mut at = 20;
    while at + 4 <= msg.len() {
        let len = u16::from_ne_bytes([msg[at], msg[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([msg[at + 2], msg[at + 3]]) & 0x3fff;
        if len < 4 || at + len > msg.len() {
            return None;
        }
        if kind == NFQA_PACKET_HDR && len >= 8 {
            return Some(u32::from_be_bytes([
                msg[at + 4],
                msg[at + 5],
                msg[at + 6],
                msg[at + 7],
            ]));
        }
        at += len.next_multiple_of(4);
    }
    None
}

/// xorshift64*: the loss draws, reproducible per --seed.
struct Draw(u64);

impl Draw {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug, Default)]
struct Counts {
    packets: u64,
    dropped: u64,
    max_held: usize,
    batches: u64,
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let sock = Socket::new(
        Domain::from(AF_NETLINK),
        Type::from(SOCK_RAW),
        Some(Protocol::from(NETLINK_NETFILTER)),
    )
    .context("netlink socket")?;
    let _ = sock.set_recv_buffer_size(8 << 20);
    configure(
        &sock,
        args.queue,
        &[(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0])],
    )
    .context("binding the queue (is another program bound to it?)")?;
    let mut params = 0u32.to_be_bytes().to_vec();
    params.push(NFQNL_COPY_META);
    configure(&sock, args.queue, &[(NFQA_CFG_PARAMS, &params)])?;
    configure(
        &sock,
        args.queue,
        &[(NFQA_CFG_QUEUE_MAXLEN, &QUEUE_MAXLEN.to_be_bytes())],
    )?;

    // Two threads: this one reads the queue and never sleeps on a timer;
    // the releaser sleeps on a condvar until the front packet is due
    // (futex waits are high-resolution; a socket timeout would round up to
    // the scheduler tick, several milliseconds).
    let shared = std::sync::Arc::new((
        std::sync::Mutex::new(Held::default()),
        std::sync::Condvar::new(),
    ));
    let sock = std::sync::Arc::new(sock);
    let releaser = {
        let (shared, sock, queue, stats) =
            (shared.clone(), sock.clone(), args.queue, args.stats.clone());
        std::thread::spawn(move || release(&shared, &sock, queue, stats.as_deref()))
    };
    let mut draw = Draw(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if releaser.is_finished() {
            bail!("the releasing thread ended");
        }
        let got = match recv(&sock, &mut buf) {
            Ok(got) => got,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // Our receive buffer overflowed: messages were lost, not packets;
            // the next batch verdict covers them (it releases every id up to
            // its own).
            Err(e) if e.raw_os_error() == Some(105) => continue,
            Err(e) => return Err(e).context("reading the queue"),
        };
        let Some(id) = packet_id(got) else { continue };
        let lost = args.loss > 0.0 && draw.unit() < args.loss;
        if lost {
            sock.send(&verdict(args.queue, NFQNL_MSG_VERDICT, NF_DROP, id))?;
        }
        let (lock, wake) = &*shared;
        let mut held = lock.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        held.counts.packets += 1;
        if lost {
            held.counts.dropped += 1;
            continue;
        }
        held.queue.push_back((Instant::now() + args.delay, id));
        held.counts.max_held = held.counts.max_held.max(held.queue.len());
        if held.queue.len() == 1 {
            wake.notify_one();
        }
    }
}

#[derive(Debug, Default)]
struct Held {
    queue: VecDeque<(Instant, u32)>,
    counts: Counts,
}

type Shared = (std::sync::Mutex<Held>, std::sync::Condvar);

/// Releases due packets with one batch verdict each time, and writes the
/// counts every second.
fn release(
    shared: &Shared,
    sock: &Socket,
    queue: u16,
    stats: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let (lock, wake) = shared;
    let mut last_stats = Instant::now();
    let mut held = lock.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    loop {
        let now = Instant::now();
        let mut last = None;
        while let Some(&(due, id)) = held.queue.front() {
            if due > now {
                break;
            }
            last = Some(id);
            held.queue.pop_front();
        }
        if let Some(id) = last {
            held.counts.batches += 1;
            drop(held);
            sock.send(&verdict(queue, NFQNL_MSG_VERDICT_BATCH, NF_ACCEPT, id))?;
            held = lock.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            continue;
        }
        if let Some(path) = stats
            && now.duration_since(last_stats) >= Duration::from_secs(1)
        {
            last_stats = now;
            let c = &held.counts;
            let json = format!(
                "{{\"packets\":{},\"dropped\":{},\"max_held\":{},\"batches\":{}}}\n",
                c.packets, c.dropped, c.max_held, c.batches
            );
            let _ = std::fs::write(path, json);
        }
        let wait = held
            .queue
            .front()
            .map(|&(due, _)| due.saturating_duration_since(now))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        held = wake
            .wait_timeout(held, wait)
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .0;
    }
}
