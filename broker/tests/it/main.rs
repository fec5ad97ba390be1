//! The broker's integration tests, one binary (one link on two cores).

mod deadline_timers;
mod deadlines;
mod layers;
