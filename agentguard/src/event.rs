//! Typed events (placeholder while the sensor is written).
