//! The Berth daemon: config, wiring, socket, signals.
