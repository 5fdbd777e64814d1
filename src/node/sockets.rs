//! Every listen socket of the node, bound before anything else starts: a busy port fails
//! start-up here, before any key, certificate, spool recovery or delivery. Bound sockets
//! queue connections in the kernel until their subsystem starts serving.

use crate::config::Config;

/// The bound, not yet serving, sockets (`None`: not configured).
pub(super) struct Sockets {
    /// `[smtp]` submission, submissions and plain.
    pub smtp: crate::inbound::Bound,
    /// `[admin] listen`.
    pub admin: Option<tokio::net::TcpListener>,
    /// `[feedback] listen`.
    pub feedback: Option<tokio::net::TcpListener>,
    /// `[dns_server] listen`.
    pub dns: Option<crate::dns::authority::DnsSockets>,
    /// `[web] listen`.
    pub web: Option<tokio::net::TcpListener>,
}

impl Sockets {
    /// Binds every configured listener; the error names the setting, address and OS error.
    /// A new listener adds its field above and one line here.
    pub(super) async fn bind(cfg: &Config) -> anyhow::Result<Sockets> {
        Ok(Sockets {
            smtp: crate::inbound::bind(cfg).await?,
            admin: match cfg.admin.listen {
                Some(listen) => Some(crate::admin::bind(listen).await?),
                None => None,
            },
            feedback: crate::feedback::bind(cfg).await?,
            dns: crate::dns::authority::bind(cfg).await?,
            web: crate::web::bind(cfg).await?,
        })
    }
}
