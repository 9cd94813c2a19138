//! `weir cluster`: the brokers, their addresses and whether they are up, as the node the CLI
//! reached sees them; also what a container health check runs (it succeeds once the node
//! answers).

use std::process::ExitCode;

use weir_client::ClusterDescription;

use crate::connect;
use crate::topic::table;

pub async fn run(broker: &str) -> anyhow::Result<ExitCode> {
    let client = connect(broker).await?;
    let cluster = client.admin().describe_cluster().await?;
    print!("{}", render(&cluster));
    Ok(ExitCode::SUCCESS)
}

fn render(cluster: &ClusterDescription) -> String {
    let controller = if cluster.controller_reachable {
        "reachable"
    } else {
        "UNREACHABLE (produce and fetch go on; topic and group changes wait)"
    };
    let mut out = format!(
        "answered by node {}  controller {controller}  metadata version {:#x}\n\n",
        cluster.node_id, cluster.version
    );
    let mut rows = vec![vec![
        "BROKER".to_owned(),
        "ADDRESS".to_owned(),
        "DATA-PORT".to_owned(),
        "STATUS".to_owned(),
    ]];
    rows.extend(cluster.brokers.iter().map(|b| {
        vec![
            b.id.to_string(),
            b.address.clone(),
            if b.data_address.is_empty() {
                "-".to_owned()
            } else {
                b.data_address.clone()
            },
            if b.alive { "up" } else { "DOWN" }.to_owned(),
        ]
    }));
    out.push_str(&table(&rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_client::BrokerDescription;

    #[test]
    fn brokers_are_listed_with_their_status() {
        let cluster = ClusterDescription {
            node_id: 1,
            controller_reachable: false,
            version: 0x1_0000_0007,
            brokers: vec![
                BrokerDescription {
                    id: 1,
                    address: "localhost:19092".into(),
                    data_address: "localhost:19093".into(),
                    alive: true,
                },
                BrokerDescription {
                    id: 2,
                    address: "localhost:29092".into(),
                    data_address: String::new(),
                    alive: false,
                },
            ],
        };
        let text = render(&cluster);
        assert!(
            text.starts_with("answered by node 1  controller UNREACHABLE"),
            "{text}"
        );
        let lines: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["BROKER", "ADDRESS", "DATA-PORT", "STATUS"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["1", "localhost:19092", "localhost:19093", "up"]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["2", "localhost:29092", "-", "DOWN"]
        );
    }
}
