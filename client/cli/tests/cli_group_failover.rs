//! A consumer group under failure, with the real `weir` CLI as its members: three
//! `weir consume --group -f` processes split 12 partitions 4/4/4; one is killed with SIGKILL
//! and, once its session times out, the other two own all 12. Every record is printed at
//! least once, and a record is printed twice only if it came after its partition's last commit
//! before the partition changed owner. A member stopped with SIGTERM commits everything it
//! printed and leaves.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_client::{Client, GroupDescription, NewTopic, ProducerConfig, ProducerRecord};
use weir_testkit::{BrokerProcess, broker_bin, temp_data_dir, wait_until};

mod common;
use common::weir;

const TOPIC: &str = "events";
const GROUP: &str = "billing";
const PARTITIONS: u32 = 12;
const SESSION_TIMEOUT_MS: &str = "3000";

/// One `weir consume --group -f` process and the `(partition, offset)` lines it has printed.
struct Member {
    child: Child,
    printed: Arc<Mutex<Vec<(u32, u64)>>>,
}

impl Member {
    fn start(broker: &BrokerProcess) -> Member {
        let mut child = weir(
            broker,
            &[
                "consume",
                TOPIC,
                "--group",
                GROUP,
                "-f",
                "--session-timeout-ms",
                SESSION_TIMEOUT_MS,
                "--format",
                "%p/%o\\n",
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn weir consume");
        let stdout = child.stdout.take().expect("stdout");
        let printed = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&printed);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let (p, o) = line.split_once('/').expect("a p/o line");
                let record = (p.parse().expect("partition"), o.parse().expect("offset"));
                sink.lock().unwrap().push(record);
            }
        });
        Member { child, printed }
    }

    /// The id the CLI reports to the group (`weir-cli-<pid>`).
    fn client_id(&self) -> String {
        format!("weir-cli-{}", self.child.id())
    }

    fn printed(&self) -> Vec<(u32, u64)> {
        self.printed.lock().unwrap().clone()
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("a pid");
        rustix::process::kill_process(pid, signal).expect("signal weir consume");
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long any condition of this test may take (a watchdog, not a timing assertion).
const WAIT: Duration = Duration::from_secs(30);

/// Waits until the controller's assignment satisfies `settled` and every member has
/// heartbeated since (a member applies a new assignment when its heartbeat brings it, so until
/// then an old owner may still be reading a partition its new owner has started).
async fn wait_until_applied(
    admin: &weir_client::Admin,
    what: &str,
    settled: impl Fn(&BTreeMap<String, BTreeSet<u32>>) -> bool,
) -> Duration {
    // Since when the controller's assignment has been settled, in which generation.
    let since: Cell<Option<(u32, Instant)>> = Cell::new(None);
    wait_until(what, WAIT, || async {
        let Ok(group) = admin.describe_group(GROUP).await else {
            return false;
        };
        if !settled(&assignment(&group)) {
            since.set(None);
            return false;
        }
        let at = match since.get() {
            Some((generation, at)) if generation == group.generation => at,
            _ => Instant::now(),
        };
        since.set(Some((group.generation, at)));
        group
            .members
            .iter()
            .all(|m| m.last_heartbeat_ago < at.elapsed())
    })
    .await
}

/// Partitions per member client id, as the controller has assigned them.
fn assignment(group: &GroupDescription) -> BTreeMap<String, BTreeSet<u32>> {
    group
        .members
        .iter()
        .map(|m| {
            let partitions = m.assignment.iter().map(|tp| tp.partition).collect();
            (m.client_id.clone(), partitions)
        })
        .collect()
}

async fn produce(client: &Client, from: u64, count: u64) {
    let producer = client
        .producer(ProducerConfig::default())
        .expect("producer");
    let mut deliveries = Vec::new();
    for i in from..from + count {
        let record = ProducerRecord::new(TOPIC)
            .key(format!("k{}", i % 97))
            .value(i.to_string());
        deliveries.push(producer.send(record).await.expect("send"));
    }
    for delivery in deliveries {
        delivery.await.expect("delivered");
    }
    producer.close().await.expect("flush");
}

/// Every (partition, offset) the topic holds now.
async fn all_records(client: &Client) -> BTreeSet<(u32, u64)> {
    let ends = client
        .admin()
        .list_offsets(TOPIC, &[], weir_client::OffsetSpec::Latest)
        .await
        .expect("high watermarks");
    ends.iter()
        .flat_map(|(&p, &end)| (0..end).map(move |o| (p, o)))
        .collect()
}

fn printed_by(members: &[&Member]) -> BTreeSet<(u32, u64)> {
    members.iter().flat_map(|m| m.printed()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_cli_members_one_killed_the_others_take_over_without_skipping() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(&broker_bin(), dir.path(), &[]);
    let client = Client::connect(&broker.host_port()).await.expect("connect");
    let admin = client.admin();
    admin
        .create_topic(NewTopic::new(TOPIC).partitions(PARTITIONS))
        .await
        .expect("create");

    // Members first, records after the group settles: any record printed twice can then only
    // come from the kill below.
    let mut members: Vec<Member> = (0..3).map(|_| Member::start(&broker)).collect();
    wait_until_applied(&admin, "three members own 4 partitions each", |owned| {
        owned.len() == 3 && owned.values().all(|p| p.len() == 4)
    })
    .await;
    let group = admin.describe_group(GROUP).await.expect("describe");
    let owned = assignment(&group);
    for member in &members {
        assert!(owned.contains_key(&member.client_id()), "{owned:?}");
    }
    let covered: BTreeSet<u32> = owned.values().flatten().copied().collect();
    assert_eq!(covered, (0..PARTITIONS).collect());

    produce(&client, 0, 1200).await;
    produce(&client, 1200, 1200).await;
    let expected = all_records(&client).await;
    assert_eq!(expected.len(), 2400);
    let everyone: Vec<&Member> = members.iter().collect();
    wait_until("every record is printed", WAIT, || async {
        printed_by(&everyone).is_superset(&expected)
    })
    .await;

    // SIGKILL one member: no commit, no leave. What it committed last stays the group's
    // committed offset of its partitions until someone else owns them, which is not before its
    // session expires.
    let victim_partitions = owned[&members[0].client_id()].clone();
    members[0].signal(rustix::process::Signal::KILL);
    members[0].child.wait().expect("the victim exits");
    // A commit it sent just before dying would be answered within milliseconds.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let committed = admin
        .fetch_committed(GROUP, &[TOPIC])
        .await
        .expect("committed offsets");
    let last_commit = |p: u32| {
        committed
            .get(&weir_client::TopicPartition::new(TOPIC, p))
            .copied()
            .unwrap_or(0)
    };
    let survivors = [&members[1], &members[2]];
    let took = wait_until_applied(&admin, "the two survivors own all 12 partitions", |owned| {
        owned.len() == 2
            && owned.values().map(BTreeSet::len).sum::<usize>() == PARTITIONS as usize
            && survivors.iter().all(|s| owned.contains_key(&s.client_id()))
    })
    .await;
    eprintln!(
        "the survivors owned all partitions {took:?} after the SIGKILL (session timeout {SESSION_TIMEOUT_MS} ms)"
    );

    produce(&client, 2400, 1200).await;
    let expected = all_records(&client).await;
    assert_eq!(expected.len(), 3600);
    // The survivors read everything but what the victim had committed.
    let theirs: BTreeSet<(u32, u64)> = expected
        .iter()
        .copied()
        .filter(|&(p, o)| !victim_partitions.contains(&p) || o >= last_commit(p))
        .collect();
    wait_until(
        "the survivors print every record after the victim's commits",
        WAIT,
        || async { printed_by(&survivors).is_superset(&theirs) },
    )
    .await;

    // At least once: every record was printed. Records were printed twice only after a
    // partition's last commit before its owner changed (the victim's partitions, and those
    // the range assignor moved between the survivors), and only from before the group
    // settled again; nothing three times.
    let mut times: BTreeMap<(u32, u64), usize> = BTreeMap::new();
    for record in members.iter().flat_map(Member::printed) {
        *times.entry(record).or_default() += 1;
    }
    let printed: BTreeSet<(u32, u64)> = times.keys().copied().collect();
    assert_eq!(printed, expected, "no record skipped, none invented");
    let duplicates: Vec<(u32, u64)> = times
        .iter()
        .filter(|&(_, &n)| n > 1)
        .map(|(&r, _)| r)
        .collect();
    let unexpected: Vec<&(u32, u64)> = duplicates
        .iter()
        .filter(|&&(p, o)| o < last_commit(p) || o >= 2400)
        .collect();
    assert!(
        unexpected.is_empty(),
        "printed twice though committed before the kill or produced after the takeover: {:?}",
        &unexpected[..unexpected.len().min(20)]
    );
    assert!(
        times.values().all(|&n| n <= 2),
        "nothing printed three times"
    );
    eprintln!(
        "{} records, {} printed twice (after their partition's last commit)",
        expected.len(),
        duplicates.len()
    );

    // SIGTERM: the member commits everything it printed, leaves, and the last one takes over.
    let group = admin.describe_group(GROUP).await.expect("describe");
    let stopping_partitions = assignment(&group)[&members[1].client_id()].clone();
    members[1].signal(rustix::process::Signal::TERM);
    let status = members[1].child.wait().expect("wait for weir consume");
    assert_eq!(status.code(), Some(130), "stopped by a signal, like Ctrl-C");
    let committed = admin
        .fetch_committed(GROUP, &[TOPIC])
        .await
        .expect("committed offsets");
    let ends = admin
        .list_offsets(TOPIC, &[], weir_client::OffsetSpec::Latest)
        .await
        .expect("high watermarks");
    for p in stopping_partitions {
        assert_eq!(
            committed.get(&weir_client::TopicPartition::new(TOPIC, p)),
            ends.get(&p),
            "partition {p}: a SIGTERMed member commits what it printed"
        );
    }
    let last = members[2].client_id();
    wait_until_applied(&admin, "the last member owns all 12 partitions", |owned| {
        owned.len() == 1
            && owned
                .get(&last)
                .is_some_and(|p| p.len() == PARTITIONS as usize)
    })
    .await;
}
