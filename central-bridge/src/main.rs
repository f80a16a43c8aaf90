//! `meshlite-bridge`: see the library crate (`meshlite_bridge`) for what it does.

/// mimalloc instead of the system allocator: see [`meshlite_bridge::Allocator`].
#[global_allocator]
static ALLOC: meshlite_bridge::Allocator = meshlite_bridge::Allocator;

fn main() -> std::process::ExitCode {
    meshlite_bridge::cli::main()
}
