//! How a pipeline's stages are placed on a cluster: the executor a profile picks, the
//! `resources:` each stage's job asks for, and the `slurm:` settings of the driver.
//! None of it enters a stage's key: where a stage computed does not change its result.
//!
//! ```yaml
//! resources:
//!   default: { time: 1h, mem: 4G, cpus: 2, partition: cpu }
//!   train:   { partition: gpu, gpus: 1, time: 12h, mem: 32G, cpus: 8 }
//!   stages:  { ddpm: { time: 1-00:00:00 } }
//! slurm: { poll: 10s, array_limit: 100 }
//! ```

use std::collections::BTreeMap;

use serde::de::{Deserializer, Error as _, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::choices::{expected_one_of, named_choices, suggestion};
use crate::stages::StageKind;

named_choices! {
    /// Where a run's stages compute.
    pub enum ExecutorName {
        /// Threads of this process (the default).
        Local = "local",
        /// One Slurm job (or job array task) per stage, submitted from this machine.
        Slurm = "slurm",
    }
}

/// Stage kinds whose jobs get the GPUs of `default:`: the ones that run networks over
/// many steps. Datasets, schedules, models and evaluations stay small unless their own
/// entry asks for GPUs.
pub fn wants_gpus(kind: StageKind) -> bool {
    matches!(
        kind,
        StageKind::Train | StageKind::Sample | StageKind::Classifier
    )
}

/// What one stage's job asks Slurm for; every field may be left to the cluster's
/// defaults. Fields of a more specific entry (kind, then stage) replace the general ones.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPUs per task (`--cpus-per-task`), 1 or more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Count>,
    /// Memory per node (`--mem`): `4G`, `512M`, `16GB`, or a number of megabytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem: Option<Memory>,
    /// Wall-time limit (`--time`): `90m`, `12h`, `2d`, `1h30m`, or Slurm's own forms
    /// (`90`, `1:30:00`, `1-12:00:00`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<TimeLimit>,
    /// GPUs (`--gres=gpu:N`): a count, or `type:count` (`a100:2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Gpus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<Word>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<Word>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<Word>,
    /// Node features (`--constraint`), e.g. `a100|h100`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<Word>,
    /// Further sbatch options, each one `--option` or `--option=value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<SbatchOption>,
}

impl Resources {
    /// `self` with every field `over` sets replaced by `over`'s.
    pub fn overlaid(&self, over: &Resources) -> Resources {
        Resources {
            cpus: over.cpus.or(self.cpus),
            mem: over.mem.or(self.mem),
            time: over.time.or(self.time),
            gpus: over.gpus.clone().or_else(|| self.gpus.clone()),
            partition: over.partition.clone().or_else(|| self.partition.clone()),
            account: over.account.clone().or_else(|| self.account.clone()),
            qos: over.qos.clone().or_else(|| self.qos.clone()),
            constraint: over.constraint.clone().or_else(|| self.constraint.clone()),
            extra: if over.extra.is_empty() {
                self.extra.clone()
            } else {
                over.extra.clone()
            },
        }
    }

    /// Whether the job gets a GPU.
    pub fn has_gpus(&self) -> bool {
        self.gpus.as_ref().is_some_and(|g| g.count > 0)
    }

    /// The sbatch options, one per `#SBATCH` line.
    pub fn sbatch_options(&self) -> Vec<String> {
        let mut options = Vec::new();
        if let Some(c) = self.cpus {
            options.push(format!("--cpus-per-task={}", c.0));
        }
        if let Some(m) = self.mem {
            options.push(format!("--mem={}M", m.megabytes));
        }
        if let Some(t) = self.time {
            options.push(format!("--time={}", t.slurm()));
        }
        if let Some(g) = self.gpus.as_ref().filter(|g| g.count > 0) {
            options.push(match &g.kind {
                Some(kind) => format!("--gres=gpu:{kind}:{}", g.count),
                None => format!("--gres=gpu:{}", g.count),
            });
        }
        for (flag, value) in [
            ("partition", &self.partition),
            ("account", &self.account),
            ("qos", &self.qos),
            ("constraint", &self.constraint),
        ] {
            if let Some(v) = value {
                options.push(format!("--{flag}={}", v.0));
            }
        }
        options.extend(self.extra.iter().map(|o| o.0.clone()));
        options
    }
}

/// The `resources:` section: `default:`, then an entry per stage kind, then `stages:`
/// by stage id (every node of a swept stage).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ResourcesSpec {
    pub default: Resources,
    pub kinds: BTreeMap<StageKind, Resources>,
    pub stages: BTreeMap<String, Resources>,
}

impl ResourcesSpec {
    /// What a stage of `kind` named `id` asks for: `default` (its GPUs only for the
    /// kinds of [`wants_gpus`]), then its kind's entry, then its own.
    pub fn for_stage(&self, kind: StageKind, id: &str) -> Resources {
        let mut base = self.default.clone();
        if !wants_gpus(kind) {
            base.gpus = None;
        }
        let none = Resources::default();
        base.overlaid(self.kinds.get(&kind).unwrap_or(&none))
            .overlaid(self.stages.get(id).unwrap_or(&none))
    }

    /// `self` with a profile's section laid over it, entry by entry and field by field.
    pub fn overlaid(&self, over: &ResourcesSpec) -> ResourcesSpec {
        let mut merged = self.clone();
        merged.default = self.default.overlaid(&over.default);
        for (kind, r) in &over.kinds {
            let base = merged.kinds.remove(kind).unwrap_or_default();
            merged.kinds.insert(*kind, base.overlaid(r));
        }
        for (id, r) in &over.stages {
            let base = merged.stages.remove(id).unwrap_or_default();
            merged.stages.insert(id.clone(), base.overlaid(r));
        }
        merged
    }
}

impl<'de> Deserialize<'de> for ResourcesSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ResourcesSpec, D::Error> {
        struct Section;
        impl<'de> Visitor<'de> for Section {
            type Value = ResourcesSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping of `default`, stage kinds and `stages` to resources")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ResourcesSpec, A::Error> {
                let mut spec = ResourcesSpec::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "default" => spec.default = map.next_value()?,
                        "stages" => spec.stages = map.next_value()?,
                        other => match StageKind::from_name(other) {
                            Some(kind) => {
                                spec.kinds.insert(kind, map.next_value()?);
                            }
                            None => {
                                let mut names = vec!["default", "stages"];
                                names.extend(StageKind::NAMES);
                                return Err(A::Error::custom(format!(
                                    "unknown field `{other}`, {}{}",
                                    expected_one_of(&names),
                                    suggestion(other, names.iter().copied())
                                )));
                            }
                        },
                    }
                }
                Ok(spec)
            }
        }
        d.deserialize_map(Section)
    }
}

impl schemars::JsonSchema for ResourcesSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ResourcesSpec".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let resources = generator.subschema_for::<Resources>();
        let mut properties = serde_json::Map::new();
        properties.insert("default".into(), resources.clone().into());
        for name in StageKind::NAMES {
            properties.insert((*name).into(), resources.clone().into());
        }
        properties.insert(
            "stages".into(),
            serde_json::json!({ "type": "object", "additionalProperties": resources }),
        );
        schemars::json_schema!({
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
        })
    }
}

/// The driver's settings for Slurm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlurmSettings {
    /// How often to ask Slurm how the jobs are doing (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<TimeLimit>,
    /// Tasks of one job array running at once (`--array=0-N%LIMIT`, default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array_limit: Option<Count>,
}

impl SlurmSettings {
    pub const DEFAULT_POLL_SECONDS: u64 = 10;
    pub const DEFAULT_ARRAY_LIMIT: u32 = 100;

    pub fn overlaid(&self, over: &SlurmSettings) -> SlurmSettings {
        SlurmSettings {
            poll: over.poll.or(self.poll),
            array_limit: over.array_limit.or(self.array_limit),
        }
    }

    pub fn poll_seconds(&self) -> f64 {
        self.poll
            .map_or(Self::DEFAULT_POLL_SECONDS as f64, |t| t.seconds as f64)
    }

    pub fn array_limit(&self) -> u32 {
        self.array_limit.map_or(Self::DEFAULT_ARRAY_LIMIT, |c| c.0)
    }
}

/// Reads a scalar as text (YAML reads `90` as a number and `1:30:00` as a string, and
/// both are times), then `parse`s it; a bad value is an error at its line and column.
macro_rules! from_text {
    ($ty:ty, $what:literal, $parse:path) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                struct Text;
                impl Visitor<'_> for Text {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        $parse(v).map_err(E::custom)
                    }
                    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$ty, E> {
                        $parse(&v.to_string()).map_err(E::custom)
                    }
                    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<$ty, E> {
                        $parse(&v.to_string()).map_err(E::custom)
                    }
                    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<$ty, E> {
                        $parse(&v.to_string()).map_err(E::custom)
                    }
                }
                d.deserialize_any(Text)
            }
        }

        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": ["string", "integer"], "description": $what })
            }
        }
    };
}

/// A count of 1 or more (CPUs, array tasks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Count(pub u32);

fn parse_count(text: &str) -> Result<Count, String> {
    match text.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(Count(n)),
        _ => Err(format!(
            "`{text}` is not a count: write a whole number, 1 or more"
        )),
    }
}
from_text!(Count, "a whole number, 1 or more", parse_count);

impl Serialize for Count {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

/// Memory, held in megabytes (Slurm's unit for `--mem`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Memory {
    pub megabytes: u64,
}

fn parse_memory(text: &str) -> Result<Memory, String> {
    let bad = || {
        format!(
            "`{text}` is not an amount of memory: write a whole number with a unit, e.g. 512M, 4G, 16GB or 1T (a bare number is megabytes, as in Slurm)"
        )
    };
    let t = text.trim().to_ascii_uppercase();
    let t = t
        .strip_suffix("IB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(&t);
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let megabytes = match unit.trim() {
        "K" => Some(n.div_ceil(1024)),
        "" | "M" => Some(n),
        "G" => n.checked_mul(1024),
        "T" => n.checked_mul(1024 * 1024),
        _ => None,
    };
    match megabytes {
        Some(megabytes) if n > 0 => Ok(Memory { megabytes }),
        _ => Err(bad()),
    }
}
from_text!(
    Memory,
    "an amount of memory such as 4G or 512M",
    parse_memory
);

impl Serialize for Memory {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}M", self.megabytes))
    }
}

/// A duration, held in seconds: a job's time limit, the driver's poll interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeLimit {
    pub seconds: u64,
}

impl TimeLimit {
    /// Slurm's `D-HH:MM:SS`.
    pub fn slurm(&self) -> String {
        let s = self.seconds;
        let (days, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
        if days > 0 {
            format!("{days}-{h:02}:{m:02}:{sec:02}")
        } else {
            format!("{h:02}:{m:02}:{sec:02}")
        }
    }
}

/// Slurm's forms (`M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`) or numbers with units
/// (`45s`, `90m`, `12h`, `2d`, `1h30m`).
fn parse_time(text: &str) -> Result<TimeLimit, String> {
    let bad = || {
        format!(
            "`{text}` is not a time: write it with units (45s, 90m, 12h, 2d, 1h30m) or as Slurm does (90 minutes, 1:30:00, 1-12:00:00)"
        )
    };
    let t = text.trim();
    let number = |s: &str| -> Result<u64, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse::<u64>().map_err(|_| bad())
    };
    let seconds = if t.bytes().any(|b| b.is_ascii_alphabetic()) {
        let mut total = 0u64;
        let mut digits = String::new();
        let mut last_unit = u64::MAX;
        for c in t.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let unit = match c {
                'd' => 86400,
                'h' => 3600,
                'm' => 60,
                's' => 1,
                _ => return Err(bad()),
            };
            // Units from the largest down, each once: `1h30m`, not `30m1h` or `1h1h`.
            if unit >= last_unit {
                return Err(bad());
            }
            last_unit = unit;
            total = number(&digits)?
                .checked_mul(unit)
                .and_then(|v| v.checked_add(total))
                .ok_or_else(bad)?;
            digits.clear();
        }
        if !digits.is_empty() {
            return Err(bad());
        }
        total
    } else {
        let (days, rest) = match t.split_once('-') {
            Some((d, rest)) => (number(d)?, Some(rest)),
            None => (0, None),
        };
        let parts: Vec<u64> = rest
            .unwrap_or(t)
            .split(':')
            .map(number)
            .collect::<Result<_, _>>()?;
        let clock = match (rest.is_some(), parts.as_slice()) {
            (false, [m]) => m * 60,
            (false, [m, s]) => m * 60 + s,
            (false, [h, m, s]) | (true, [h, m, s]) => h * 3600 + m * 60 + s,
            (true, [h]) => h * 3600,
            (true, [h, m]) => h * 3600 + m * 60,
            _ => return Err(bad()),
        };
        days * 86400 + clock
    };
    if seconds == 0 {
        return Err(format!(
            "`{text}` is no time at all: a limit must be at least 1 second"
        ));
    }
    Ok(TimeLimit { seconds })
}
from_text!(
    TimeLimit,
    "a time such as 90m, 12h or 1-12:00:00",
    parse_time
);

impl Serialize for TimeLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.slurm())
    }
}

/// GPUs per job, optionally of one type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Gpus {
    pub kind: Option<String>,
    pub count: u32,
}

fn parse_gpus(text: &str) -> Result<Gpus, String> {
    let bad = || {
        format!(
            "`{text}` is not a number of GPUs: write a whole number (0 or more) or type:count, e.g. a100:2"
        )
    };
    let (kind, count) = match text.trim().rsplit_once(':') {
        Some((kind, count)) => (Some(kind), count),
        None => (None, text.trim()),
    };
    let count = count.parse::<u32>().map_err(|_| bad())?;
    if let Some(kind) = kind
        && (kind.is_empty()
            || !kind
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)))
    {
        return Err(bad());
    }
    Ok(Gpus {
        kind: kind.map(String::from),
        count,
    })
}
from_text!(Gpus, "a number of GPUs, or type:count", parse_gpus);

impl Serialize for Gpus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.kind {
            Some(kind) => s.serialize_str(&format!("{kind}:{}", self.count)),
            None => s.serialize_u32(self.count),
        }
    }
}

/// A name Slurm takes as one word (partition, account, qos, constraint): an `#SBATCH`
/// line ends at whitespace, so none is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Word(pub String);

fn parse_word(text: &str) -> Result<Word, String> {
    if text.is_empty()
        || text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "'\"\\".contains(c))
    {
        return Err(format!(
            "`{text}` is not a Slurm name: write one word, without spaces or quotes"
        ));
    }
    Ok(Word(text.to_string()))
}
from_text!(Word, "a name without spaces", parse_word);

impl Serialize for Word {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// One further sbatch option, `--option` or `--option=value`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SbatchOption(pub String);

/// Options the driver sets itself: a job that set them would not run the worker as
/// the driver expects (its log, name, array or directory).
const DRIVER_OPTIONS: &[&str] = &[
    "--array",
    "--output",
    "--error",
    "--job-name",
    "--chdir",
    "--parsable",
    "--wrap",
    "--dependency",
    "--open-mode",
];

fn parse_option(text: &str) -> Result<SbatchOption, String> {
    let name = text.split('=').next().unwrap_or_default();
    let well_formed = name.starts_with("--")
        && name.len() > 2
        && name[2..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !text.chars().any(|c| c.is_control());
    if !well_formed {
        return Err(format!(
            "`{text}` is not an sbatch option: write it as --option or --option=value, e.g. --exclusive or --mail-type=FAIL"
        ));
    }
    if DRIVER_OPTIONS.contains(&name) {
        return Err(format!(
            "`{name}` is set by runner itself for every job (its log, name, array and directory); remove it from `extra`"
        ));
    }
    Ok(SbatchOption(text.to_string()))
}
from_text!(
    SbatchOption,
    "an sbatch option such as --exclusive",
    parse_option
);

impl Serialize for SbatchOption {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(text: &str) -> Result<u64, String> {
        parse_time(text).map(|t| t.seconds)
    }

    #[test]
    fn times_read_in_units_and_in_slurms_forms() {
        assert_eq!(time("45s"), Ok(45));
        assert_eq!(time("90m"), Ok(5400));
        assert_eq!(time("12h"), Ok(43200));
        assert_eq!(time("2d"), Ok(172800));
        assert_eq!(time("1h30m"), Ok(5400));
        assert_eq!(time("90"), Ok(5400));
        assert_eq!(time("10:30"), Ok(630));
        assert_eq!(time("1:30:00"), Ok(5400));
        assert_eq!(time("1-12"), Ok(129600));
        assert_eq!(time("1-12:30"), Ok(131400));
        assert_eq!(time("1-00:00:01"), Ok(86401));
        for bad in [
            "25 hours", "", "h", "1h1h", "30m1h", "-5", "1:2:3:4", "0", "0m", "1.5h", "1-",
        ] {
            assert!(time(bad).is_err(), "{bad:?} read as {:?}", time(bad));
        }
        assert_eq!(TimeLimit { seconds: 5400 }.slurm(), "01:30:00");
        assert_eq!(TimeLimit { seconds: 131405 }.slurm(), "1-12:30:05");
    }

    #[test]
    fn memory_reads_slurms_units_and_refuses_the_rest() {
        let mb = |t: &str| parse_memory(t).map(|m| m.megabytes);
        assert_eq!(mb("512M"), Ok(512));
        assert_eq!(mb("4G"), Ok(4096));
        assert_eq!(mb("16GB"), Ok(16384));
        assert_eq!(mb("2gib"), Ok(2048));
        assert_eq!(mb("1T"), Ok(1048576));
        assert_eq!(mb("4096"), Ok(4096));
        assert_eq!(mb("2048K"), Ok(2));
        for bad in ["", "4 X", "-1G", "0", "0G", "1.5G", "G", "4P"] {
            assert!(mb(bad).is_err(), "{bad:?} read as {:?}", mb(bad));
        }
    }

    #[test]
    fn gpus_words_and_options_are_checked() {
        assert_eq!(
            parse_gpus("2").unwrap(),
            Gpus {
                kind: None,
                count: 2
            }
        );
        assert_eq!(
            parse_gpus("a100:1").unwrap(),
            Gpus {
                kind: Some("a100".into()),
                count: 1
            }
        );
        for bad in ["-1", "x", ":2", "a b:1", "1.5"] {
            assert!(parse_gpus(bad).is_err(), "{bad:?}");
        }
        assert!(parse_word("gpu").is_ok());
        assert!(parse_word("a100|h100").is_ok());
        assert!(parse_word("two words").is_err());
        assert!(parse_word("").is_err());
        assert!(parse_option("--exclusive").is_ok());
        assert!(parse_option("--mail-type=FAIL").is_ok());
        assert!(parse_option("-N 2").is_err());
        assert!(parse_option("--array=0-3").is_err());
        assert!(parse_option("--output=x").is_err());
    }

    const SECTION: &str = "
default: { time: 1h, mem: 4G, cpus: 2, gpus: 1, partition: cpu }
train: { partition: gpu, time: 12h }
evaluate: { mem: 8G }
stages: { ddpm: { time: 1-00:00:00, extra: [--exclusive] } }
";

    #[test]
    fn a_stage_gets_default_then_its_kind_then_its_own_entry() {
        let spec: ResourcesSpec = serde_norway::from_str(SECTION).unwrap();
        let ddpm = spec.for_stage(StageKind::Train, "ddpm");
        assert_eq!(
            ddpm.sbatch_options(),
            [
                "--cpus-per-task=2",
                "--mem=4096M",
                "--time=1-00:00:00",
                "--gres=gpu:1",
                "--partition=gpu",
                "--exclusive"
            ]
        );
        let other = spec.for_stage(StageKind::Train, "smld");
        assert!(
            other
                .sbatch_options()
                .contains(&"--time=12:00:00".to_string())
        );
        // `default`'s GPUs go only to the kinds that run networks for long.
        let eval = spec.for_stage(StageKind::Evaluate, "judge");
        assert!(!eval.has_gpus());
        assert!(eval.sbatch_options().contains(&"--mem=8192M".to_string()));
        assert!(spec.for_stage(StageKind::Sample, "s").has_gpus());
        assert!(!spec.for_stage(StageKind::Dataset, "data").has_gpus());
    }

    #[test]
    fn a_profile_replaces_only_the_fields_it_sets() {
        let base: ResourcesSpec = serde_norway::from_str(SECTION).unwrap();
        let over: ResourcesSpec =
            serde_norway::from_str("train: { time: 2h }\nstages: { ddpm: { mem: 64G } }").unwrap();
        let merged = base.overlaid(&over);
        let ddpm = merged.for_stage(StageKind::Train, "ddpm").sbatch_options();
        assert!(ddpm.contains(&"--partition=gpu".to_string()), "{ddpm:?}");
        assert!(ddpm.contains(&"--mem=65536M".to_string()), "{ddpm:?}");
        assert!(ddpm.contains(&"--time=1-00:00:00".to_string()), "{ddpm:?}");
        let smld = merged.for_stage(StageKind::Train, "smld").sbatch_options();
        assert!(smld.contains(&"--time=02:00:00".to_string()), "{smld:?}");
    }

    #[test]
    fn an_unknown_key_lists_the_valid_ones() {
        let err = serde_norway::from_str::<ResourcesSpec>("trian: { cpus: 2 }")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `trian`"), "{err}");
        assert!(
            err.contains("`default`") && err.contains("`classifier`"),
            "{err}"
        );
        assert!(err.contains("did you mean `train`"), "{err}");
        let err = serde_norway::from_str::<ResourcesSpec>("default: { cpu: 2 }")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown field `cpu`") && err.contains("`cpus`"),
            "{err}"
        );
    }
}
