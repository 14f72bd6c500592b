//! IEEE 2030.5 and csipaus resource types, XML read/write, hexBinary, LFDI/SFDI, mRIDs.
//!
//! Pure: values in, values out, no IO.
//! - [`read()`]: tolerant, namespace-aware reader (`read::<DerControlList>(body)`).
//! - [`write()`]: schema-ordered writer for what csipd sends, per [`WriteProfile`].
//! - [`identity`]: LFDI/SFDI from a certificate; [`mrid`]: stable mRIDs ending in the PEN.

mod dom;
#[doc(hidden)]
pub mod fuzz;
pub mod identity;
pub mod mrid;
pub mod read;
pub mod samples;
pub mod types;
pub mod write;

pub use dom::{CSIPAUS_NS_PREFIX, SEP_NS};
pub use identity::{
    Identity, IdentityError, identity_from_pem, lfdi_from_der, lfdi_from_pem, sfdi,
};
pub use read::{ListItem, ReadError, Readable, SkippedItem, read, read_list};
pub use types::*;
pub use write::{CsipausNs, Writable, WriteError, WriteProfile, write};

#[cfg(test)]
mod fixture_tests;
