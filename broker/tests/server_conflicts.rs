//! The conflict suite: writers race to append to the same keys, each append conditional on the
//! key's last offset (`expected_keys`), against the real broker. Every round exactly one writer
//! wins per key; losers learn the winner's offset from the CONFLICT, read the winner's event,
//! and decide again next round (the event-sourcing loop). The log must replay to exactly the
//! state the winners computed.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Barrier;
use tonic::transport::Channel;
use weir_proto::batch::{BatchBuilder, Record, RecordInput, split_batches};
use weir_proto::status::from_status;
use weir_proto::v1::weir_client::WeirClient;
use weir_proto::v1::{
    Acks, CreateTopicRequest, ErrorCode, FetchRequest, KeyExpectation, ProduceRequest, TopicConfig,
};
use weir_testkit::{BrokerProcess, temp_data_dir};

const BROKER: &str = env!("CARGO_BIN_EXE_weir-broker");
const WRITERS: usize = 4;
const KEYS: [&str; 3] = ["account-1", "account-2", "account-3"];
const ROUNDS: usize = 25;

/// An event: who wrote it, in which round, and the balance after it.
fn event(key: &str, writer: usize, round: usize, balance: u64) -> Bytes {
    let value = format!("{writer}:{round}:{balance}");
    let mut b = BatchBuilder::new();
    b.push(RecordInput {
        key: Some(key.as_bytes()),
        value: Some(value.as_bytes()),
        ..Default::default()
    })
    .unwrap();
    b.build().unwrap()
}

fn balance_of(value: &[u8]) -> u64 {
    let text = std::str::from_utf8(value).unwrap();
    text.rsplit(':').next().unwrap().parse().unwrap()
}

/// Every record of the ledger from `offset` to its end, in offset order.
async fn records_from(client: &mut WeirClient<Channel>, offset: u64) -> Vec<Record> {
    let mut stream = client
        .fetch(FetchRequest {
            topic: "ledger".into(),
            partition: 0,
            offset,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut records = Vec::new();
    while let Some(response) = stream.next().await {
        for batch in split_batches(response.unwrap().batches) {
            records.extend(batch.unwrap().records().filter(|r| r.offset >= offset));
        }
    }
    records
}

/// The value of the record at `offset`.
async fn record_at(client: &mut WeirClient<Channel>, offset: u64) -> Bytes {
    let records = records_from(client, offset).await;
    let record = records.first().filter(|r| r.offset == offset);
    record
        .and_then(|r| r.value.clone())
        .unwrap_or_else(|| panic!("no record at {offset}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_writer_wins_each_round_and_the_log_replays_to_the_winners_state() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(BROKER.as_ref(), dir.path(), &[]);
    let url = broker.url();
    let mut admin = WeirClient::connect(url.clone()).await.unwrap();
    admin
        .create_topic(CreateTopicRequest {
            name: "ledger".into(),
            partitions: 1,
            config: Some(TopicConfig {
                key_index: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();

    let barrier = Arc::new(Barrier::new(WRITERS));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (url, barrier) = (url.clone(), Arc::clone(&barrier));
        writers.push(tokio::spawn(async move {
            let mut client = WeirClient::connect(url).await.unwrap();
            // This writer's view of each key: its last offset and balance.
            let mut view: HashMap<&str, (Option<u64>, u64)> =
                KEYS.iter().map(|k| (*k, (None, 0))).collect();
            let mut wins = Vec::new();
            for round in 0..ROUNDS {
                for key in KEYS {
                    barrier.wait().await;
                    let (last, balance) = view[key];
                    let decided = balance + writer as u64 + 1;
                    let result = client
                        .produce(ProduceRequest {
                            correlation_id: 0,
                            topic: "ledger".into(),
                            partition: 0,
                            batch: event(key, writer, round, decided),
                            acks: Acks::Leader as i32,
                            expected_offset: None,
                            expected_keys: vec![KeyExpectation {
                                key: Bytes::from(key),
                                offset: last,
                            }],
                        })
                        .await;
                    match result {
                        Ok(ack) => {
                            let offset = ack.into_inner().base_offset;
                            view.insert(key, (Some(offset), decided));
                            wins.push((key, round, decided));
                        }
                        Err(status) => {
                            let error = from_status(&status).expect("a weir error");
                            assert_eq!(error.code, ErrorCode::Conflict as i32, "{status:?}");
                            let actual = error.actual_offset.expect("the winner's offset");
                            let winner = record_at(&mut client, actual).await;
                            view.insert(key, (Some(actual), balance_of(&winner)));
                        }
                    }
                }
            }
            (writer, wins, view)
        }));
    }
    let mut wins_per_round: HashMap<(&str, usize), usize> = HashMap::new();
    let mut final_views = Vec::new();
    let mut winners_state: HashMap<&str, (usize, u64)> = HashMap::new();
    for w in writers {
        let (_, wins, view) = w.await.unwrap();
        for (key, round, balance) in wins {
            *wins_per_round.entry((key, round)).or_default() += 1;
            let entry = winners_state.entry(key).or_insert((0, 0));
            if round >= entry.0 {
                *entry = (round, balance);
            }
        }
        final_views.push(view);
    }
    for key in KEYS {
        for round in 0..ROUNDS {
            assert_eq!(
                wins_per_round.get(&(key, round)).copied().unwrap_or(0),
                1,
                "{key} round {round}: exactly one winner"
            );
        }
    }
    // Every writer ends with the same view, and the log replays to it.
    for view in &final_views {
        assert_eq!(view, &final_views[0]);
    }
    let mut replayed: HashMap<String, (u64, usize)> = HashMap::new();
    for record in records_from(&mut admin, 0).await {
        let key = String::from_utf8(record.key.unwrap().to_vec()).unwrap();
        let value = record.value.unwrap();
        let text = std::str::from_utf8(&value).unwrap();
        let writer: u64 = text.split(':').next().unwrap().parse().unwrap();
        let state = replayed.entry(key).or_insert((0, 0));
        // Each event applies to the state the previous event left.
        assert_eq!(balance_of(&value), state.0 + writer + 1, "event {text}");
        *state = (balance_of(&value), state.1 + 1);
    }
    for key in KEYS {
        let (balance, events) = replayed[key];
        assert_eq!(events, ROUNDS, "{key}: one event per round");
        assert_eq!(
            balance, winners_state[key].1,
            "{key}: replay equals the winners' state"
        );
        assert_eq!(balance, final_views[0][key].1);
    }
}
