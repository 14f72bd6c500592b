//! IEEE 2030.5 and csipaus resource types, XML read/write, hexBinary, LFDI/SFDI, mRIDs.
//!
//! Pure: values in, values out, no IO.
//! - [`read`]: tolerant, namespace-aware reader (`read::<DerControlList>(body)`).
//! - writer, identity and mRIDs: next commits.

mod dom;
pub mod read;
pub mod types;

pub use dom::{CSIPAUS_NS_PREFIX, SEP_NS};

pub use read::{ReadError, Readable, read};
pub use types::*;

#[cfg(test)]
mod fixture_tests;
