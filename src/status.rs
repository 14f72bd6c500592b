//! Status snapshot, HTTP JSON + Prometheus metrics server, CLI rendering, rpcd plugin.
