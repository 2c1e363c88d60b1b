//! The run's timeline and schedules, computed the same way by the coordinator and by every
//! worker from the same [`Plan`], so nobody has to tell anybody what happens when.
//!
//! Open loop: every action has a planned time from the start (the epoch); latencies count
//! from the planned time, so a server (or generator) that falls behind shows it instead of
//! slowing the schedule down.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How simulated users sign in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthMode {
    /// MSNP2–7 `USR MD5` (no password hashing on the server's side of the sign-in).
    Md5,
    /// The client's own way: MD5 for MSNP2–7, Passport 1.4 (`login2.srf`) for MSNP8–12,
    /// the token service (`RST.srf`; `RST2.srf` from MSNP16) for MSNP13+. The server checks
    /// the argon2id hash on every Passport sign-in.
    Passport,
    /// Tickets minted by the generator with the server's ticket secret (`USR TWN` for
    /// MSNP8–14, `USR SSO` with the MBI proof for MSNP15+; MD5 for MSNP2–7): the NS alone.
    Ticket { secret: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub manifest: PathBuf,
    /// Users `0..users` of the manifest take part.
    pub users: usize,
    /// The notification servers (gateways); user `u` signs in to `ns[u % ns.len()]`.
    pub ns: Vec<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub auth: AuthMode,
    /// `(dialect, percent)`.
    pub mix: Vec<(u8, u32)>,
    pub workers: usize,
    /// Source addresses; worker `w` uses every one whose position `% workers == w` (all of
    /// them when there are fewer addresses than workers).
    pub sources: Vec<IpAddr>,
    /// The planned start of the ramp, microseconds since the Unix epoch.
    pub epoch_us: u64,
    /// Sign-ins per second during the ramp.
    pub ramp_rate: f64,
    pub settle_secs: f64,
    pub steady_secs: f64,
    /// Presence changes per second (all users together) in the steady phase.
    pub presence_rate: f64,
    /// Switchboard chats started per second in the steady phase.
    pub chat_rate: f64,
    pub messages_per_chat: u32,
    /// How long after the steady phase notifications may still arrive and count.
    pub grace_secs: f64,
    pub churn_secs: f64,
    /// Sign-out + sign-in cycles per second in the churn phase.
    pub churn_rate: f64,
}

/// One scheduled action of the steady or churn phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The user's `seq`-th presence change (1-based).
    Change { user: u32, seq: u32 },
    /// Chat number `chat` from `user` to its `contact`-th contact.
    Chat { user: u32, chat: u32, contact: u32 },
    /// Sign out and sign in again.
    Churn { user: u32 },
}

impl Action {
    pub fn user(&self) -> u32 {
        match *self {
            Action::Change { user, .. } | Action::Chat { user, .. } | Action::Churn { user } => {
                user
            }
        }
    }
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn secs_us(s: f64) -> u64 {
    (s * 1e6).max(0.0) as u64
}

impl Plan {
    pub fn ns_of(&self, user: u32) -> SocketAddr {
        self.ns[user as usize % self.ns.len()]
    }

    pub fn owner(&self, user: u32) -> usize {
        user as usize % self.workers
    }

    pub fn sources_of(&self, worker: usize) -> Vec<IpAddr> {
        let mine: Vec<IpAddr> = self
            .sources
            .iter()
            .enumerate()
            .filter(|(i, _)| i % self.workers == worker)
            .map(|(_, a)| *a)
            .collect();
        if mine.is_empty() {
            self.sources.clone()
        } else {
            mine
        }
    }

    pub fn signin_at(&self, user: u32) -> u64 {
        self.epoch_us + secs_us(user as f64 / self.ramp_rate)
    }

    pub fn ramp_end(&self) -> u64 {
        self.epoch_us + secs_us(self.users as f64 / self.ramp_rate)
    }

    pub fn steady_start(&self) -> u64 {
        self.ramp_end() + secs_us(self.settle_secs)
    }

    pub fn steady_end(&self) -> u64 {
        self.steady_start() + secs_us(self.steady_secs)
    }

    /// When presence accounting stops: the steady phase plus the grace period.
    pub fn accounting_end(&self) -> u64 {
        self.steady_end() + secs_us(self.grace_secs)
    }

    pub fn churn_end(&self) -> u64 {
        self.accounting_end() + secs_us(self.churn_secs)
    }

    /// The drain: every user signs out. A grace period after the churn lets late
    /// notifications of the churn (its `FLN`s) arrive before the drain's own.
    pub fn drain_start(&self) -> u64 {
        self.churn_end() + secs_us(self.grace_secs)
    }

    /// Every scheduled action in time order: presence changes and chats in the steady
    /// phase, churn after the accounting window. Users are picked by prime strides so each
    /// phase spreads over all users.
    pub fn actions(&self, contacts_of: impl Fn(u32) -> u32) -> Vec<(u64, Action)> {
        let n = self.users as u64;
        let mut out = Vec::new();
        let mut seqs = vec![0u32; self.users];
        let changes = (self.presence_rate * self.steady_secs) as u64;
        for k in 0..changes {
            let user = ((k * 7919 + 13) % n) as u32;
            seqs[user as usize] += 1;
            let at = self.steady_start() + secs_us(k as f64 / self.presence_rate);
            out.push((
                at,
                Action::Change {
                    user,
                    seq: seqs[user as usize],
                },
            ));
        }
        let chats = (self.chat_rate * self.steady_secs) as u64;
        for j in 0..chats {
            let user = ((j * 104_729 + 7) % n) as u32;
            let degree = contacts_of(user);
            if degree == 0 {
                continue;
            }
            let at = self.steady_start() + secs_us(j as f64 / self.chat_rate);
            out.push((
                at,
                Action::Chat {
                    user,
                    chat: j as u32,
                    contact: (j % degree as u64) as u32,
                },
            ));
        }
        let churns = (self.churn_rate * self.churn_secs) as u64;
        for c in 0..churns {
            let user = ((c * 15_485_863 + 3) % n) as u32;
            let at = self.accounting_end() + secs_us(c as f64 / self.churn_rate);
            out.push((at, Action::Churn { user }));
        }
        out.sort_by_key(|(at, _)| *at);
        out
    }

    /// How many presence changes each user makes in the steady phase (its last `seq`).
    pub fn final_seqs(&self) -> Vec<u32> {
        let mut seqs = vec![0u32; self.users];
        let n = self.users as u64;
        for k in 0..(self.presence_rate * self.steady_secs) as u64 {
            seqs[((k * 7919 + 13) % n) as usize] += 1;
        }
        seqs
    }
}

/// Sleep until `at` (microseconds since the Unix epoch); returns at once if it passed.
pub async fn sleep_until_us(at: u64) {
    let now = now_us();
    if at > now {
        tokio::time::sleep(Duration::from_micros(at - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            manifest: PathBuf::new(),
            users: 100,
            ns: vec!["127.0.0.1:1863".parse().unwrap()],
            http: None,
            auth: AuthMode::Md5,
            mix: vec![(12, 100)],
            workers: 3,
            sources: vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()],
            epoch_us: 1_000_000,
            ramp_rate: 50.0,
            settle_secs: 1.0,
            steady_secs: 10.0,
            presence_rate: 20.0,
            chat_rate: 2.0,
            messages_per_chat: 3,
            grace_secs: 2.0,
            churn_secs: 5.0,
            churn_rate: 4.0,
        }
    }

    #[test]
    fn the_timeline_follows_the_rates() {
        let p = plan();
        assert_eq!(p.signin_at(50), 2_000_000);
        assert_eq!(p.ramp_end(), 3_000_000);
        assert_eq!(p.steady_start(), 4_000_000);
        assert_eq!(p.steady_end(), 14_000_000);
        assert_eq!(p.accounting_end(), 16_000_000);
        assert_eq!(p.churn_end(), 21_000_000);
    }

    #[test]
    fn actions_are_ordered_and_match_the_final_seqs() {
        let p = plan();
        let actions = p.actions(|_| 4);
        assert!(actions.windows(2).all(|w| w[0].0 <= w[1].0));
        let changes = actions
            .iter()
            .filter(|(_, a)| matches!(a, Action::Change { .. }))
            .count();
        assert_eq!(changes, 200);
        assert_eq!(p.final_seqs().iter().sum::<u32>(), 200);
        let chats = actions
            .iter()
            .filter(|(_, a)| matches!(a, Action::Chat { .. }))
            .count();
        assert_eq!(chats, 20);
        let churns: Vec<_> = actions
            .iter()
            .filter(|(_, a)| matches!(a, Action::Churn { .. }))
            .collect();
        assert_eq!(churns.len(), 20);
        assert!(churns.iter().all(|(at, _)| *at >= p.accounting_end()));
        // Each user's changes are numbered 1, 2, … in time order.
        let mut last = vec![0u32; 100];
        for (_, a) in &actions {
            if let Action::Change { user, seq } = a {
                assert_eq!(*seq, last[*user as usize] + 1);
                last[*user as usize] = *seq;
            }
        }
        assert_eq!(last, p.final_seqs());
    }

    #[test]
    fn sources_are_split_between_workers() {
        let p = plan();
        assert_eq!(
            p.sources_of(0),
            vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            p.sources_of(1),
            vec!["127.0.0.2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            p.sources_of(2).len(),
            2,
            "fewer addresses than workers: all"
        );
    }
}
