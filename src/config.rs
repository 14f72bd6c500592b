//! UCI configuration: the exact OpenWrt file syntax, the typed `Config` for
//! `/etc/config/csipd`, and validation with file:line errors. Pure: no IO beyond the
//! caller handing in the file text.
