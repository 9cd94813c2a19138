//! Why a batch was refused. Every variant names what was wrong so a producer can fix it.

/// A record batch failed validation. Nothing is stored for a batch that fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch is {len} bytes, shorter than the {needed}-byte header")]
    TooShort { len: usize, needed: usize },
    #[error("batch length field says {declared} bytes follow it, but {actual} do")]
    LengthMismatch { declared: i64, actual: usize },
    #[error("unsupported batch format version (magic) {0}; this broker speaks version 1")]
    UnsupportedMagic(i8),
    #[error("batch CRC mismatch: header says {stored:#010x}, bytes hash to {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("unsupported batch attributes {0:#06x}: compression and reserved bits must be 0")]
    UnsupportedAttributes(i16),
    #[error("batch declares {0} records; a batch holds at least 1")]
    BadRecordCount(i32),
    #[error("malformed record {index}: {reason}")]
    MalformedRecord { index: usize, reason: &'static str },
    #[error("batch header inconsistent with its records: {0}")]
    Inconsistent(&'static str),
    #[error("batch has {0} trailing bytes after its last record")]
    TrailingBytes(usize),
}
