//! The simulated users and their contacts: generated from a few numbers and a seed, so the
//! seeding step and every worker derive the same graph without reading the database, and
//! every notification the server owes is known in advance.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The most contacts one user gets (the server's list limit is 1000).
pub const MAX_DEGREE: usize = 1000;

/// How many contacts each user has. Every contact is mutual (on both forward lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Degrees {
    /// Exactly `k` each (`k` even): user `i` knows `i±1 … i±k/2` (modulo the count).
    Fixed(usize),
    /// Heavy-tailed with mean about `k` (preferential attachment: each user joins `k/2`
    /// earlier ones, chosen in proportion to how many contacts they have), capped at
    /// [`MAX_DEGREE`].
    HeavyTailed(usize),
}

/// Users `0..n` and their contacts (sorted, no self, mutual).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    contacts: Vec<Vec<u32>>,
}

impl Graph {
    pub fn generate(users: usize, degrees: Degrees, seed: u64) -> anyhow::Result<Graph> {
        anyhow::ensure!(users >= 2, "at least 2 users");
        anyhow::ensure!(users <= u32::MAX as usize, "too many users");
        let mut contacts = vec![Vec::new(); users];
        match degrees {
            Degrees::Fixed(k) => {
                anyhow::ensure!(k % 2 == 0, "--contacts must be even for a fixed degree");
                anyhow::ensure!(k < users, "--contacts must be below --users");
                anyhow::ensure!(k <= MAX_DEGREE, "at most {MAX_DEGREE} contacts");
                for (i, list) in contacts.iter_mut().enumerate() {
                    for d in 1..=k / 2 {
                        list.push(((i + d) % users) as u32);
                        list.push(((i + users - d) % users) as u32);
                    }
                }
            }
            Degrees::HeavyTailed(k) => {
                let m = (k / 2).max(1);
                anyhow::ensure!(m < users, "--contacts must be below --users");
                let mut rng = StdRng::seed_from_u64(seed);
                // One entry per contact end: picking from it is picking by degree.
                let mut ends: Vec<u32> = Vec::with_capacity(users * m * 2);
                // Start with a small complete group so there is something to attach to.
                for a in 0..=m {
                    for b in 0..a {
                        link(&mut contacts, &mut ends, a as u32, b as u32);
                    }
                }
                for new in (m + 1)..users {
                    let mut joined = 0;
                    let mut tries = 0;
                    while joined < m && tries < m * 50 {
                        tries += 1;
                        let old = ends[rng.gen_range(0..ends.len())];
                        if old as usize == new
                            || contacts[old as usize].len() >= MAX_DEGREE
                            || contacts[new].contains(&old)
                        {
                            continue;
                        }
                        link(&mut contacts, &mut ends, new as u32, old);
                        joined += 1;
                    }
                }
            }
        }
        for list in &mut contacts {
            list.sort_unstable();
            list.dedup();
        }
        Ok(Graph { contacts })
    }

    pub fn users(&self) -> usize {
        self.contacts.len()
    }

    pub fn contacts(&self, user: usize) -> &[u32] {
        &self.contacts[user]
    }

    /// Every contact pair once (`a < b`).
    pub fn edges(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.contacts.iter().enumerate().flat_map(|(a, list)| {
            list.iter()
                .filter(move |&&b| (a as u32) < b)
                .map(move |&b| (a as u32, b))
        })
    }

    pub fn edge_count(&self) -> usize {
        self.contacts.iter().map(Vec::len).sum::<usize>() / 2
    }

    pub fn max_degree(&self) -> usize {
        self.contacts.iter().map(Vec::len).max().unwrap_or(0)
    }
}

fn link(contacts: &mut [Vec<u32>], ends: &mut Vec<u32>, a: u32, b: u32) {
    contacts[a as usize].push(b);
    contacts[b as usize].push(a);
    ends.push(a);
    ends.push(b);
}

/// Which dialect user `i` speaks: the mix (`(dialect, percent)`, percents summing to 100)
/// applied in order by position, spread evenly over the users.
pub fn dialect_of(mix: &[(u8, u32)], user: usize) -> u8 {
    // Position of the user in 0..100, spread so every range of users gets the mix.
    let slot = ((user as u64 * 61) % 100) as u32;
    let mut acc = 0;
    for &(d, pct) in mix {
        acc += pct;
        if slot < acc {
            return d;
        }
    }
    mix.last().map_or(12, |&(d, _)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mutual(g: &Graph) -> bool {
        (0..g.users()).all(|a| {
            g.contacts(a)
                .iter()
                .all(|&b| b as usize != a && g.contacts(b as usize).contains(&(a as u32)))
        })
    }

    #[test]
    fn fixed_degree_is_exact_and_mutual() {
        let g = Graph::generate(100, Degrees::Fixed(10), 1).unwrap();
        assert!((0..100).all(|u| g.contacts(u).len() == 10));
        assert!(mutual(&g));
        assert_eq!(g.edge_count(), 500);
        assert_eq!(g.edges().count(), 500);
        assert!(Graph::generate(100, Degrees::Fixed(9), 1).is_err());
    }

    #[test]
    fn heavy_tailed_is_reproducible_mutual_and_skewed() {
        let a = Graph::generate(5000, Degrees::HeavyTailed(20), 7).unwrap();
        let b = Graph::generate(5000, Degrees::HeavyTailed(20), 7).unwrap();
        assert_eq!(a, b, "the same seed gives the same graph");
        assert_ne!(
            a,
            Graph::generate(5000, Degrees::HeavyTailed(20), 8).unwrap()
        );
        assert!(mutual(&a));
        let mean = a.edge_count() * 2 / a.users();
        assert!((18..=21).contains(&mean), "mean degree {mean}");
        assert!(
            a.max_degree() > 5 * 20,
            "a heavy tail: max {}",
            a.max_degree()
        );
        assert!(a.max_degree() <= MAX_DEGREE);
    }

    #[test]
    fn the_dialect_mix_is_spread_by_percent() {
        let mix = [(7, 20), (12, 50), (18, 30)];
        let mut counts = [0usize; 3];
        for u in 0..1000 {
            match dialect_of(&mix, u) {
                7 => counts[0] += 1,
                12 => counts[1] += 1,
                18 => counts[2] += 1,
                d => panic!("dialect {d}"),
            }
        }
        assert_eq!(counts, [200, 500, 300]);
    }
}
