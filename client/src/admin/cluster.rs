//! [`Admin::describe_cluster`]: the brokers of the cluster as the answering node sees them
//! (Kafka's `describeCluster`).

use weir_proto::v1;

use super::Admin;
use crate::ClientError;

/// The cluster as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    /// The node that answered (the bootstrap broker).
    pub node_id: u32,
    /// False when that node has lost its controller: produce and fetch go on, metadata
    /// changes, group calls and commits fail until it is back.
    pub controller_reachable: bool,
    /// The metadata version the node holds.
    pub version: u64,
    /// Every registered broker, by id.
    pub brokers: Vec<BrokerDescription>,
}

/// One registered broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerDescription {
    /// Its node id.
    pub id: u32,
    /// Its gRPC address, as this client should dial it.
    pub address: String,
    /// Its data port, as this client should dial it (empty if it has none).
    pub data_address: String,
    /// False once its heartbeat lease has lapsed: its partitions are unavailable.
    pub alive: bool,
}

impl Admin {
    /// The brokers and their liveness, as the bootstrap broker knows them.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription, ClientError> {
        let metadata = self
            .grpc
            .clone()
            .metadata(v1::MetadataRequest { topics: vec![] })
            .await?
            .into_inner();
        let mut brokers: Vec<BrokerDescription> = metadata
            .brokers
            .into_iter()
            .map(|b| BrokerDescription {
                id: b.id,
                address: b.address,
                data_address: b.data_address,
                alive: b.alive,
            })
            .collect();
        brokers.sort_by_key(|b| b.id);
        Ok(ClusterDescription {
            node_id: metadata.node_id,
            controller_reachable: metadata.controller_reachable,
            version: metadata.version,
            brokers,
        })
    }
}
