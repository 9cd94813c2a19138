//! `weir consume TOPIC` and `weir tail TOPIC`: print records to stdout.
//!
//! Output is buffered and flushed whenever the consumer has caught up (no fetched record is
//! waiting), so a backlog is written in large pieces and a follower sees each new record at
//! once. A closed stdout (`weir consume t | head -1`) ends the command quietly with status 0.
//! Ctrl-C flushes the records already written, whole, and exits with status 130.
//! `--group G` reads as a member of a consumer group and commits what it printed (see
//! `group.rs`).

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use clap::Args;
use futures::StreamExt;
use weir_client::{ConsumerConfig, ConsumerRecord, RecordStream, Seek};

use crate::format::OutputFormat;
use crate::time::parse_time_ms;
use crate::{EXIT_INTERRUPTED, connect, describe_topic, topic_error};

#[derive(Args)]
pub struct OutputArgs {
    /// How to print each record: raw (the value), json (one object per line), or a template
    /// with %t topic, %p partition, %o offset, %k key, %v value, %T timestamp (ms),
    /// %h headers, and \n \t escapes, e.g. '%p:%o %k=%v\n'
    #[arg(long, default_value = "raw", value_parser = parse_format, value_name = "FORMAT")]
    format: OutputFormat,
}

fn parse_format(text: &str) -> Result<OutputFormat, String> {
    text.parse()
}

#[derive(Args)]
pub struct ConsumeArgs {
    /// The topic to read
    topic: String,
    /// Start at the oldest record still kept (the default). With --group: where the group has
    /// committed nothing (also the default there)
    #[arg(long, group = "start")]
    from_beginning: bool,
    /// Start at this offset (in every partition read)
    #[arg(long, group = "start", value_name = "N")]
    offset: Option<u64>,
    /// Start at the first record at or after this time: RFC 3339 (2024-05-01T12:00:00Z) or
    /// milliseconds since the epoch
    #[arg(long, group = "start", value_name = "RFC3339", value_parser = parse_time_ms)]
    from_time: Option<i64>,
    /// Read only this partition (default: all)
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
    /// Read as a member of this consumer group: only the partitions the group assigns, from
    /// its committed offsets (partitions without one from the beginning), committing what was
    /// printed every 5 s and before exiting, so the next run continues where this one stopped
    #[arg(long, value_name = "G", conflicts_with_all = ["partition", "offset", "from_time"])]
    group: Option<String>,
    /// With --group: after this many milliseconds without a heartbeat the group evicts this
    /// consumer and gives its partitions to the others [default: 10000]
    #[arg(long, value_name = "MS", requires = "group")]
    session_timeout_ms: Option<u64>,
    /// Stop after N records
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Keep waiting for new records instead of stopping at the end of the data
    #[arg(short = 'f', long)]
    follow: bool,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args)]
pub struct TailArgs {
    /// The topic to follow
    topic: String,
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn run(broker: &str, args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    if let Some(group) = &args.group {
        // --from-beginning is the group default already (earliest where nothing is committed).
        let group_args = crate::group::GroupConsume {
            topic: &args.topic,
            group,
            follow: args.follow,
            count: args.count,
            reset: weir_client::AutoOffsetReset::Earliest,
            session_timeout: args
                .session_timeout_ms
                .map(std::time::Duration::from_millis),
            format: &args.output.format,
        };
        return crate::group::consume(broker, group_args).await;
    }
    let client = connect(broker).await?;
    let topic = describe_topic(&client, &args.topic, args.partition).await?;
    let partitions: Vec<u32> = match args.partition {
        Some(p) => vec![p],
        None => (0..topic.partition_count).collect(),
    };
    let mut consumer = client.consumer(ConsumerConfig {
        follow: args.follow,
        ..ConsumerConfig::default()
    });
    // Assigned partitions start at the beginning (--from-beginning, the default).
    consumer
        .assign(&topic.name, partitions)
        .await
        .map_err(|e| topic_error(e, &topic.name))?;
    let start = match (args.offset, args.from_time) {
        (Some(offset), _) => Some(Seek::Offset(offset)),
        (None, Some(ms)) => Some(Seek::Timestamp(ms)),
        (None, None) => None,
    };
    if let Some(start) = start {
        consumer.seek_topic(&topic.name, start).await?;
    }
    print_records(consumer.stream(), &args.output.format, args.count).await
}

pub async fn tail(broker: &str, args: TailArgs) -> anyhow::Result<ExitCode> {
    let client = connect(broker).await?;
    let mut consumer = client.consumer(ConsumerConfig {
        follow: true,
        ..ConsumerConfig::default()
    });
    consumer
        .assign_topic(&args.topic)
        .await
        .map_err(|e| topic_error(e, &args.topic))?;
    consumer.seek_topic(&args.topic, Seek::End).await?;
    print_records(consumer.stream(), &args.output.format, None).await
}

/// Writes records until the stream ends, `count` are printed, stdout closes or Ctrl-C. A
/// partition that fails (its broker down, a corrupt batch) is reported on stderr at once and
/// the others are read on; the command then ends with an error.
async fn print_records(
    mut records: RecordStream,
    format: &OutputFormat,
    count: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let mut out = BufWriter::with_capacity(64 << 10, io::stdout().lock());
    let mut printed = 0;
    let mut failed = 0;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        if count.is_some_and(|count| printed >= count) {
            break;
        }
        let next = tokio::select! {
            biased;
            _ = &mut interrupted => {
                return finish(&mut out, ExitCode::from(EXIT_INTERRUPTED));
            }
            next = records.next() => next,
        };
        let record = match next {
            None => break,
            Some(Ok(record)) => record,
            Some(Err(error)) => {
                // What was printed stays printed; the error goes to stderr in its place.
                if let Err(error) = out.flush() {
                    return quiet_if_closed(error);
                }
                eprintln!("weir: {error}");
                failed += 1;
                continue;
            }
        };
        if let Err(error) = write_record(&mut out, format, &record, records.has_buffered()) {
            return quiet_if_closed(error);
        }
        printed += 1;
    }
    let code = finish(&mut out, ExitCode::SUCCESS)?;
    if failed > 0 {
        anyhow::bail!(
            "{failed} partition(s) could not be read (above); the records printed are from the others"
        );
    }
    Ok(code)
}

/// Writes one record, flushing unless more are already buffered (so a follower sees each
/// record as it arrives, and a bulk read is not one write per record).
pub(crate) fn write_record(
    out: &mut impl Write,
    format: &OutputFormat,
    record: &ConsumerRecord,
    more_buffered: bool,
) -> io::Result<()> {
    format.write(out, record)?;
    if more_buffered { Ok(()) } else { out.flush() }
}

/// Flushes what is written and exits with `code`.
fn finish(out: &mut impl Write, code: ExitCode) -> anyhow::Result<ExitCode> {
    match out.flush() {
        Ok(()) => Ok(code),
        Err(error) => quiet_if_closed(error),
    }
}

/// A reader that went away (`| head`) is a normal end, not an error.
pub(crate) fn quiet_if_closed(error: io::Error) -> anyhow::Result<ExitCode> {
    if error.kind() == io::ErrorKind::BrokenPipe {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(anyhow::Error::new(error).context("cannot write to standard output"))
    }
}
