//! Consumer groups on the wire: assignor names to and from `weir.v1.Assignor`.

use weir_proto::v1;

use crate::group_strategy::AssignorKind;

pub fn assignor_from_wire(value: i32) -> Result<AssignorKind, String> {
    match v1::Assignor::try_from(value) {
        Ok(v1::Assignor::Range) => Ok(AssignorKind::Range),
        Ok(v1::Assignor::RoundRobin) => Ok(AssignorKind::RoundRobin),
        Ok(v1::Assignor::Sticky) => Ok(AssignorKind::Sticky),
        Err(_) => Err(format!("unknown assignor {value}")),
    }
}

pub fn assignor_to_wire(kind: AssignorKind) -> v1::Assignor {
    match kind {
        AssignorKind::Range => v1::Assignor::Range,
        AssignorKind::RoundRobin => v1::Assignor::RoundRobin,
        AssignorKind::Sticky => v1::Assignor::Sticky,
    }
}
