//! The Beidaihe National Day 2026 scenario, played through public interfaces.
