//! Which gRPC listener a request arrived on, and so which addresses it is answered with.
//!
//! A node may listen for gRPC twice: on its internal address (`listen`, advertised as
//! `advertised`: what brokers and clients inside its network dial) and on an external one
//! (`external_listen`, advertised as `external_advertised`: a container's published port, a
//! load balancer). Kafka and Redpanda call these listeners. Every address a node hands out —
//! the brokers in Metadata, the leaders in DescribeTopic — is the one for the listener the
//! request came in on, so a client inside a compose network and one on the host each get
//! addresses they can dial, from the same cluster.
//!
//! Invariants: a client only ever reads `address` and `data_address`; on the external listener
//! those hold the external pair, and a broker that has no external addresses keeps its internal
//! ones (so a cluster where only some brokers are published still answers with something).

use weir_proto::v1::{BrokerInfo, TopicDescription};

/// The listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Internal,
    External,
}

impl Listener {
    /// `broker` as a client on this listener must see it.
    pub fn present_broker(self, mut broker: BrokerInfo) -> BrokerInfo {
        if self == Listener::External {
            if !broker.external_address.is_empty() {
                broker.address = broker.external_address.clone();
            }
            if !broker.external_data_address.is_empty() {
                broker.data_address = broker.external_data_address.clone();
            }
        }
        broker
    }

    /// `topic`'s leader addresses as a client on this listener must see them (`brokers` is the
    /// cluster's broker list, with both address pairs).
    pub fn present_topic(
        self,
        mut topic: TopicDescription,
        brokers: &[BrokerInfo],
    ) -> TopicDescription {
        if self == Listener::Internal {
            return topic;
        }
        for p in &mut topic.partitions {
            if let Some(leader) = brokers.iter().find(|b| b.id == p.leader_id) {
                let leader = self.present_broker(leader.clone());
                p.leader_address = leader.address;
                p.data_address = leader.data_address;
            }
        }
        topic
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_proto::v1::PartitionDescription;

    fn broker(id: u32, external: bool) -> BrokerInfo {
        BrokerInfo {
            id,
            address: format!("broker{id}:9092"),
            data_address: format!("broker{id}:9093"),
            alive: true,
            external_address: if external {
                format!("localhost:{id}9092")
            } else {
                String::new()
            },
            external_data_address: if external {
                format!("localhost:{id}9093")
            } else {
                String::new()
            },
        }
    }

    #[test]
    fn external_requests_see_external_addresses_and_internal_ones_when_there_are_none() {
        let brokers = [broker(1, true), broker(2, false)];
        let topic = TopicDescription {
            name: "t".into(),
            partitions: (0..2)
                .map(|p| PartitionDescription {
                    partition: p,
                    leader_id: p + 1,
                    leader_address: format!("broker{}:9092", p + 1),
                    data_address: format!("broker{}:9093", p + 1),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };

        let inside = Listener::Internal.present_topic(topic.clone(), &brokers);
        assert_eq!(inside, topic);
        let outside = Listener::External.present_topic(topic, &brokers);
        assert_eq!(outside.partitions[0].leader_address, "localhost:19092");
        assert_eq!(outside.partitions[0].data_address, "localhost:19093");
        assert_eq!(outside.partitions[1].leader_address, "broker2:9092");

        assert_eq!(
            Listener::External.present_broker(broker(1, true)).address,
            "localhost:19092"
        );
        assert_eq!(
            Listener::Internal.present_broker(broker(1, true)).address,
            "broker1:9092"
        );
    }
}
