//! Certificates and keys: load PEM identity, LFDI/SFDI, key and CSR generation, expiry.
