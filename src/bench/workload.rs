//! What the benchmark asks for: the YCSB core workloads A–F, a custom mix, PING,
//! and the sizes of values.

use rand::Rng;

use super::keygen::{KeyChooser, Zipfian};

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpType {
    Read,
    Update,
    Insert,
    Scan,
    ReadModifyWrite,
    Delete,
    Ping,
    /// MPUT of the chosen key and a companion key on the same shard: a
    /// single-shard transaction (RESP: MSET).
    Txn1,
    /// MPUT of the chosen key and a companion key on another shard: two-phase
    /// commit (RESP: MSET).
    Txn2,
}

impl OpType {
    pub const ALL: [OpType; 9] = [
        OpType::Read,
        OpType::Update,
        OpType::Insert,
        OpType::Scan,
        OpType::ReadModifyWrite,
        OpType::Delete,
        OpType::Ping,
        OpType::Txn1,
        OpType::Txn2,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpType::Read => "read",
            OpType::Update => "update",
            OpType::Insert => "insert",
            OpType::Scan => "scan",
            OpType::ReadModifyWrite => "rmw",
            OpType::Delete => "delete",
            OpType::Ping => "ping",
            OpType::Txn1 => "txn1",
            OpType::Txn2 => "txn2",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Operation proportions (they sum to 1).
#[derive(Clone, Debug, PartialEq)]
pub struct Mix(pub Vec<(OpType, f64)>);

impl Mix {
    pub fn pick(&self, rng: &mut impl Rng) -> OpType {
        let mut u: f64 = rng.gen();
        for (op, p) in &self.0 {
            if u < *p {
                return *op;
            }
            u -= p;
        }
        self.0.last().map_or(OpType::Read, |(op, _)| *op)
    }

    /// Parse `get=0.9,put=0.1` (names: get/read, put/update, insert, scan, rmw,
    /// del/delete, ping, txn1, txn2).
    pub fn parse(s: &str) -> Result<Mix, String> {
        let mut parts = Vec::new();
        for item in s.split(',') {
            let (name, p) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?}: expected NAME=FRACTION"))?;
            let op = match name.trim() {
                "get" | "read" => OpType::Read,
                "put" | "update" => OpType::Update,
                "insert" => OpType::Insert,
                "scan" => OpType::Scan,
                "rmw" => OpType::ReadModifyWrite,
                "del" | "delete" => OpType::Delete,
                "ping" => OpType::Ping,
                "txn1" => OpType::Txn1,
                "txn2" => OpType::Txn2,
                other => return Err(format!("unknown operation {other:?}")),
            };
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("{item:?}: bad fraction"))?;
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{item:?}: fraction out of [0, 1]"));
            }
            parts.push((op, p));
        }
        let total: f64 = parts.iter().map(|(_, p)| p).sum();
        if (total - 1.0).abs() > 1e-6 {
            return Err(format!("fractions sum to {total}, not 1"));
        }
        Ok(Mix(parts))
    }
}

#[derive(Clone, Debug)]
pub struct Workload {
    pub name: String,
    pub mix: Mix,
    pub chooser: KeyChooser,
    /// Largest scan length (uniform in 1..=max), YCSB E.
    pub scan_max: u32,
}

/// Which distribution picks existing keys.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Distribution {
    Uniform,
    Zipfian,
    Latest,
}

impl std::str::FromStr for Distribution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uniform" => Ok(Distribution::Uniform),
            "zipfian" => Ok(Distribution::Zipfian),
            "latest" => Ok(Distribution::Latest),
            other => Err(format!(
                "unknown distribution {other:?} (uniform, zipfian, latest)"
            )),
        }
    }
}

/// The YCSB core workload `name` (A–F), `ping`, or `custom` with `mix`.
pub fn workload(
    name: &str,
    mix: Option<&str>,
    dist: Option<Distribution>,
    theta: f64,
    keys: u64,
) -> Result<Workload, String> {
    use OpType::*;
    let (mix, default_dist) = match name.to_ascii_uppercase().as_str() {
        "A" => (Mix(vec![(Read, 0.5), (Update, 0.5)]), Distribution::Zipfian),
        "B" => (
            Mix(vec![(Read, 0.95), (Update, 0.05)]),
            Distribution::Zipfian,
        ),
        "C" => (Mix(vec![(Read, 1.0)]), Distribution::Zipfian),
        "D" => (
            Mix(vec![(Read, 0.95), (Insert, 0.05)]),
            Distribution::Latest,
        ),
        "E" => (
            Mix(vec![(Scan, 0.95), (Insert, 0.05)]),
            Distribution::Zipfian,
        ),
        "F" => (
            Mix(vec![(Read, 0.5), (ReadModifyWrite, 0.5)]),
            Distribution::Zipfian,
        ),
        "PING" => (Mix(vec![(Ping, 1.0)]), Distribution::Uniform),
        "CUSTOM" => {
            let m = mix.ok_or("--workload custom needs --mix, e.g. --mix get=0.9,put=0.1")?;
            (Mix::parse(m)?, Distribution::Zipfian)
        }
        other => return Err(format!("unknown workload {other:?} (A-F, ping, custom)")),
    };
    let z = || Zipfian::new(keys.max(2), theta);
    let chooser = match dist.unwrap_or(default_dist) {
        Distribution::Uniform => KeyChooser::Uniform { items: keys },
        Distribution::Zipfian => KeyChooser::Zipfian(z()),
        Distribution::Latest => KeyChooser::Latest(z()),
    };
    Ok(Workload {
        name: name.to_ascii_uppercase(),
        mix,
        chooser,
        scan_max: 100,
    })
}

/// Value sizes: fixed or uniform in a range.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ValueSize {
    pub min: usize,
    pub max: usize,
}

impl std::str::FromStr for ValueSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parse = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| format!("bad value size {t:?}"))
        };
        let (min, max) = match s.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => (parse(s)?, parse(s)?),
        };
        if min > max || max > 16 << 20 {
            return Err(format!("value size {s}: need MIN <= MAX <= 16 MiB"));
        }
        Ok(ValueSize { min, max })
    }
}

impl ValueSize {
    pub fn pick(&self, rng: &mut impl Rng) -> usize {
        if self.min == self.max {
            self.min
        } else {
            rng.gen_range(self.min..=self.max)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_ycsb_mix_matches_its_proportions() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for name in ["A", "B", "C", "D", "E", "F"] {
            let w = workload(name, None, None, 0.99, 1000).unwrap();
            let n = 100_000;
            let mut counts = std::collections::HashMap::new();
            for _ in 0..n {
                *counts.entry(w.mix.pick(&mut rng)).or_insert(0u64) += 1;
            }
            for (op, p) in &w.mix.0 {
                let got = counts.get(op).copied().unwrap_or(0) as f64 / n as f64;
                assert!(
                    (got - p).abs() < 0.01,
                    "workload {name}: {op:?} at {got}, expected {p}"
                );
            }
        }
    }

    #[test]
    fn custom_mix_parses_and_validates() {
        let m = Mix::parse("get=0.9,put=0.1").unwrap();
        assert_eq!(m.0, vec![(OpType::Read, 0.9), (OpType::Update, 0.1)]);
        assert!(Mix::parse("get=0.9").is_err());
        assert!(Mix::parse("fly=1").is_err());
        assert_eq!(
            "100-200".parse::<ValueSize>().unwrap(),
            ValueSize { min: 100, max: 200 }
        );
    }
}
