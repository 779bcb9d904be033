//! The cfgstring an administrator writes into `dev_config`, turned into the
//! engine's [`VolumeConfig`].
//!
//! Two forms (after tcmu-runner's `hamirror/` prefix, which is stripped):
//!
//! - inline `key=value` pairs separated by `;`:
//!   `leg=/dev/sdb;leg=/dev/sdc;meta=/var/lib/hamirror/v0.meta;io_timeout_ms=3000`.
//!   `leg` and `meta` take one absolute path each and repeat, in order: a
//!   comma never reaches us, because LIO splits `dev_config` at commas (and
//!   targetcli's own check sees the whole string, hiding that); every scalar key of
//!   [`VolumeConfig`] is accepted (`*_size` keys take K, M, G or T suffixes,
//!   powers of 1024), and `source=N`;
//! - the absolute path of a TOML file holding the same keys, with
//!   `[[legs]] path = "..."` tables and `metadata = ["..."]`.
//!
//! `size` and `block_size` come from the LUN, never from the cfgstring. A
//! `;tcmur_cmd_time_out=N` pair belongs to tcmu-runner and is ignored here.
//! With no `name`, the volume is named after its first metadata file.
//!
//! LIO stores at most 255 bytes of `dev_config` (its `TCMU_CONFIG_LEN` is 256
//! with the NUL), `hamirror/` included; longer settings belong in a file.

use mirror::config::ConfigError as EngineConfigError;
use mirror::{LegConfig, VolumeConfig};
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// The handler's subtype: `dev_config=hamirror/...`.
pub const SUBTYPE: &str = "hamirror";
/// What tcmu-runner leaves in front of our cfgstring.
pub const PREFIX: &str = "hamirror/";
/// The longest `dev_config` LIO accepts, prefix included.
pub const MAX_DEV_CONFIG: usize = 255;
/// tcmu-runner's own option, stripped by the runner before `open`.
const RUNNER_KEY: &str = "tcmur_cmd_time_out";

/// A cfgstring or configuration file that cannot become a volume. Each
/// message names what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "the configuration is empty; give leg=PATH;leg=PATH;meta=PATH or the absolute path of a TOML file"
    )]
    Empty,
    #[error("a `,` never reaches hamirror: LIO splits dev_config at commas; repeat the key instead (leg=/dev/sdb;leg=/dev/sdc) or give the path of a TOML file")]
    Comma,
    #[error("dev_config is {len} bytes with the \"hamirror/\" prefix, but LIO keeps at most {MAX_DEV_CONFIG}; shorten the paths or move the settings into a TOML file and give its path")]
    TooLong { len: usize },
    #[error("`{0}` is not key=value; separate settings with `;`, e.g. leg=/dev/sdb;leg=/dev/sdc;meta=/var/lib/hamirror/v0.meta")]
    NotKeyValue(String),
    #[error("unknown key `{key}`; known keys: leg, meta, source, {known}")]
    UnknownKey { key: String, known: String },
    #[error("`{0}` is given twice; give each key once")]
    Duplicate(String),
    #[error("`{0}` comes from the LUN (set the size when creating the backstore, and its hw_block_size attribute), not from the configuration; remove it")]
    FromDevice(String),
    #[error("no legs given; give two or more, one per leg=, e.g. leg=/dev/sdb;leg=/dev/sdc")]
    NoLegs,
    #[error("no metadata file given; add meta=PATH (on storage other than the legs), e.g. meta=/var/lib/hamirror/v0.meta")]
    NoMetadata,
    #[error("`{key}=` has no path; give one absolute path per `{key}=`")]
    EmptyPath { key: String },
    #[error("`{key}` path {path} is relative; give absolute paths")]
    RelativePath { key: String, path: PathBuf },
    #[error("`{key}={value}`: {expected}")]
    BadValue { key: String, value: String, expected: String },
    #[error(
        "after a configuration file path only `;source=N;source_token=T` (and tcmu-runner's `;tcmur_cmd_time_out=N`) may follow; put `{0}` into the file"
    )]
    AfterFile(String),
    #[error("cannot read the configuration file {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration file {path} is not valid TOML: {message}")]
    Toml { path: PathBuf, message: String },
    #[error(transparent)]
    Engine(#[from] EngineConfigError),
    /// A `fault=` or `fault_panic=` key (only the `fault-injection` build has them).
    #[error("test option: {0}")]
    Test(String),
}

/// A parsed configuration: the volume without its size, plus test options.
#[derive(Clone, Debug, PartialEq)]
pub struct HandlerConfig {
    /// Everything but `size` and `block_size`, which [`for_device`](Self::for_device) sets.
    pub volume: VolumeConfig,
    /// Test keys (`fault-injection` build); empty in a release build.
    pub test: crate::testing::TestOptions,
}

impl HandlerConfig {
    /// Parses a cfgstring, with or without tcmu-runner's `hamirror/` prefix.
    pub fn parse(cfgstring: &str) -> Result<HandlerConfig, ConfigError> {
        // LIO stores `dev_config` as written, so `echo ... > attrib/dev_config`
        // leaves a newline at the end; no path or value ends in one.
        let cfgstring = cfgstring.trim_end_matches(['\n', '\r']);
        let body = cfgstring.strip_prefix(PREFIX).unwrap_or(cfgstring);
        let len = PREFIX.len() + body.len();
        if len > MAX_DEV_CONFIG {
            return Err(ConfigError::TooLong { len });
        }
        if body.contains(',') {
            return Err(ConfigError::Comma);
        }
        let pairs = split_pairs(body)?;
        let mut table = match pairs.first() {
            Some(Item::File(path)) => file_table(Path::new(path), &pairs[1..])?,
            Some(Item::Pair(..)) => inline_table(&pairs)?,
            None => return Err(ConfigError::Empty),
        };
        Self::from_table(&mut table)
    }

    /// The volume for a LUN of `size` bytes in blocks of `block_size`, checked.
    pub fn for_device(&self, size: u64, block_size: u32) -> Result<VolumeConfig, ConfigError> {
        let volume = VolumeConfig { size, block_size, ..self.volume.clone() };
        volume.validate()?;
        Ok(volume)
    }

    fn from_table(table: &mut Table) -> Result<HandlerConfig, ConfigError> {
        let test = crate::testing::TestOptions::take_from(table).map_err(ConfigError::Test)?;
        check_keys(table)?;
        let mut volume = deserialize(table)?;
        check_paths(&volume)?;
        if volume.name.is_empty() {
            volume.name = default_name(&volume.metadata[0]);
        }
        // Everything but the size can be checked now; any valid size will do.
        VolumeConfig { size: 1 << 30, block_size: 512, ..volume.clone() }.validate()?;
        Ok(HandlerConfig { volume, test })
    }
}

/// One `;`-separated item of a cfgstring.
#[derive(Debug, PartialEq)]
enum Item<'a> {
    File(&'a str),
    Pair(&'a str, &'a str),
}

/// Splits at `;`, dropping empty items and tcmu-runner's own option.
fn split_pairs(body: &str) -> Result<Vec<Item<'_>>, ConfigError> {
    let mut items = Vec::new();
    for (i, part) in body.split(';').enumerate() {
        if part.is_empty() {
            continue;
        }
        if i == 0 && part.starts_with('/') {
            items.push(Item::File(part));
            continue;
        }
        let (key, value) = part.split_once('=').ok_or_else(|| ConfigError::NotKeyValue(part.to_owned()))?;
        if key == RUNNER_KEY {
            integer(key, value)?;
            continue;
        }
        items.push(Item::Pair(key, value));
    }
    Ok(items)
}

/// The keys of [`VolumeConfig`] that take one scalar value, with their defaults.
fn scalar_defaults() -> Table {
    all_defaults().into_iter().filter(|(_, v)| !matches!(v, Value::Array(_) | Value::Table(_))).collect()
}

/// Every key [`VolumeConfig`] serializes, with its default (`None`s are left out).
fn all_defaults() -> Table {
    match Value::try_from(VolumeConfig::default()) {
        Ok(Value::Table(t)) => t,
        _ => Table::new(),
    }
}

fn known_keys() -> String {
    let mut keys: Vec<String> = scalar_defaults().keys().filter(|k| !is_from_device(k)).cloned().collect();
    keys.sort();
    keys.join(", ")
}

fn is_from_device(key: &str) -> bool {
    key == "size" || key == "block_size"
}

fn inline_table(pairs: &[Item<'_>]) -> Result<Table, ConfigError> {
    let defaults = scalar_defaults();
    let mut table = Table::new();
    let (mut legs, mut metas) = (Vec::new(), Vec::new());
    for item in pairs {
        let (key, value) = match item {
            Item::Pair(k, v) => (*k, *v),
            Item::File(f) => return Err(ConfigError::NotKeyValue((*f).to_owned())),
        };
        if crate::testing::TestOptions::absorb_inline(&mut table, key, value) {
            continue;
        }
        match key {
            "leg" => legs.push(leg_entry(one_path(key, value)?)),
            "meta" => metas.push(Value::String(one_path(key, value)?)),
            _ => {}
        }
        if key == "leg" || key == "meta" {
            continue;
        }
        let parsed = match key {
            "source" => Value::Integer(integer(key, value)?),
            _ if is_from_device(key) => return Err(ConfigError::FromDevice(key.to_owned())),
            _ => match defaults.get(key) {
                Some(default) => scalar(key, value, default)?,
                None => return Err(ConfigError::UnknownKey { key: key.to_owned(), known: known_keys() }),
            },
        };
        if table.insert(key.to_owned(), parsed).is_some() {
            return Err(ConfigError::Duplicate(key.to_owned()));
        }
    }
    if !legs.is_empty() {
        table.insert("legs".to_owned(), Value::Array(legs));
    }
    if !metas.is_empty() {
        table.insert("metadata".to_owned(), Value::Array(metas));
    }
    Ok(table)
}

fn leg_entry(path: String) -> Value {
    Value::Table(Table::from_iter([("path".to_owned(), Value::String(path))]))
}

/// The one path of a `leg=` or `meta=` item.
fn one_path(key: &str, value: &str) -> Result<String, ConfigError> {
    match value {
        "" => Err(ConfigError::EmptyPath { key: key.to_owned() }),
        p => Ok(p.to_owned()),
    }
}

/// A value typed like the key's default.
fn scalar(key: &str, value: &str, default: &Value) -> Result<Value, ConfigError> {
    Ok(match default {
        Value::Boolean(_) => Value::Boolean(boolean(key, value)?),
        Value::Integer(_) if key.ends_with("_size") => Value::Integer(size(key, value)?),
        Value::Integer(_) => Value::Integer(integer(key, value)?),
        Value::Float(_) => Value::Float(value.parse().map_err(|_| bad(key, value, "expected a number"))?),
        _ => Value::String(value.to_owned()),
    })
}

fn bad(key: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError::BadValue { key: key.to_owned(), value: value.to_owned(), expected: expected.to_owned() }
}

fn boolean(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(bad(key, value, "expected true or false")),
    }
}

fn integer(key: &str, value: &str) -> Result<i64, ConfigError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(key, value, "expected a whole number"));
    }
    value.parse().map_err(|_| bad(key, value, "the number is too large"))
}

/// A byte count with an optional K, M, G or T suffix (powers of 1024).
fn size(key: &str, value: &str) -> Result<i64, ConfigError> {
    let (digits, shift) = match value.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&value[..value.len() - 1], 10),
        Some(b'M') => (&value[..value.len() - 1], 20),
        Some(b'G') => (&value[..value.len() - 1], 30),
        Some(b'T') => (&value[..value.len() - 1], 40),
        _ => (value, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(key, value, "expected a byte count, optionally with K, M, G or T (e.g. 256K)"));
    }
    let n: i64 = digits.parse().map_err(|_| bad(key, value, "the size is too large"))?;
    n.checked_mul(1 << shift).ok_or_else(|| bad(key, value, "the size is too large"))
}

/// The table of a TOML configuration file.
/// The file's table, plus a `source=N` (and its `source_token`) given
/// after the path: a put-back's one-shot request, kept out of the file.
fn file_table(path: &Path, rest: &[Item<'_>]) -> Result<Table, ConfigError> {
    let (mut source, mut token) = (None, None);
    for item in rest {
        match item {
            Item::Pair("source", v) if source.is_none() => source = Some(integer("source", v)?),
            Item::Pair("source_token", v) if token.is_none() => token = Some((*v).to_owned()),
            Item::Pair(k, v) => return Err(ConfigError::AfterFile(format!("{k}={v}"))),
            Item::File(f) => return Err(ConfigError::AfterFile((*f).to_owned())),
        }
    }
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::ReadFile { path: path.to_owned(), source })?;
    let mut table = text
        .parse::<Table>()
        .map_err(|e| ConfigError::Toml { path: path.to_owned(), message: e.message().to_owned() })?;
    for (key, value) in [("source", source.map(Value::Integer)), ("source_token", token.map(Value::String))] {
        if let Some(v) = value {
            if table.insert(key.to_owned(), v).is_some() {
                return Err(ConfigError::Duplicate(key.to_owned()));
            }
        }
    }
    Ok(table)
}

/// Refuses keys the engine does not know and the ones the LUN decides.
fn check_keys(table: &Table) -> Result<(), ConfigError> {
    let defaults = all_defaults();
    for key in table.keys() {
        if is_from_device(key) {
            return Err(ConfigError::FromDevice(key.clone()));
        }
        if !defaults.contains_key(key) && key != "source" {
            return Err(ConfigError::UnknownKey { key: key.clone(), known: known_keys() });
        }
    }
    Ok(())
}

/// Deserializes the table, blaming the first key whose value does not fit.
fn deserialize(table: &Table) -> Result<VolumeConfig, ConfigError> {
    for (key, value) in table {
        let alone = Value::Table(Table::from_iter([(key.clone(), value.clone())]));
        if let Err(e) = alone.try_into::<VolumeConfig>() {
            return Err(bad(key, &value_text(value), e.message()));
        }
    }
    Value::Table(table.clone()).try_into().map_err(|e: toml::de::Error| bad("configuration", "", e.message()))
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Legs and metadata are given, each path absolute and non-empty.
fn check_paths(v: &VolumeConfig) -> Result<(), ConfigError> {
    if v.legs.is_empty() {
        return Err(ConfigError::NoLegs);
    }
    if v.metadata.is_empty() {
        return Err(ConfigError::NoMetadata);
    }
    check_absolute("leg", v.legs.iter().map(|l: &LegConfig| &l.path))?;
    check_absolute("meta", v.metadata.iter())
}

fn check_absolute<'a>(key: &str, paths: impl Iterator<Item = &'a PathBuf>) -> Result<(), ConfigError> {
    for path in paths {
        if path.as_os_str().is_empty() {
            return Err(ConfigError::EmptyPath { key: key.to_owned() });
        }
        if !path.is_absolute() {
            return Err(ConfigError::RelativePath { key: key.to_owned(), path: path.clone() });
        }
    }
    Ok(())
}

/// The name of a volume that was given none: its first metadata file's stem.
fn default_name(meta: &Path) -> String {
    meta.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "hamirror".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's key table is the admin's configuration reference: it
    /// lists every key the parser takes and no other, each with the default
    /// the code has, and marks exactly the keys a running LUN can change.
    #[test]
    fn the_readme_documents_every_key_with_its_default_and_whether_it_is_live() {
        let readme = include_str!("../../README.md");
        let start = readme.find("| key | default | meaning |").expect("the README has the key table");
        let rows = readme[start..].lines().skip(2).take_while(|l| l.starts_with('|'));
        let defaults = all_defaults();
        let mut documented = std::collections::BTreeSet::new();
        for row in rows {
            let cells: Vec<&str> = row.split(" | ").collect();
            let ticked = |cell: &str| -> Vec<String> {
                cell.split('`').skip(1).step_by(2).map(str::to_owned).collect::<Vec<_>>()
            };
            let keys: Vec<String> = ticked(cells[0])
                .into_iter()
                .filter(|k| !k.contains("[["))
                .map(|k| match k.as_str() {
                    "leg" => "legs".to_owned(),
                    "meta" => "metadata".to_owned(),
                    _ => k,
                })
                .collect();
            let values = ticked(cells[1]);
            for (i, key) in keys.iter().enumerate() {
                assert!(
                    defaults.contains_key(key) || key == "source",
                    "the README documents `{key}`, which the handler does not take"
                );
                if let (Some(doc), Some(code)) = (values.get(i), defaults.get(key)) {
                    let code = match code {
                        Value::String(s) => s.clone(),
                        Value::Integer(n) if key.ends_with("_size") => size_text(*n as u64),
                        other => other.to_string(),
                    };
                    assert_eq!(
                        doc.trim_matches('"'),
                        code.trim_matches('"'),
                        "the README's default of `{key}`"
                    );
                }
                let live = cells[2].starts_with("*Live.*");
                assert_eq!(
                    live,
                    mirror::config::Tunables::KEYS.contains(&key.as_str()),
                    "`{key}`: *Live.* mark"
                );
                documented.insert(key.clone());
            }
        }
        for key in defaults.keys().filter(|k| !is_from_device(k)) {
            assert!(documented.contains(key), "the README's key table lacks `{key}`");
        }
        assert!(documented.contains("source"), "the README's key table lacks `source`");
    }

    /// `n` bytes as the README writes sizes: 256K, 4M, 1G.
    fn size_text(n: u64) -> String {
        let units = [(1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
        units
            .iter()
            .find(|(u, _)| n.is_multiple_of(*u))
            .map_or(n.to_string(), |(u, s)| format!("{}{s}", n / u))
    }
    use mirror::config::InitialSync;

    const BASE: &str = "leg=/dev/a;leg=/dev/b;meta=/m/v0.meta";

    fn err(cfg: &str) -> String {
        HandlerConfig::parse(cfg).unwrap_err().to_string()
    }

    fn temp_file(tag: &str, text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("hamirror-cfg-{tag}-{}.toml", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn an_inline_config_sets_legs_metadata_and_scalars() {
        let c = HandlerConfig::parse(
            "hamirror/leg=/dev/a;leg=/dev/b;leg=/dev/c;meta=/m/x.meta;meta=/n/x.meta;name=db;io_timeout_ms=3000;\
             write_cache=true;region_size=1M;bitmap_extent_size=16M;initial_sync=none;source=2",
        )
        .unwrap();
        let v = &c.volume;
        let legs: Vec<_> = v.legs.iter().map(|l| l.path.to_str().unwrap()).collect();
        assert_eq!(legs, ["/dev/a", "/dev/b", "/dev/c"]);
        assert_eq!(v.metadata, [PathBuf::from("/m/x.meta"), PathBuf::from("/n/x.meta")]);
        assert_eq!(v.name, "db");
        assert_eq!(v.io_timeout_ms, 3000);
        assert!(v.write_cache);
        assert_eq!(v.region_size, 1 << 20);
        assert_eq!(v.bitmap_extent_size, 16 << 20);
        assert_eq!(v.initial_sync, InitialSync::None);
        assert_eq!(v.source, Some(2));
    }

    #[test]
    fn the_prefix_is_optional_and_unset_keys_keep_their_defaults() {
        let a = HandlerConfig::parse(BASE).unwrap();
        let b = HandlerConfig::parse(&format!("{PREFIX}{BASE}")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.volume.io_timeout_ms, VolumeConfig::default().io_timeout_ms);
    }

    #[test]
    fn the_newline_echo_leaves_in_dev_config_is_ignored() {
        let a = HandlerConfig::parse(BASE).unwrap();
        assert_eq!(HandlerConfig::parse(&format!("{PREFIX}{BASE}\n")).unwrap(), a);
        let file = temp_file(
            "newline",
            "metadata = [\"/m/v.meta\"]\n[[legs]]\npath = \"/a\"\n[[legs]]\npath = \"/b\"\n",
        );
        let c = HandlerConfig::parse(&format!("{PREFIX}{}\n", file.display())).unwrap();
        assert_eq!(c.volume.legs.len(), 2);
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn a_volume_without_a_name_is_named_after_its_metadata_file() {
        assert_eq!(HandlerConfig::parse(BASE).unwrap().volume.name, "v0");
    }

    #[test]
    fn the_runners_own_option_and_empty_items_are_ignored() {
        let c = HandlerConfig::parse(&format!("{BASE};;tcmur_cmd_time_out=30;")).unwrap();
        assert_eq!(c, HandlerConfig::parse(BASE).unwrap());
    }

    #[test]
    fn size_suffixes_are_powers_of_1024() {
        assert_eq!(size("region_size", "4K").unwrap(), 4096);
        assert_eq!(size("region_size", "2m").unwrap(), 2 << 20);
        assert_eq!(size("region_size", "1G").unwrap(), 1 << 30);
        assert_eq!(size("region_size", "1T").unwrap(), 1 << 40);
        assert_eq!(size("region_size", "65536").unwrap(), 65536);
    }

    #[test]
    fn booleans_take_the_usual_spellings() {
        for t in ["true", "yes", "on", "1"] {
            assert!(boolean("k", t).unwrap());
        }
        for f in ["false", "no", "off", "0"] {
            assert!(!boolean("k", f).unwrap());
        }
    }

    #[test]
    fn for_device_sets_the_size_and_block_size_from_the_lun() {
        let v = HandlerConfig::parse(BASE).unwrap().for_device(1 << 30, 4096).unwrap();
        assert_eq!((v.size, v.block_size), (1 << 30, 4096));
    }

    #[test]
    fn a_toml_file_gives_the_same_config_as_the_inline_form() {
        let p = temp_file(
            "same",
            "name = \"v0\"\nmetadata = [\"/m/v0.meta\"]\nio_timeout_ms = 3000\n\
             [[legs]]\npath = \"/dev/a\"\n[[legs]]\npath = \"/dev/b\"\n",
        );
        let from_file =
            HandlerConfig::parse(&format!("hamirror/{};tcmur_cmd_time_out=9", p.display())).unwrap();
        let inline = HandlerConfig::parse(&format!("{BASE};io_timeout_ms=3000")).unwrap();
        assert_eq!(from_file, inline);
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn an_empty_config_says_what_to_write() {
        let want =
            "the configuration is empty; give leg=PATH;leg=PATH;meta=PATH or the absolute path of a TOML file";
        assert_eq!(err(""), want);
        assert_eq!(err("hamirror/"), want);
        assert_eq!(err(";;"), want);
    }

    #[test]
    fn a_config_longer_than_lio_keeps_is_refused_counting_the_prefix() {
        let pad = "x".repeat(MAX_DEV_CONFIG - PREFIX.len() - BASE.len() - ";name=".len());
        assert!(HandlerConfig::parse(&format!("{BASE};name={pad}")).is_ok());
        assert_eq!(
            err(&format!("{BASE};name={pad}y")),
            "dev_config is 256 bytes with the \"hamirror/\" prefix, but LIO keeps at most 255; \
             shorten the paths or move the settings into a TOML file and give its path"
        );
    }

    #[test]
    fn an_item_without_equals_is_refused() {
        assert_eq!(
            err(&format!("{BASE};verbose")),
            "`verbose` is not key=value; separate settings with `;`, e.g. \
             leg=/dev/sdb;leg=/dev/sdc;meta=/var/lib/hamirror/v0.meta"
        );
    }

    #[test]
    fn an_unknown_key_is_refused_with_the_known_ones() {
        let e = err(&format!("{BASE};io_timeout=5"));
        assert!(e.starts_with("unknown key `io_timeout`; known keys: leg, meta, source, "), "{e}");
        assert!(e.contains("io_timeout_ms"), "{e}");
        assert!(!e.contains(" size,"), "size comes from the LUN: {e}");
    }

    #[test]
    fn a_key_given_twice_is_refused() {
        assert_eq!(err(&format!("{BASE};name=a;name=b")), "`name` is given twice; give each key once");
        // leg= and meta= repeat by design: each adds one path, in order.
        let c = HandlerConfig::parse(&format!("{BASE};meta=/x")).unwrap();
        assert_eq!(c.volume.metadata, [PathBuf::from("/m/v0.meta"), PathBuf::from("/x")]);
    }

    #[test]
    fn size_and_block_size_are_refused_because_the_lun_sets_them() {
        let want = |k: &str| {
            format!(
                "`{k}` comes from the LUN (set the size when creating the backstore, and its \
                 hw_block_size attribute), not from the configuration; remove it"
            )
        };
        assert_eq!(err(&format!("{BASE};size=1G")), want("size"));
        assert_eq!(err(&format!("{BASE};block_size=4096")), want("block_size"));
        let p = temp_file("size", "size = 5\n");
        assert_eq!(err(&p.display().to_string()), want("size"));
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn missing_legs_or_metadata_are_named() {
        assert_eq!(
            err("meta=/m/v.meta"),
            "no legs given; give two or more, one per leg=, e.g. leg=/dev/sdb;leg=/dev/sdc"
        );
        assert_eq!(
            err("leg=/dev/a;leg=/dev/b"),
            "no metadata file given; add meta=PATH (on storage other than the legs), \
             e.g. meta=/var/lib/hamirror/v0.meta"
        );
    }

    #[test]
    fn an_empty_path_is_refused() {
        assert_eq!(err("leg=/dev/a;leg=;meta=/m"), "`leg=` has no path; give one absolute path per `leg=`");
        assert_eq!(
            err("leg=/dev/a;leg=/dev/b;meta="),
            "`meta=` has no path; give one absolute path per `meta=`"
        );
    }

    #[test]
    fn a_comma_is_refused_because_lio_would_cut_the_string_there() {
        let want = "a `,` never reaches hamirror: LIO splits dev_config at commas; repeat the key instead \
                    (leg=/dev/sdb;leg=/dev/sdc) or give the path of a TOML file";
        assert_eq!(err("leg=/dev/a,/dev/b;meta=/m"), want);
        assert_eq!(err("/etc/hamirror/a,b.toml"), want);
    }

    #[test]
    fn relative_paths_are_refused() {
        assert_eq!(err("leg=dev/a;leg=/dev/b;meta=/m"), "`leg` path dev/a is relative; give absolute paths");
        assert_eq!(
            err("leg=/dev/a;leg=/dev/b;meta=m.meta"),
            "`meta` path m.meta is relative; give absolute paths"
        );
    }

    #[test]
    fn values_of_the_wrong_type_are_refused_with_what_was_expected() {
        assert_eq!(err(&format!("{BASE};io_timeout_ms=5s")), "`io_timeout_ms=5s`: expected a whole number");
        assert_eq!(err(&format!("{BASE};write_cache=maybe")), "`write_cache=maybe`: expected true or false");
        assert_eq!(
            err(&format!("{BASE};region_size=1Q")),
            "`region_size=1Q`: expected a byte count, optionally with K, M, G or T (e.g. 256K)"
        );
        assert_eq!(
            err(&format!("{BASE};region_size=99999999999T")),
            "`region_size=99999999999T`: the size is too large"
        );
        assert_eq!(
            err(&format!("{BASE};io_timeout_ms=99999999999999999999")),
            "`io_timeout_ms=99999999999999999999`: the number is too large"
        );
        assert_eq!(err(&format!("{BASE};source=-1")), "`source=-1`: expected a whole number");
        assert_eq!(
            err(&format!("{BASE};tcmur_cmd_time_out=x")),
            "`tcmur_cmd_time_out=x`: expected a whole number"
        );
    }

    #[test]
    fn an_unknown_enum_value_is_refused_with_the_choices() {
        let e = err(&format!("{BASE};initial_sync=fast"));
        assert!(e.starts_with("`initial_sync=fast`: unknown variant `fast`"), "{e}");
        assert!(e.contains("full") && e.contains("none"), "{e}");
        let e = err(&format!("{BASE};io_engine=aio"));
        assert!(e.starts_with("`io_engine=aio`: unknown variant `aio`"), "{e}");
        assert!(e.contains("auto") && e.contains("io_uring") && e.contains("threads"), "{e}");
    }

    #[test]
    fn io_engine_takes_its_three_values() {
        use mirror::config::IoEngine;
        for (text, want) in
            [("auto", IoEngine::Auto), ("io_uring", IoEngine::IoUring), ("threads", IoEngine::Threads)]
        {
            assert_eq!(
                HandlerConfig::parse(&format!("{BASE};io_engine={text}")).unwrap().volume.io_engine,
                want
            );
        }
    }

    #[test]
    fn only_source_and_the_runners_option_may_follow_a_file_path() {
        assert_eq!(
            err("/etc/hamirror/v0.toml;name=x"),
            "after a configuration file path only `;source=N;source_token=T` (and tcmu-runner's \
             `;tcmur_cmd_time_out=N`) may follow; put `name=x` into the file"
        );
    }

    #[test]
    fn source_after_a_file_path_sets_the_put_back_source() {
        let p = temp_file(
            "source",
            "metadata = [\"/m/v.meta\"]\n[[legs]]\npath = \"/dev/a\"\n[[legs]]\npath = \"/dev/b\"\n",
        );
        let c =
            HandlerConfig::parse(&format!("{};source=1;source_token=pb7;tcmur_cmd_time_out=30", p.display()))
                .unwrap();
        assert_eq!(c.volume.source, Some(1));
        assert_eq!(c.volume.source_token, "pb7");
        std::fs::write(&p, "source = 0\nmetadata = [\"/m/v.meta\"]\n[[legs]]\npath = \"/dev/a\"\n[[legs]]\npath = \"/dev/b\"\n").unwrap();
        assert_eq!(err(&format!("{};source=1", p.display())), "`source` is given twice; give each key once");
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn a_missing_file_is_named_with_the_reason() {
        let e = HandlerConfig::parse("/nonexistent/hamirror.toml").unwrap_err();
        assert_eq!(e.to_string(), "cannot read the configuration file /nonexistent/hamirror.toml");
        assert_eq!(
            std::error::Error::source(&e).unwrap().to_string(),
            "No such file or directory (os error 2)"
        );
    }

    #[test]
    fn a_file_that_is_not_toml_is_refused_with_the_parsers_message() {
        let p = temp_file("bad", "legs = [\n");
        let e = err(&p.display().to_string());
        assert!(e.starts_with(&format!("configuration file {} is not valid TOML: ", p.display())), "{e}");
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn a_file_with_an_unknown_key_or_a_bad_leg_is_refused() {
        let p = temp_file("unknown", "colour = \"red\"\n");
        assert!(err(&p.display().to_string()).starts_with("unknown key `colour`"));
        std::fs::write(&p, "legs = [\"/dev/a\"]\n").unwrap();
        let e = err(&p.display().to_string());
        assert!(e.starts_with("`legs=[\"/dev/a\"]`: invalid type: string"), "{e}");
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn the_engines_own_checks_apply() {
        assert_eq!(err("leg=/dev/a;meta=/m"), "1 legs given; a mirror needs 2 to 8 legs");
        assert_eq!(
            err(&format!("{BASE};region_size=12K")),
            "region_size 12288 must be a power of two between 4 KiB and 1 GiB"
        );
        assert_eq!(
            err(&format!("{BASE};bitmap_extent_size=3M")),
            "bitmap_extent_size 3145728 must be a power of two between 4 KiB and 1 GiB"
        );
        assert_eq!(err(&format!("{BASE};source=2")), "source=2 names no leg; legs are numbered 0 to 1");
        let c = HandlerConfig::parse(BASE).unwrap();
        assert_eq!(
            c.for_device(1000, 512).unwrap_err().to_string(),
            "size 1000 must be a positive multiple of block_size 512"
        );
    }

    /// A small deterministic generator, so the fuzz test needs no crate.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[(self.next() % from.len() as u64) as usize]
        }
    }

    #[test]
    fn random_strings_never_panic_the_parser() {
        let pieces = [
            "=",
            ";",
            ",",
            "/",
            "legs",
            "meta",
            "source",
            "size",
            "region_size",
            "io_timeout_ms",
            "write_cache",
            "initial_sync",
            "name",
            "fault",
            "fault_panic",
            "tcmur_cmd_time_out",
            "hamirror/",
            "/dev/a",
            "/tmp",
            "1",
            "0",
            "18446744073709551616",
            "K",
            "M",
            "G",
            "T",
            "true",
            "latency",
            "",
            " ",
            "\0",
            "é",
            "[",
            "\"",
            "-",
            "..",
            "/nonexistent.toml",
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let n = (rng.next() % 24) as usize;
            let s: String = (0..n).map(|_| rng.pick(&pieces)).collect();
            if let Ok(c) = HandlerConfig::parse(&s) {
                let _ = c.for_device(rng.next() % (1 << 40), 512);
            }
        }
    }

    #[test]
    fn random_mutations_of_a_valid_config_never_panic_the_parser() {
        let valid = format!("{BASE};io_timeout_ms=3000;region_size=1M;write_cache=true;source=1");
        let mut rng = XorShift(42);
        for _ in 0..20_000 {
            let mut bytes = valid.clone().into_bytes();
            for _ in 0..(rng.next() % 4 + 1) {
                let i = (rng.next() % bytes.len() as u64) as usize;
                bytes[i] = (rng.next() % 128) as u8;
            }
            let _ = HandlerConfig::parse(&String::from_utf8_lossy(&bytes));
        }
    }
}
