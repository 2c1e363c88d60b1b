//! The gateway's one subscriber connection.
//!
//! One task owns it. It applies subscription changes (in batches: one pipeline of
//! single-channel `(S)SUBSCRIBE` / `(S)UNSUBSCRIBE` commands, each answered by exactly one
//! confirmation; in a Redis Cluster one concurrent call per channel, each to the node
//! owning the channel's slot), delivers messages, pings to notice a dead peer (in a
//! cluster: every node), and reconnects with backoff. After a reconnect it subscribes
//! every channel the local sessions need again, asks the lease task for an immediate
//! heartbeat (which notices a Redis that lost its data and rebuilds, or writes back this
//! node's entries), and once Redis has answered without failure for a lease (time enough
//! for every live gateway to rebuild) re-reads the presence of every watched user and
//! delivers it, to repair what was missed while disconnected. A user found without a
//! record is looked at again a lease later and only then reported offline, so a record
//! its gateway is still writing back does not show as a sign-out.
//!
//! Messages, subscription changes and that re-read are handled one at a time by this one
//! task, so a re-read snapshot is never delivered after a message published later.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use ::redis::{Msg, PushInfo, PushKind};
use butterfly_core::Email;
use butterfly_core::bus::{BusError, Event};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::conn::Conn;
use super::{Channel, Inner, READ_BATCH, bounded, parse_record};

/// First and longest wait between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Subscription commands per pipeline.
const SUBSCRIBE_BATCH: usize = 512;

pub(super) type Subscriber = (Conn, UnboundedReceiver<PushInfo>);

/// Why a connection's loop ended.
enum Ended {
    Stopped,
    Lost(String),
}

pub(super) async fn run(inner: Arc<Inner>, first: Subscriber, stop: CancellationToken) {
    let mut next = Some(first);
    let mut backoff = BACKOFF_MIN;
    // Set while Redis is unreachable: one warning per outage, not one per attempt.
    let mut outage: Option<Instant> = None;
    let mut reconnected = false;
    loop {
        let subscriber = match next.take() {
            Some(s) => s,
            None => match inner.target.subscriber().await {
                Ok(s) => s,
                Err(e) => {
                    if outage.is_none() {
                        tracing::warn!(error = %e, "Redis subscriber cannot connect; retrying with backoff");
                        outage = Some(Instant::now());
                    }
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
        };
        inner.subscriber_connects.fetch_add(1, Ordering::Relaxed);
        {
            // A new connection has no subscriptions: want them all again.
            let mut state = inner.state();
            state.subscribed.clear();
            let want: Vec<Channel> = state.want.iter().cloned().collect();
            state.dirty.extend(want);
            state.generation += 1;
        }
        let resync_at = if reconnected {
            inner.repair.store(true, Ordering::SeqCst);
            inner.heartbeat_now.notify_one();
            Some(Instant::now() + inner.config.lease)
        } else {
            None
        };
        let ended = connected(&inner, subscriber, resync_at, &stop, &mut outage).await;
        inner.live.store(false, Ordering::SeqCst);
        match ended {
            Ended::Stopped => return,
            Ended::Lost(reason) => {
                if outage.is_none() {
                    tracing::warn!(reason, "Redis subscriber connection lost; reconnecting");
                    outage = Some(Instant::now());
                    backoff = BACKOFF_MIN;
                } else {
                    // Connected but could not resubscribe: keep backing off.
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                reconnected = true;
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
            }
        }
    }
}

/// Serve one connection until it fails or the bus stops.
async fn connected(
    inner: &Inner,
    (mut conn, mut rx): Subscriber,
    resync_at: Option<Instant>,
    stop: &CancellationToken,
    outage: &mut Option<Instant>,
) -> Ended {
    if let Err(e) = sync(inner, &mut conn).await {
        return Ended::Lost(e.to_string());
    }
    inner.live.store(true, Ordering::SeqCst);
    if let Some(since) = outage.take() {
        tracing::info!(
            outage = ?since.elapsed(),
            "Redis subscriber reconnected and resubscribed"
        );
    }
    let every = inner.config.heartbeat_every();
    let mut ping = tokio::time::interval_at(Instant::now() + every, every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let resync = tokio::time::sleep_until(resync_at.unwrap_or_else(Instant::now));
    tokio::pin!(resync);
    let mut resync_armed = resync_at.is_some();
    // Watched users the re-read found no record for, checked once more a lease later.
    let mut recheck: Vec<Email> = Vec::new();
    let confirm = tokio::time::sleep_until(Instant::now());
    tokio::pin!(confirm);
    let mut confirm_armed = false;
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return Ended::Stopped,
            () = inner.resubscribe.notified() => {
                if let Err(e) = sync(inner, &mut conn).await {
                    return Ended::Lost(e.to_string());
                }
            }
            push = rx.recv() => match push {
                None => return Ended::Lost("connection closed".to_owned()),
                Some(push) if push.kind == PushKind::Disconnection => {
                    return Ended::Lost("disconnected".to_owned());
                }
                Some(push) => on_push(inner, push),
            },
            _ = ping.tick() => {
                let pong = bounded("subscriber ping", ::redis::cmd("PING").query_async::<::redis::Value>(&mut conn)).await;
                if let Err(e) = pong {
                    return Ended::Lost(e.to_string());
                }
            }
            () = &mut resync, if resync_armed => {
                // Not while Redis is still failing (a cluster node coming back answers
                // CLUSTERDOWN for a while): a lease after the last failure, so the
                // gateways that own the missed users have rewritten their records.
                let failed = *inner.last_failure.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(quiet) = failed.map(|f| f + inner.config.lease).filter(|&q| q > Instant::now()) {
                    resync.as_mut().reset(quiet);
                    continue;
                }
                resync_armed = false;
                match reread(inner, watched(inner), Missing::Recheck).await {
                    Ok(missing) if missing.is_empty() => {}
                    Ok(missing) => {
                        recheck = missing;
                        confirm.as_mut().reset(Instant::now() + inner.config.lease);
                        confirm_armed = true;
                    }
                    // Failed: try again (after a lease without failures).
                    Err(()) => {
                        resync.as_mut().reset(Instant::now());
                        resync_armed = true;
                    }
                }
            }
            () = &mut confirm, if confirm_armed => {
                confirm_armed = false;
                let still: Vec<Email> = {
                    let state = inner.state();
                    std::mem::take(&mut recheck)
                        .into_iter()
                        .filter(|u| state.want.contains(&Channel::Pres(u.clone())))
                        .collect()
                };
                let _ = reread(inner, still, Missing::Offline).await;
            }
        }
    }
}

fn on_push(inner: &Inner, push: PushInfo) {
    // Subscription confirmations are copied here too; only messages matter.
    if !matches!(push.kind, PushKind::Message | PushKind::SMessage) {
        return;
    }
    if let Some(message) = Msg::from_push_info(push) {
        inner.on_message(message.get_channel_name(), message.get_payload_bytes());
    }
}

/// Bring the connection's subscriptions in line with what the local sessions want, then
/// acknowledge the generation that was applied.
async fn sync(inner: &Inner, conn: &mut Conn) -> Result<(), BusError> {
    let (changes, generation) = {
        let mut state = inner.state();
        let dirty = std::mem::take(&mut state.dirty);
        let changes: Vec<(Channel, bool)> = dirty
            .into_iter()
            .filter_map(|channel| {
                let want = state.want.contains(&channel);
                (want != state.subscribed.contains(&channel)).then_some((channel, want))
            })
            .collect();
        (changes, state.generation)
    };
    let sharded = inner.config.sharded_pubsub();
    for batch in changes.chunks(SUBSCRIBE_BATCH) {
        let names: Vec<(String, bool)> = batch
            .iter()
            .map(|(channel, want)| (inner.keys.channel(channel), *want))
            .collect();
        // On failure nothing is recorded: the next connection subscribes all it wants.
        conn.apply_subscriptions(&names, sharded).await?;
        let mut state = inner.state();
        for (channel, want) in batch {
            if *want {
                state.subscribed.insert(channel.clone());
            } else {
                state.subscribed.remove(channel);
            }
        }
    }
    inner.acked.send_replace(generation);
    Ok(())
}

/// The users some local session watches.
fn watched(inner: &Inner) -> Vec<Email> {
    inner
        .state()
        .want
        .iter()
        .filter_map(|c| match c {
            Channel::Pres(u) => Some(u.clone()),
            Channel::User(_) => None,
        })
        .collect()
}

/// What a re-read does about a watched user without a presence record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
    /// Return it for a second look: the gateway that owns the user may not have written
    /// its records back yet (a cluster node that restarted can answer `CLUSTERDOWN` for
    /// a while), and reporting the user offline now would show a sign-out that did not
    /// happen.
    Recheck,
    /// Deliver it as offline: it signed out while this gateway was not subscribed.
    Offline,
}

/// Deliver the current presence of `users` to their watchers (after a reconnect:
/// changes published while this gateway was not subscribed were missed). Returns the
/// users without a record when `missing` is [`Missing::Recheck`]; `Err` if Redis failed.
async fn reread(inner: &Inner, users: Vec<Email>, missing: Missing) -> Result<Vec<Email>, ()> {
    let mut absent = Vec::new();
    for chunk in users.chunks(READ_BATCH) {
        let keys: Vec<String> = chunk.iter().map(|u| inner.keys.presence(u)).collect();
        let mut conn = inner.conn.clone();
        let values = inner
            .run(
                "presence resync",
                ::redis::cmd("MGET")
                    .arg(&keys)
                    .query_async::<Vec<Option<Vec<u8>>>>(&mut conn),
            )
            .await
            .map_err(drop)?;
        for (user, value) in chunk.iter().zip(values) {
            let presence = value.as_deref().and_then(parse_record).map(Arc::new);
            if presence.is_none() && missing == Missing::Recheck {
                absent.push(user.clone());
                continue;
            }
            let sinks = inner.state().fanout.watcher_sinks(user);
            crate::fanout::deliver(
                &sinks,
                Event::Presence {
                    user: user.clone(),
                    presence,
                },
            );
        }
    }
    tracing::info!(
        users = users.len(),
        absent = absent.len(),
        ?missing,
        "Re-read watched presence after reconnecting"
    );
    Ok(absent)
}
