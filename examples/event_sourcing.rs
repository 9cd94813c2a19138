//! Event sourcing on weir: a bank-account service whose source of truth is a topic.
//!
//! ```text
//! cargo run --release --bin weir-broker &          # the README's first command
//! cargo run --release --example event_sourcing
//! ```
//!
//! - Commands (open, deposit, withdraw) become events keyed by account id, appended only if the
//!   account's last event is still the one the decision was based on (`expected_keys`, a topic
//!   with a key index). Two writers can never both win.
//! - State (balances) is never stored: it is rebuilt by replaying the topic from the beginning.
//! - A projection (total money in the bank) resumes from the offset it saved last time.
//! - A conflict between two service instances is shown, and resolved by re-reading and retrying.
//! - Three events go in as one atomic batch ("transfer in, fee, note"), all or nothing.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use weir::{
    AppendConditions, Client, ClientError, ConsumerConfig, DEFAULT_BROKER, ErrorCode, NewTopic,
    Producer, ProducerConfig, ProducerRecord, Seek,
};

const TOPIC: &str = "bank-accounts";

/// One account as the events made it: its balance and the offset of its last event.
#[derive(Debug, Clone, Copy, Default)]
struct Account {
    balance: i64,
    last_event: Option<u64>,
}

/// A service instance's view of every account, rebuilt from the topic.
#[derive(Default)]
struct Ledger {
    accounts: HashMap<String, Account>,
    /// The next offset to replay from.
    position: u64,
}

impl Ledger {
    fn apply(&mut self, account: &str, event: &str, offset: u64) {
        let entry = self.accounts.entry(account.to_owned()).or_default();
        let (kind, amount) = event.split_once(' ').unwrap_or((event, "0"));
        let amount: i64 = amount.parse().unwrap_or(0);
        match kind {
            "deposited" | "transfer-in" => entry.balance += amount,
            "withdrew" | "fee" => entry.balance -= amount,
            _ => {}
        }
        entry.last_event = Some(offset);
        self.position = offset + 1;
    }

    /// Replays every event after `position` (the whole topic the first time).
    async fn catch_up(&mut self, client: &Client) -> anyhow::Result<()> {
        let mut consumer = client.consumer(ConsumerConfig {
            follow: false,
            ..ConsumerConfig::default()
        });
        consumer.assign(TOPIC, [0]).await?;
        consumer.seek(TOPIC, 0, Seek::Offset(self.position)).await?;
        let mut events = consumer.stream();
        while let Some(record) = events.next().await {
            let record = record?;
            let account = String::from_utf8_lossy(record.key.as_deref().unwrap_or_default());
            let event = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default());
            self.apply(&account, &event, record.offset);
        }
        Ok(())
    }
}

/// Decides and appends one command's event, retrying on conflicts: the event-sourcing loop.
async fn execute(
    producer: &Producer,
    client: &Client,
    ledger: &mut Ledger,
    who: &str,
    account: &str,
    command: &str,
) -> anyhow::Result<()> {
    loop {
        let state = ledger.accounts.get(account).copied().unwrap_or_default();
        let event = match command.split_once(' ') {
            Some(("withdraw", amount)) => {
                let amount: i64 = amount.parse()?;
                if state.balance < amount {
                    println!(
                        "{who}: refuses to withdraw {amount} from {account} (balance {})",
                        state.balance
                    );
                    return Ok(());
                }
                format!("withdrew {amount}")
            }
            Some(("deposit", amount)) => format!("deposited {amount}"),
            _ => "opened".to_owned(),
        };
        let record = ProducerRecord::new(TOPIC)
            .key(account.to_owned())
            .value(event.clone());
        let condition = AppendConditions::new().key_at(account.to_owned(), state.last_event);
        match producer.send_batch(vec![record], condition).await {
            Ok(stored) => {
                println!("{who}: {account} {event} (offset {})", stored.base_offset);
                ledger.apply(account, &event, stored.base_offset);
                return Ok(());
            }
            Err(ClientError::Conflict { actual_offset, .. }) => {
                println!(
                    "{who}: conflict on {account}: its last event is at {actual_offset:?}, not {:?}; re-reading and deciding again",
                    state.last_event
                );
                ledger.catch_up(client).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let broker = std::env::var("WEIR_BROKER").unwrap_or_else(|_| DEFAULT_BROKER.into());
    let client = Client::connect(&broker).await?;
    match client
        .admin()
        .create_topic(NewTopic::new(TOPIC).partitions(1).key_index(true))
        .await
    {
        Ok(_) => println!("created topic {TOPIC} (with a key index)"),
        Err(e) if e.code() == Some(ErrorCode::TopicExists) => {}
        Err(e) => return Err(e).context("creating the topic"),
    }
    let producer = client.producer(ProducerConfig::default())?;

    // Two instances of the service, each with its own view rebuilt from the topic.
    let (mut a, mut b) = (Ledger::default(), Ledger::default());
    a.catch_up(&client).await?;
    b.catch_up(&client).await?;
    println!(
        "replayed {} events: {} accounts",
        a.position,
        a.accounts.len()
    );

    execute(
        &producer,
        &client,
        &mut a,
        "instance A",
        "account-42",
        "open",
    )
    .await?;
    execute(
        &producer,
        &client,
        &mut a,
        "instance A",
        "account-42",
        "deposit 100",
    )
    .await?;
    // B has not seen A's events: its append, based on a stale state, conflicts; B re-reads the
    // account and decides again.
    for command in ["deposit 25", "withdraw 30"] {
        execute(
            &producer,
            &client,
            &mut b,
            "instance B",
            "account-42",
            command,
        )
        .await?;
    }
    a.catch_up(&client).await?;

    // An atomic batch of three events, conditional on the account's last event.
    let last = a.accounts["account-42"].last_event;
    let events = ["transfer-in 50", "fee 1", "note salary"]
        .map(|e| ProducerRecord::new(TOPIC).key("account-42").value(e));
    let stored = producer
        .send_batch(
            events.to_vec(),
            AppendConditions::new().key_at("account-42", last),
        )
        .await?;
    println!(
        "instance A: 3 events for account-42 as one batch at offsets {}..={}",
        stored.base_offset, stored.last_offset
    );

    // A projection that resumes where it stopped: total money in the bank.
    let saved = std::env::temp_dir().join("weir-example-bank-projection");
    let mut projection = Ledger {
        position: std::fs::read_to_string(&saved)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0),
        ..Ledger::default()
    };
    let from = projection.position;
    projection.catch_up(&client).await?;
    std::fs::write(&saved, projection.position.to_string())?;
    let moved: i64 = projection.accounts.values().map(|a| a.balance).sum();
    println!(
        "projection: read offsets {from}..{} (resumed from its saved offset), money moved in them: {moved}",
        projection.position
    );

    let mut fresh = Ledger::default();
    fresh.catch_up(&client).await?;
    println!(
        "account-42 rebuilt from its events: balance {}",
        fresh.accounts["account-42"].balance
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}
