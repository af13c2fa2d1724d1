//! Wiring of the stages and the shutdown order.
