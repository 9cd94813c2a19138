//! `weir produce TOPIC`: one record per line of standard input.
//!
//! A line's trailing `\n` (and a `\r` before it) is not part of the record; an empty line is a
//! record with an empty value. With `--key-separator SEP` the key is what precedes the first
//! SEP and the value what follows it; a line without SEP has no key. Lines are bytes: they need
//! not be UTF-8. The command exits once standard input is closed and every record is settled,
//! printing a summary to stderr, and exits non-zero if any record was not acknowledged.

use std::io::{self, BufRead, BufReader, IsTerminal};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use futures::{FutureExt, StreamExt, stream::FuturesUnordered};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;
use weir_client::{Acks, ClientError, Producer, ProducerConfig, ProducerRecord, RecordMetadata};

use crate::{EXIT_INTERRUPTED, connect, describe_topic, human_bytes};

#[derive(Args)]
pub struct ProduceArgs {
    /// The topic to produce to
    topic: String,
    /// Split each line into key and value at the first SEP (a line without SEP has no key)
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Send every record to this partition instead of the one the topic's partitioner picks
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
    /// When the broker acknowledges: once the record is in its log, or once synced to disk
    #[arg(long, value_enum, default_value_t = AcksArg::Leader)]
    acks: AcksArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum AcksArg {
    /// Once in the partition's log (survives the broker process dying, not a power loss)
    Leader,
    /// Once synced to disk (survives power loss); on a replicated topic, by every in-sync replica
    Durable,
    /// Once in the log of every in-sync replica (survives losing min-insync-replicas - 1 brokers)
    All,
}

/// What happened to the records so far.
#[derive(Default)]
struct Tally {
    sent: u64,
    acknowledged: u64,
    acknowledged_bytes: u64,
    failed: u64,
    first_error: Option<ClientError>,
    /// Why reading stopped early, if it did.
    stopped: Option<String>,
}

impl Tally {
    fn failed(&mut self, error: ClientError) {
        self.failed += 1;
        self.first_error.get_or_insert(error);
    }
}

pub async fn run(broker: &str, args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let separator = match args.key_separator.as_deref() {
        Some("") => bail!("--key-separator may not be empty"),
        other => other.map(|sep| sep.as_bytes().to_vec()),
    };
    let client = connect(broker).await?;
    // Described first, so a wrong topic or partition is reported even with no input.
    describe_topic(&client, &args.topic, args.partition).await?;
    let acks = match args.acks {
        AcksArg::Leader => Acks::Leader,
        AcksArg::Durable => Acks::Durable,
        AcksArg::All => Acks::All,
    };
    let producer = client.producer(ProducerConfig {
        acks,
        ..ProducerConfig::default()
    })?;
    let progress = progress_bar();
    let started = Instant::now();
    let mut tally = Tally::default();
    let interrupted = tokio::select! {
        () = produce_lines(&producer, &args, separator.as_deref(), read_stdin(), &mut tally, &progress) => false,
        _ = tokio::signal::ctrl_c() => true,
    };
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "produced {} record(s) ({}) to {} in {seconds:.2} s{}",
        tally.acknowledged,
        human_bytes(tally.acknowledged_bytes),
        args.topic,
        rate(tally.acknowledged, seconds),
    );
    if interrupted {
        let unsettled = tally.sent - tally.acknowledged - tally.failed;
        eprintln!(
            "weir: interrupted; {unsettled} record(s) sent but not yet acknowledged may or may not have been written"
        );
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    if let Some(reason) = &tally.stopped {
        eprintln!("weir: stopped reading input: {reason}");
    }
    if let Some(error) = &tally.first_error {
        eprintln!(
            "weir: {} of {} record(s) were not acknowledged; first error: {error}",
            tally.failed, tally.sent
        );
    }
    if tally.stopped.is_some() || tally.first_error.is_some() {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn rate(records: u64, seconds: f64) -> String {
    if records == 0 || seconds < 0.001 {
        String::new()
    } else {
        format!(", {:.0} records/s", records as f64 / seconds)
    }
}

/// A spinner with the acknowledged count on stderr, only when stderr is a terminal.
fn progress_bar() -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {human_pos} records acknowledged in {elapsed}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Sends every line as a record and waits for every delivery.
async fn produce_lines(
    producer: &Producer,
    args: &ProduceArgs,
    separator: Option<&[u8]>,
    mut lines: mpsc::Receiver<io::Result<Vec<Bytes>>>,
    tally: &mut Tally,
    progress: &ProgressBar,
) {
    let mut deliveries = FuturesUnordered::new();
    let settle = |tally: &mut Tally,
                  (delivered, bytes): (Result<RecordMetadata, ClientError>, u64)| {
        match delivered {
            Ok(_) => {
                tally.acknowledged += 1;
                tally.acknowledged_bytes += bytes;
                progress.set_position(tally.acknowledged);
            }
            Err(error) => tally.failed(error),
        }
    };
    let mut reading = true;
    while reading || !deliveries.is_empty() {
        // Count every delivery already settled, so the tally (and the memory its futures hold)
        // keeps up with a fast input.
        while let Some(Some(settled)) = deliveries.next().now_or_never() {
            settle(tally, settled);
        }
        tokio::select! {
            Some(settled) = deliveries.next(), if !deliveries.is_empty() => settle(tally, settled),
            chunk = lines.recv(), if reading => match chunk {
                None => reading = false,
                Some(Err(error)) => {
                    tally.stopped = Some(format!("cannot read standard input: {error}"));
                    reading = false;
                }
                Some(Ok(chunk)) => {
                    for line in chunk {
                        let bytes = line.len() as u64;
                        let record = to_record(&args.topic, args.partition, line, separator);
                        tally.sent += 1;
                        match producer.send(record).await {
                            Ok(delivery) => deliveries.push(delivery.map(move |result| (result, bytes))),
                            // One line too long: report it, go on with the others.
                            Err(error @ ClientError::RecordTooLarge { .. }) => tally.failed(error),
                            Err(error) => {
                                tally.stopped = Some(error.to_string());
                                tally.failed(error);
                                reading = false;
                                break;
                            }
                        }
                    }
                }
            },
            // Input done and every delivery counted by the loop above.
            else => break,
        }
    }
}

/// The record for one input line.
fn to_record(
    topic: &str,
    partition: Option<u32>,
    line: Bytes,
    separator: Option<&[u8]>,
) -> ProducerRecord {
    let split = separator.and_then(|sep| {
        line.windows(sep.len())
            .position(|window| window == sep)
            .map(|at| (line.slice(..at), line.slice(at + sep.len()..)))
    });
    let mut record = ProducerRecord::new(topic);
    record = match split {
        Some((key, value)) => record.key(key).value(value),
        None => record.value(line),
    };
    if let Some(partition) = partition {
        record = record.partition(partition);
    }
    record
}

/// Lines of standard input, read on their own thread (blocking reads must not stall the
/// runtime) and sent in chunks: as many lines as are already buffered, up to a limit, so a
/// pipe is read in bulk while a person typing sees each line sent at once.
fn read_stdin() -> mpsc::Receiver<io::Result<Vec<Bytes>>> {
    const CHUNK_LINES: usize = 4096;
    let (tx, rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        let mut reader = BufReader::with_capacity(1 << 20, io::stdin().lock());
        let mut chunk = Vec::new();
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                    }
                    chunk.push(Bytes::from(line));
                    if (chunk.len() >= CHUNK_LINES || reader.buffer().is_empty())
                        && tx.blocking_send(Ok(std::mem::take(&mut chunk))).is_err()
                    {
                        return;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    let _ = tx.blocking_send(Ok(std::mem::take(&mut chunk)));
                    let _ = tx.blocking_send(Err(error));
                    return;
                }
            }
        }
        if !chunk.is_empty() {
            let _ = tx.blocking_send(Ok(chunk));
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_at_the_first_separator() {
        let record = to_record("t", None, Bytes::from_static(b"user-1:paid:12"), Some(b":"));
        assert_eq!(
            record,
            ProducerRecord::new("t").key("user-1").value("paid:12")
        );
        let record = to_record("t", Some(2), Bytes::from_static(b"k=>v"), Some(b"=>"));
        assert_eq!(
            record,
            ProducerRecord::new("t").key("k").value("v").partition(2)
        );
    }

    #[test]
    fn lines_without_the_separator_have_no_key() {
        let record = to_record("t", None, Bytes::from_static(b"just a value"), Some(b":"));
        assert_eq!(record, ProducerRecord::new("t").value("just a value"));
        let record = to_record("t", None, Bytes::from_static(b":v"), Some(b":"));
        assert_eq!(record, ProducerRecord::new("t").key("").value("v"));
        let record = to_record("t", None, Bytes::from_static(b"a:b"), None);
        assert_eq!(record, ProducerRecord::new("t").value("a:b"));
    }
}
