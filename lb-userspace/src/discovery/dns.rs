//! One name resolution as HAProxy's resolvers do it: an A or AAAA query over UDP to every
//! name server of the section at once (EDNS0 with `accepted_payload_size`), the first valid
//! answer wins; `resolve_retries` tries, each waiting `timeout retry`; then the other family
//! when the preferred one has no record. Messages are encoded and decoded by hickory-proto.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::net::UdpSocket;

use crate::config::model::{AddrFamily, Resolvers};

use super::DiscoveryError;

/// The addresses `fqdn` has, preferred family first (HAProxy: the other family is asked
/// when the preferred one gives NXDOMAIN or no record).
pub async fn resolve(
    r: &Resolvers,
    fqdn: &str,
    prefer: AddrFamily,
) -> Result<Vec<IpAddr>, DiscoveryError> {
    let (first, second) = match prefer {
        AddrFamily::V4 => (RecordType::A, RecordType::AAAA),
        AddrFamily::V6 => (RecordType::AAAA, RecordType::A),
    };
    match query(r, fqdn, first).await {
        Ok(v) if !v.is_empty() => Ok(v),
        Ok(_) | Err(DiscoveryError::NxDomain) => match query(r, fqdn, second).await {
            Ok(v) if v.is_empty() => Err(DiscoveryError::NoAddress),
            other => other,
        },
        Err(e) => Err(e),
    }
}

/// One query of `rtype` for `fqdn`, with retries.
pub async fn query(
    r: &Resolvers,
    fqdn: &str,
    rtype: RecordType,
) -> Result<Vec<IpAddr>, DiscoveryError> {
    let absolute = if fqdn.ends_with('.') {
        fqdn.to_owned()
    } else {
        format!("{fqdn}.")
    };
    let name = Name::from_ascii(&absolute).map_err(|e| DiscoveryError::Name {
        name: fqdn.to_owned(),
        why: e.to_string(),
    })?;
    // One socket per family of the name servers.
    let mut socks: Vec<(bool, UdpSocket)> = Vec::new();
    for v4 in [true, false] {
        if r.nameservers.iter().any(|(_, a)| a.is_ipv4() == v4) {
            let local = if v4 {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
            } else {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
            };
            socks.push((
                v4,
                UdpSocket::bind(local).await.map_err(DiscoveryError::Io)?,
            ));
        }
    }
    let mut buf = vec![0u8; usize::from(r.accepted_payload_size).max(512)];
    let mut last_err = DiscoveryError::Timeout;
    for _ in 0..r.resolve_retries.max(1) {
        let id: u16 = rand::random();
        let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(name.clone(), rtype));
        let mut edns = Edns::new();
        edns.set_max_payload(r.accepted_payload_size);
        msg.set_edns(edns);
        let wire = msg
            .to_vec()
            .map_err(|e| DiscoveryError::Encode(e.to_string()))?;
        for (_, ns) in &r.nameservers {
            if let Some((_, s)) = socks.iter().find(|(v4, _)| *v4 == ns.is_ipv4())
                && let Err(e) = s.send_to(&wire, ns).await
            {
                last_err = DiscoveryError::Io(e);
            }
        }
        let deadline = tokio::time::Instant::now() + r.timeout_retry;
        loop {
            let got = tokio::time::timeout_at(deadline, recv_any(&socks, &mut buf)).await;
            let Ok(got) = got else {
                break;
            };
            let (n, from) = match got {
                Ok(x) => x,
                Err(e) => {
                    last_err = DiscoveryError::Io(e);
                    continue;
                }
            };
            if !r.nameservers.iter().any(|(_, a)| *a == from) {
                continue;
            }
            let Ok(reply) = Message::from_vec(&buf[..n]) else {
                last_err = DiscoveryError::Malformed(from);
                continue;
            };
            if reply.metadata.id != id
                || reply.metadata.message_type != MessageType::Response
                || !reply
                    .queries
                    .iter()
                    .any(|q| q.query_type() == rtype && q.name().eq_case(&name))
            {
                continue;
            }
            match reply.metadata.response_code {
                ResponseCode::NoError => return Ok(addresses(&reply, rtype)),
                ResponseCode::NXDomain => return Err(DiscoveryError::NxDomain),
                ResponseCode::Refused => last_err = DiscoveryError::Refused,
                code => last_err = DiscoveryError::Rcode(code.to_string()),
            }
        }
    }
    Err(last_err)
}

async fn recv_any(
    socks: &[(bool, UdpSocket)],
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match socks {
        [(_, a)] => a.recv_from(buf).await,
        [(_, a), (_, b)] => {
            tokio::select! {
                r = a.readable() => r?,
                r = b.readable() => r?,
            }
            for (_, s) in socks {
                match s.try_recv_from(buf) {
                    Ok(x) => return Ok(x),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            Err(std::io::ErrorKind::WouldBlock.into())
        }
        _ => std::future::pending().await,
    }
}

/// The answer's addresses of `rtype` (after any CNAME chain the server followed), in order.
fn addresses(reply: &Message, rtype: RecordType) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for rec in &reply.answers {
        let ip = match (&rec.data, rtype) {
            (RData::A(a), RecordType::A) => IpAddr::V4(a.0),
            (RData::AAAA(a), RecordType::AAAA) => IpAddr::V6(a.0),
            _ => continue,
        };
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// Sleeps at least 10 ms (a zero interval must not spin).
pub(super) async fn pause(d: Duration) {
    tokio::time::sleep(d.max(Duration::from_millis(10))).await;
}
