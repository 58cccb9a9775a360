//! Integration tests: one binary, real `berth serve` processes on loopback ports.

#[allow(dead_code)]
mod common;
