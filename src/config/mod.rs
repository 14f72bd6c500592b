//! UCI configuration: the exact OpenWrt file syntax ([`uci`]), the typed [`Config`] for
//! `/etc/config/csipd`, and validation with file:line messages.
pub mod uci;
