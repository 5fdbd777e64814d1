//! What one delivery attempt leaves for each recipient, as values: the remote's reply kept
//! typed ([`Answer`]: code, enhanced status, text) and every way it can fail as a [`Failure`]
//! variant, so the queue decides retry or bounce — and the DSN its status — without reading
//! text.

use std::fmt;

use smtp_proto::Response;

use super::resolve::ResolveError;
use crate::reply::EnhancedStatus;

/// A reply from a remote server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Three-digit code.
    pub code: u16,
    /// The enhanced status code it carried, if any.
    pub status: Option<EnhancedStatus>,
    /// The text after the codes, on one line.
    pub text: String,
}

impl Answer {
    /// A reply from its parts (tests, and the few replies herald words itself).
    pub fn new(code: u16, status: Option<EnhancedStatus>, text: impl Into<String>) -> Answer {
        Answer {
            code,
            status,
            text: text.into(),
        }
    }

    /// The reply as smtp-proto parsed it.
    pub fn from_response(r: &Response<String>) -> Answer {
        let status = (r.esc[0] != 0)
            .then(|| EnhancedStatus::parse(&format!("{}.{}.{}", r.esc[0], r.esc[1], r.esc[2])))
            .flatten();
        Answer {
            code: r.code,
            status,
            text: r.message.replace(['\r', '\n'], " "),
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The enhanced status it carried, or the generic one of its class.
    pub fn status_or_class(&self) -> EnhancedStatus {
        self.status
            .unwrap_or_else(|| EnhancedStatus::of_code(self.code))
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(f, "{} {status} {}", self.code, self.text),
            None => write!(f, "{} {}", self.code, self.text),
        }
    }
}

/// Why a recipient was not delivered in an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The remote refused it (4xx or 5xx, to MAIL, RCPT or DATA); the reply's class decides.
    Remote(Answer),
    /// The domain publishes a null MX (RFC 7505): it accepts no mail. Permanent.
    NullMx {
        /// The recipient domain.
        domain: String,
    },
    /// DNS says there is no route: the domain (or its implicit MX) does not exist or has no
    /// address, or the address literal is invalid. Permanent when the DNS answer is.
    NoRoute(ResolveError),
    /// The last MX host tried had no usable address (others may): temporary.
    NoAddress(ResolveError),
    /// No MX host of the domain matches its MTA-STS policy (`enforce`): temporary.
    NoMxMatchesPolicy {
        /// The recipient domain.
        domain: String,
    },
    /// TLS could not be set up as the policy (MTA-STS `enforce`, `require_tls`, smart host)
    /// demands: temporary, never a fall-back to clear text.
    TlsRequired {
        /// What went wrong.
        detail: String,
    },
    /// A REQUIRETLS message (RFC 8689) that has no next hop meeting its demand: TLS that
    /// authenticated the host (MTA-STS enforce, DANE, or the smart host's verified
    /// certificate) to a server advertising REQUIRETLS. `5.7.30` when that is settled (the
    /// route is not authenticated, or no host advertises REQUIRETLS); `4.7.30` while it may
    /// change (the recipient's MTA-STS policy could not be fetched).
    RequireTls {
        /// Why no host qualified.
        detail: String,
        /// Bounce now rather than retry.
        permanent: bool,
    },
    /// The TCP connection or greeting failed: temporary.
    Connect {
        /// What went wrong.
        detail: String,
    },
    /// The host refused the session with a permanent reply (greeting, EHLO or AUTH); another
    /// host may accept it, so temporary.
    HostRefused {
        /// The host name.
        host: String,
        /// Its reply.
        answer: Answer,
    },
    /// The connection broke during the transaction; nothing was delivered for sure. Temporary.
    ConnectionLost {
        /// The host name.
        host: String,
        /// What went wrong.
        detail: String,
    },
    /// No host was tried at all (no MX host had an address to connect to). Temporary.
    NoHostReached,
    /// Not attempted: herald was shutting down before the attempt could finish. Temporary,
    /// and not counted as an attempt.
    NotAttempted,
    /// Not attempted: traffic shaping holds the destination back (it pushed back, or the
    /// message is over its rate). Temporary, not counted as an attempt; due again after
    /// `wait_secs`.
    Throttled {
        /// The destination held back ([`crate::shaping`]).
        destination: String,
        /// Seconds until it may be tried again.
        wait_secs: u64,
    },
    /// herald could not finish the delivery on its own side (e.g. `[delivery] capture_dir`
    /// cannot be written). Temporary.
    Local(String),
}

impl Failure {
    /// Whether the recipient must be given up now (bounce) rather than retried.
    pub fn is_permanent(&self) -> bool {
        match self {
            Failure::Remote(a) => a.is_permanent(),
            Failure::NullMx { .. } => true,
            Failure::NoRoute(e) => e.is_permanent(),
            Failure::RequireTls { permanent, .. } => *permanent,
            _ => false,
        }
    }

    /// The basic reply code this failure is reported with.
    pub fn code(&self) -> u16 {
        match self {
            Failure::Remote(a) => a.code,
            _ if self.is_permanent() => 550,
            _ => 451,
        }
    }

    /// The enhanced status code (RFC 3463) this failure is reported with in logs and DSNs.
    pub fn status(&self) -> EnhancedStatus {
        match self {
            Failure::Remote(a) => a.status_or_class(),
            Failure::NullMx { .. } => EnhancedStatus::new(5, 1, 10),
            Failure::NoRoute(e) if e.is_permanent() => EnhancedStatus::new(5, 1, 2),
            Failure::NoRoute(_) | Failure::NoAddress(_) => EnhancedStatus::new(4, 4, 3),
            Failure::NoMxMatchesPolicy { .. } => EnhancedStatus::new(4, 7, 5),
            Failure::RequireTls { permanent, .. } => {
                EnhancedStatus::new(if *permanent { 5 } else { 4 }, 7, 30)
            }
            Failure::TlsRequired { .. }
            | Failure::Connect { .. }
            | Failure::HostRefused { .. }
            | Failure::ConnectionLost { .. } => EnhancedStatus::new(4, 4, 2),
            Failure::NoHostReached => EnhancedStatus::new(4, 4, 1),
            Failure::NotAttempted => EnhancedStatus::new(4, 3, 2),
            Failure::Throttled { .. } => EnhancedStatus::new(4, 4, 5),
            Failure::Local(_) => EnhancedStatus::new(4, 3, 0),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Failure::Remote(a) = self {
            return write!(f, "{a}");
        }
        write!(f, "{} {} ", self.code(), self.status())?;
        match self {
            Failure::Remote(_) => Ok(()),
            Failure::NullMx { domain } => {
                write!(
                    f,
                    "{domain} publishes a null MX (RFC 7505): it accepts no mail"
                )
            }
            Failure::NoRoute(e) | Failure::NoAddress(e) => write!(f, "{e}"),
            Failure::NoMxMatchesPolicy { domain } => {
                write!(f, "no MX host of {domain} matches its MTA-STS policy")
            }
            Failure::TlsRequired { detail } => write!(f, "TLS failed: {detail}"),
            Failure::RequireTls { detail, .. } => {
                write!(f, "REQUIRETLS support required: {detail}")
            }
            Failure::Connect { detail } => write!(f, "connection failed: {detail}"),
            Failure::HostRefused { host, answer } => write!(f, "{host} refused: {answer}"),
            Failure::ConnectionLost { host, detail } => {
                write!(f, "connection to {host} lost: {detail}")
            }
            Failure::NoHostReached => write!(f, "no MX host could be reached"),
            Failure::NotAttempted => {
                write!(f, "not attempted: herald was shutting down; will retry")
            }
            Failure::Local(detail) => write!(f, "{detail}"),
            Failure::Throttled {
                destination,
                wait_secs,
            } => write!(
                f,
                "not attempted: traffic shaping holds {destination} back for {wait_secs}s \
                 (it asked herald to slow down, or the message is over its rate); will retry"
            ),
        }
    }
}

/// One recipient's result of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientResult {
    /// The remote's `2xx` reply, or why it was not delivered.
    pub outcome: Result<Answer, Failure>,
    /// The host tried, as `name [address]`.
    pub host: Option<String>,
    /// The TLS version of the session that answered (`TLSv1.3`), `None` in clear text or
    /// when no session answered.
    pub tls: Option<String>,
    /// The TLS policy the answering host was tried under (`mta-sts enforce`, `dane`,
    /// `opportunistic`, …), when a session answered.
    pub tls_policy: Option<&'static str>,
}

impl RecipientResult {
    /// The reply or failure as a person reads it (`550 5.1.1 no such user`).
    pub fn describe(&self) -> String {
        match &self.outcome {
            Ok(a) => a.to_string(),
            Err(f) => f.to_string(),
        }
    }

    /// The enhanced status of the reply or failure.
    pub fn status(&self) -> EnhancedStatus {
        match &self.outcome {
            Ok(a) => a.status_or_class(),
            Err(f) => f.status(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_read_as_before_and_carry_their_class() {
        let null = Failure::NullMx {
            domain: "nomail.test".into(),
        };
        assert!(null.is_permanent());
        assert_eq!(
            null.to_string(),
            "550 5.1.10 nomail.test publishes a null MX (RFC 7505): it accepts no mail"
        );
        let nx = Failure::NoRoute(ResolveError::NoSuchDomain {
            name: "gone.test".into(),
        });
        assert!(nx.is_permanent());
        assert_eq!(
            nx.to_string(),
            "550 5.1.2 gone.test does not exist (NXDOMAIN)"
        );
        let dns = Failure::NoRoute(ResolveError::Temporary("MX look-up failed".into()));
        assert!(!dns.is_permanent());
        assert_eq!(dns.status().to_string(), "4.4.3");
        let policy = Failure::NoMxMatchesPolicy {
            domain: "bank.test".into(),
        };
        assert_eq!(
            policy.to_string(),
            "451 4.7.5 no MX host of bank.test matches its MTA-STS policy"
        );
        let rejected = Failure::Remote(Answer::new(
            550,
            EnhancedStatus::parse("5.1.1"),
            "no such user",
        ));
        assert!(rejected.is_permanent());
        assert_eq!(rejected.to_string(), "550 5.1.1 no such user");
        let bare = Failure::Remote(Answer::new(452, None, "busy"));
        assert!(!bare.is_permanent());
        assert_eq!(bare.status().to_string(), "4.0.0");
        assert!(!Failure::NotAttempted.is_permanent());
    }
}
