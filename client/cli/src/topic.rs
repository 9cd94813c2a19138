//! `weir topic create | list | describe | reassign | delete`.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use weir_client::{FlushPolicy, NewTopic, PartitionerKind, Placement, TopicDescription};

use crate::time::format_rfc3339_ms;
use crate::{connect, human_bytes, topic_error};

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic
    Create(CreateArgs),
    /// List topics with their partition counts and partitioners
    List,
    /// Show a topic's partitioner, settings and partitions
    Describe {
        /// The topic
        name: String,
    },
    /// Move partitions onto other brokers (replace a broker, change a partition's replicas,
    /// move a single copy, raise or lower the replica count): new replicas catch up and join
    /// the in-sync set before the old ones are removed
    Reassign(ReassignArgs),
    /// Delete a topic and all its data (irreversible)
    Delete {
        /// The topic
        name: String,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    /// Topic name: 1-249 characters of [a-zA-Z0-9._-]
    name: String,
    /// Number of partitions (with --split-keys it defaults to the number of split keys + 1)
    #[arg(long, value_name = "N", required_unless_present = "split_keys")]
    partitions: Option<u32>,
    /// How producers map records to partitions
    #[arg(long, value_enum, default_value_t = PartitionerArg::Hash)]
    partitioner: PartitionerArg,
    /// How partitions are spread over the brokers: hash (rendezvous), range (blocks),
    /// round-robin
    #[arg(long, value_enum, default_value_t = PlacementArg::Hash)]
    placement: PlacementArg,
    /// Split keys of the range partitioner, sorted, comma-separated: N keys make N+1 partitions
    #[arg(long, value_delimiter = ',', value_name = "KEY,KEY,...")]
    split_keys: Vec<String>,
    /// Delete old segments once a partition holds more than this many bytes
    #[arg(long, value_name = "BYTES")]
    retention_bytes: Option<u64>,
    /// Delete segments whose newest record is older than this many milliseconds
    #[arg(long, value_name = "MS")]
    retention_ms: Option<u64>,
    /// Start a new segment file at this size
    #[arg(long, value_name = "BYTES")]
    segment_bytes: Option<u64>,
    /// Index each key's last offset, for appends conditional on it (costs broker memory per key)
    #[arg(long)]
    key_index: bool,
    /// Copies of each partition, on distinct brokers (default: 3 with 3 or more brokers, else
    /// all of them)
    #[arg(long, value_name = "R")]
    replication_factor: Option<u32>,
    /// In-sync replicas needed for acks=all/durable and for the high watermark to advance
    /// (default: 2 with a replication factor of 3 or more, else 1)
    #[arg(long, value_name = "M")]
    min_insync_replicas: Option<u32>,
    /// When no in-sync replica is alive, elect one outside the in-sync set (LOSES acknowledged
    /// records)
    #[arg(long)]
    unclean_leader_election: bool,
}

#[derive(Args)]
pub struct ReassignArgs {
    /// The topic
    name: String,
    /// Replace broker OLD by broker NEW in every partition of the topic that has OLD (same
    /// position in the replica list, so preferred leaders stay where they were)
    #[arg(long, value_name = "OLD:NEW", conflicts_with_all = ["partition", "replicas", "drain"])]
    replace: Option<String>,
    /// Move every replica of the topic off broker ID (decommissioning it): each goes to the
    /// live broker without a replica of that partition that holds the fewest of the topic's
    /// replicas, at the same position in the replica list
    #[arg(long, value_name = "ID", conflicts_with_all = ["partition", "replicas"])]
    drain: Option<u32>,
    /// The partition to give new replicas (with --replicas)
    #[arg(long, value_name = "P", requires = "replicas")]
    partition: Option<u32>,
    /// The partition's new replicas, preferred leader first (with --partition): any number,
    /// at least the topic's min in-sync replicas; more or fewer than it has now change its
    /// count (the topic's replication factor follows once every partition has the same)
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "ID,ID,...",
        requires = "partition"
    )]
    replicas: Vec<u32>,
    /// Return once the controller accepted the move instead of waiting for it to finish
    /// (`weir topic describe` shows the replicas still being removed)
    #[arg(long)]
    no_wait: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum PlacementArg {
    /// Rendezvous hashing: adding a broker moves only the partitions it wins
    Hash,
    /// Contiguous blocks of partitions per broker
    Range,
    /// Partition i on the (i mod N)-th broker
    RoundRobin,
}

#[derive(Clone, Copy, ValueEnum)]
enum PartitionerArg {
    /// murmur2 of the key, as Kafka's default partitioner
    Hash,
    /// By key over sorted split keys
    Range,
    /// Ignores keys; rotates partitions per batch
    RoundRobin,
}

impl From<PartitionerArg> for PartitionerKind {
    fn from(arg: PartitionerArg) -> Self {
        match arg {
            PartitionerArg::Hash => PartitionerKind::Hash,
            PartitionerArg::Range => PartitionerKind::Range,
            PartitionerArg::RoundRobin => PartitionerKind::RoundRobin,
        }
    }
}

pub async fn run(broker: &str, command: TopicCommand) -> anyhow::Result<ExitCode> {
    let admin = connect(broker).await?.admin();
    match command {
        TopicCommand::Create(args) => {
            let partitioner = PartitionerKind::from(args.partitioner);
            if !args.split_keys.is_empty() && partitioner != PartitionerKind::Range {
                bail!("--split-keys needs --partitioner range");
            }
            let placement = match args.placement {
                PlacementArg::Hash => Placement::Hash,
                PlacementArg::Range => Placement::Range,
                PlacementArg::RoundRobin => Placement::RoundRobin,
            };
            let mut topic = NewTopic::new(&args.name)
                .partitioner(partitioner)
                .placement(placement)
                .split_keys(args.split_keys);
            if let Some(partitions) = args.partitions {
                topic = topic.partitions(partitions);
            }
            if let Some(bytes) = args.retention_bytes {
                topic = topic.retention_bytes(bytes);
            }
            if let Some(ms) = args.retention_ms {
                topic = topic.retention_ms(ms);
            }
            if let Some(bytes) = args.segment_bytes {
                topic = topic.segment_bytes(bytes);
            }
            if args.key_index {
                topic = topic.key_index(true);
            }
            if let Some(replicas) = args.replication_factor {
                topic = topic.replication_factor(replicas);
            }
            if let Some(replicas) = args.min_insync_replicas {
                topic = topic.min_insync_replicas(replicas);
            }
            if args.unclean_leader_election {
                topic = topic.unclean_leader_election(true);
            }
            let created = admin.create_topic(topic).await?;
            println!(
                "created topic {} with {} partition(s), partitioner {}, placement {}",
                created.name,
                created.partition_count,
                created.partitioner,
                created.placement.name()
            );
        }
        TopicCommand::List => {
            let topics = admin.list_topics().await?;
            print!("{}", topic_table(&topics));
        }
        TopicCommand::Describe { name } => {
            let topic = admin
                .describe_topic(&name)
                .await
                .map_err(|e| topic_error(e, &name))?;
            print!("{}", describe(&topic));
        }
        TopicCommand::Reassign(args) => return reassign(&admin, args).await,
        TopicCommand::Delete { name } => {
            admin
                .delete_topic(&name)
                .await
                .map_err(|e| topic_error(e, &name))?;
            println!("deleted topic {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `weir topic reassign`: asks for the move, then (unless `--no-wait`) follows it until every
/// moved partition has its target replicas, all in sync, with a spinner on a terminal.
async fn reassign(admin: &weir_client::Admin, args: ReassignArgs) -> anyhow::Result<ExitCode> {
    let topic = admin
        .describe_topic(&args.name)
        .await
        .map_err(|e| topic_error(e, &args.name))?;
    let moves: Vec<(u32, Vec<u32>)> = match (&args.replace, args.drain, args.partition) {
        (Some(replace), _, _) => {
            let Some((old, new)) = replace.split_once(':') else {
                bail!("--replace takes OLD:NEW broker ids, e.g. --replace 1:4");
            };
            let (old, new): (u32, u32) = (old.trim().parse()?, new.trim().parse()?);
            replacement_moves(&topic, old, new)?
        }
        (None, Some(old), _) => {
            let live: Vec<u32> = admin
                .describe_cluster()
                .await?
                .brokers
                .iter()
                .filter(|b| b.alive && b.id != old)
                .map(|b| b.id)
                .collect();
            drain_moves(&topic, old, &live)?
        }
        (None, None, Some(partition)) => vec![(partition, args.replicas.clone())],
        (None, None, None) => bail!(
            "say what to move: --replace OLD:NEW, --drain ID, or --partition P --replicas A,B,C"
        ),
    };
    if moves.is_empty() {
        println!(
            "nothing to move: no partition of {} is on that broker",
            args.name
        );
        return Ok(ExitCode::SUCCESS);
    }
    let moved: Vec<u32> = moves.iter().map(|(p, _)| *p).collect();
    admin
        .reassign_partitions(&args.name, moves)
        .await
        .map_err(|e| topic_error(e, &args.name))?;
    println!("reassigning {} partition(s) of {}", moved.len(), args.name);
    if args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    let progress = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(moved.len() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} {pos}/{len} partitions moved and in sync, {elapsed}",
        ) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let topic = loop {
        let topic = admin
            .describe_topic(&args.name)
            .await
            .map_err(|e| topic_error(e, &args.name))?;
        let done = topic
            .partitions
            .iter()
            .filter(|p| moved.contains(&p.partition) && p.fully_in_sync())
            .count();
        progress.set_position(done as u64);
        if done == moved.len() {
            break topic;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    progress.finish_and_clear();
    println!("done: every moved partition has its new replicas, all in sync");
    print!("{}", describe(&topic));
    Ok(ExitCode::SUCCESS)
}

/// The moves that replace broker `old` by `new` in each partition of `topic` that has `old`,
/// at the same position (the preferred leader stays preferred, on the new broker).
fn replacement_moves(
    topic: &TopicDescription,
    old: u32,
    new: u32,
) -> anyhow::Result<Vec<(u32, Vec<u32>)>> {
    let mut moves = Vec::new();
    for p in &topic.partitions {
        let target = p.target_replicas();
        if !target.contains(&old) {
            continue;
        }
        if target.contains(&new) {
            bail!(
                "partition {} already has a replica on broker {new}; move it with --partition {} --replicas",
                p.partition,
                p.partition
            );
        }
        let replaced = target
            .iter()
            .map(|&b| if b == old { new } else { b })
            .collect();
        moves.push((p.partition, replaced));
    }
    Ok(moves)
}

/// The moves that take every replica of `topic` off broker `old`: each to the broker of `live`
/// without a replica of that partition holding the fewest of the topic's replicas (counting
/// the moves already planned; ties to the lowest id), at the same position.
fn drain_moves(
    topic: &TopicDescription,
    old: u32,
    live: &[u32],
) -> anyhow::Result<Vec<(u32, Vec<u32>)>> {
    let mut load: std::collections::BTreeMap<u32, usize> = live.iter().map(|&b| (b, 0)).collect();
    for p in &topic.partitions {
        for b in p.target_replicas() {
            if let Some(n) = load.get_mut(&b) {
                *n += 1;
            }
        }
    }
    let mut moves = Vec::new();
    for p in &topic.partitions {
        let target = p.target_replicas();
        if !target.contains(&old) {
            continue;
        }
        let Some(new) = load
            .iter()
            .filter(|(b, _)| !target.contains(b))
            .min_by_key(|&(&b, &n)| (n, b))
            .map(|(&b, _)| b)
        else {
            bail!(
                "partition {} has {} replicas and there is no other live broker to move broker {old}'s to",
                p.partition,
                target.len()
            );
        };
        *load.entry(new).or_default() += 1;
        moves.push((
            p.partition,
            target
                .iter()
                .map(|&b| if b == old { new } else { b })
                .collect(),
        ));
    }
    Ok(moves)
}

/// The topic's replication factor, and, while reassignments leave its partitions with another
/// count or with counts that differ, what they have (the setting follows once they agree).
fn replication(topic: &TopicDescription) -> String {
    let Some(factor) = topic.config.replication_factor else {
        return "-".to_owned();
    };
    let counts = topic.partitions.iter().map(|p| p.target_replicas().len());
    let (least, most) = counts.fold((usize::MAX, 0), |(lo, hi), n| (lo.min(n), hi.max(n)));
    if least > most || (least == most && least == factor as usize) {
        factor.to_string()
    } else if least == most {
        format!("{factor} ({least} once the reassignment completes)")
    } else {
        format!("{factor} (partitions differ: {least} to {most} replicas)")
    }
}

/// Rows of left-aligned columns, two spaces apart.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|row| row.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<width$}", width = widths[c]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn topic_table(topics: &[TopicDescription]) -> String {
    let mut rows = vec![vec![
        "NAME".to_owned(),
        "PARTITIONS".to_owned(),
        "PARTITIONER".to_owned(),
    ]];
    rows.extend(topics.iter().map(|topic| {
        vec![
            topic.name.clone(),
            topic.partition_count.to_string(),
            topic.partitioner.to_string(),
        ]
    }));
    table(&rows)
}

fn describe(topic: &TopicDescription) -> String {
    let optional =
        |value: Option<u64>, show: fn(u64) -> String| value.map_or_else(|| "-".to_owned(), show);
    let mut summary = vec![
        vec!["name".to_owned(), topic.name.clone()],
        vec!["partitions".to_owned(), topic.partition_count.to_string()],
        vec!["partitioner".to_owned(), topic.partitioner.to_string()],
        vec!["placement".to_owned(), topic.placement.name().to_owned()],
    ];
    if !topic.split_keys.is_empty() {
        let keys: Vec<String> = topic
            .split_keys
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        summary.push(vec!["split keys".to_owned(), keys.join(",")]);
    }
    summary.extend([
        vec!["created".to_owned(), format_rfc3339_ms(topic.created_ms)],
        vec![
            "retention bytes".to_owned(),
            optional(topic.config.retention_bytes, human_bytes),
        ],
        vec![
            "retention ms".to_owned(),
            optional(topic.config.retention_ms, |ms| ms.to_string()),
        ],
        vec![
            "segment bytes".to_owned(),
            optional(topic.config.segment_bytes, human_bytes),
        ],
        vec![
            "max batch bytes".to_owned(),
            optional(topic.config.max_batch_bytes.map(u64::from), human_bytes),
        ],
        vec![
            "key index".to_owned(),
            if topic.config.key_index == Some(true) {
                "on"
            } else {
                "off"
            }
            .to_owned(),
        ],
        vec!["replication".to_owned(), replication(topic)],
        vec![
            "min in-sync".to_owned(),
            optional(topic.config.min_insync_replicas.map(u64::from), |n| {
                n.to_string()
            }),
        ],
        vec![
            "unclean leaders".to_owned(),
            if topic.config.unclean_leader_election == Some(true) {
                "on (may lose acknowledged records)"
            } else {
                "off"
            }
            .to_owned(),
        ],
        vec![
            "flush".to_owned(),
            match topic.config.flush {
                None => "-".to_owned(),
                Some(FlushPolicy::Never) => "never".to_owned(),
                Some(FlushPolicy::Always) => "always".to_owned(),
                Some(FlushPolicy::Interval(every)) => format!("every {} ms", every.as_millis()),
            },
        ],
    ]);
    let mut partitions = vec![vec![
        "PARTITION".to_owned(),
        "LOG-START".to_owned(),
        "HIGH-WATERMARK".to_owned(),
        "RECORDS".to_owned(),
        "SIZE".to_owned(),
        "LEADER".to_owned(),
        "EPOCH".to_owned(),
        "REPLICAS".to_owned(),
        "ISR".to_owned(),
    ]];
    let list = |ids: &[u32]| {
        if ids.is_empty() {
            "-".to_owned()
        } else {
            ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        }
    };
    partitions.extend(topic.partitions.iter().map(|p| {
        let replicas = if p.removing_replicas.is_empty() {
            list(&p.replicas)
        } else {
            format!(
                "{} (moving off {})",
                list(&p.target_replicas()),
                list(&p.removing_replicas)
            )
        };
        let replication = [p.leader_epoch.to_string(), replicas, list(&p.isr)];
        let leader = format!(
            "{} ({}){}",
            p.leader_id,
            p.leader_address,
            if p.leader_alive {
                ""
            } else {
                " DOWN: unavailable"
            }
        );
        if !p.offsets_known {
            let unknown = "-".to_owned();
            let mut row = vec![
                p.partition.to_string(),
                unknown.clone(),
                unknown.clone(),
                unknown.clone(),
                unknown,
                leader,
            ];
            row.extend(replication);
            return row;
        }
        let mut row = vec![
            p.partition.to_string(),
            p.log_start_offset.to_string(),
            p.high_watermark.to_string(),
            p.high_watermark
                .saturating_sub(p.log_start_offset)
                .to_string(),
            human_bytes(p.size_bytes),
            leader,
        ];
        row.extend(replication);
        row
    }));
    format!("{}\n{}", table(&summary), table(&partitions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_client::{PartitionDescription, TopicConfig};

    #[test]
    fn tables_align() {
        let topics = vec![TopicDescription {
            name: "orders".into(),
            partition_count: 12,
            partitioner: PartitionerKind::RoundRobin,
            split_keys: vec![],
            config: TopicConfig::default(),
            partitions: vec![],
            created_ms: 0,
            placement: Placement::Hash,
        }];
        assert_eq!(
            topic_table(&topics),
            "NAME    PARTITIONS  PARTITIONER\norders  12          round-robin\n"
        );
    }

    #[test]
    fn describe_shows_partitions() {
        let topic = TopicDescription {
            name: "users".into(),
            partition_count: 2,
            partitioner: PartitionerKind::Range,
            split_keys: vec![bytes::Bytes::from_static(b"m")],
            config: TopicConfig {
                segment_bytes: Some(1 << 30),
                ..Default::default()
            },
            partitions: vec![PartitionDescription {
                partition: 0,
                log_start_offset: 5,
                high_watermark: 15,
                size_bytes: 2048,
                data_address: None,
                leader_id: 1,
                leader_address: "b1:7070".into(),
                leader_alive: true,
                offsets_known: true,
                replicas: vec![1, 3, 2],
                isr: vec![1, 2],
                leader_epoch: 4,
                partition_epoch: 9,
                removing_replicas: vec![],
            }],
            created_ms: 1_714_564_800_000,
            placement: Placement::Range,
        };
        let text = describe(&topic);
        assert!(text.contains("split keys       m\n"), "{text}");
        assert!(text.contains("segment bytes    1.0 GiB\n"), "{text}");
        assert!(
            text.contains("created          2024-05-01T12:00:00.000Z\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "0          5          15              10       2.0 KiB  1 (b1:7070)  4      1,3,2     1,2\n"
            ),
            "{text}"
        );
        let mut moving = topic.clone();
        moving.partitions[0].replicas = vec![4, 3, 2, 1];
        moving.partitions[0].removing_replicas = vec![1];
        let text = describe(&moving);
        assert!(text.contains("4,3,2 (moving off 1)"), "{text}");
        // Replica counts against the topic's replication factor.
        let mut counted = topic.clone();
        counted.config.replication_factor = Some(3);
        assert_eq!(replication(&counted), "3");
        counted.partitions[0].removing_replicas = vec![2];
        assert_eq!(
            replication(&counted),
            "3 (2 once the reassignment completes)"
        );
        counted.partitions.push(PartitionDescription {
            partition: 1,
            replicas: vec![1],
            removing_replicas: vec![],
            ..counted.partitions[0].clone()
        });
        assert_eq!(
            replication(&counted),
            "3 (partitions differ: 1 to 2 replicas)"
        );
        counted.config.replication_factor = None;
        assert_eq!(replication(&counted), "-");
    }

    #[test]
    fn replacing_a_broker_keeps_its_position() {
        let mut topic = TopicDescription {
            name: "t".into(),
            partition_count: 3,
            partitioner: PartitionerKind::Hash,
            split_keys: vec![],
            config: TopicConfig::default(),
            partitions: vec![],
            created_ms: 0,
            placement: Placement::Hash,
        };
        for (p, replicas) in [vec![1, 2, 3], vec![2, 3, 4], vec![3, 1, 2]]
            .into_iter()
            .enumerate()
        {
            topic.partitions.push(PartitionDescription {
                partition: p as u32,
                log_start_offset: 0,
                high_watermark: 0,
                size_bytes: 0,
                data_address: None,
                leader_id: replicas[0],
                leader_address: String::new(),
                leader_alive: true,
                offsets_known: true,
                isr: replicas.clone(),
                replicas,
                leader_epoch: 1,
                partition_epoch: 1,
                removing_replicas: vec![],
            });
        }
        assert_eq!(
            replacement_moves(&topic, 1, 5).unwrap(),
            vec![(0, vec![5, 2, 3]), (2, vec![3, 5, 2])]
        );
        let clash = replacement_moves(&topic, 1, 2).unwrap_err().to_string();
        assert!(
            clash.contains("partition 0 already has a replica on broker 2"),
            "{clash}"
        );
        // Draining broker 1 over brokers 2..=5 (loads 3, 3, 1, 0): partition 0 goes to 5, the
        // least loaded; then 4 and 5 tie and partition 2 goes to the lower id.
        assert_eq!(
            drain_moves(&topic, 1, &[2, 3, 4, 5]).unwrap(),
            vec![(0, vec![5, 2, 3]), (2, vec![3, 4, 2])]
        );
        assert_eq!(
            drain_moves(&topic, 1, &[2, 3, 4]).unwrap(),
            vec![(0, vec![4, 2, 3]), (2, vec![3, 4, 2])]
        );
        let stuck = drain_moves(&topic, 1, &[2, 3]).unwrap_err().to_string();
        assert!(stuck.contains("no other live broker"), "{stuck}");
    }
}
