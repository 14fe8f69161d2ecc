//! The shared tier on Redis, Valkey or a Redis Cluster, through the `redis` crate.
//!
//! Why `redis` (redis-rs): it is the client Redis itself maintains, its `ConnectionManager`
//! multiplexes one connection per server and reconnects on its own, and its cluster client
//! follows slot redirections and topology changes; both are built without connecting, so an
//! instance starts (and serves) while Redis is down. `fred` does as much but brings its own
//! pooling and runtime layer that this proxy has no use for.
//!
//! Layout: a URL is one hash, `{prefix}r:{url}`, with field `r` for a response without `Vary`,
//! or field `i` for the names its responses vary on and one field per variant
//! ([`super::codec::variant_field`]). One key per URL keeps a purge of a URL one `DEL` (all
//! its variants go with it) and keeps every record of a URL in one cluster slot, so the
//! scripts below touch one key. The fill lock of a URL is `{prefix}l:{url}`; events go on the
//! channel `{prefix}events`.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, RedisError, RedisFuture, Value};

use super::tier::{Put, SharedTier, TierError, TierFuture, UrlRecord};
use crate::policy::purge::PurgeTarget;

/// Where the shared tier is: one server, or the seed nodes of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `redis://host:port[/db]`.
    Single(String),
    /// `redis+cluster://h1:p1,h2:p2,...`, as one `redis://` URL per seed node.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// Parses `--shared`: `redis://host[:port][/db]` or `redis+cluster://h1[:p1],h2[:p2],...`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = |why: &str| format!("invalid --shared {s:?}: {why}");
        if let Some(nodes) = s.strip_prefix("redis+cluster://") {
            let nodes: Vec<String> = nodes
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| format!("redis://{}", n.trim_end_matches('/')))
                .collect();
            if nodes.is_empty() {
                return Err(bad(
                    "no nodes; expected redis+cluster://host:port,host:port",
                ));
            }
            for node in &nodes {
                redis::Client::open(node.as_str()).map_err(|e| bad(&e.to_string()))?;
            }
            Ok(RedisTarget::Cluster(nodes))
        } else if s.starts_with("redis://") {
            redis::Client::open(s).map_err(|e| bad(&e.to_string()))?;
            Ok(RedisTarget::Single(s.to_string()))
        } else {
            Err(bad(
                "expected redis://host:port or redis+cluster://host:port,host:port",
            ))
        }
    }
}

/// One server's manager or the cluster's connection; both are cheap clones of a multiplexed
/// connection, so each call clones one and no lock is taken.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Writes a response or variant and extends the URL's expiry. KEYS[1] the URL's hash; ARGV:
/// ttl in ms, mode (`r` response, `v` variant), the time the fill's request was sent (ms since
/// the epoch), then for `r` the record, for `v` the names, the field and the record.
///
/// - A purge of the URL leaves a tombstone (field `t`, the purge time): a write whose request
///   was sent before it is refused, so a fill that was on its way when the URL was purged (its
///   write queued, or in flight) cannot bring the purged response back.
/// - A response replaces the URL's records; a variant replaces them when the URL's names
///   differ from its own, and is refused when the URL already holds [`MAX_VARIANTS`] others (a
///   client sending endless distinct values of a varied-on header cannot grow one key without
///   bound; deleting such a key would block Redis).
/// - `#!lua` (Redis 7 and later, Valkey) makes Redis treat the script as a write and refuse it
///   whole when it is over `maxmemory` with `noeviction`: a script without it is refused only if
///   its first write needs memory, and this one may start with an `UNLINK`, after which Redis
///   would let the `HSET` through past the operator's limit.
const PUT: &str = r#"#!lua
local ttl = tonumber(ARGV[1])
local purged = redis.call('HGET', KEYS[1], 't')
if purged and tonumber(purged) >= tonumber(ARGV[3]) then return 0 end
if ARGV[2] == 'r' then
  redis.call('UNLINK', KEYS[1])
  redis.call('HSET', KEYS[1], 'r', ARGV[4])
else
  if redis.call('HGET', KEYS[1], 'i') ~= ARGV[4] then
    redis.call('UNLINK', KEYS[1])
  elseif redis.call('HEXISTS', KEYS[1], ARGV[5]) == 0 and redis.call('HLEN', KEYS[1]) > tonumber(ARGV[7]) then
    return 0
  end
  redis.call('HSET', KEYS[1], 'i', ARGV[4], ARGV[5], ARGV[6])
end
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"#;

/// Variants kept per URL at most.
pub const MAX_VARIANTS: usize = 64;

/// How long a URL purge's tombstone refuses older writes: longer than a fill can take from its
/// request to its write (upstream timeout, queue, write timeout) in any sane configuration.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(120);

/// Purges one URL: its records go, a tombstone with the purge time (ARGV[1], ms since the
/// epoch) stays for ARGV[2] ms. Returns 1 when the URL held a response or variants. Allowed
/// over `maxmemory`: a purge must work on a full Redis, and the tombstone is a few bytes.
const PURGE_URL: &str = r#"#!lua flags=allow-oom
local held = (redis.call('HEXISTS', KEYS[1], 'r') == 1 or redis.call('HEXISTS', KEYS[1], 'i') == 1) and 1 or 0
redis.call('UNLINK', KEYS[1])
redis.call('HSET', KEYS[1], 't', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return held
"#;

/// Deletes the lock KEYS[1] only if ARGV[1] holds it; allowed over `maxmemory` (it frees memory,
/// and a lock left behind makes other instances wait out its ttl).
const UNLOCK: &str = r#"#!lua flags=allow-oom
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Keys a scan asks for per call, and keys deleted per `DEL`.
const SCAN_BATCH: usize = 512;

/// The Redis implementation of [`SharedTier`].
pub struct RedisTier {
    conn: Conn,
    target: RedisTarget,
    prefix: String,
    channel: String,
}

/// No Nagle delay (a lookup is one small write that waits for its answer); a connection whose
/// data goes unacknowledged for 2 s is dropped, and an idle one (the event subscription) is
/// probed by TCP keepalive after 5 s: a Redis host that vanished without a reset turns into a
/// connection error within seconds, which the client reconnects on and the subscriber
/// resubscribes after, instead of calls that time out, or a subscription that waits, forever.
fn tcp_settings() -> redis::io::tcp::TcpSettings {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(5))
        .with_interval(Duration::from_secs(1))
        .with_retries(3);
    redis::io::tcp::TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive)
        .set_user_timeout(Duration::from_secs(2))
}

fn classify(e: RedisError) -> TierError {
    if e.is_timeout() {
        TierError::Timeout
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        TierError::Unreachable(Box::new(e))
    } else {
        TierError::Refused(Box::new(e))
    }
}

impl RedisTier {
    /// A tier on `target` whose keys start with `prefix`. Nothing is connected yet: the first
    /// call connects, and a Redis that is down costs calls their timeout, not start-up.
    pub fn new(
        target: RedisTarget,
        prefix: &str,
        connect_timeout: Duration,
    ) -> Result<Self, TierError> {
        let conn = match &target {
            RedisTarget::Single(url) => {
                let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())
                    .map_err(|e| TierError::Refused(e.into()))?
                    .set_tcp_settings(tcp_settings());
                let client = redis::Client::open(info).map_err(|e| TierError::Refused(e.into()))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Conn::Single(
                    ConnectionManager::new_lazy_with_config(client, config)
                        .map_err(|e| TierError::Refused(e.into()))?,
                )
            }
            RedisTarget::Cluster(nodes) => {
                let client = ClusterClient::builder(nodes.clone())
                    .tcp_settings(tcp_settings())
                    .connection_timeout(connect_timeout)
                    .retries(1)
                    .build()
                    .map_err(|e| TierError::Refused(e.into()))?;
                let config =
                    redis::cluster::ClusterConfig::new().set_connection_timeout(connect_timeout);
                Conn::Cluster(client.get_pending_async_connection_with_config(config))
            }
        };
        Ok(RedisTier {
            conn,
            target,
            prefix: prefix.to_string(),
            channel: format!("{prefix}events"),
        })
    }

    fn url_key(&self, url: &str) -> String {
        format!("{}r:{url}", self.prefix)
    }

    fn lock_key(&self, url: &str) -> String {
        format!("{}l:{url}", self.prefix)
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, TierError> {
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn).await.map_err(classify)
    }

    /// The masters of a cluster, as `(host, port)`, from `CLUSTER NODES`.
    async fn masters(&self, conn: &mut ClusterConnection) -> Result<Vec<(String, u16)>, TierError> {
        let nodes = conn
            .route_command(
                redis::cmd("CLUSTER").arg("NODES").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await
            .map_err(classify)?;
        let text: String = redis::from_redis_value(nodes)
            .map_err(|e| TierError::Refused(Box::new(RedisError::from(e))))?;
        Ok(parse_masters(&text))
    }

    /// Every URL key on one node (or the single server) that `target` picks.
    async fn scan(
        &self,
        node: Option<(String, u16)>,
        target: &PurgeTarget,
    ) -> Result<Vec<String>, TierError> {
        let pattern = format!(
            "{}r:{}",
            crate::policy::purge::glob_escape(&self.prefix),
            target.glob()
        );
        let strip = self.prefix.len() + 2;
        let mut cursor: u64 = 0;
        let mut found = Vec::new();
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH);
            let (next, keys): (u64, Vec<String>) = match (&self.conn, &node) {
                (Conn::Cluster(c), Some((host, port))) => {
                    let mut c = c.clone();
                    let value = c
                        .route_command(
                            cmd,
                            RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                                host: host.clone(),
                                port: *port,
                            }),
                        )
                        .await
                        .map_err(classify)?;
                    redis::from_redis_value(value)
                        .map_err(|e| TierError::Refused(Box::new(RedisError::from(e))))?
                }
                _ => self.query(&cmd).await?,
            };
            found.extend(
                keys.into_iter()
                    .filter(|k| k.get(strip..).is_some_and(|url| target.picks(url))),
            );
            cursor = next;
            if cursor == 0 {
                return Ok(found);
            }
        }
    }
}

/// `(host, port)` of every master that is not failing, from `CLUSTER NODES` output.
fn parse_masters(text: &str) -> Vec<(String, u16)> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
                return None;
            }
            let addr = fields.get(1)?.split('@').next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some((host.to_string(), port.parse().ok()?))
        })
        .collect()
}

impl SharedTier for RedisTier {
    fn lookup<'a>(&'a self, url: &'a str) -> TierFuture<'a, UrlRecord> {
        Box::pin(async move {
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(self.url_key(url)).arg("r").arg("i");
            match self.query::<(Option<Bytes>, Option<Bytes>)>(&cmd).await {
                Ok((response, names)) => Ok(UrlRecord { response, names }),
                Err(TierError::Refused(e)) if is_wrong_type(&*e) => {
                    // Another program's value under our key: not ours to serve, and in the way.
                    self.query::<()>(redis::cmd("DEL").arg(self.url_key(url)))
                        .await?;
                    Ok(UrlRecord::default())
                }
                Err(e) => Err(e),
            }
        })
    }

    fn lookup_variant<'a>(&'a self, url: &'a str, field: &'a str) -> TierFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            self.query(redis::cmd("HGET").arg(self.url_key(url)).arg(field))
                .await
        })
    }

    fn put<'a>(&'a self, url: &'a str, put: Put, ttl: Duration) -> TierFuture<'a, ()> {
        Box::pin(async move {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(PUT)
                .arg(1)
                .arg(self.url_key(url))
                .arg(ttl.as_millis().max(1) as u64);
            match &put {
                Put::Response { record, sent_ms } => cmd.arg("r").arg(sent_ms).arg(&record[..]),
                Put::Variant {
                    names,
                    field,
                    record,
                    sent_ms,
                } => cmd
                    .arg("v")
                    .arg(sent_ms)
                    .arg(&names[..])
                    .arg(field)
                    .arg(&record[..])
                    .arg(MAX_VARIANTS),
            };
            self.query::<()>(&cmd).await
        })
    }

    fn forget<'a>(&'a self, url: &'a str, field: Option<&'a str>) -> TierFuture<'a, ()> {
        Box::pin(async move {
            match field {
                Some(field) => {
                    self.query(redis::cmd("HDEL").arg(self.url_key(url)).arg(field))
                        .await
                }
                None => {
                    self.query(redis::cmd("UNLINK").arg(self.url_key(url)))
                        .await
                }
            }
        })
    }

    fn remove<'a>(&'a self, target: &'a PurgeTarget) -> TierFuture<'a, u64> {
        Box::pin(async move {
            if let Some(url) = target.single_key() {
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(PURGE_URL)
                    .arg(1)
                    .arg(self.url_key(url))
                    .arg(now_ms)
                    .arg(TOMBSTONE_TTL.as_millis() as u64);
                return self.query(&cmd).await;
            }
            let nodes: Vec<Option<(String, u16)>> = match &self.conn {
                Conn::Single(_) => vec![None],
                Conn::Cluster(c) => {
                    let mut c = c.clone();
                    self.masters(&mut c).await?.into_iter().map(Some).collect()
                }
            };
            let mut removed = 0u64;
            for node in nodes {
                let keys = self.scan(node, target).await?;
                for batch in keys.chunks(SCAN_BATCH) {
                    // UNLINK: the memory is freed off Redis's main thread.
                    let n: u64 = self.query(redis::cmd("UNLINK").arg(batch)).await?;
                    removed += n;
                }
            }
            Ok(removed)
        })
    }

    fn try_lock<'a>(&'a self, url: &'a str, token: &'a str, ttl: Duration) -> TierFuture<'a, bool> {
        Box::pin(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.lock_key(url))
                .arg(token)
                .arg("NX")
                .arg("PX")
                .arg(ttl.as_millis().max(1) as u64);
            let set: Option<String> = self.query(&cmd).await?;
            Ok(set.is_some())
        })
    }

    fn unlock<'a>(&'a self, url: &'a str, token: &'a str) -> TierFuture<'a, ()> {
        Box::pin(async move {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(UNLOCK).arg(1).arg(self.lock_key(url)).arg(token);
            self.query::<()>(&cmd).await
        })
    }

    fn publish<'a>(&'a self, event: Bytes) -> TierFuture<'a, ()> {
        Box::pin(async move {
            self.query::<()>(redis::cmd("PUBLISH").arg(&self.channel).arg(&event[..]))
                .await
        })
    }

    fn subscribe(&self) -> TierFuture<'_, futures_util::stream::BoxStream<'static, Bytes>> {
        Box::pin(async move {
            // A cluster forwards every PUBLISH to all its nodes, so one subscription on any node
            // that answers sees every instance's events.
            let nodes = match &self.target {
                RedisTarget::Single(url) => vec![url.clone()],
                RedisTarget::Cluster(nodes) => nodes.clone(),
            };
            let mut last = None;
            for node in nodes {
                let attempt = async {
                    let info = redis::IntoConnectionInfo::into_connection_info(node.as_str())
                        .map_err(classify)?
                        .set_tcp_settings(tcp_settings());
                    let client = redis::Client::open(info).map_err(classify)?;
                    let mut pubsub = client.get_async_pubsub().await.map_err(classify)?;
                    pubsub.subscribe(&self.channel).await.map_err(classify)?;
                    Ok::<_, TierError>(pubsub)
                };
                // Each node gets its own bound, so a seed host that swallows packets does not
                // keep the others from being tried.
                let attempt = tokio::time::timeout(Duration::from_secs(2), attempt);
                match attempt.await.unwrap_or(Err(TierError::Timeout)) {
                    Ok(pubsub) => {
                        let stream = pubsub
                            .into_on_message()
                            .map(|msg| Bytes::copy_from_slice(msg.get_payload_bytes()));
                        return Ok(stream.boxed());
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or(TierError::Timeout))
        })
    }

    fn ping(&self) -> TierFuture<'_, ()> {
        Box::pin(async move {
            let pong: String = self.query(&redis::cmd("PING")).await?;
            if pong == "PONG" {
                Ok(())
            } else {
                Err(TierError::Refused(format!("PING answered {pong:?}").into()))
            }
        })
    }
}

fn is_wrong_type(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<RedisError>()
        .and_then(RedisError::code)
        .is_some_and(|c| c == "WRONGTYPE")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_urls_parse_or_say_what_is_wrong() {
        assert_eq!(
            RedisTarget::parse("redis://127.0.0.1:6379"),
            Ok(RedisTarget::Single("redis://127.0.0.1:6379".into()))
        );
        assert_eq!(
            RedisTarget::parse("redis+cluster://a:1, b:2"),
            Ok(RedisTarget::Cluster(vec![
                "redis://a:1".into(),
                "redis://b:2".into()
            ]))
        );
        for bad in ["http://x", "redis+cluster://", "localhost:6379"] {
            let e = RedisTarget::parse(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn masters_are_read_from_cluster_nodes() {
        let text = "\
a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:30002@40002 master - 0 0 2 connected 5461-10922
c3 127.0.0.1:30003@40003 slave a1 0 0 1 connected
d4 127.0.0.1:30004@40004 master,fail - 0 0 3 disconnected
";
        assert_eq!(
            parse_masters(text),
            vec![
                ("127.0.0.1".to_string(), 30001),
                ("127.0.0.1".to_string(), 30002)
            ]
        );
    }
}
