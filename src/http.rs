//! Async HTTP/1.1 client over async-native-tls for the 2030.5 server: mutual TLS,
//! keep-alive, timeouts, backoff, Retry-After.
