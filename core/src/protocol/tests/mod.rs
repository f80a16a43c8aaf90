//! Protocol tests: codec properties, two sessions against each other, hostile input, bundles.

mod bundle;
mod frame_props;
mod fuzz;
mod session_hostile;
mod session_pair;
