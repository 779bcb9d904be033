//! Changing a running volume's settings: the [`Tunables`] (timeouts, resync
//! rates, failback and flap policy, error budget, bitmap clear delay) take
//! effect at once; anything that decides where data lives or how legs are
//! opened is refused, naming the keys.

use super::{Inner, Volume};
use crate::config::{ConfigError, Tunables, VolumeConfig};

/// Why new settings were refused; nothing changed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RetuneError {
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error(
        "{} cannot change while the LUN is open; remove the backstore and re-create it with the new \
         settings (the legs keep their data, and the metadata lets it resume)",
        .keys.join(", ")
    )]
    Fixed { keys: Vec<&'static str> },
}

impl Volume {
    /// The tunables in force.
    pub fn tunables(&self) -> Tunables {
        self.inner().tun()
    }

    /// Applies `cfg`'s tunables if nothing else in it differs from the
    /// configuration in force (its size is ignored: the LUN decides that).
    /// Returns the keys that changed.
    pub fn retune(&self, cfg: &VolumeConfig) -> Result<Vec<&'static str>, RetuneError> {
        let now = self.config();
        let cfg = VolumeConfig { size: now.size, ..cfg.clone() };
        cfg.validate()?;
        let keys = now.fixed_differences(&cfg);
        if !keys.is_empty() {
            return Err(RetuneError::Fixed { keys });
        }
        let new = cfg.tunables();
        let mut t = self.inner().tun.write();
        let changed = t.changed(&new);
        *t = new;
        drop(t);
        if !changed.is_empty() {
            log::info!("{}: settings changed: {}", now.name, changed.join(", "));
            self.inner().resync_wake.notify_all();
        }
        Ok(changed)
    }
}

impl Inner {
    /// The tunables in force.
    pub(super) fn tun(&self) -> Tunables {
        *self.tun.read()
    }
}
