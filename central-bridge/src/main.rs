//! `meshlite-bridge`: see the library crate (`meshlite_bridge`) for what it does.

fn main() -> std::process::ExitCode {
    meshlite_bridge::cli::main()
}
