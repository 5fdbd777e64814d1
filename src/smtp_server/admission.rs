//! Connection slots: how many connections a listener holds at once, in total and per client
//! address. A slot is taken before any TLS handshake or greeting and given back on drop.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::reply::Reply;

/// A connection limit and the setting that sets it (named in refusals and logs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit {
    /// Connections allowed.
    pub max: usize,
    /// The setting, e.g. `smtp.max_connections`.
    pub setting: &'static str,
}

/// The connections a listener (or a group of listeners) holds; cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Admission(Arc<Mutex<Counts>>);

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One connection slot; released on drop.
pub(crate) struct Slot {
    admission: Admission,
    ip: IpAddr,
}

impl Admission {
    /// Takes a slot for `ip` under the limits in force now, or says which limit is reached.
    pub(crate) fn admit(
        &self,
        ip: IpAddr,
        total: Limit,
        per_ip: Limit,
    ) -> Result<Slot, &'static str> {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= total.max {
            return Err(total.setting);
        }
        let n = c.per_ip.entry(ip).or_insert(0);
        if *n >= per_ip.max {
            return Err(per_ip.setting);
        }
        *n += 1;
        c.total += 1;
        Ok(Slot {
            admission: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.admission.0.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// The reply to a connection refused for `limit` (sent before closing, where the listener
/// can still speak in the clear).
pub(crate) fn too_many(host: &str, limit: &str) -> Reply {
    Reply::new(
        421,
        "4.7.0",
        format!("{host} too many connections ({limit}); try again later"),
    )
}

/// The reply to a session waiting for a command when herald shuts down (nothing of a
/// transaction in progress was acknowledged; the client tries again later).
pub(crate) fn shutting_down(host: &str) -> Reply {
    Reply::new(
        421,
        "4.3.2",
        format!("{host} is shutting down; try again shortly"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_in_total_and_per_address_and_come_back_on_drop() {
        let a = Admission::default();
        let total = Limit {
            max: 3,
            setting: "total",
        };
        let per_ip = Limit {
            max: 2,
            setting: "per_ip",
        };
        let (x, y): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let s1 = a.admit(x, total, per_ip).expect("first");
        let _s2 = a.admit(x, total, per_ip).expect("second");
        assert_eq!(a.admit(x, total, per_ip).err(), Some("per_ip"));
        let _s3 = a.admit(y, total, per_ip).expect("other address");
        assert_eq!(a.admit(y, total, per_ip).err(), Some("total"));
        drop(s1);
        assert_eq!(a.open(), 2);
        assert!(a.admit(x, total, per_ip).is_ok());
    }
}
