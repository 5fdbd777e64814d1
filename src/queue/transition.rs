//! What a finished attempt does to a message's state — each recipient delivered, bounced now,
//! retried at a later time, or given up at expiry, and whether a delay notice is due — as a
//! pure function of the state, the attempt's results and the time ([`settle`]). The queue
//! manager only carries out what it returns (DSNs, state write, reschedule).

use std::time::Duration;

use super::dsn::Failure;
use crate::config::DeliveryConfig;
use crate::outbound::outcome::{self, RecipientResult};
use crate::reply::EnhancedStatus;
use crate::spool::{DeliveryState, RecipientStatus};

/// The schedule rules from `[delivery]`.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// Waits between attempts; the last repeats.
    pub retry_schedule: &'a [Duration],
    /// How long a message may wait before its pending recipients are given up.
    pub max_age: Duration,
    /// After how long a "still trying" notice goes to the sender (once), if at all.
    pub delay_notice: Option<Duration>,
    /// The operator's classification rules (`[[bounce.rules]]`), before the shipped ones.
    pub bounce_rules: &'a [crate::config::BounceRule],
}

impl<'a> Rules<'a> {
    /// The rules of a `[delivery]` section.
    pub fn of(cfg: &'a DeliveryConfig) -> Rules<'a> {
        Rules {
            retry_schedule: &cfg.retry_schedule,
            max_age: cfg.max_age,
            delay_notice: cfg.delay_notice,
            bounce_rules: &[],
        }
    }

    /// The rules of a whole configuration: `[delivery]` and the `[bounce]` classification.
    pub fn of_config(cfg: &'a crate::config::Config) -> Rules<'a> {
        Rules {
            bounce_rules: &cfg.bounce.rules,
            ..Rules::of(&cfg.delivery)
        }
    }
}

/// What an attempt settled, for the manager to carry out and count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// Recipients given up by this attempt: a bounce is due for them.
    pub bounce: Vec<Failure>,
    /// Recipients still pending when the delay notice fell due (sent once per message).
    pub delay: Vec<Failure>,
    /// Recipients delivered by this attempt.
    pub delivered: u64,
    /// Recipients to be retried later.
    pub deferred: u64,
}

/// The wait after the `attempts`-th failed attempt: the schedule's entry, the last repeating.
pub fn retry_wait(schedule: &[Duration], attempts: u32) -> Duration {
    let i = (attempts.max(1) as usize - 1).min(schedule.len().saturating_sub(1));
    schedule.get(i).copied().unwrap_or(Duration::from_secs(60))
}

/// Applies an attempt's `results` (recipient index, result) to `state` at time `now` (seconds
/// since the epoch) for a message accepted at `received_at`.
///
/// A `2xx` delivers; a permanent failure bounces at once; a temporary one is retried after the
/// schedule's wait, but never later than the expiry, and bounces (5.4.7) once the message is
/// older than `max_age`; [`outcome::Failure::NotAttempted`] (herald shutting down) leaves the
/// recipient due at once, without counting an attempt. Results for recipients that are not
/// pending (an operator acted meanwhile) are ignored.
pub fn settle(
    state: &mut DeliveryState,
    received_at: u64,
    results: Vec<(usize, RecipientResult)>,
    now: u64,
    rules: &Rules<'_>,
) -> Settled {
    let expires = received_at.saturating_add(rules.max_age.as_secs());
    let mut settled = Settled::default();
    for (i, r) in results {
        let Some(rs) = state.recipients.get_mut(i) else {
            continue;
        };
        if rs.status != RecipientStatus::Pending {
            continue;
        }
        if let Err(f @ outcome::Failure::NotAttempted) = &r.outcome {
            rs.next_attempt = rs.next_attempt.min(now);
            rs.last_reply = Some(f.to_string());
            continue;
        }
        // Held back by traffic shaping: due when the hold ends, no attempt counted (but the
        // expiry still applies).
        if let Err(f @ outcome::Failure::Throttled { wait_secs, .. }) = &r.outcome
            && now < expires
        {
            rs.next_attempt = now.saturating_add((*wait_secs).max(1)).min(expires);
            rs.last_reply = Some(f.to_string());
            continue;
        }
        rs.attempts += 1;
        rs.class = r
            .outcome
            .as_ref()
            .err()
            .and_then(|f| classify(rules.bounce_rules, f));
        rs.last_reply = Some(r.describe());
        rs.last_status = Some(r.status());
        rs.last_host = r.host.clone();
        match r.outcome {
            Ok(_) => {
                rs.status = RecipientStatus::Delivered;
                settled.delivered += 1;
            }
            Err(f) if f.is_permanent() => {
                rs.status = RecipientStatus::Failed;
                settled.bounce.push(Failure {
                    recipient: rs.address.clone(),
                    status: f.status(),
                    diagnostic: f.to_string(),
                    remote: r.host,
                    class: rs.class,
                });
            }
            Err(f) if now >= expires => {
                let status = EnhancedStatus::new(5, 4, 7);
                let diagnostic = format!(
                    "550 {status} gave up after {} attempts over {}; last reply: {f}",
                    rs.attempts,
                    humantime::format_duration(Duration::from_secs(
                        now.saturating_sub(received_at)
                    )),
                );
                rs.status = RecipientStatus::Failed;
                rs.last_reply = Some(diagnostic.clone());
                rs.last_status = Some(status);
                settled.bounce.push(Failure {
                    recipient: rs.address.clone(),
                    status,
                    diagnostic,
                    remote: r.host,
                    class: rs.class,
                });
            }
            Err(_) => {
                settled.deferred += 1;
                let wait = retry_wait(rules.retry_schedule, rs.attempts).as_secs();
                rs.next_attempt = now.saturating_add(wait.max(1)).min(expires.max(now + 1));
            }
        }
    }
    if let Some(after) = rules.delay_notice
        && !state.delay_notified
        && now.saturating_sub(received_at) >= after.as_secs()
    {
        settled.delay = state
            .recipients
            .iter()
            .filter(|r| r.status == RecipientStatus::Pending)
            .map(|r| Failure {
                recipient: r.address.clone(),
                status: r
                    .last_status
                    .filter(|s| s.class == 4)
                    .unwrap_or(EnhancedStatus::new(4, 4, 7)),
                diagnostic: r
                    .last_reply
                    .clone()
                    .unwrap_or_else(|| "451 4.4.7 not yet delivered".into()),
                remote: r.last_host.clone(),
                class: r.class,
            })
            .collect();
        if !settled.delay.is_empty() {
            state.delay_notified = true;
        }
    }
    settled
}

/// The bounce entries for the recipients an operator deletion leaves undelivered.
pub fn operator_failures(state: &DeliveryState) -> Vec<Failure> {
    state
        .recipients
        .iter()
        .filter(|r| r.status == RecipientStatus::Pending)
        .map(|r| Failure {
            recipient: r.address.clone(),
            status: EnhancedStatus::new(5, 3, 0),
            diagnostic: format!(
                "550 5.3.0 deleted from the queue by the operator{}",
                r.last_reply
                    .as_ref()
                    .map(|l| format!("; last reply: {l}"))
                    .unwrap_or_default()
            ),
            remote: r.last_host.clone(),
            class: None,
        })
        .collect()
}

/// The class of a failed attempt (issue 24): a remote answer by the classification rules;
/// a domain that cannot receive mail (null MX, no such domain) is a hard bounce; failures
/// on herald's side or in transit have none.
pub fn classify(
    custom: &[crate::config::BounceRule],
    f: &outcome::Failure,
) -> Option<crate::events::BounceClass> {
    use outcome::Failure as F;
    match f {
        F::Remote(a) | F::HostRefused { answer: a, .. } => Some(crate::bounce::classify(
            custom,
            a.code,
            &a.status.map(|s| s.to_string()).unwrap_or_default(),
            &a.text,
        )),
        F::NullMx { .. } => Some(crate::events::BounceClass::Hard),
        F::NoRoute(e) if e.is_permanent() => Some(crate::events::BounceClass::Hard),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::outcome::{Answer, Failure as Why};
    use crate::spool::Envelope;

    const HOUR: u64 = 3600;
    const SCHEDULE: [Duration; 2] = [Duration::from_secs(60), Duration::from_secs(600)];

    fn rules(delay_notice: Option<u64>) -> Rules<'static> {
        Rules {
            retry_schedule: &SCHEDULE,
            max_age: Duration::from_secs(24 * HOUR),
            delay_notice: delay_notice.map(Duration::from_secs),
            bounce_rules: &[],
        }
    }

    fn state(n: usize) -> DeliveryState {
        DeliveryState::new(&Envelope {
            app: None,
            mail_from: "app@example.test".into(),
            mail_from_params: vec![],
            recipients: (0..n).map(|i| format!("r{i}@example.org")).collect(),
            received_at: 1000,
            client_ip: "127.0.0.1".parse().expect("ip"),
            helo: "client".into(),
            tls: None,
            tls_report: false,
            tls_request: crate::spool::TlsRequest::Policy,
            return_path_domain: None,
        })
    }

    fn result(outcome: Result<Answer, Why>) -> RecipientResult {
        RecipientResult {
            outcome,
            host: Some("mx.example.org [192.0.2.1]".into()),
            tls: None,
            tls_policy: None,
        }
    }

    fn ok() -> RecipientResult {
        result(Ok(Answer::new(
            250,
            EnhancedStatus::parse("2.0.0"),
            "queued",
        )))
    }

    fn remote(code: u16, status: &str, text: &str) -> RecipientResult {
        result(Err(Why::Remote(Answer::new(
            code,
            EnhancedStatus::parse(status),
            text,
        ))))
    }

    #[test]
    fn a_2xx_delivers() {
        let mut s = state(1);
        let out = settle(&mut s, 1000, vec![(0, ok())], 1010, &rules(None));
        assert_eq!(out.delivered, 1);
        assert!(out.bounce.is_empty() && out.delay.is_empty());
        assert_eq!(s.recipients[0].status, RecipientStatus::Delivered);
        assert_eq!(s.recipients[0].attempts, 1);
        assert_eq!(
            s.recipients[0].last_reply.as_deref(),
            Some("250 2.0.0 queued")
        );
        assert!(s.is_finished());
    }

    #[test]
    fn a_permanent_failure_bounces_now_with_its_status() {
        let mut s = state(2);
        let results = vec![(0, remote(550, "5.1.1", "no such user")), (1, ok())];
        let out = settle(&mut s, 1000, results, 1010, &rules(None));
        assert_eq!(out.bounce.len(), 1);
        assert_eq!(out.bounce[0].recipient, "r0@example.org");
        assert_eq!(out.bounce[0].status.to_string(), "5.1.1");
        assert_eq!(out.bounce[0].diagnostic, "550 5.1.1 no such user");
        assert_eq!(s.recipients[0].status, RecipientStatus::Failed);
        let null = result(Err(Why::NullMx {
            domain: "example.org".into(),
        }));
        let mut s = state(1);
        let out = settle(&mut s, 1000, vec![(0, null)], 1010, &rules(None));
        assert_eq!(out.bounce[0].status.to_string(), "5.1.10");
    }

    #[test]
    fn a_temporary_failure_is_retried_on_the_schedule_and_the_last_wait_repeats() {
        let mut s = state(1);
        let out = settle(
            &mut s,
            1000,
            vec![(0, remote(451, "4.3.0", "busy"))],
            1010,
            &rules(None),
        );
        assert_eq!(out.deferred, 1);
        assert_eq!(s.recipients[0].next_attempt, 1070);
        assert_eq!(s.recipients[0].last_status, EnhancedStatus::parse("4.3.0"));
        settle(
            &mut s,
            1000,
            vec![(0, remote(451, "4.3.0", "busy"))],
            1070,
            &rules(None),
        );
        assert_eq!(s.recipients[0].next_attempt, 1670);
        settle(
            &mut s,
            1000,
            vec![(0, remote(451, "4.3.0", "busy"))],
            1670,
            &rules(None),
        );
        assert_eq!(s.recipients[0].next_attempt, 2270);
        assert_eq!(s.recipients[0].attempts, 3);
        assert_eq!(s.recipients[0].status, RecipientStatus::Pending);
    }

    #[test]
    fn a_retry_never_goes_past_the_expiry_and_expiry_bounces_with_5_4_7() {
        let mut s = state(1);
        let late = 1000 + 24 * HOUR - 30;
        settle(
            &mut s,
            1000,
            vec![(0, remote(451, "4.3.0", "busy"))],
            late,
            &rules(None),
        );
        assert_eq!(s.recipients[0].next_attempt, 1000 + 24 * HOUR);
        let out = settle(
            &mut s,
            1000,
            vec![(0, remote(451, "4.3.0", "busy"))],
            1000 + 24 * HOUR,
            &rules(None),
        );
        assert_eq!(out.bounce.len(), 1);
        assert_eq!(out.bounce[0].status.to_string(), "5.4.7");
        assert!(
            out.bounce[0]
                .diagnostic
                .starts_with("550 5.4.7 gave up after 2 attempts over 1day"),
            "{}",
            out.bounce[0].diagnostic
        );
        assert!(
            out.bounce[0]
                .diagnostic
                .ends_with("last reply: 451 4.3.0 busy")
        );
        assert_eq!(s.recipients[0].status, RecipientStatus::Failed);
    }

    #[test]
    fn the_delay_notice_is_due_once_with_each_pending_recipients_last_status() {
        let mut s = state(2);
        let results = vec![(0, remote(451, "4.4.1", "no answer")), (1, ok())];
        let early = settle(&mut s, 1000, results.clone(), 1000 + 60, &rules(Some(HOUR)));
        assert!(early.delay.is_empty());
        let due = settle(
            &mut s,
            1000,
            vec![(0, remote(451, "4.4.1", "no answer"))],
            1000 + HOUR,
            &rules(Some(HOUR)),
        );
        assert_eq!(due.delay.len(), 1);
        assert_eq!(due.delay[0].recipient, "r0@example.org");
        assert_eq!(due.delay[0].status.to_string(), "4.4.1");
        assert!(s.delay_notified);
        let again = settle(
            &mut s,
            1000,
            vec![(0, remote(451, "4.4.1", "no answer"))],
            1000 + 2 * HOUR,
            &rules(Some(HOUR)),
        );
        assert!(again.delay.is_empty());
    }

    #[test]
    fn not_attempted_keeps_the_recipient_due_without_counting_an_attempt() {
        let mut s = state(1);
        s.recipients[0].next_attempt = 5000;
        let out = settle(
            &mut s,
            1000,
            vec![(0, result(Err(Why::NotAttempted)))],
            1200,
            &rules(None),
        );
        assert_eq!(out, Settled::default());
        assert_eq!(s.recipients[0].attempts, 0);
        assert_eq!(s.recipients[0].next_attempt, 1200);
        assert_eq!(s.recipients[0].status, RecipientStatus::Pending);
        let said = s.recipients[0].last_reply.clone().unwrap_or_default();
        assert!(said.contains("not attempted"), "{said}");
    }

    #[test]
    fn results_for_recipients_no_longer_pending_are_ignored() {
        let mut s = state(1);
        s.recipients[0].status = RecipientStatus::Failed;
        let out = settle(&mut s, 1000, vec![(0, ok()), (7, ok())], 1010, &rules(None));
        assert_eq!(out, Settled::default());
        assert_eq!(s.recipients[0].attempts, 0);
    }

    #[test]
    fn the_last_wait_repeats() {
        let s = [Duration::from_secs(60), Duration::from_secs(300)];
        assert_eq!(retry_wait(&s, 1), Duration::from_secs(60));
        assert_eq!(retry_wait(&s, 2), Duration::from_secs(300));
        assert_eq!(retry_wait(&s, 9), Duration::from_secs(300));
        assert_eq!(retry_wait(&s, 0), Duration::from_secs(60));
    }

    #[test]
    fn an_operator_deletion_bounces_the_pending_recipients_with_5_3_0() {
        let mut s = state(2);
        s.recipients[1].status = RecipientStatus::Delivered;
        s.recipients[0].last_reply = Some("451 4.4.1 no answer".into());
        let f = operator_failures(&s);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].status.to_string(), "5.3.0");
        assert_eq!(
            f[0].diagnostic,
            "550 5.3.0 deleted from the queue by the operator; last reply: 451 4.4.1 no answer"
        );
    }
}
