//! `weir group list | describe | reset`, and the loop behind `weir consume TOPIC --group G`.
//!
//! Group consumption commits only what has been written *and flushed* to stdout: the
//! [`GroupConsumer`]'s own auto-commit is off, and this loop flushes, then commits, every
//! [`GROUP_COMMIT_INTERVAL`], at the end of the data (without -f), when --count is reached and
//! on Ctrl-C or SIGTERM, then leaves the group. So a second run continues where the first
//! stopped, repeating nothing it printed (unless the process died between printing and the
//! next commit: delivery is at least once).

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use weir_client::{
    AutoOffsetReset, ConsumerConfig, ErrorCode, GroupConfig, GroupConsumer, PartitionLag, ResetTo,
};

use crate::consume::{quiet_if_closed, write_record};
use crate::format::OutputFormat;
use crate::time::parse_time_ms;
use crate::topic::table;
use crate::{EXIT_INTERRUPTED, connect, topic_error};

/// How often `weir consume --group` commits what it has printed.
pub const GROUP_COMMIT_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Subcommand)]
pub enum GroupCommand {
    /// List consumer groups with their member counts and generations
    List,
    /// Show a group's members and, per partition, committed offset, high watermark and lag
    Describe {
        /// The group
        group: String,
    },
    /// Move a group's committed offsets (stop its consumers first, or use --force)
    Reset {
        /// The group
        group: String,
        /// earliest, latest, offset:N, or time:RFC3339 (or time:MILLIS)
        #[arg(long, value_parser = parse_reset_to, value_name = "SPEC")]
        to: ResetTo,
        /// Reset only this topic (default: every topic the group has committed offsets for)
        #[arg(long, value_name = "T")]
        topic: Option<String>,
        /// Reset even while the group has members (they keep their positions until they
        /// rejoin)
        #[arg(long)]
        force: bool,
    },
}

/// `earliest | latest | offset:N | time:RFC3339`.
pub fn parse_reset_to(text: &str) -> Result<ResetTo, String> {
    let text = text.trim();
    match text {
        "earliest" => return Ok(ResetTo::Earliest),
        "latest" => return Ok(ResetTo::Latest),
        _ => {}
    }
    if let Some(n) = text.strip_prefix("offset:") {
        return n
            .trim()
            .parse()
            .map(ResetTo::Offset)
            .map_err(|_| format!("{n:?} is not an offset; write e.g. offset:42"));
    }
    if let Some(time) = text.strip_prefix("time:") {
        return parse_time_ms(time).map(ResetTo::Time);
    }
    Err(format!(
        "{text:?} is not a reset target; use earliest, latest, offset:N or time:RFC3339"
    ))
}

pub async fn run(broker: &str, command: GroupCommand) -> anyhow::Result<ExitCode> {
    let client = connect(broker).await?;
    let admin = client.admin();
    match command {
        GroupCommand::List => {
            let groups = admin.list_groups().await?;
            let mut rows = vec![vec![
                "GROUP".to_owned(),
                "MEMBERS".to_owned(),
                "GENERATION".to_owned(),
                "ASSIGNOR".to_owned(),
            ]];
            rows.extend(groups.iter().map(|g| {
                vec![
                    g.group.clone(),
                    g.members.to_string(),
                    g.generation.to_string(),
                    g.assignor.as_str().to_owned(),
                ]
            }));
            print!("{}", table(&rows));
        }
        GroupCommand::Describe { group } => {
            let description = admin
                .describe_group(&group)
                .await
                .map_err(|e| group_error(e, &group))?;
            let lags = admin
                .group_lag(&group)
                .await
                .map_err(|e| group_error(e, &group))?;
            println!(
                "group {}  generation {}  assignor {}  members {}",
                description.group,
                description.generation,
                description.assignor.as_str(),
                description.members.len()
            );
            if !description.members.is_empty() {
                let mut rows = vec![vec![
                    "MEMBER".to_owned(),
                    "CLIENT".to_owned(),
                    "TOPICS".to_owned(),
                    "PARTITIONS".to_owned(),
                    "LAST-HEARTBEAT".to_owned(),
                ]];
                rows.extend(description.members.iter().map(|m| {
                    vec![
                        m.member_id.clone(),
                        m.client_id.clone(),
                        m.topics.join(","),
                        m.assignment
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                        format!("{} ms ago", m.last_heartbeat_ago.as_millis()),
                    ]
                }));
                println!();
                print!("{}", table(&rows));
            }
            println!();
            print!("{}", lag_table(&lags));
        }
        GroupCommand::Reset {
            group,
            to,
            topic,
            force,
        } => {
            let set = admin
                .reset_offsets(&group, topic.as_deref(), to, force)
                .await
                .map_err(|e| match (e.code(), &topic) {
                    (Some(ErrorCode::UnknownTopic), Some(topic)) => topic_error(e, topic),
                    _ => group_error(e, &group),
                })?;
            let mut rows = vec![vec![
                "TOPIC".to_owned(),
                "PARTITION".to_owned(),
                "OFFSET".to_owned(),
            ]];
            rows.extend(set.iter().map(|(tp, offset)| {
                vec![
                    tp.topic.to_string(),
                    tp.partition.to_string(),
                    offset.to_string(),
                ]
            }));
            print!("{}", table(&rows));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn lag_table(lags: &[PartitionLag]) -> String {
    let mut rows = vec![vec![
        "TOPIC".to_owned(),
        "PARTITION".to_owned(),
        "COMMITTED".to_owned(),
        "HIGH-WATERMARK".to_owned(),
        "LAG".to_owned(),
        "MEMBER".to_owned(),
    ]];
    let dash = || "-".to_owned();
    rows.extend(lags.iter().map(|l| {
        vec![
            l.tp.topic.to_string(),
            l.tp.partition.to_string(),
            l.committed.map_or_else(dash, |c| c.to_string()),
            l.high_watermark.to_string(),
            l.lag.map_or_else(dash, |c| c.to_string()),
            l.member.clone().unwrap_or_else(dash),
        ]
    }));
    table(&rows)
}

/// The error of a call about `group`, with an unknown group and a busy group spelled out.
fn group_error(error: weir_client::ClientError, group: &str) -> anyhow::Error {
    match error.code() {
        Some(ErrorCode::UnknownGroup) => {
            anyhow::anyhow!("group {group:?} does not exist; see `weir group list`")
        }
        Some(ErrorCode::GroupNotEmpty) => anyhow::Error::new(error).context(format!(
            "group {group:?} has active members; stop its consumers first, or pass --force"
        )),
        _ => error.into(),
    }
}

/// What `weir consume --group` needs from the consume arguments.
pub struct GroupConsume<'a> {
    pub topic: &'a str,
    pub group: &'a str,
    pub follow: bool,
    pub count: Option<u64>,
    pub reset: AutoOffsetReset,
    pub session_timeout: Option<std::time::Duration>,
    pub format: &'a OutputFormat,
}

/// `weir consume TOPIC --group G`: see the module docs.
pub async fn consume(broker: &str, args: GroupConsume<'_>) -> anyhow::Result<ExitCode> {
    let client = connect(broker).await?;
    // Checked first so an unknown topic is named, as without --group.
    crate::describe_topic(&client, args.topic, None).await?;
    let mut config = GroupConfig::new(args.group, [args.topic]);
    config.auto_offset_reset = args.reset;
    if let Some(timeout) = args.session_timeout {
        config.session_timeout = timeout;
    }
    config.client_id = format!("weir-cli-{}", std::process::id());
    config.consumer = ConsumerConfig {
        follow: args.follow,
        ..ConsumerConfig::default()
    };
    let mut consumer = GroupConsumer::join(&client, config)
        .await
        .with_context(|| format!("cannot join group {:?}", args.group))?;

    let mut out = BufWriter::with_capacity(64 << 10, io::stdout().lock());
    let mut printed = 0;
    let interrupted = interrupted();
    tokio::pin!(interrupted);
    let mut commit_tick = tokio::time::interval(GROUP_COMMIT_INTERVAL);
    commit_tick.tick().await; // The first tick is immediate.
    let mut code = ExitCode::SUCCESS;
    let mut failure = None;
    loop {
        if args.count.is_some_and(|count| printed >= count) {
            break;
        }
        let next = tokio::select! {
            biased;
            () = &mut interrupted => {
                code = ExitCode::from(EXIT_INTERRUPTED);
                break;
            }
            _ = commit_tick.tick() => {
                if let Err(error) = out.flush() {
                    return quiet_if_closed(error);
                }
                consumer.commit().await?;
                continue;
            }
            next = consumer.next() => next,
        };
        let record = match next {
            None => break,
            Some(Ok(record)) => record,
            Some(Err(error)) => {
                failure = Some(error);
                break;
            }
        };
        let written = write_record(&mut out, args.format, &record, consumer.has_buffered());
        if let Err(error) = written {
            // A closed stdout: what was flushed is committed, the rest was not seen.
            let _ = consumer.close().await;
            return quiet_if_closed(error);
        }
        printed += 1;
    }
    // Commit only what reached stdout.
    if let Err(error) = out.flush() {
        return quiet_if_closed(error);
    }
    consumer.close().await?;
    match failure {
        Some(error) => Err(error.into()),
        None => Ok(code),
    }
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_targets_parse() {
        assert_eq!(parse_reset_to("earliest"), Ok(ResetTo::Earliest));
        assert_eq!(parse_reset_to("latest"), Ok(ResetTo::Latest));
        assert_eq!(parse_reset_to("offset:42"), Ok(ResetTo::Offset(42)));
        assert_eq!(
            parse_reset_to("time:2024-05-01T12:00:00Z"),
            Ok(ResetTo::Time(1_714_564_800_000))
        );
        assert_eq!(parse_reset_to("time:1000"), Ok(ResetTo::Time(1000)));
    }

    #[test]
    fn bad_reset_targets_say_what_is_accepted() {
        let error = parse_reset_to("begin").unwrap_err();
        assert!(error.contains("earliest, latest, offset:N"), "{error}");
        assert!(parse_reset_to("offset:-1").is_err());
        assert!(parse_reset_to("offset:").is_err());
        assert!(parse_reset_to("time:yesterday").is_err());
    }
}
