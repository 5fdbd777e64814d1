//! `herald queue`: see and act on waiting mail, against a running herald or the spool offline.
//!
//! When `[admin] listen` answers, every command goes through the running herald's queue API.
//! When nothing answers and no herald holds the spool lock, the command works on the spool
//! files directly; changes take effect when herald next starts. Which one was used is said on
//! stderr.
//!
//! With `[cluster]`, both show and act on the whole cluster's queue: through the running
//! herald's admin endpoint, or (none answering here) on the database directly.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use crate::clock::unix_now;
use crate::config::Config;
use crate::queue::summary::{Page, QueueSummary, Tally, cluster_summary};
use crate::queue::transition::operator_failures;
use crate::queue::view::{ActionResult, MessageView};
use crate::spool::{RecipientStatus, Spool, SpoolLock};

/// `herald queue` subcommands.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List queued messages with each recipient's state, in queue-id order.
    List {
        /// At most this many messages (a page); the next page starts `--after` the last id.
        #[arg(long)]
        limit: Option<usize>,
        /// Only messages whose queue id sorts after this one.
        #[arg(long)]
        after: Option<String>,
    },
    /// Counts per destination domain, per app and per age, and traffic shaping's state.
    Summary {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Show one message.
    Show {
        /// Queue id.
        id: String,
    },
    /// Attempt delivery now.
    Retry {
        /// Queue id.
        id: Option<String>,
        /// Every queued message.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Delete a message.
    Delete {
        /// Queue id.
        id: String,
        /// Send a bounce to the sender.
        #[arg(long)]
        bounce: bool,
    },
    /// Hold a message: no attempts until released.
    Hold {
        /// Queue id.
        id: String,
    },
    /// Release a held message.
    Release {
        /// Queue id.
        id: String,
    },
}

/// Runs an `herald queue` subcommand.
pub async fn run(config: &Path, cmd: QueueCommand) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(config)?;
    if let QueueCommand::Retry {
        id: None,
        all: false,
    } = cmd
    {
        return Err(super::UsageError("retry needs a queue id or --all".into()).into());
    }
    if let Some(base) = crate::admin::client::base_url(&cfg) {
        let client = crate::admin::client::http_client(&cfg, Duration::from_secs(30))?;
        match client.get(format!("{base}/health")).send().await {
            Ok(_) => {
                eprintln!("herald queue: using the running herald at {base}");
                return online(&client, &base, cmd).await;
            }
            Err(e) if e.is_connect() => {}
            Err(e) => anyhow::bail!("the admin endpoint at {base} did not answer properly: {e}"),
        }
    }
    if let Some(cluster) = &cfg.cluster {
        eprintln!(
            "herald queue: no herald answers on this machine; working on the cluster's database"
        );
        return cluster_direct(&cfg, cluster, cmd).await;
    }
    let dir = cfg.spool_dir();
    let Some(_lock) = SpoolLock::try_acquire(&dir)? else {
        anyhow::bail!(
            "a herald is running on the spool {} but its admin endpoint does not answer; \
             set [admin] listen and restart it, or stop it to work offline",
            dir.display()
        );
    };
    eprintln!(
        "herald queue: no herald is running; working offline on the spool {}",
        dir.display()
    );
    offline(&cfg, &dir, cmd).await
}

async fn online(
    client: &reqwest::Client,
    base: &str,
    cmd: QueueCommand,
) -> anyhow::Result<ExitCode> {
    let req = match &cmd {
        QueueCommand::List { limit: None, after } => {
            return list_in_pages(client, base, after.clone()).await;
        }
        QueueCommand::List { limit, after } => {
            let mut req = client.get(format!("{base}/queue"));
            if let Some(limit) = limit {
                req = req.query(&[("limit", limit.to_string())]);
            }
            if let Some(after) = after {
                req = req.query(&[("after", after)]);
            }
            let list: Vec<MessageView> = json(req.send().await?).await?;
            print_page(&list, *limit);
            return Ok(ExitCode::SUCCESS);
        }
        QueueCommand::Summary { json: as_json } => {
            let resp = client.get(format!("{base}/queue/summary")).send().await?;
            let summary: QueueSummary = json(resp).await?;
            return print_summary(&summary, *as_json);
        }
        QueueCommand::Show { id } => {
            let resp = client.get(format!("{base}/queue/{id}")).send().await?;
            if !resp.status().is_success() {
                let r: ActionResult = json(resp).await?;
                return Ok(report(&r));
            }
            let m: MessageView = json(resp).await?;
            print_show(&m);
            return Ok(ExitCode::SUCCESS);
        }
        QueueCommand::Retry { id: Some(id), .. } => client.post(format!("{base}/queue/{id}/retry")),
        QueueCommand::Retry { id: None, .. } => client.post(format!("{base}/queue/retry")),
        QueueCommand::Hold { id } => client.post(format!("{base}/queue/{id}/hold")),
        QueueCommand::Release { id } => client.post(format!("{base}/queue/{id}/release")),
        QueueCommand::Delete { id, bounce } => {
            client.delete(format!("{base}/queue/{id}?bounce={bounce}"))
        }
    };
    let r: ActionResult = json(req.send().await?).await?;
    Ok(report(&r))
}

/// Reads a JSON body from the admin endpoint.
async fn json<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> anyhow::Result<T> {
    let status = resp.status();
    let body = resp.bytes().await?;
    serde_json::from_slice(&body).map_err(|e| {
        anyhow::anyhow!(
            "unexpected answer from the admin endpoint ({status}): {e}: {}",
            String::from_utf8_lossy(&body)
        )
    })
}

fn report(r: &ActionResult) -> ExitCode {
    if r.ok {
        println!("{}", r.message);
        ExitCode::SUCCESS
    } else {
        eprintln!("herald queue: {}", r.message);
        ExitCode::from(1)
    }
}

async fn offline(cfg: &Config, dir: &Path, cmd: QueueCommand) -> anyhow::Result<ExitCode> {
    let (spool, _arrivals) = Spool::open_dir(dir)?;
    let messages = spool.recover().await?;
    let find = |id: &str| messages.iter().find(|m| m.id == id).cloned();
    let missing = |id: &str| {
        report(&ActionResult {
            ok: false,
            message: format!("no message {id} in the queue"),
        })
    };
    let result = match cmd {
        QueueCommand::List { limit, after } => {
            let mut views: Vec<MessageView> =
                messages.iter().map(|m| MessageView::of(m, false)).collect();
            views.sort_by(|a, b| a.id.cmp(&b.id));
            print_page(&Page { limit, after }.of(views), limit);
            return Ok(ExitCode::SUCCESS);
        }
        QueueCommand::Summary { json } => {
            let mut tally = Tally::default();
            let now = unix_now();
            for m in &messages {
                tally.add(m, false, now);
            }
            return print_summary(&tally.finish(), json);
        }
        QueueCommand::Show { id } => {
            let Some(m) = find(&id) else {
                return Ok(missing(&id));
            };
            print_show(&MessageView::of(&m, false));
            return Ok(ExitCode::SUCCESS);
        }
        QueueCommand::Retry { id, .. } => {
            let targets: Vec<_> = match &id {
                Some(id) => match find(id) {
                    Some(m) => vec![m],
                    None => return Ok(missing(id)),
                },
                None => messages.iter().filter(|m| !m.state.held).cloned().collect(),
            };
            let now = unix_now();
            for mut m in targets.iter().cloned() {
                m.state.retry_now(now);
                spool.write_state(&m.id, &m.state).await?;
            }
            format!(
                "{} message(s) will be attempted as soon as herald starts",
                targets.len()
            )
        }
        QueueCommand::Hold { id } | QueueCommand::Release { id } if find(&id).is_none() => {
            return Ok(missing(&id));
        }
        QueueCommand::Hold { id } => {
            let mut m = find(&id).ok_or_else(|| anyhow::anyhow!("no message {id}"))?;
            m.state.hold();
            spool.write_state(&id, &m.state).await?;
            format!("{id} held: no attempts until released")
        }
        QueueCommand::Release { id } => {
            let mut m = find(&id).ok_or_else(|| anyhow::anyhow!("no message {id}"))?;
            m.state.release();
            spool.write_state(&id, &m.state).await?;
            format!("{id} released; it will be attempted when herald starts")
        }
        QueueCommand::Delete { id, bounce } => {
            let Some(m) = find(&id) else {
                return Ok(missing(&id));
            };
            let mut note = String::new();
            if bounce {
                let signer = std::sync::Arc::new(crate::signing::Signer::load(cfg)?);
                let own =
                    crate::own_mail::OwnMail::new(spool.clone(), signer, &cfg.server.hostname);
                let data = spool.read_message(&id).await?;
                let failures = operator_failures(&m.state);
                note = match crate::queue::dsn::queue_notice(
                    cfg,
                    &own,
                    &m,
                    &data,
                    &failures,
                    crate::queue::dsn::Kind::Failed,
                )
                .await?
                {
                    Some(dsn) => format!(
                        "; bounce {dsn} to <{}> queued (sent when herald starts)",
                        m.envelope.mail_from
                    ),
                    None => "; no bounce (null sender)".into(),
                };
            }
            spool.remove(&id).await?;
            format!("{id} deleted{note}")
        }
    };
    Ok(report(&ActionResult {
        ok: true,
        message: result,
    }))
}

fn age(since: u64) -> String {
    let secs = unix_now().saturating_sub(since);
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

fn recipient_line(r: &crate::spool::RecipientState) -> String {
    let status = match r.status {
        RecipientStatus::Pending => "pending",
        RecipientStatus::Delivered => "delivered",
        RecipientStatus::Failed => "failed",
    };
    let mut line = format!("    {}  {status}  attempts {}", r.address, r.attempts);
    if r.status == RecipientStatus::Pending {
        let now = unix_now();
        if r.next_attempt <= now {
            line.push_str("  next: now");
        } else {
            line.push_str(&format!(
                "  next in {}",
                humantime::format_duration(Duration::from_secs(r.next_attempt - now))
            ));
        }
    }
    if let Some(reply) = &r.last_reply {
        line.push_str(&format!("  last: {reply}"));
    }
    if let Some(host) = &r.last_host {
        line.push_str(&format!(" ({host})"));
    }
    if let Some(known) = r.last_reply.as_deref().and_then(crate::providers::explain) {
        line.push_str(&format!(
            "\n        {} {}: {}",
            known.provider, known.code, known.meaning
        ));
    }
    line
}

fn sender(m: &MessageView) -> String {
    format!("<{}>", m.sender)
}

/// Messages asked for at a time by `herald queue list` without `--limit`.
const LIST_PAGE: usize = 5000;

/// `herald queue list` of everything from the running herald (a single node's queue, or with
/// `[cluster]` the database's, read by primary key), page by page, each page
/// printed as it comes: neither herald nor this command holds the whole queue in memory (a
/// million messages are 240 MB of text). A message that arrives meanwhile is listed when
/// its id sorts after the page being read.
async fn list_in_pages(
    client: &reqwest::Client,
    base: &str,
    mut after: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
    let (mut messages, mut waiting) = (0, 0);
    loop {
        let mut req = client
            .get(format!("{base}/queue"))
            .query(&[("limit", LIST_PAGE.to_string())]);
        if let Some(after) = &after {
            req = req.query(&[("after", after)]);
        }
        let page: Vec<MessageView> = json(req.send().await?).await?;
        messages += page.len();
        waiting += write_messages(&mut out, &page)?;
        match page.last() {
            Some(last) if page.len() >= LIST_PAGE => after = Some(last.id.clone()),
            _ => break,
        }
    }
    if messages == 0 {
        writeln!(out, "queue is empty")?;
    } else {
        writeln!(out, "{messages} message(s), {waiting} recipient(s) waiting")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn print_list(list: &[MessageView]) {
    if list.is_empty() {
        println!("queue is empty");
        return;
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // A reader that went away ends the command (SIGPIPE), as it did with println!.
    let waiting = write_messages(&mut out, list).unwrap_or(0);
    let _ = out.flush();
    drop(out);
    println!("{} message(s), {waiting} recipient(s) waiting", list.len());
}

/// Writes each message and its recipients' lines; the recipients waiting.
fn write_messages(out: &mut impl std::io::Write, list: &[MessageView]) -> std::io::Result<usize> {
    let mut waiting = 0;
    for m in list {
        let mut flags = match (m.held, m.in_flight) {
            (true, _) => "  [held]",
            (false, true) => "  [sending]",
            _ => "",
        }
        .to_string();
        if let Some(node) = &m.node {
            flags.push_str(&format!("  node {node}"));
        }
        let tls = m
            .tls_request
            .label()
            .map(|l| format!("  [{l}]"))
            .unwrap_or_default();
        writeln!(
            out,
            "{}  age {}  from {}  {} bytes{flags}{tls}",
            m.id,
            age(m.received_at),
            sender(m),
            m.size
        )?;
        for r in &m.recipients {
            if r.status == RecipientStatus::Pending {
                waiting += 1;
            }
            writeln!(out, "{}", recipient_line(r))?;
        }
    }
    Ok(waiting)
}

/// A page of the list, and where the next one starts when it was full.
fn print_page(list: &[MessageView], limit: Option<usize>) {
    print_list(list);
    if let (Some(limit), Some(last)) = (limit, list.last())
        && list.len() >= limit
    {
        eprintln!(
            "herald queue: more may follow: herald queue list --limit {limit} --after {}",
            last.id
        );
    }
}

fn print_summary(summary: &QueueSummary, as_json: bool) -> anyhow::Result<ExitCode> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(summary)?);
    } else {
        print!("{}", summary.render());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_show(m: &MessageView) {
    println!("id:        {}", m.id);
    println!("sender:    {}", sender(m));
    if let Some(app) = &m.app {
        println!("app:       {app}");
    }
    let received = chrono::DateTime::from_timestamp(m.received_at as i64, 0)
        .map(|d| d.to_rfc3339())
        .unwrap_or_default();
    println!("received:  {received} ({} ago)", age(m.received_at));
    println!("size:      {} bytes", m.size);
    println!("held:      {}", if m.held { "yes" } else { "no" });
    if let Some(tls) = m.tls_request.label() {
        println!("tls:       {tls}");
    }
    if let Some(node) = &m.node {
        println!("node:      {node} (holds its lease)");
    }
    println!("recipients:");
    for r in &m.recipients {
        println!("{}", recipient_line(r));
    }
}

/// `herald queue` on a cluster's database directly (no herald answering on this machine):
/// the same actions the admin endpoint offers, on the whole cluster's queue.
async fn cluster_direct(
    cfg: &Config,
    cluster: &crate::config::ClusterConfig,
    cmd: QueueCommand,
) -> anyhow::Result<ExitCode> {
    let db = crate::cluster::open(cluster).await?;
    let backend = std::sync::Arc::new(crate::spool::PgBackend::open(db, &cfg.spool_dir())?);
    let leases: &dyn crate::spool::Leases = backend.as_ref();
    let missing = |id: &str| {
        report(&ActionResult {
            ok: false,
            message: format!("no message {id} in the queue"),
        })
    };
    let message = match cmd {
        QueueCommand::List { limit, after } => {
            let views: Vec<MessageView> = leases
                .list_page(after.as_deref(), limit)
                .await?
                .iter()
                .map(|e| MessageView::of_cluster(e, false))
                .collect();
            print_page(&views, limit);
            return Ok(ExitCode::SUCCESS);
        }
        QueueCommand::Summary { json } => {
            let summary = cluster_summary(leases, unix_now(), 0).await?;
            return print_summary(&summary, json);
        }
        QueueCommand::Show { id } => {
            let Some(entry) = leases.list_all(Some(&id)).await?.into_iter().next() else {
                return Ok(missing(&id));
            };
            print_show(&MessageView::of_cluster(&entry, false));
            return Ok(ExitCode::SUCCESS);
        }
        QueueCommand::Retry { id: Some(id), .. } => match leases.retry_now(Some(&id)).await? {
            0 => return Ok(missing(&id)),
            _ => format!("{id} scheduled for an attempt now"),
        },
        QueueCommand::Retry { id: None, .. } => format!(
            "{} message(s) scheduled for an attempt now",
            leases.retry_now(None).await?
        ),
        QueueCommand::Hold { id } => match leases.set_held(&id, true).await? {
            false => return Ok(missing(&id)),
            true => format!("{id} held: no attempts until released"),
        },
        QueueCommand::Release { id } => match leases.set_held(&id, false).await? {
            false => return Ok(missing(&id)),
            true => format!("{id} released"),
        },
        QueueCommand::Delete { id, bounce } => {
            let Some(entry) = leases.list_all(Some(&id)).await?.into_iter().next() else {
                return Ok(missing(&id));
            };
            let mut note = String::new();
            if bounce {
                let (spool, _arrivals) = Spool::open(backend.clone())?;
                let signer = std::sync::Arc::new(crate::signing::Signer::load(cfg)?);
                let own =
                    crate::own_mail::OwnMail::new(spool.clone(), signer, &cfg.server.hostname);
                let data = spool.read_message(&id).await?;
                let failures = operator_failures(&entry.message.state);
                note = match crate::queue::dsn::queue_notice(
                    cfg,
                    &own,
                    &entry.message,
                    &data,
                    &failures,
                    crate::queue::dsn::Kind::Failed,
                )
                .await?
                {
                    Some(dsn) => format!(
                        "; bounce {dsn} to <{}> queued",
                        entry.message.envelope.mail_from
                    ),
                    None => "; no bounce (null sender)".into(),
                };
            }
            match leases.take(&id).await? {
                None => return Ok(missing(&id)),
                Some(_) => format!("{id} deleted{note}"),
            }
        }
    };
    Ok(report(&ActionResult { ok: true, message }))
}
