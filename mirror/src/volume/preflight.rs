//! The checks of [`open`](super::open) that need no lock, no LUN size and
//! change nothing: what tcmu-runner's `check_config` can tell an
//! administrator before targetcli creates anything.

use crate::backend::LegIdentity;
use crate::config::VolumeConfig;
use crate::error::OpenError;
use crate::meta::MetaStore;
use std::os::unix::fs::FileTypeExt;

/// Checks `cfg` (whose `size` may be unknown: 0) against the file system:
/// legs exist, are files or block devices, are distinct; metadata is not a
/// leg; existing metadata records these legs, and `source` may be trusted.
/// Leg sizes and locks are checked when the volume opens.
pub fn preflight(cfg: &VolumeConfig) -> Result<(), OpenError> {
    let mut sized = cfg.clone();
    if sized.size == 0 {
        sized.size = u64::from(sized.block_size);
    }
    sized.validate()?;
    super::open::check_metadata_paths(cfg)?;
    let ids = leg_identities(cfg)?;
    let Some(h) = MetaStore::peek(&cfg.metadata)? else { return Ok(()) };
    let same: Vec<bool> = ids.iter().zip(&h.legs).map(|(id, r)| id.as_str() == r.identity).collect();
    if h.legs.len() != ids.len() {
        return Err(OpenError::Mismatch {
            what: format!(
                "the metadata records {} legs, the configuration lists {}",
                h.legs.len(),
                ids.len()
            ),
        });
    }
    if !same.iter().any(|&s| s) {
        return Err(OpenError::Mismatch {
            what: "none of the configured legs is a leg this metadata records: it belongs to another volume"
                .into(),
        });
    }
    if super::open::pending_source(cfg, &h).is_none() {
        if let Some(i) = same.iter().position(|&s| !s) {
            return Err(OpenError::Mismatch {
                what: format!(
                    "leg {i} ({}) is not the storage the metadata records (recorded {}, found {}); \
                     if it was replaced on purpose, open once with source=N naming a good leg",
                    cfg.legs[i].path.display(),
                    h.legs[i].identity,
                    ids[i]
                ),
            });
        }
    }
    Ok(())
}

fn leg_identities(cfg: &VolumeConfig) -> Result<Vec<LegIdentity>, OpenError> {
    let mut ids: Vec<LegIdentity> = Vec::new();
    for (i, leg) in cfg.legs.iter().enumerate() {
        let path = leg.path.clone();
        let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => OpenError::LegMissing { leg: i, path: path.clone() },
            _ => OpenError::LegOpen { leg: i, path: path.clone(), source: e },
        })?;
        if !meta.is_file() && !meta.file_type().is_block_device() {
            return Err(OpenError::LegNotStorage { leg: i, path });
        }
        let id = LegIdentity::of(&meta);
        if let Some(other) = ids.iter().position(|o| *o == id) {
            return Err(OpenError::LegDuplicate { leg: i, other, path });
        }
        ids.push(id);
    }
    Ok(ids)
}
