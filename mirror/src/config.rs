//! What a volume is made of and how it behaves. The handler fills this from a
//! cfgstring or a TOML file; every field has a documented default.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

pub const MIN_LEGS: usize = 2;
pub const MAX_LEGS: usize = 8;
pub const MAX_METADATA_COPIES: usize = 4;
pub const DEFAULT_REGION_SIZE: u64 = 256 * 1024;
pub const DEFAULT_BITMAP_EXTENT_SIZE: u64 = 4 << 20;
/// 1024 extents of 4 MiB: DRBD's default activity log is 1237.
pub const DEFAULT_BITMAP_ACTIVE_SIZE: u64 = 4 << 30;

/// One leg: a regular file or a block device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegConfig {
    pub path: PathBuf,
    /// Open with `O_DIRECT`. Default: the volume's `direct_io`.
    #[serde(default)]
    pub direct_io: Option<bool>,
}

/// The whole configuration of one volume, as the engine consumes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VolumeConfig {
    /// A name for logs, status and the control socket.
    pub name: String,
    /// Volume size in bytes; every leg must be at least this large.
    pub size: u64,
    /// Logical block size the host sees, in bytes.
    pub block_size: u32,
    pub legs: Vec<LegConfig>,
    /// Metadata copies (write-intent bitmap and leg states), on storage other
    /// than the legs. One is required; more survive the loss of one.
    pub metadata: Vec<PathBuf>,
    /// Bytes covered by one bit of the write-intent bitmap.
    pub region_size: u64,
    /// Deadline for one leg I/O, in milliseconds: a leg that misses it is
    /// faulted (the failure-detection time).
    pub io_timeout_ms: u64,
    /// After this long the last in-sync leg is reported slow (it is never
    /// faulted for a timeout alone).
    pub last_leg_grace_ms: u64,
    /// Resync ceiling, in MiB/s (0 = unlimited).
    pub resync_max_mib_s: u64,
    /// Resync floor while the host is busy, in MiB/s.
    pub resync_min_mib_s: u64,
    /// Open legs with `O_DIRECT` (block devices and files that support it).
    pub direct_io: bool,
    /// Report a volatile write cache to the host. When off (the default) every
    /// write is stable on the legs before it is acknowledged (`O_DSYNC`).
    pub write_cache: bool,
    /// For unmap on legs that cannot discard to zeroes: write zeroes instead.
    /// Off: unmap is a no-op on every leg unless all can discard, so that the
    /// legs never differ.
    pub unmap_zero_fill: bool,
    /// Read errors a leg may have (each repaired from another leg) before it is faulted.
    pub read_error_budget: u32,
    /// Write priority, in milliseconds. 0 (the default) is redundancy: a
    /// write is acknowledged when every in-sync leg has it, however long the
    /// slowest takes (up to `io_timeout_ms`). Above 0 is latency (IBM SVC's
    /// `mirrorwritepriority latency`): a leg still writing this long after a
    /// write was sent, when another in-sync leg has already stored it, leaves
    /// the in-sync set (recorded in the metadata first, without a fault), the
    /// write is acknowledged without it, and it catches up by a difference
    /// resync. Writes are then copied once out of the host's buffer, so that
    /// a late leg write never reads memory the host has reused.
    pub write_lag_ms: u64,
    /// How legs do their I/O: `auto` (io_uring for `O_DIRECT` legs where the
    /// kernel allows it, else threads), `io_uring` (every leg; refuse to
    /// open without it) or `threads`.
    pub io_engine: IoEngine,
    /// I/O threads per leg: with `threads`, the leg's queue depth; with
    /// io_uring, they serve only what the ring does not (discards, zeroing,
    /// and I/O a fault rule may fire for). A buffered regular file still
    /// takes its writes one at a time (see `Backend::writes_one_at_a_time`).
    pub leg_threads: usize,
    /// While every leg is in sync, the first write to a clean region sets
    /// the bits of its whole aligned extent of this many bytes, in the same
    /// metadata write, so that nearby writes wait for none (DRBD's
    /// activity-log extents). An extent's bits are cleared together. A
    /// crash copies whole extents; a leg's difference resync skips the
    /// regions set for an extent alone (while the volume runs). At or below
    /// `region_size`: one region per extent.
    pub bitmap_extent_size: u64,
    /// At most this many bytes of extents are active (written since their
    /// bits were last cleared) while every leg is in sync: what a crash can
    /// leave to copy. Rounded down to whole extents, at least one; 0: no limit.
    pub bitmap_active_size: u64,
    /// An extent's bits are cleared once all of it has been idle this long,
    /// in milliseconds.
    pub bitmap_clear_delay_ms: u64,
    /// Bring a leg back by itself after a recoverable fault.
    pub auto_failback: bool,
    /// Wait this long after a fault before trying the leg again, in milliseconds;
    /// doubled after each fault within `flap_window_s`.
    pub failback_delay_ms: u64,
    /// This many faults within `flap_window_s` mark a leg as flapping: it stays
    /// out until an admin restores it.
    pub flap_limit: u32,
    pub flap_window_s: u64,
    /// A new volume (no metadata yet) copies leg 0 onto the others (`full`),
    /// or trusts that they are equal (`none`, for blank disks).
    pub initial_sync: InitialSync,
    /// Keep a write-intent bitmap (the default). Off, like md's
    /// `--bitmap=none`: no metadata I/O before first writes, but a leg that
    /// returns, and every restart after a crash, resyncs the whole volume.
    pub bitmap: bool,
    /// Trust only this leg at open; every other leg gets a full rebuild from
    /// it. For putting hamirror back after a leg served the LUN alone, or
    /// after a leg was replaced while the volume was down. Refused if the
    /// metadata says this leg missed writes the others took.
    pub source: Option<usize>,
    /// Names one `source` request: it is honoured once per distinct token
    /// (recorded in the metadata), so a request that stays in the LUN's
    /// stored configuration does not rebuild the other legs at every start.
    /// `hamirror-putback.sh` sets a fresh one.
    pub source_token: String,
}

/// Declares [`Tunables`] and its conversions from and to [`VolumeConfig`]
/// from one list of keys, so that none of them can leave a key out.
macro_rules! tunables {
    ($($key:ident: $ty:ty),* $(,)?) => {
        /// The settings a running volume can change
        /// ([`crate::Volume::retune`]): they steer timing and policy, not
        /// where data lives. Each means what the [`VolumeConfig`] field of
        /// the same name does.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct Tunables {
            $(pub $key: $ty,)*
        }

        impl Tunables {
            /// Every tunable key, by its config name.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($key)),*];

            /// The keys whose values differ from `other`'s, by their config names.
            pub fn changed(&self, other: &Tunables) -> Vec<&'static str> {
                let mut keys = Vec::new();
                $(if self.$key != other.$key {
                    keys.push(stringify!($key));
                })*
                keys
            }
        }

        impl VolumeConfig {
            pub fn tunables(&self) -> Tunables {
                Tunables { $($key: self.$key,)* }
            }

            pub fn with_tunables(self, t: Tunables) -> VolumeConfig {
                VolumeConfig { $($key: t.$key,)* ..self }
            }
        }
    };
}

tunables! {
    io_timeout_ms: u64,
    last_leg_grace_ms: u64,
    resync_max_mib_s: u64,
    resync_min_mib_s: u64,
    read_error_budget: u32,
    write_lag_ms: u64,
    bitmap_clear_delay_ms: u64,
    auto_failback: bool,
    failback_delay_ms: u64,
    flap_limit: u32,
    flap_window_s: u64,
}

impl Tunables {
    pub fn io_timeout(&self) -> Duration {
        Duration::from_millis(self.io_timeout_ms)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoEngine {
    #[default]
    Auto,
    IoUring,
    Threads,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitialSync {
    #[default]
    Full,
    None,
}

impl Default for VolumeConfig {
    fn default() -> Self {
        VolumeConfig {
            name: String::new(),
            size: 0,
            block_size: 512,
            legs: Vec::new(),
            metadata: Vec::new(),
            region_size: DEFAULT_REGION_SIZE,
            io_timeout_ms: 5_000,
            last_leg_grace_ms: 30_000,
            resync_max_mib_s: 0,
            resync_min_mib_s: 10,
            direct_io: true,
            write_cache: false,
            unmap_zero_fill: false,
            read_error_budget: 20,
            write_lag_ms: 0,
            io_engine: IoEngine::Auto,
            leg_threads: 8,
            bitmap_extent_size: DEFAULT_BITMAP_EXTENT_SIZE,
            bitmap_active_size: DEFAULT_BITMAP_ACTIVE_SIZE,
            bitmap_clear_delay_ms: 5_000,
            auto_failback: true,
            failback_delay_ms: 2_000,
            flap_limit: 3,
            flap_window_s: 600,
            initial_sync: InitialSync::Full,
            source: None,
            source_token: String::new(),
            bitmap: true,
        }
    }
}

/// A configuration value the engine cannot work with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} legs given; a mirror needs {MIN_LEGS} to {MAX_LEGS} legs")]
    LegCount(usize),
    #[error("no metadata path given; add at least one (on storage other than the legs)")]
    NoMetadata,
    #[error("{0} metadata copies given; at most {MAX_METADATA_COPIES} are supported")]
    TooManyMetadata(usize),
    #[error("block_size {0} must be 512 or 4096")]
    BlockSize(u32),
    #[error("size {size} must be a positive multiple of block_size {block_size}")]
    Size { size: u64, block_size: u32 },
    #[error("region_size {0} must be a power of two between 4 KiB and 1 GiB")]
    RegionSize(u64),
    #[error("bitmap_extent_size {0} must be a power of two between 4 KiB and 1 GiB")]
    ExtentSize(u64),
    #[error("{key} must be at least {min}, got {value}")]
    TooSmall { key: &'static str, min: u64, value: u64 },
    #[error("source={leg} names no leg; legs are numbered 0 to {}", legs - 1)]
    Source { leg: usize, legs: usize },
    #[error("resync_min_mib_s {min} is above resync_max_mib_s {max}")]
    ResyncRates { min: u64, max: u64 },
    #[error(
        "write_lag_ms needs the write-intent bitmap (bitmap = true): a leg left behind catches up from \
         it; set write_lag_ms = 0 or turn the bitmap on"
    )]
    LagWithoutBitmap,
    #[error(
        "write_lag_ms {lag} must be below io_timeout_ms {timeout}: a leg that slow is faulted, not left \
         behind"
    )]
    LagAboveTimeout { lag: u64, timeout: u64 },
}

impl VolumeConfig {
    /// Checks the values that need no file system access.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_LEGS..=MAX_LEGS).contains(&self.legs.len()) {
            return Err(ConfigError::LegCount(self.legs.len()));
        }
        if self.metadata.is_empty() {
            return Err(ConfigError::NoMetadata);
        }
        if self.metadata.len() > MAX_METADATA_COPIES {
            return Err(ConfigError::TooManyMetadata(self.metadata.len()));
        }
        if self.block_size != 512 && self.block_size != 4096 {
            return Err(ConfigError::BlockSize(self.block_size));
        }
        if self.size == 0 || !self.size.is_multiple_of(u64::from(self.block_size)) {
            return Err(ConfigError::Size { size: self.size, block_size: self.block_size });
        }
        // Both a power of two between 4 KiB and 1 GiB.
        let bitmap_unit = |v: u64| v.is_power_of_two() && (4096..=1 << 30).contains(&v);
        if !bitmap_unit(self.region_size) {
            return Err(ConfigError::RegionSize(self.region_size));
        }
        if !bitmap_unit(self.bitmap_extent_size) {
            return Err(ConfigError::ExtentSize(self.bitmap_extent_size));
        }
        check_min("io_timeout_ms", self.io_timeout_ms, 10)?;
        check_min("last_leg_grace_ms", self.last_leg_grace_ms, self.io_timeout_ms)?;
        check_min("leg_threads", self.leg_threads as u64, 1)?;
        check_min("flap_limit", u64::from(self.flap_limit), 1)?;
        if let Some(s) = self.source {
            if s >= self.legs.len() {
                return Err(ConfigError::Source { leg: s, legs: self.legs.len() });
            }
        }
        if self.resync_max_mib_s != 0 && self.resync_min_mib_s > self.resync_max_mib_s {
            return Err(ConfigError::ResyncRates { min: self.resync_min_mib_s, max: self.resync_max_mib_s });
        }
        if self.write_lag_ms > 0 && !self.bitmap {
            return Err(ConfigError::LagWithoutBitmap);
        }
        if self.write_lag_ms >= self.io_timeout_ms {
            return Err(ConfigError::LagAboveTimeout { lag: self.write_lag_ms, timeout: self.io_timeout_ms });
        }
        Ok(())
    }

    pub fn io_timeout(&self) -> Duration {
        Duration::from_millis(self.io_timeout_ms)
    }

    /// The activity log's limit in extents (`bitmap_active_size` rounded
    /// down, at least one); 0 for no limit.
    pub fn active_extents(&self) -> usize {
        let extent = self.bitmap_extent_size.max(self.region_size).max(1);
        match self.bitmap_active_size {
            0 => 0,
            n => (n / extent).clamp(1, usize::MAX as u64) as usize,
        }
    }

    /// The keys other than the [`Tunables`] (and the size, which is the
    /// LUN's) whose values differ from `other`'s: what a running volume
    /// cannot change.
    pub fn fixed_differences(&self, other: &VolumeConfig) -> Vec<&'static str> {
        let (a, b) = (self, other);
        let all = [
            ("name", a.name != b.name),
            ("block_size", a.block_size != b.block_size),
            ("leg", a.legs != b.legs),
            ("meta", a.metadata != b.metadata),
            ("region_size", a.region_size != b.region_size),
            ("bitmap_extent_size", a.bitmap_extent_size != b.bitmap_extent_size),
            ("bitmap_active_size", a.bitmap_active_size != b.bitmap_active_size),
            ("direct_io", a.direct_io != b.direct_io),
            ("write_cache", a.write_cache != b.write_cache),
            ("unmap_zero_fill", a.unmap_zero_fill != b.unmap_zero_fill),
            ("io_engine", a.io_engine != b.io_engine),
            ("leg_threads", a.leg_threads != b.leg_threads),
            ("initial_sync", a.initial_sync != b.initial_sync),
            ("bitmap", a.bitmap != b.bitmap),
            ("source", a.source != b.source),
            ("source_token", a.source_token != b.source_token),
        ];
        all.into_iter().filter(|&(_, d)| d).map(|(k, _)| k).collect()
    }

    pub fn regions(&self) -> u64 {
        self.size.div_ceil(self.region_size)
    }

    pub fn leg_direct_io(&self, leg: usize) -> bool {
        self.legs[leg].direct_io.unwrap_or(self.direct_io)
    }
}

fn check_min(key: &'static str, value: u64, min: u64) -> Result<(), ConfigError> {
    if value < min {
        return Err(ConfigError::TooSmall { key, min, value });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_legs() -> VolumeConfig {
        VolumeConfig {
            name: "v".into(),
            size: 1 << 20,
            legs: vec![
                LegConfig { path: "/a".into(), direct_io: None },
                LegConfig { path: "/b".into(), direct_io: Some(false) },
            ],
            metadata: vec!["/m".into()],
            ..VolumeConfig::default()
        }
    }

    #[test]
    fn a_plain_two_leg_config_is_valid() {
        assert_eq!(two_legs().validate(), Ok(()));
    }

    #[test]
    fn one_leg_is_not_a_mirror() {
        let mut c = two_legs();
        c.legs.pop();
        assert_eq!(c.validate(), Err(ConfigError::LegCount(1)));
    }

    #[test]
    fn region_size_must_be_a_power_of_two() {
        let mut c = two_legs();
        c.region_size = 3 * 4096;
        assert_eq!(c.validate(), Err(ConfigError::RegionSize(3 * 4096)));
    }

    #[test]
    fn bitmap_extent_size_must_be_a_power_of_two_in_range() {
        let mut c = two_legs();
        for bad in [0, 3 << 20, 2048, 2 << 30] {
            c.bitmap_extent_size = bad;
            let e = c.validate().unwrap_err();
            assert_eq!(e, ConfigError::ExtentSize(bad));
            assert!(e.to_string().contains("must be a power of two between 4 KiB and 1 GiB"), "{e}");
        }
        // Below the region size is allowed: each region is its own extent.
        c.bitmap_extent_size = 4096;
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn size_must_be_whole_blocks() {
        let mut c = two_legs();
        c.size = 1000;
        assert!(matches!(c.validate(), Err(ConfigError::Size { .. })));
    }

    #[test]
    fn write_lag_needs_the_bitmap_and_must_be_below_the_io_timeout() {
        let mut c = two_legs();
        c.write_lag_ms = 50;
        assert_eq!(c.validate(), Ok(()));
        c.bitmap = false;
        let e = c.validate().unwrap_err();
        assert_eq!(e, ConfigError::LagWithoutBitmap);
        assert!(e.to_string().contains("set write_lag_ms = 0 or turn the bitmap on"), "{e}");
        c.bitmap = true;
        c.write_lag_ms = c.io_timeout_ms;
        let e = c.validate().unwrap_err();
        assert_eq!(e, ConfigError::LagAboveTimeout { lag: 5000, timeout: 5000 });
        assert!(e.to_string().contains("must be below io_timeout_ms 5000"), "{e}");
    }

    #[test]
    fn per_leg_direct_io_overrides_the_volume_default() {
        let c = two_legs();
        assert!(c.leg_direct_io(0));
        assert!(!c.leg_direct_io(1));
    }
}
